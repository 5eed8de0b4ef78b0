"""`subnetsearch run`: the main job (`search.MainJob`), each step printed as it comes: load (or
train) the default supernet, evaluate a few modes on the default device, run a short search with
registered strategies, and print the stored front and the next query; every result is kept in the
store."""

from __future__ import annotations

from pathlib import Path

import torch
import typer
from rich.table import Table

from subnetsearch.cli._common import (
    CALIBRATION_OPTION,
    DATA_ROOT_OPTION,
    EVAL_BATCHES_OPTION,
    FIDELITY_OPTION,
    console,
    fail,
    fidelity_of,
)
from subnetsearch.cli._devices import STORAGE_HELP, device_or_default, open_store
from subnetsearch.cli._query import accuracy_text, latency_text, speedup_text
from subnetsearch.dashboards import build_report
from subnetsearch.errors import SubnetsearchError
from subnetsearch.files import check_output_path
from subnetsearch.search import (
    MainJob,
    MainJobPlan,
    ModeRow,
    Outcome,
    SearchSession,
    evaluation_settings,
    get_strategy,
    main_job_device,
    suggested_budget,
    train_default_supernet,
)
from subnetsearch.spaces import Mode
from subnetsearch.storage import StoredEvaluation, storage_url
from subnetsearch.supernets import (
    DEFAULT_CHECKPOINT,
    DEFAULT_EPOCHS,
    DEFAULT_TRAIN_COMMAND,
    Realization,
    load_checkpoint,
)


def run_command(
    checkpoint: Path = typer.Option(DEFAULT_CHECKPOINT, help="Supernet checkpoint (default: the shipped one)."),
    train_if_missing: bool = typer.Option(True, help="Train the default supernet if the checkpoint is missing."),
    epochs: int = typer.Option(DEFAULT_EPOCHS, help="Epochs when training is needed (the default supernet: the "
                                                    "shipped 24-48-96 one grown to 32-64-128 and trained on)."),
    device_name: str = typer.Option("this-host", "--device", help="A recorded device (this-host is added if missing)."),
    random_modes: int = typer.Option(2, help="Random mixed modes to add to the uniform ones."),
    seed: int = typer.Option(0, help="Seed of the random modes and of the search."),
    strategy: str = typer.Option("dse+tpe", help="Registered strategies joined by '+', run in turn: dse+tpe (the "
                                                 "greedy DSE for --dse-iterations, then --trials TPE trials; the "
                                                 "better of the two at this budget on measured latency, "
                                                 "benchmarks/results/main_job_strategy.json) | predictor (a model of "
                                                 "accuracy and latency learned from the evaluations so far picks "
                                                 "each batch of real ones) | any of `subnetsearch search --help`."),
    dse_iterations: int = typer.Option(0, help="dse+tpe: iterations of the greedy DSE (0: skip it). Off by default: "
                                               "on the default nested supernet it walks one knob at a time from the "
                                               "full network (12 near-full candidates per iteration), and with 2 "
                                               "iterations the main job took 11 min 55 s against 5 min 57 s "
                                               "without (fresh clones, 2 cores, 2026-12-07: "
                                               "benchmarks/results/quickstart*.json)."),
    delta: float = typer.Option(0.90, help="dse+tpe: DSE accuracy threshold (validation)."),
    trials: int | None = typer.Option(None, help="predictor: distinct modes evaluated [60]; tpe (optuna): trials "
                                                 "[20]; any strategy with a trial budget (0: skip it)."),
    report: Path = typer.Option(Path("subnetsearch-report.html"), help="Where to write the HTML report."),
    data_root: str | None = DATA_ROOT_OPTION,
    calibration_batches: int = CALIBRATION_OPTION,
    eval_batches: int | None = EVAL_BATCHES_OPTION,
    fidelity: str = FIDELITY_OPTION,
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
) -> None:
    """The main job: load (or train) the default supernet, evaluate a few modes on a device, run a
    short search on accuracy and latency, and print the stored front and the query to type next."""
    # every option is checked before the store is opened or anything is computed
    if epochs < 1:
        fail(f"--epochs must be >= 1, got {epochs}")
    try:
        plan = MainJobPlan(strategy, dse_iterations, delta, trials, random_modes, seed)
        settings = evaluation_settings(calibration_batches, eval_batches)
        first_look = fidelity_of(fidelity)
        check_output_path(report)
        if checkpoint.exists():  # a checkpoint this host cannot serve is named before the store or device is read
            load_checkpoint(checkpoint)
        elif not train_if_missing:
            fail(f"checkpoint not found: {checkpoint}")
    except SubnetsearchError as error:
        fail(str(error))
    store = open_store(storage)
    try:
        device = main_job_device(device_or_default(store, device_name))
        if not checkpoint.exists():
            console.print(f"{checkpoint} not found: training the default supernet ({epochs} epochs), "
                          f"as `{DEFAULT_TRAIN_COMMAND}` does")
            train_default_supernet(checkpoint, epochs, seed)
        session = SearchSession(store, storage_url(storage), device, checkpoint, settings, data_root=data_root,
                                fidelity=first_look)
        job = MainJob(session, plan)
    except SubnetsearchError as error:
        fail(str(error))
    state, supernet, splits = session.checkpoint, session.supernet, session.splits
    torch.set_num_threads(device.protocol.threads)
    console.print(f"supernet {checkpoint} (hash {state.hash[:12]}), {len(supernet.space)} switchable layers, "
                  f"data {splits.name}: selection on {len(splits.val)} validation images")
    console.print(f"device {device.name}: {device.description}; storage {store.url}")
    console.print(f"latency noise on {device.name}: {job.noise().describe()}")
    _mode_table(session, job.mode_rows())

    def announce(name: str, values: dict[str, object]) -> None:
        console.print(f"{name} ({get_strategy(name).summary}) on accuracy and measured latency: "
                      + ", ".join(f"{k} {v}" for k, v in values.items() if k != "objectives"))

    def done(name: str, outcome: Outcome) -> None:
        for line in outcome.lines:
            console.print(f"  {line}")

    job.search(announce, lambda line: console.print(f"  {line}"), done)
    refined = job.refine()
    if refined:
        console.print(f"the front's {refined} graphs measured in {plan.front_windows} more paired windows each "
                      "(windows are the samples a latency interval rests on)")
    front = job.front()
    console.print(_front_table(session, front))
    budget = suggested_budget(front)
    console.print(_evaluated_line(session))
    where = "" if storage is None else f" --storage '{store.url}'"
    path, _ = build_report(store, storage_url(storage), report)
    console.print(f"report: {path.resolve()} (open it in a browser); the same data in the Optuna dashboard:\n"
                  f"  subnetsearch dashboard{where}")
    console.print("next, ask for the best mode under a latency budget (and export it):\n"
                  f"  subnetsearch best --device {device.name} --max-latency-ms {budget:.3f}{where}")


def _front_table(session: SearchSession, front: list[StoredEvaluation]) -> Table:
    """The stored front as a newcomer reads it: fastest last, each mode's kind, its speedup over the
    full network and its accuracy, both with their 95 % intervals."""
    supernet, device = session.supernet, session.device
    table = Table(title=f"the Pareto front of this supernet on {device.name} (accuracy vs measured latency, merged "
                        f"across all searches): {len(front)} modes", caption=(
                            "speedup: the full network's latency / the mode's, paired in the same windows, with its "
                            "95 % interval; accuracy: validation images, 95 % binomial interval; a mode is on the "
                            "front only if no other is at least as good on both beyond those intervals"))
    for column in ("kind", supernet.mode_layout(), "speedup vs full", "accuracy", "latency ms", "MMACs", "id"):
        table.add_column(column, justify="left" if column in ("kind", supernet.mode_layout(), "id") else "right")
    for e in sorted(front, key=lambda e: -e.accuracy):
        mode = Mode.from_json(e.mode_json)
        table.add_row(supernet.kind_of(mode), supernet.describe(mode), speedup_text(e), accuracy_text(e),
                      latency_text(e)[0], f"{e.macs / 1e6:.1f}", e.mode_id)
    return table


def _evaluated_line(session: SearchSession) -> str:
    evaluator = session.evaluator
    line = (f"{evaluator.misses} modes evaluated in full now, {evaluator.hits} reused from stored results (a mode "
            "is never evaluated twice for the same supernet, device and settings)")
    if session.screening is not None and session.screens:
        promoted = sum(screen.promoted for screen in session.screens)
        dismissed = sum(screen.dismissed for screen in session.screens)
        line += (f"; multi-fidelity: {session.screening.misses} cheap first looks now, {promoted} candidates promoted "
                 f"to a full evaluation and {dismissed} dismissed as beaten beyond noise by another's look "
                 "(--fidelity full: every candidate in full)")
    return line


def _mode_table(session: SearchSession, rows: list[ModeRow]) -> None:
    supernet, device = session.supernet, session.device
    p = device.protocol
    table = Table(title=f"operating modes on {device.name} - latency: {p.runtime}, batch {p.batch_size}, "
                        f"{p.threads} threads, paired against the full network (ratio x its pooled median, 95 % "
                        "interval); energy: Eq. (6) model")
    layout = supernet.mode_layout()
    stored = supernet.stored_bn_per_mode  # else the stored statistics are a mix of modes: no column
    for column in ("mode", layout, "MMACs", "params", *(("val acc (stored BN)",) if stored else ()),
                   "val acc (calibrated)", "latency ms (vs full, grouped layers as)",
                   "latency: how", "of bound", "energy mJ (model)", "id"):
        table.add_column(column, justify="left" if column in ("mode", layout, "id") else "right")
    full_latency = None
    for row in rows:
        result, mode = row.evaluation, row.mode
        full_latency = full_latency or result.latency_ms
        latency, how, bound = "-", "-", "-"  # measured here for every mode, so present unless measuring failed
        if result.latency_ms and full_latency and result.latency:
            realized = Realization.from_dict(result.latency.get("realization"))
            grouped = supernet.grouped_layers(mode)
            kernels = realized.describe(len(grouped)) if grouped else "-"
            figure, how = latency_text(result)
            latency = f"{figure} ({speedup_text(result, full_latency)}, {kernels})"
            if result.latency.get("bound_ms"):  # the roofline time: how much of the machine this mode uses
                bound = f"{result.latency['bound_ms'] / result.latency_ms:.0%}"
        scored = () if row.stored_bn_accuracy is None else (f"{row.stored_bn_accuracy:.4f}",)
        table.add_row(row.name, supernet.describe(mode), f"{result.macs / 1e6:.2f}", f"{result.params:,}",
                      *scored, accuracy_text(result), latency, how, bound,
                      f"{result.energy_mj:.3f}" + (
                          "" if result.energy_measured_mj is None else f" / RAPL {result.energy_measured_mj:.3f}"),
                      mode.id)
    console.print(table)
    if device.roofline is not None:
        console.print(f"of bound: the mode's roofline time / its latency ({device.roofline.how}); the rest is "
                      "per-operator overhead and kernels below peak")
