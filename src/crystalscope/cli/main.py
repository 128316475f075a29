"""Entry point of the ``crystalscope`` command.

User errors (a :class:`~crystalscope.errors.CrystalscopeError`, a missing file, a bad
option) print one line on stderr and exit with status 2; ``--debug`` shows the full
traceback instead.  Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from crystalscope import __version__
from crystalscope.cli import acquire as acquire_cmd
from crystalscope.cli import cbxd as cbxd_cmd
from crystalscope.cli import cdi as cdi_cmd
from crystalscope.cli import cell as cell_cmd
from crystalscope.cli import convert as convert_cmd
from crystalscope.cli import cred as cred_cmd
from crystalscope.cli import demo as demo_cmd
from crystalscope.cli import info as info_cmd
from crystalscope.cli import merge as merge_cmd
from crystalscope.cli import serial as serial_cmd
from crystalscope.cli import simulate as simulate_cmd
from crystalscope.errors import CrystalscopeError

__all__ = ["app", "main"]

EXIT_USER_ERROR = 2

app = typer.Typer(
    name="crystalscope",
    help="Diffraction from small or imperfect crystals: from raw frames to structure factors.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
_state = {"debug": False}
err_console = Console(stderr=True, highlight=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"crystalscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print version, exit."),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    """crystalscope command-line interface."""
    _state["debug"] = debug


app.command("info")(info_cmd.info)
app.command("convert")(convert_cmd.convert)
app.command("demo")(demo_cmd.demo)
app.command("merge")(merge_cmd.merge)
app.command("stats")(merge_cmd.stats)
app.add_typer(simulate_cmd.app, name="simulate")
app.add_typer(serial_cmd.app, name="serial")
app.add_typer(cell_cmd.app, name="cell")
app.add_typer(acquire_cmd.app, name="acquire")
app.add_typer(cred_cmd.app, name="cred")
app.add_typer(cbxd_cmd.app, name="cbxd")
app.add_typer(cdi_cmd.app, name="cdi")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status instead of raising it."""
    _state["debug"] = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, prog_name="crystalscope", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except (CrystalscopeError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {_one_line(exc)}", soft_wrap=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        err_console.print("interrupted; no output was left half-written")
        return 130
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.exceptions.Abort):
            return 130
        if isinstance(exc, click.ClickException):
            exc.show()
            return EXIT_USER_ERROR
        raise
    return 0


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split())


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
