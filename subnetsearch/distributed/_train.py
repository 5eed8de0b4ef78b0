"""`subnetsearch train --backend ray`: a family's training (WeNet's Algorithm 1), data parallel on Ray Train.

Ray Train's `TorchTrainer` starts the workers (one per CPU slot or GPU), sets up the process group
(gloo on CPUs, nccl on GPUs) and restarts the whole group from the last reported checkpoint when a
worker dies (`FailureConfig(max_failures)`). Each worker runs the family trainer's `fit` (WeNet's:
`train_wenet`), the same as a local run, as one rank of `DataParallel`, from the initial weights the
driver built: it steps on its share of every global batch (`batch_size` images per
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from subnetsearch.data import load_data
from subnetsearch.distributed._cluster import ClusterError, connect
from subnetsearch.errors import InputError
from subnetsearch.supernets import load_checkpoint
from subnetsearch.trainers import FamilyTrainer, TrainJob, TrainOutcome, get_trainer, last_accuracy

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
    """One Ray Train worker: one rank of the family trainer's `fit`."""
    import ray
    import ray.train
    import torch.distributed as dist

    from subnetsearch.supernets import build_supernet, load_weights
    from subnetsearch.trainers import DataParallel, TrainEvents

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(config["threads"])
    if config["gpus_per_worker"] > 0:
        import ray.train.torch

        device = ray.train.torch.get_device()
    else:
        device = torch.device("cpu")
    trainer: FamilyTrainer = config["trainer"]
    job: TrainJob = config["job"]
    splits = load_data(job.data)
    supernet = build_supernet(config["arch"])
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
        trainer.fit(supernet, splits, replace(job, out=local), TrainEvents(), parallel=DataParallel(rank, world, on_saved),
                    device=device)
        # last.pt too: a rerun of a finished run restores this checkpoint and trains no further epoch
        report(("supernet.pt", "last.pt", "train_log.jsonl"), {"epoch": job.epochs, "final": True})
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _check_cluster(settings: RayTrainSettings) -> None:
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 0))
    gpus = float(ray.cluster_resources().get("GPU", 0))
    if settings.gpus_per_worker > 0 and gpus < settings.gpus_per_worker * settings.workers:
        raise ClusterError(f"{settings.workers} workers x {settings.gpus_per_worker} GPUs need "
                           f"{settings.workers * settings.gpus_per_worker:g} GPUs; the cluster has {gpus:g}")
    if cpus < settings.cpus_per_worker * settings.workers:
        raise ClusterError(f"{settings.workers} workers x {settings.cpus_per_worker:g} CPUs need "
                           f"{settings.workers * settings.cpus_per_worker:g} CPUs; the cluster has {cpus:g}")


def train_on_ray(family: str | FamilyTrainer, job: TrainJob, settings: RayTrainSettings, address: str | None = None,
                 on_status: Callable[[str], None] | None = None) -> TrainOutcome:
    """Train `job` with the family's trainer (a name in `subnetsearch.trainers.TRAINERS`, or the
    trainer) on Ray Train, `settings.workers` data-parallel ranks of `job.batch_size` images each;
    write `supernet.pt` and `train_log.jsonl` to `job.out`. The driver builds the initial weights
    (the job's seed; a converted pretrained model's) and sends them to every worker. Rerun with the
    same output folder, a run that stopped continues from its last checkpoint (Ray Train restores
    its state from `out/ray`)."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = get_trainer(family) if isinstance(family, str) else family
    if not trainer.data_parallel:
        raise InputError(f"the {trainer.family} family does not train data parallel (--backend ray trains: "
                         "a family whose trainer says data_parallel = True)")
    job = trainer.resolve(replace(job, out=Path(job.out).resolve()))
    if job.options.get("accelerator", "auto") not in ("auto", "cpu") and not settings.gpus_per_worker:
        raise InputError("--backend ray places workers by --gpus-per-worker; --accelerator does not apply to it")
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    say = on_status or (lambda message: None)
    say(f"Ray: {connect(address)}")
    _check_cluster(settings)
    supernet = trainer.build(job, load_data(job.data), say)
    resources = {"CPU": settings.cpus_per_worker, **({"GPU": settings.gpus_per_worker}
                                                     if settings.gpus_per_worker > 0 else {})}
    config = {"trainer": trainer, "job": job, "arch": dict(supernet.arch), "threads": settings.threads,
              "gpus_per_worker": settings.gpus_per_worker,
              "initial": ray.put({k: v.detach().cpu() for k, v in supernet.state_dict().items()})}
    run = TorchTrainer(
        _worker, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=settings.workers, use_gpu=settings.gpus_per_worker > 0,
                                     resources_per_worker=resources),
        torch_config=TorchConfig(backend=settings.backend, timeout_s=settings.timeout_s),
        run_config=RunConfig(name="train", storage_path=str(out / RAY_FOLDER),
                             failure_config=FailureConfig(max_failures=settings.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    say(f"training on {settings.workers} Ray Train worker(s) ({settings.backend}, "
        f"{settings.cpus_per_worker:g} CPU{f' + {settings.gpus_per_worker:g} GPU' if settings.gpus_per_worker else ''}"
        f" each), batch {job.batch_size} per worker -> {out}")
    started = time.perf_counter()
    try:
        result = run.fit()
    except Exception as error:  # TrainingFailedError and friends: name the cause
        raise ClusterError(f"Ray Train run failed: {str(error).strip()[:500]}") from error
    if result.checkpoint is None or not (result.metrics or {}).get("final"):
        raise ClusterError(f"Ray Train finished without the final checkpoint (last metrics {result.metrics})")
    with result.checkpoint.as_directory() as folder:
        for name in ("supernet.pt", "train_log.jsonl"):
            shutil.copy(Path(folder) / name, out / f".{name}.tmp")
            (out / f".{name}.tmp").replace(out / name)
    history = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if line.strip()]
    say(f"Ray Train: {time.perf_counter() - started:.0f} s")
    checkpoint = out / "supernet.pt"
    return TrainOutcome(checkpoint, last_accuracy(history), history, dict(load_checkpoint(checkpoint).recipe),
                        trainer.next_command(checkpoint))
