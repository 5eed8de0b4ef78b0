"""Shared CLI helpers: the console, failing with a clear message, and parsing of common options."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import torch
import typer
from rich.console import Console
from rich.markup import escape

from subnetsearch import files
from subnetsearch.data import DataError, DataSpec
from subnetsearch.distributed import ADDRESS_HELP
from subnetsearch.errors import InputError, SubnetsearchError
from subnetsearch.files import OutputPathError, check_output_path
from subnetsearch.search import Fidelity, TrainingSearch, run_training_search
from subnetsearch.spaces import Mode
from subnetsearch.storage import storage_url
from subnetsearch.supernets import BaseSupernet

# Off a terminal tables are laid out 200 columns wide, but text lines are never wrapped (soft_wrap):
# a line a script reads (a mode's JSON, a search name) stays one line.
console = Console(width=None if sys.stdout.isatty() else 200, soft_wrap=not sys.stdout.isatty())
errors = Console(stderr=True, soft_wrap=True)
JSON_HELP = "Print JSON (machine-readable, never wrapped) instead of a table."


def plain(text: str) -> None:
    """A line printed as is: never wrapped, no markup or highlighting (JSON, names to copy)."""
    console.print(text, soft_wrap=True, markup=False, highlight=False)


def print_json(payload: object) -> None:
    """A JSON document on stdout, one line, for scripts (datetimes as ISO 8601)."""
    plain(json.dumps(payload, default=lambda value: value.isoformat() if hasattr(value, "isoformat") else str(value)))


def fail(message: str, code: int = 2) -> NoReturn:
    errors.print(f"[bold red]error:[/] {escape(message)}")  # the message's own brackets are text (an extra's name)
    raise typer.Exit(code)


def check_output_folder(folder: Path) -> None:
    """A folder a command will write its files in: refused before any work if it is a file, under a
    file, or not writable (a real probe)."""
    try:
        files.check_output_folder(folder)
    except OutputPathError as error:
        fail(str(error))


def check_output_file(path: Path) -> None:
    """A file a command will write: refused before any work if it cannot be written."""
    try:
        check_output_path(path)
    except OutputPathError as error:
        fail(str(error))


def set_threads(threads: int) -> None:
    """torch intra-op threads for this command, refused below 1."""
    if threads < 1:
        fail(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def check_backend(backend: str, address: str | None) -> None:
    """--backend local | ray, and --address only with ray."""
    if backend not in ("local", "ray"):
        fail(f"--backend must be local or ray, got {backend!r}")
    if address is not None and backend != "ray":
        fail("--address needs --backend ray")


# Options of every command that evaluates modes (typer reads them as metadata; sharing is safe).
DATA_ROOT_OPTION = typer.Option(None, "--data-root", help="Where the checkpoint's data set is now, if it moved "
                                                          "(default: the folder recorded at training).")
CALIBRATION_OPTION = typer.Option(20, "--calibration-batches", help="BN calibration per evaluated mode: this many "
                                  "batches of training images (0: the trained BN statistics).")
FIDELITY_OPTION = typer.Option("multi", "--fidelity", help="multi: a cheap first look at every candidate (4 BN "
                                "calibration batches, 1,000 validation images, a short paired latency window), the "
                                "full evaluation only where the look could join the front (fronts and `best` use "
                                "full figures only) | full: every candidate in full.")


def fidelity_of(text: str) -> Fidelity | None:
    """--fidelity: the first look of a multi-fidelity search, or None (every candidate in full)."""
    if text not in ("multi", "full"):
        raise InputError(f"--fidelity must be multi or full, got {text!r}")
    return Fidelity() if text == "multi" else None


EVAL_BATCHES_OPTION = typer.Option(None, "--eval-batches", help="Score each mode on at most this many validation "
                                   "batches (default: the whole validation split). Recorded with every evaluation, "
                                   "so results stay comparable.")

TRIALS_BACKEND_HELP = ("local (trials one after another here) | ray (trials as Ray Tune trials, one per `--threads` "
                       "CPUs of the cluster).")
STORAGE_HELP = "Storage URL (default: $SUBNETSEARCH_STORAGE or sqlite:///subnetsearch.db)."
# The options every training-time search (lasso search, ddi search) ends with.
STORAGE_OPTION = typer.Option(None, "--storage", help=STORAGE_HELP)
TRIALS_BACKEND_OPTION = typer.Option("local", "--backend", help=TRIALS_BACKEND_HELP)
ADDRESS_OPTION = typer.Option(None, "--address", help=ADDRESS_HELP)
SEED_OPTION = typer.Option(0, "--seed")
TRIAL_THREADS_OPTION = typer.Option(2, "--threads", help="torch intra-op threads (per trial).")


def parse_range(text: str) -> tuple[float, float] | None:
    """`low,high` as two numbers, or None if it is not."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        return None
    return low, high


def report_trial_errors(errors: list[str]) -> None:
    for error in errors:
        console.print(f"[yellow]a trial failed after its retries:[/] {error[:300]}")


def training_search(search: TrainingSearch, trials: int, storage: str | None, name: str | None, sampler: str,
                    seed: int, out: Path | None, backend: str, address: str | None, threads: int,
                    show: Callable[[Any], None]) -> tuple[Any, str]:
    """A training-time search's trials, here or as Ray Tune trials (`search.run_training_search`),
    each result shown as it comes (a Ray search's after its trials); bad storage or an unreachable
    cluster fail before anything is written. Returns the study and its name."""
    import optuna

    from subnetsearch.cli._devices import open_store
    from subnetsearch.distributed import RayTrials

    url = storage_url(storage)
    runner = RayTrials(address, threads) if backend == "ray" else None
    store = open_store(storage)
    study_name = name or search.default_name()
    try:
        stored = len(search.results(optuna.load_study(study_name=study_name, storage=url)))
    except KeyError:  # a new study
        stored = 0
    console.print(f"search and study {study_name!r} in {store.url}: {stored} stored trials; {trials} more")
    try:
        study, errors, study_name = run_training_search(store, url, search, trials, name=study_name, sampler=sampler,
                                                        seed=seed, out=out, runner=runner, on_trial=show)
    except SubnetsearchError as error:  # the store, the cluster, a bad setting
        fail(str(error))
    except (ValueError, optuna.exceptions.OptunaError) as error:
        fail(f"cannot open the study in {url}: {error}")
    if runner is not None:
        console.print(runner.description)
    report_trial_errors(errors)
    return study, study_name


def data_spec(name: str, root: str | None, val_size: int = 5000, split_seed: int = 0, **options: object) -> DataSpec:
    """The data options of a training command; a relative root is made absolute (the checkpoint
    records it, and searches run from other folders)."""
    try:
        return DataSpec(name, str(Path(root).expanduser().resolve()) if root else None, val_size, split_seed,
                        **options)  # type: ignore[arg-type]
    except DataError as error:
        fail(str(error))


def parse_widths(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        fail(f"expected comma-separated integers, got {text!r}")
    if not values or any(v < 1 for v in values):
        fail(f"expected positive integers, got {text!r}")
    return values


def parse_mode(supernet: BaseSupernet, text: str) -> Mode:
    """A mode the supernet names (full | smallest | uniform:G for WeNet | subnet:NAME for width), a
    mode's JSON, or a path to a JSON file holding one."""
    try:
        named = supernet.mode_named(text)
        if named is not None:
            return named
        if Path(text).is_file():
            text = Path(text).read_text()
        payload = json.loads(text)
        values = payload.get("values", payload) if isinstance(payload, dict) else None
        if not isinstance(values, dict):
            fail(f"a mode must be full, smallest, uniform:G or a JSON object of layer -> groups; got {text[:80]!r}")
        return supernet.make_mode(values)
    except SubnetsearchError as error:
        fail(f"bad mode: {error}")
