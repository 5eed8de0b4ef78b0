"""The `subnetsearch` command: a thin shell over the library."""

from __future__ import annotations

import signal
import sys

import typer
from rich.markup import escape

from subnetsearch.cli._common import errors
from subnetsearch.cli._ddi import ddi_app
from subnetsearch.cli._devices import devices_app
from subnetsearch.cli._lasso import lasso_app
from subnetsearch.cli._query import best_command, export_command, front_command, searches_command, supernets_command
from subnetsearch.cli._report import dashboard_command, report_command
from subnetsearch.cli._run import run_command
from subnetsearch.cli._search import search_command
from subnetsearch.cli._serve import serve_command
from subnetsearch.cli._train import train_command
from subnetsearch.errors import SubnetsearchError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="AutoML search over dynamic subnets.")
app.command("run")(run_command)
app.command("search")(search_command)
app.command("train")(train_command)
app.command("supernets")(supernets_command)
app.command("searches")(searches_command)
app.command("front")(front_command)
app.command("best")(best_command)
app.command("export")(export_command)
app.command("report")(report_command)
app.command("dashboard")(dashboard_command)
app.command("serve")(serve_command)
app.add_typer(devices_app, name="devices")
app.add_typer(lasso_app, name="lasso")
app.add_typer(ddi_app, name="ddi")


@app.callback()
def _root() -> None:
    """AutoML search over dynamic subnets: train supernets, measure and search their modes."""


def _terminated(signum: int, frame: object) -> None:
    from subnetsearch.search import Interrupted

    raise Interrupted(f"interrupted by {signal.Signals(signum).name}")


def main() -> None:
    # SIGTERM ends a command the way Ctrl-C does: a running search is marked interrupted, not left
    # "running" in the store; any other command stops with one line and exit code 130, no traceback
    from subnetsearch.search import Interrupted

    signal.signal(signal.SIGTERM, _terminated)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the commands say what happened in their own words
    try:
        app()
    except Interrupted as error:
        errors.print(f"[bold red]error:[/] {escape(str(error))}")
        sys.exit(130)
    except SubnetsearchError as error:  # what the library refuses or cannot do: one line, no traceback
        errors.print(f"[bold red]error:[/] {escape(str(error))}")
        sys.exit(2 if isinstance(error, ValueError) else 1)  # 2: bad input (as a usage error), 1: a failure
