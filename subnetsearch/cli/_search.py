"""`subnetsearch search`: greedy DSE (WeNet Algorithm 2) or Optuna multi-objective search of a
supernet's modes on one device; every evaluation lands in the store and in an Optuna study."""

from __future__ import annotations

from pathlib import Path

import torch
import typer
from rich.table import Table

from subnetsearch.cli._common import CALIBRATION_OPTION, DATA_ROOT_OPTION, EVAL_BATCHES_OPTION, check_backend, console, fail
from subnetsearch.cli._devices import STORAGE_HELP, device_or_default, open_store
from subnetsearch.data import DataError
from subnetsearch.distributed import ADDRESS_HELP, ClusterError, RayBackend
from subnetsearch.search import (
    COSTS,
    PREDICTOR_INITS,
    SAMPLERS,
    Constraints,
    DSEStep,
    Interrupted,
    PredictorSettings,
    SearchSession,
    check_dse_inputs,
    check_objectives,
    evaluation_settings,
    make_sampler,
    predictor_rounds,
)
from subnetsearch.storage import StorageError, storage_url
from subnetsearch.supernets import DEFAULT_CHECKPOINT, CheckpointError
from subnetsearch.trainers import Accelerator


def search_command(
    strategy: str = typer.Option("dse", help="dse (Algorithm 2) | optuna | predictor (a learned accuracy model "
                                             "and NSGA-II on predictions pick each batch of real evaluations)"),
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
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
    backend: str = typer.Option("local", help="local (this process) | ray (DSE candidates on Ray actors, Optuna "
                                              "trials as Ray Tune trials, latency on the device's Ray node)."),
    address: str | None = typer.Option(None, help=ADDRESS_HELP),
    workers: int | None = typer.Option(None, help="Ray: DSE evaluation actors (default: the cluster's CPUs)."),
    accelerator: str = typer.Option("auto", help="Where BN calibration and accuracy run: auto (a CUDA GPU when "
                                                 "there is one) | cpu | cuda | cuda:N. Latency is measured on the "
                                                 "device's runtime either way."),
) -> None:
    """Search the operating modes of a supernet on a device."""
    # every option is checked before the store is opened (nothing is written for a bad command)
    if strategy not in ("dse", "optuna", "predictor"):
        fail(f"unknown strategy {strategy!r}; use dse, optuna or predictor")
    try:
        names = check_objectives([o.strip() for o in objectives.split(",") if o.strip()])
        if strategy == "dse":
            check_dse_inputs(delta, cost)
            if max_iterations is not None and max_iterations < 1:
                raise ValueError(f"--max-iterations must be >= 1, got {max_iterations}")
        else:
            if strategy == "optuna":
                make_sampler(sampler, seed)
            else:
                PredictorSettings(budget=max(trials, 1), init=init, batch=batch, seed=seed,
                                  init_size=min(20, max(trials, 1)) if init_size is None else init_size)
                if max_latency_ms is not None and "latency" not in names:
                    raise ValueError("--max-latency-ms needs latency among --objectives (the predictor predicts it)")
            constraints = Constraints(min_accuracy, max_latency_ms)
            if trials < 1:
                raise ValueError(f"--trials must be >= 1, got {trials}")
        settings = evaluation_settings(calibration_batches, eval_batches)
        Accelerator.resolve(accelerator)
    except ValueError as error:
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
                                data_root=data_root, settings=settings, accelerator=accelerator)
    except (CheckpointError, DataError, ValueError, ClusterError) as error:
        fail(str(error))
    if ray_backend is not None:
        where = ("predicted from the lookup table" if session.latency_table is not None else
                 f"measured on the node with resource {device.ray_resource}" if session.evaluator.measure else
                 "not measured (no node advertises " + device.ray_resource + ")")
        console.print(f"backend: {ray_backend.description}; latency {where}")
    try:
        if strategy == "dse":
            def show(step: DSEStep) -> None:
                layer = step.changed_layer or "(full network)"
                console.print(f"iteration {step.iteration}: {layer:>24} -> acc {step.accuracy:.4f}, "
                              f"{cost} {step.cost:.4g}, t/acc {step.loss:.4g}")

            result, study = session.dse(delta, cost, names, max_iterations, on_step=show, name=name)
            chosen = result.chosen
            console.print(f"DSE: {len(result.trajectory)} steps, {result.evaluations} evaluations")
            if chosen is None:
                fail(f"even the full network is below delta = {delta}", code=1)
            console.print(f"chosen mode {chosen.mode.id}: accuracy {chosen.accuracy:.4f}, {cost} {chosen.cost:.4g}; "
                          f"{session.supernet.mode_layout()} {session.supernet.describe(chosen.mode)}")
        else:
            if strategy == "optuna":
                results, study = session.optuna(sampler, trials, names, constraints, seed, name=name)
            else:
                results, study = session.predictor(trials, names, constraints, seed, init, init_size, batch, name=name)
                rounds = predictor_rounds(study, names)
                for entry in rounds:
                    taus = ", ".join(f"{k} {'-' if v is None else f'{v:.2f}'}"
                                     for k, v in entry.get("kendall_tau", {}).items())
                    console.print(f"round {entry['round']}: fitted on {entry.get('trained_on', '?')}, evaluated "
                                  f"{entry.get('evaluated', 0)}; held-out Kendall tau {taus or '-'}; planning "
                                  f"{entry.get('fit_s', 0) + entry.get('evolve_s', 0) + entry.get('select_s', 0):.1f} s")
            front = study.best_trials  # feasible trials only, when there are constraints
            table = Table(title=f"Pareto front ({', '.join(names)}) of {len(study.trials)} trials "
                                f"({len(results)} new)")
            for column in ("trial", *names, "mode id"):
                table.add_column(column, justify="right")
            for trial in sorted(front, key=lambda t: t.values[0]):
                table.add_row(str(trial.number), *(f"{v:.4g}" for v in trial.values), trial.user_attrs["mode_id"])
            if front:
                console.print(table)
            else:
                console.print("[bold]no trial satisfied the constraints[/] "
                              f"(accuracy >= {min_accuracy}, latency <= {max_latency_ms} ms); the stored front "
                              f"is shown by `subnetsearch front --device {device.name}`")
    except (ValueError, StorageError, ClusterError) as error:
        fail(str(error))
    except (KeyboardInterrupt, Interrupted) as error:
        fail(f"search {error or 'interrupted (Ctrl-C)'}; recorded as interrupted: rerun the same command "
             "(same --name) to resume it", code=130)
    finally:
        if ray_backend is not None:
            ray_backend.close()
    console.print(f"search and study {study.study_name!r} in {store.url}; {session.evaluator.misses} modes "
                  f"evaluated now, {session.evaluator.hits} reused")
    console.print(f"next: subnetsearch best --device {device.name} --max-latency-ms <budget>")
