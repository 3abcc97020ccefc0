"""A throwaway OpenPGP key for the lab's stand-in package repositories, made with real gpg.

Upstream repositories are signed (pkgs.k8s.io: a clearsigned ``InRelease``, signed rpms and
``repomd.xml.asc``), and kubeferry checks those signatures, so the stand-ins are signed too,
with an RSA key (EL7's rpm cannot check EdDSA). The key lives in its own GNUPGHOME; use it
as a context manager so the gpg-agent it starts is stopped (by ``gpgconf --kill``) after.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

from kubeferry.errors import OperationError

GPG_TIMEOUT = 120


class SigningKey:
    """``with SigningKey("name") as key:`` ``key.public`` (armored), ``clearsign``, ``sign_rpms``."""

    def __init__(self, name: str = "kubeferry lab stand-in packages", home: Path | None = None):
        self.name = name
        self._own_home = home is None
        self.home = Path(home or tempfile.mkdtemp(prefix="kubeferry-lab-gpg-"))
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.home.chmod(0o700)
        self.public = b""

    def __enter__(self) -> SigningKey:
        try:
            self._gpg("--quick-gen-key", f"{self.name} <lab@kubeferry.invalid>", "rsa2048", "sign",
                      "never")
            self.public = self._gpg("--armor", "--export", self.name)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _gpg(self, *args: str) -> bytes:
        argv = ["gpg", "--homedir", str(self.home), "--batch", "--pinentry-mode", "loopback",
                "--passphrase", "", *args]
        return _run(argv, "gpg").stdout

    def clearsign(self, source: Path, target: Path) -> None:
        """``target`` = ``source`` clearsigned (apt's InRelease)."""
        target.write_bytes(self._gpg("--clearsign", "--digest-algo", "SHA256", "--local-user",
                                     self.name, "--output", "-", str(source)))

    def detach_sign(self, source: Path, target: Path) -> None:
        """``target`` = an armored detached signature of ``source`` (Release.gpg, repomd.xml.asc)."""
        target.write_bytes(self._gpg("--armor", "--detach-sign", "--digest-algo", "SHA256",
                                     "--local-user", self.name, "--output", "-", str(source)))

    def sign_rpms(self, rpms: Sequence[Path]) -> None:
        """Add this key's signature to each rpm in place (``rpmsign --addsign``)."""
        if not rpms:
            return
        gpg = shutil.which("gpg") or "gpg"
        _run(["rpmsign", "--addsign", "--define", f"__gpg {gpg}",
              "--define", f"_gpg_path {self.home}", "--define", f"_gpg_name {self.name}",
              *map(str, rpms)], "rpmsign")

    def close(self) -> None:
        """Stop this home's gpg-agent and remove the home if this object made it."""
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"],
                       capture_output=True, timeout=30, check=False)
        if self._own_home:
            shutil.rmtree(self.home, ignore_errors=True)


def _run(argv: list[str], what: str) -> subprocess.CompletedProcess[bytes]:
    try:
        result = subprocess.run(argv, capture_output=True, timeout=GPG_TIMEOUT,
                                stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        raise OperationError(f"{argv[0]} is not installed; run scripts/bootstrap") from None
    except subprocess.TimeoutExpired:
        raise OperationError(f"{what} did not finish in {GPG_TIMEOUT}s") from None
    if result.returncode != 0:
        lines = result.stderr.decode(errors="replace").strip().splitlines()
        raise OperationError(f"{what} failed: {lines[-1] if lines else 'no output'}")
    return result
