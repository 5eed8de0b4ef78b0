"""`subnetsearch search`: any registered search strategy (greedy DSE, Optuna samplers, the predictor
strategy, a plugin's) over a supernet's modes on one device; every evaluation lands in the store
and in an Optuna study."""

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
    check_backend,
    console,
    fail,
    fidelity_of,
)
from subnetsearch.cli._devices import STORAGE_HELP, device_or_default, open_store
from subnetsearch.distributed import ADDRESS_HELP, RayBackend
from subnetsearch.errors import InputError, SubnetsearchError
from subnetsearch.search import (
    COSTS,
    PREDICTOR_INITS,
    SAMPLERS,
    STRATEGIES,
    Interrupted,
    SearchSession,
    evaluation_settings,
    full_fidelity_front,
    get_strategy,
)
from subnetsearch.storage import storage_url
from subnetsearch.supernets import DEFAULT_CHECKPOINT
from subnetsearch.trainers import Accelerator


def _strategies_help() -> str:
    return "; ".join(f"{name}: {strategy.summary}" for name, strategy in STRATEGIES.items())


def search_command(
    ctx: typer.Context,
    strategy: str = typer.Option("dse", help=f"A registered strategy ({_strategies_help()}). Its options: the "
                                             "named ones below that say which strategy they are for, or --set."),
    set_options: list[str] = typer.Option([], "--set", help="KEY=VALUE: an option of the strategy by its name "
                                                            "(repeat for several), e.g. --set init_size=8."),
    checkpoint: Path = typer.Option(DEFAULT_CHECKPOINT, help="Supernet checkpoint."),
    device_name: str = typer.Option("this-host", "--device", help="A recorded device (this-host is added if missing)."),
    delta: float = typer.Option(0.90, help="DSE: accuracy threshold (validation)."),
    cost: str = typer.Option("latency", help=f"DSE cost t: {', '.join(COSTS)}."),
    max_iterations: int | None = typer.Option(None, help="DSE: stop after this many iterations."),
    latency: str = typer.Option("measured", help="measured (on this host) | predicted (the device's lookup table, "
                                                 "see `subnetsearch devices table`)."),
    objectives: str = typer.Option("accuracy,latency", help="Study objectives: accuracy, latency, macs, energy."),
    sampler: str = typer.Option("tpe", help=f"Optuna sampler: {', '.join(SAMPLERS)}."),
    trials: int = typer.Option(30, help="Optuna: number of trials; predictor: distinct modes evaluated in all."),
    init: str = typer.Option("random", help=f"Predictor: initial design, {' | '.join(PREDICTOR_INITS)} (random modes "
                                            "with full and smallest, or Algorithm 2's first evaluations)."),
    init_size: int | None = typer.Option(None, help="Predictor: evaluations of the initial design (default "
                                                    "min(20, trials))."),
    batch: int = typer.Option(10, help="Predictor: real evaluations per round (fanned out with --backend ray)."),
    min_accuracy: float | None = typer.Option(None, help="Optuna / predictor constraint: accuracy >= this."),
    max_latency_ms: float | None = typer.Option(None, help="Optuna / predictor constraint: latency <= this."),
    seed: int = typer.Option(0),
    name: str | None = typer.Option(None, help="Search name (default: from supernet, device, strategy and settings). "
                                               "Rerunning with the same name resumes the search."),
    data_root: str | None = DATA_ROOT_OPTION,
    calibration_batches: int = CALIBRATION_OPTION,
    eval_batches: int | None = EVAL_BATCHES_OPTION,
    fidelity: str = FIDELITY_OPTION,
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
    backend: str = typer.Option("local", help="local (this process) | ray (DSE candidates on Ray actors, Optuna "
                                              "trials as Ray Tune trials, latency on the device's Ray node)."),
    address: str | None = typer.Option(None, help=ADDRESS_HELP),
    workers: int | None = typer.Option(None, help="Ray: DSE evaluation actors (default: the cluster's CPUs)."),
    accelerator: str = typer.Option("auto", help="Where BN calibration and accuracy run: auto (a CUDA GPU when "
                                                 "there is one) | cpu | cuda | cuda:N. Latency is measured on the "
                                                 "device's runtime either way."),
) -> None:
    """Search the operating modes of a supernet on a device with a registered strategy."""
    # every option is checked before the store is opened (nothing is written for a bad command)
    try:
        chosen = get_strategy(strategy)
        values = {key: value for key, value in {
            "objectives": objectives, "delta": delta, "cost": cost, "max_iterations": max_iterations,
            "sampler": sampler, "trials": trials, "init": init, "init_size": init_size, "batch": batch,
            "min_accuracy": min_accuracy, "max_latency_ms": max_latency_ms, "seed": seed}.items()
            if _given(ctx, key)}
        values.update(parse_settings(set_options))
        options = chosen.options(values)
        settings = evaluation_settings(calibration_batches, eval_batches)
        first_look = fidelity_of(fidelity)
        Accelerator.resolve(accelerator)
    except SubnetsearchError as error:
        fail(str(error))
    if latency not in ("measured", "predicted"):
        fail(f"--latency must be measured or predicted, got {latency!r}")
    check_backend(backend, address)
    if workers is not None and workers < 1:
        fail(f"--workers must be >= 1, got {workers}")
    store = open_store(storage)
    device = device_or_default(store, device_name)
    torch.set_num_threads(device.protocol.threads)
    ray_backend = RayBackend(address, workers) if backend == "ray" else None
    try:
        session = SearchSession(store, storage_url(storage), device, checkpoint,
                                predicted_latency=latency == "predicted", backend=ray_backend,
                                data_root=data_root, settings=settings, accelerator=accelerator, fidelity=first_look)
    except SubnetsearchError as error:
        fail(str(error))
    if ray_backend is not None:
        where = ("predicted from the lookup table" if session.latency_table is not None else
                 f"measured on the node with resource {device.ray_resource}" if session.evaluator.measure else
                 "not measured (no node advertises " + device.ray_resource + ")")
        console.print(f"backend: {ray_backend.description}; latency {where}")
    try:
        outcome = chosen.run(session, options, console.print, name=name)
    except SubnetsearchError as error:
        fail(str(error))
    except (KeyboardInterrupt, Interrupted) as error:
        fail(f"search {error or 'interrupted (Ctrl-C)'}; recorded as interrupted: rerun the same command "
             "(same --name) to resume it", code=130)
    finally:
        if ray_backend is not None:
            ray_backend.close()
    for line in outcome.lines:
        console.print(line)
    study, names = outcome.study, list(options.objectives)
    if outcome.failure:
        fail(outcome.failure, code=1)
    front = full_fidelity_front(study)  # feasible full-fidelity trials only
    table = Table(title=f"Pareto front ({', '.join(names)}) of the study's {len(study.trials)} trials "
                        f"({len(outcome.evaluations)} new)")
    for column in ("trial", *names, "mode id"):
        table.add_column(column, justify="right")
    for trial in sorted(front, key=lambda t: t.values[0]):
        table.add_row(str(trial.number), *(f"{v:.4g}" for v in trial.values), trial.user_attrs["mode_id"])
    if front:
        console.print(table)
    else:
        console.print("[bold]no trial satisfied the constraints[/]; the stored front is shown by "
                      f"`subnetsearch front --device {device.name}`")
    console.print(f"search and study {study.study_name!r} in {store.url}; {session.evaluator.misses} modes "
                  f"evaluated now, {session.evaluator.hits} reused")
    console.print(f"next: subnetsearch best --device {device.name} --max-latency-ms <budget>")


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether an option was given (on the command line or by its environment variable), not defaulted.
    By the source's name: typer may bring its own copy of click's ParameterSource enum."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def parse_settings(pairs: list[str]) -> dict[str, str]:
    """`--set key=value` options: the strategy's own option names (see `--strategy` in --help)."""
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set takes KEY=VALUE, got {pair!r}")
        parsed[key.strip().replace("-", "_")] = value.strip()
    return parsed
