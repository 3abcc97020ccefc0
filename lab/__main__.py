"""``python -m kubeferry.lab``: the same as ``kubeferry-lab``."""

from kubeferry.lab.cli import main

main()
