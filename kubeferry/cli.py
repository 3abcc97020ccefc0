"""The ``kubeferry`` command line: thin click wrappers over the Python API.

Every command reports an expected failure as one line on stderr and exits 2 for usage or
input errors, 1 for failed operations. Set KUBEFERRY_DEBUG=1 for tracebacks.
"""

from __future__ import annotations

import os
import sys

import click

from kubeferry import __version__
from kubeferry.errors import KubeferryError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kubeferry")
def cli() -> None:
    """Ferry Kubernetes across an air gap.

    On an internet machine, `kubeferry bundle build` writes one verifiable bundle file.
    Inside the air gap, `kubeferry install` turns it into a cluster over SSH.
    """


def _register_commands() -> None:
    from kubeferry.bundler.commands import bundle
    from kubeferry.installer.commands import install_command, inventory_group
    from kubeferry.installer.day2_commands import certs_group, remove_node_command, reset_command
    from kubeferry.installer.harbor_commands import harbor_group
    from kubeferry.installer.upgrade_command import upgrade_command

    for command in (bundle, install_command, inventory_group, harbor_group, upgrade_command,
                    remove_node_command, reset_command, certs_group):
        cli.add_command(command)


def fail(message: str, code: int, prog: str = "kubeferry") -> None:
    """Print one line naming what went wrong, then exit with ``code``."""
    click.echo(f"{prog}: {message}", err=True)
    sys.exit(code)


def run_cli(group: click.Group, prog: str, argv: list[str] | None,
            interrupted: str = "interrupted; run the same command again to resume") -> None:
    """Run a click group, mapping every expected error to one line and its exit code."""
    from kubeferry import timeouts

    timeouts.notify = lambda line: click.echo(f"{prog}: {line}", err=True)
    try:
        group.main(args=argv, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as exit_:
        sys.exit(exit_.exit_code)
    except click.Abort:
        fail("interrupted", 130, prog)
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else prog
        fail(f"{error.format_message()} (see '{command} --help')", 2, prog)
    except KubeferryError as error:
        if os.environ.get("KUBEFERRY_DEBUG"):
            raise
        fail(str(error), error.exit_code, prog)
    except KeyboardInterrupt:
        fail(interrupted, 130, prog)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(1)
    except OSError as error:  # a path the code did not name itself: still one line, with the path
        if os.environ.get("KUBEFERRY_DEBUG"):
            raise
        from kubeferry.outputs import os_error

        if error.filename is None:  # a write to stdout or an open handle: no path to name
            mapped = os_error(error, "output", "(stdout or an open file)")
        else:
            mapped = os_error(error, "path", error.filename, action="use")
        fail(str(mapped), mapped.exit_code, prog)
    except Exception as error:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("KUBEFERRY_DEBUG"):
            raise
        fail(f"internal error: {type(error).__name__}: {error} (KUBEFERRY_DEBUG=1 shows more)", 1, prog)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, mapping every expected error to one line."""
    _register_commands()
    run_cli(cli, "kubeferry", argv)


if __name__ == "__main__":
    main()
