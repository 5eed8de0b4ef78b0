"""`subnetsearch report` (one self-contained HTML file) and `subnetsearch dashboard` (optuna-dashboard
on the same storage URL)."""

from __future__ import annotations

from pathlib import Path

import typer

from subnetsearch.cli._common import check_output_file, console, fail
from subnetsearch.cli._devices import STORAGE_HELP, open_store
from subnetsearch.dashboards import build_report, serve_dashboard
from subnetsearch.errors import SubnetsearchError
from subnetsearch.search import Interrupted
from subnetsearch.storage import storage_url


def report_command(
    device: list[str] | None = typer.Option(None, help="Device(s) to show (repeatable; default: all with results)."),
    supernet: str | None = typer.Option(None, help="Only this supernet (content hash or a prefix)."),
    out: Path = typer.Option(Path("subnetsearch-report.html"), "--out", "-o", help="The HTML file to write."),
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
) -> None:
    """Write a self-contained HTML report: fronts per device and cost, strategies overlaid, DSE
    trajectories, hypervolume against evaluations, per-layer view, cross-device comparison."""
    check_output_file(out)
    store = open_store(storage)
    try:
        for name in device or []:
            store.get_device(name)
        path, sections = build_report(store, storage_url(storage), out, device, supernet)
    except (SubnetsearchError, OSError) as error:
        fail(str(error))
    if not sections:
        fail("nothing stored yet: run `subnetsearch run` or `subnetsearch search` first", code=1)
    console.print(f"wrote {path.resolve()} ({sections} device section(s)); open it in a browser")


def dashboard_command(
    host: str = typer.Option("127.0.0.1", help="Address to bind (default: this machine only)."),
    port: int = typer.Option(8080, help="Port (0: any free port)."),
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
    writable: bool = typer.Option(False, help="Let the dashboard change studies (rename, delete, notes); by "
                                              "default it is read-only: the studies are the search records."),
) -> None:
    """Serve optuna-dashboard on the project's storage URL: every search is a study there."""
    if not 0 <= port <= 65535:
        fail(f"--port must be in 0..65535 (0: any free port), got {port}")
    store = open_store(storage)  # creates or upgrades the schema; fails clearly on a bad URL
    try:
        serve_dashboard(storage_url(storage), host, port, writable=writable,
                        ready=lambda address: console.print(f"optuna-dashboard for {store.url} at {address} "
                                                            f"({'writable' if writable else 'read-only'}; Ctrl-C "
                                                            "stops it)"))
    except OSError as error:
        fail(f"cannot serve on {host}:{port}: {error.strerror or error}")
    except (KeyboardInterrupt, Interrupted):  # Ctrl-C or SIGTERM: the normal ways to stop a server
        console.print("dashboard stopped")
