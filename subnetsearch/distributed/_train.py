"""`subnetsearch train --backend ray`: WeNet's Algorithm 1, data parallel on Ray Train.

Ray Train's `TorchTrainer` starts the workers (one per CPU slot or GPU), sets up the process group
(gloo on CPUs, nccl on GPUs) and restarts the whole group from the last reported checkpoint when a
worker dies (`FailureConfig(max_failures)`). Each worker runs the same `train_wenet` as a local run,
as one rank of `DataParallel`: it steps on its share of every global batch (`batch_size` images per
worker), every rank samples the same sub-networks (seeded alike), the gradients are averaged once per
step, and rank 0 writes `last.pt` and the log, which are reported to Ray Train as the epoch's
checkpoint. The final `supernet.pt` is the format of a local run's and is copied to the output
folder, ready for `subnetsearch search`.

A resumed run continues from the last finished epoch with that epoch's weights, optimizer, batch
order and sampling state, so it ends where an uninterrupted run ends (the epoch a worker died in is
redone from its start, not repeated on top).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from subnetsearch.distributed._cluster import ClusterError, connect
from subnetsearch.errors import InputError

RAY_FOLDER = "ray"  # under the output folder: Ray Train's storage (its checkpoints, its run state)


@dataclass(frozen=True)
class RayTrainSettings:
    """How many workers, on what: `workers` ranks with `cpus_per_worker` CPUs and `gpus_per_worker`
    GPUs each (GPUs: nccl and the GPU's device; else gloo on CPUs), `threads` torch threads per
    worker, and up to `max_failures` restarts of the group after a worker dies."""

    workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    threads: int = 1
    max_failures: int = 2
    timeout_s: int = 600  # a collective that waits longer than this fails instead of hanging

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise InputError(f"--workers must be >= 1, got {self.workers}")
        if self.cpus_per_worker <= 0:
            raise InputError(f"CPUs per worker must be > 0, got {self.cpus_per_worker}")
        if self.gpus_per_worker < 0:
            raise InputError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker}")
        if self.threads < 1:
            raise InputError(f"--threads must be >= 1, got {self.threads}")
        if self.max_failures < 0:
            raise InputError(f"--max-failures must be >= 0, got {self.max_failures}")

    @property
    def backend(self) -> str:
        return "nccl" if self.gpus_per_worker > 0 else "gloo"


def _worker(config: dict) -> None:
    """One Ray Train worker: one rank of `train_wenet`."""
    import ray
    import ray.train
    import torch.distributed as dist

    from subnetsearch.data import DataSpec, load_data
    from subnetsearch.supernets import WeNetSupernet, build_supernet_of, load_weights
    from subnetsearch.trainers import Accelerator, DataParallel, WeNetRecipe, train_wenet

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(config["threads"])
    recipe = WeNetRecipe(**config["recipe"])
    if config["gpus_per_worker"] > 0:
        import ray.train.torch

        accelerator = Accelerator(ray.train.torch.get_device(), recipe.precision, recipe.channels_last)
    else:
        accelerator = Accelerator(torch.device("cpu"), recipe.precision, recipe.channels_last)
    splits = load_data(DataSpec.from_dict(config["data"]))
    torch.manual_seed(recipe.seed)
    supernet = build_supernet_of(WeNetSupernet, config["arch"])
    if config["initial"] is not None:
        load_weights(supernet, ray.get(config["initial"]), "the initial weights")
    for tensor in supernet.state_dict().values():  # every rank starts from rank 0's weights, as DDP does
        dist.broadcast(tensor, 0)
    local = Path(tempfile.mkdtemp(prefix=f"subnetsearch-rank{rank}-"))
    resumed = ray.train.get_checkpoint()
    if resumed is not None:
        with resumed.as_directory() as folder:
            for name in ("last.pt", "train_log.jsonl"):
                if (Path(folder) / name).exists():
                    shutil.copy(Path(folder) / name, local / name)

    def report(files: tuple[str, ...], metrics: Mapping[str, Any]) -> None:
        if rank != 0:
            ray.train.report(dict(metrics))
            return
        with tempfile.TemporaryDirectory() as staging:
            for name in files:
                shutil.copy(local / name, Path(staging) / name)
            ray.train.report(dict(metrics), checkpoint=ray.train.Checkpoint.from_directory(staging))

    def on_saved(path: Path, record: dict) -> None:
        report(("last.pt", "train_log.jsonl"), {"epoch": record["epoch"], "final": False,
                                                 **{k: v for k, v in record.items() if isinstance(v, float)}})

    try:
        train_wenet(supernet, splits, recipe, local, config["data"], accelerator=accelerator,
                    parallel=DataParallel(rank, world, on_saved))
        # last.pt too: a rerun of a finished run restores this checkpoint and trains no further epoch
        report(("supernet.pt", "last.pt", "train_log.jsonl"), {"epoch": recipe.epochs, "final": True})
    finally:
        shutil.rmtree(local, ignore_errors=True)


def train_wenet_ray(arch: Mapping[str, Any], data: Mapping[str, Any], recipe: Any, out: str | Path,
                    settings: RayTrainSettings, address: str | None = None,
                    initial: Mapping[str, torch.Tensor] | None = None,
                    on_status: Callable[[str], None] | None = None) -> dict:
    """Train a WeNet supernet of `arch` on `data` with `recipe` (a WeNetRecipe) on Ray Train; write
    `supernet.pt` and `train_log.jsonl` to `out` and return the final metrics. `initial`: weights to
    start from (a converted pretrained model's), sent to every worker. Rerun with the same output
    folder, a run that stopped continues from its last checkpoint (Ray Train restores its state
    from `out/ray`)."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    say = on_status or (lambda message: None)
    say(f"Ray: {connect(address)}")
    cpus = float(ray.cluster_resources().get("CPU", 0))
    gpus = float(ray.cluster_resources().get("GPU", 0))
    if settings.gpus_per_worker > 0 and gpus < settings.gpus_per_worker * settings.workers:
        raise ClusterError(f"{settings.workers} workers x {settings.gpus_per_worker} GPUs need "
                           f"{settings.workers * settings.gpus_per_worker:g} GPUs; the cluster has {gpus:g}")
    if cpus < settings.cpus_per_worker * settings.workers:
        raise ClusterError(f"{settings.workers} workers x {settings.cpus_per_worker:g} CPUs need "
                           f"{settings.workers * settings.cpus_per_worker:g} CPUs; the cluster has {cpus:g}")
    resources = {"CPU": settings.cpus_per_worker, **({"GPU": settings.gpus_per_worker}
                                                     if settings.gpus_per_worker > 0 else {})}
    config = {"arch": dict(arch), "data": dict(data), "recipe": asdict(recipe), "threads": settings.threads,
              "gpus_per_worker": settings.gpus_per_worker,
              "initial": ray.put({k: v.detach().cpu() for k, v in initial.items()}) if initial is not None else None}
    trainer = TorchTrainer(
        _worker, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=settings.workers, use_gpu=settings.gpus_per_worker > 0,
                                     resources_per_worker=resources),
        torch_config=TorchConfig(backend=settings.backend, timeout_s=settings.timeout_s),
        run_config=RunConfig(name="train", storage_path=str(out / RAY_FOLDER),
                             failure_config=FailureConfig(max_failures=settings.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    say(f"training on {settings.workers} Ray Train worker(s) ({settings.backend}, "
        f"{settings.cpus_per_worker:g} CPU{f' + {settings.gpus_per_worker:g} GPU' if settings.gpus_per_worker else ''}"
        f" each), batch {recipe.batch_size} per worker -> {out}")
    started = time.perf_counter()
    try:
        result = trainer.fit()
    except Exception as error:  # TrainingFailedError and friends: name the cause
        raise ClusterError(f"Ray Train run failed: {str(error).strip()[:500]}") from error
    if result.checkpoint is None or not (result.metrics or {}).get("final"):
        raise ClusterError(f"Ray Train finished without the final checkpoint (last metrics {result.metrics})")
    with result.checkpoint.as_directory() as folder:
        for name in ("supernet.pt", "train_log.jsonl"):
            shutil.copy(Path(folder) / name, out / f".{name}.tmp")
            (out / f".{name}.tmp").replace(out / name)
    history = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if line.strip()]
    return {"epochs": recipe.epochs, "history": history, "seconds": round(time.perf_counter() - started, 1)}
