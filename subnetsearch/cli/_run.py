"""`subnetsearch run`: the main job. Load (or train) the default supernet, evaluate a few modes on the
default device, run a short search (the predictor strategy, or the greedy DSE and TPE), and print
the stored front and the next query; every result is kept in the store."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
import typer
from rich.table import Table

from subnetsearch.cli._common import CALIBRATION_OPTION, DATA_ROOT_OPTION, EVAL_BATCHES_OPTION, console, fail
from subnetsearch.cli._devices import STORAGE_HELP, device_or_default, open_store
from subnetsearch.cli._query import accuracy_text, evaluations_table, latency_text, speedup_text
from subnetsearch.dashboards import build_report
from subnetsearch.data import DataSpec, load_data
from subnetsearch.errors import SubnetsearchError
from subnetsearch.files import check_output_path
from subnetsearch.search import (
    CachedEvaluator,
    EvaluationSettings,
    SearchSession,
    check_dse_inputs,
    evaluation_settings,
    get_strategy,
    record_device_noise,
    refine_front,
)
from subnetsearch.storage import storage_url
from subnetsearch.supernets import (
    DEFAULT_CHECKPOINT,
    DEFAULT_TRAIN_COMMAND,
    Realization,
    WeNetSupernet,
    build_supernet_of,
    load_checkpoint,
)
from subnetsearch.trainers import WeNetRecipe, train_wenet

RUN_TRIALS = {"optuna": 20, "predictor": 60}  # dse+tpe and predictor evaluate about as many distinct modes


def run_command(
    checkpoint: Path = typer.Option(DEFAULT_CHECKPOINT, help="Supernet checkpoint (default: the shipped one)."),
    train_if_missing: bool = typer.Option(True, help="Train the default supernet if the checkpoint is missing."),
    epochs: int = typer.Option(10, help="Epochs when training is needed."),
    device_name: str = typer.Option("this-host", "--device", help="A recorded device (this-host is added if missing)."),
    random_modes: int = typer.Option(2, help="Random mixed modes to add to the uniform ones."),
    seed: int = typer.Option(0, help="Seed of the random modes and of the search."),
    strategy: str = typer.Option("dse+tpe", help="Registered strategies joined by '+', run in turn: dse+tpe (the "
                                                 "greedy DSE for --dse-iterations, then --trials TPE trials; the "
                                                 "better of the two at this budget on measured latency, "
                                                 "benchmarks/results/main_job_strategy.json) | predictor (a model of "
                                                 "accuracy and latency learned from the evaluations so far picks "
                                                 "each batch of real ones) | any of `subnetsearch search --help`."),
    dse_iterations: int = typer.Option(2, help="dse+tpe: iterations of the greedy DSE (0: skip it)."),
    delta: float = typer.Option(0.90, help="dse+tpe: DSE accuracy threshold (validation)."),
    trials: int | None = typer.Option(None, help="predictor: distinct modes evaluated [60]; tpe (optuna): trials "
                                                 "[20]; any strategy with a trial budget (0: skip it)."),
    report: Path = typer.Option(Path("subnetsearch-report.html"), help="Where to write the HTML report."),
    data_root: str | None = DATA_ROOT_OPTION,
    calibration_batches: int = CALIBRATION_OPTION,
    eval_batches: int | None = EVAL_BATCHES_OPTION,
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
) -> None:
    """The main job: load (or train) the default supernet, evaluate a few modes on a device, run a
    short search on accuracy and latency, and print the stored front and the query to type next."""
    # every option is checked before the store is opened or anything is computed
    for option, value, low in (("--epochs", epochs, 1), ("--random-modes", random_modes, 0),
                               ("--dse-iterations", dse_iterations, 0), ("--trials", trials or 0, 0)):
        if value < low:
            fail(f"{option} must be >= {low}, got {value}")
    try:
        check_dse_inputs(delta, "latency")
        plan = _plan(strategy, dse_iterations, delta, trials, seed)
        checked = [get_strategy(name).options(values) for name, values in plan]
        settings = evaluation_settings(calibration_batches, eval_batches)
        check_output_path(report)
    except SubnetsearchError as error:
        fail(str(error))
    if checkpoint.exists():  # a checkpoint this host cannot serve is named before the store or the device is read
        try:
            load_checkpoint(checkpoint)
        except SubnetsearchError as error:
            fail(str(error))
    elif not train_if_missing:
        fail(f"checkpoint not found: {checkpoint}")
    store = open_store(storage)
    device = device_or_default(store, device_name)
    if device.location != "host":
        fail(f"device {device.name!r} is at location {device.location!r}: the main job measures latency on this "
             "host; search it with `subnetsearch search --device NAME --latency predicted`")
    if not checkpoint.exists():
        console.print(f"{checkpoint} not found: training the default supernet ({epochs} epochs), "
                      f"as `{DEFAULT_TRAIN_COMMAND}` does")
        torch.manual_seed(seed)  # the initial weights too, as `train --seed` does
        train_wenet(build_supernet_of(WeNetSupernet, {"family": "wenet-cifar-resnet"}), load_data(DataSpec()),
                    WeNetRecipe(epochs=epochs, seed=seed), checkpoint.parent, DataSpec().to_dict())
    try:
        session = SearchSession(store, storage_url(storage), device, checkpoint, settings, data_root=data_root)
    except SubnetsearchError as error:
        fail(str(error))
    state, supernet, splits = session.checkpoint, session.supernet, session.splits
    torch.set_num_threads(device.protocol.threads)
    console.print(f"supernet {checkpoint} (hash {state.hash[:12]}), {len(supernet.space)} switchable layers, "
                  f"data {splits.name}: selection on {len(splits.val)} validation images")
    console.print(f"device {device.name}: {device.description}; storage {store.url}")
    noise = store.get_device_noise(device.name)
    if noise is None:  # once per device: how far apart two modes must be for this host to tell them apart
        noise = record_device_noise(store, device, supernet)
    console.print(f"latency noise on {device.name}: {noise.describe()}")
    _mode_table(session, random_modes, seed)
    for (name, values), options in zip(plan, checked, strict=True):
        console.print(f"{name} ({get_strategy(name).summary}) on accuracy and measured latency: "
                      + ", ".join(f"{k} {v}" for k, v in values.items() if k != "objectives"))
        outcome = get_strategy(name).run(session, options, lambda line: console.print(f"  {line}"))
        for line in outcome.lines:
            console.print(f"  {line}")
    refined = refine_front(session.evaluator, store, FRONT_WINDOWS)
    if refined:
        console.print(f"the front's {refined} graphs measured in {FRONT_WINDOWS} more paired windows each "
                      "(windows are the samples a latency interval rests on)")
    front = store.get_front(device.name, "accuracy,latency", state.hash)
    console.print(evaluations_table(f"stored Pareto front (accuracy, latency) of this supernet on {device.name}: "
                                     f"{len(front)} modes, merged across all searches", front))
    budget = _suggested_budget(front)
    console.print(f"{session.evaluator.misses} modes evaluated now, {session.evaluator.hits} reused from stored results "
                  "(a mode is never evaluated twice for the same supernet, device and settings)")
    where = "" if storage is None else f" --storage '{store.url}'"
    path, _ = build_report(store, storage_url(storage), report)
    console.print(f"report: {path.resolve()} (open it in a browser); the same data in the Optuna dashboard:\n"
                  f"  subnetsearch dashboard{where}")
    console.print("next, ask for the best mode under a latency budget (and export it):\n"
                  f"  subnetsearch best --device {device.name} --max-latency-ms {budget:.3f}{where}")


FRONT_WINDOWS = 4  # more windows per front graph: 5 in all, an interval over 5 window medians (93.75 %)


def _mode_table(session: SearchSession, random_modes: int, seed: int) -> None:
    supernet, device = session.supernet, session.device
    generator = torch.Generator().manual_seed(seed)
    modes = list(supernet.named_modes().items())  # full, the family's named modes, smallest
    if len(supernet.space) > 1:  # random mixes where modes combine several knobs
        modes += [(f"random {i + 1}", supernet.random_mode(generator)) for i in range(random_modes)]
    trained_bn = EvaluationSettings(calibration_batches=0, max_eval_batches=session.settings.max_eval_batches)
    stored_bn = CachedEvaluator(supernet, session.checkpoint.hash, session.splits, device, session.store, trained_bn,
                                measure=False)
    p = device.protocol
    table = Table(title=f"operating modes on {device.name} - latency: {p.runtime}, batch {p.batch_size}, "
                        f"{p.threads} threads, paired against the full network (ratio x its pooled median, 95 % "
                        "interval); energy: Eq. (6) model")
    layout = supernet.mode_layout()
    for column in ("mode", layout, "MMACs", "params", "val acc (stored BN)", "val acc (calibrated)",
                   "latency ms (vs full, grouped layers as)", "latency: how", "of bound", "energy mJ (model)", "id"):
        table.add_column(column, justify="left" if column in ("mode", layout, "id") else "right")
    full_latency = None
    for name, mode in modes:
        result = session.evaluator.evaluate(mode)
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
        table.add_row(name, supernet.describe(mode), f"{result.macs / 1e6:.2f}", f"{result.params:,}",
                      f"{stored_bn.evaluate(mode).accuracy:.4f}", accuracy_text(result), latency, how, bound,
                      f"{result.energy_mj:.3f}" + (
                          "" if result.energy_measured_mj is None else f" / RAPL {result.energy_measured_mj:.3f}"),
                      mode.id)
    console.print(table)
    if device.roofline is not None:
        console.print(f"of bound: the mode's roofline time / its latency ({device.roofline.how}); the rest is "
                      "per-operator overhead and kernels below peak")


def _plan(strategy: str, dse_iterations: int, delta: float, trials: int | None, seed: int
          ) -> list[tuple[str, dict[str, object]]]:
    """The main job's searches: registered strategies joined by '+' (`tpe` is Optuna's TPE sampler),
    each on accuracy and measured latency with the main job's budget (the options its Options take)."""
    plan: list[tuple[str, dict[str, object]]] = []
    for part in strategy.split("+"):
        name = "optuna" if part == "tpe" else part
        values: dict[str, object] = {"sampler": "tpe"} if part == "tpe" else {}
        fields = {f.name for f in dataclasses.fields(get_strategy(name).Options)}
        values = {**values, "objectives": ("accuracy", "latency")}
        budget = RUN_TRIALS.get(name, 20) if trials is None else trials
        if "trials" in fields:
            if budget == 0:
                continue
            values["trials"] = budget
        if "max_iterations" in fields:
            if dse_iterations == 0:
                continue
            values.update(max_iterations=dse_iterations, delta=delta)
        if "seed" in fields:
            values["seed"] = seed
        plan.append((name, values))
    return plan


def _suggested_budget(front: list) -> float:
    """A latency budget that makes the next query interesting: between the front's extremes."""
    if not front:
        return 1.0
    # the upper end of each interval: what `best` compares a latency budget with
    latencies = sorted(((e.latency or {}).get("interval_ms") or [e.latency_ms, e.latency_ms])[1] for e in front)
    return math.ceil(latencies[len(latencies) // 2] * 1000) / 1000  # printed with 3 decimals: never below it
