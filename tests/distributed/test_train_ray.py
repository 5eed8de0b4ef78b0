"""`subnetsearch train --backend ray` on the real two-node test cluster: two Ray Train workers (one per
node, gloo) train a supernet to a checkpoint `search` takes, and a run whose worker is killed mid-run
is restarted by Ray Train from its last epoch and ends with exactly the checkpoint of the same
data-parallel training run without Ray and without a kill (no step lost or repeated)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from subnetsearch.data import DataSpec, load_data
from subnetsearch.distributed import ClusterError, RayTrainSettings, train_on_ray
from subnetsearch.supernets import CIFAR_RESNET_DEFAULTS, build_supernet, load_checkpoint
from subnetsearch.trainers import DataParallel, TrainJob, WeNetRecipe, train_wenet
from tests.conftest import TINY_ARCH
from tests.distributed.conftest import processes_titled

pytestmark = pytest.mark.ray  # the full tier (pytest --full); see pyproject.toml

EPOCHS = 3
ARGS = ["--data", "synthetic", "--depth", "8", "--widths", "8,16,16", "--groups", "1,2,4,8", "--batch-size", "16",
        "--epochs", str(EPOCHS), "--max-steps-per-epoch", "4", "--threads", "1"]
ARCH = {**CIFAR_RESNET_DEFAULTS, **TINY_ARCH}  # what `train` ARGS builds
RECIPE = WeNetRecipe(epochs=EPOCHS, batch_size=16, max_steps_per_epoch=4)


def JOB(out: Path) -> TrainJob:  # noqa: N802 - what `train` ARGS asks for
    return TrainJob(DataSpec(name="synthetic"), out, EPOCHS, 16, max_steps_per_epoch=4, depth=8, widths=(8, 16, 16))


def _rank(rank: int, world: int, init: str, out: str) -> None:
    """One rank of the same data-parallel training without Ray (gloo over a file rendezvous)."""
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        torch.manual_seed(RECIPE.seed)
        supernet = build_supernet(ARCH)
        for tensor in supernet.state_dict().values():
            dist.broadcast(tensor, 0)
        train_wenet(supernet, load_data(DataSpec(name="synthetic")), RECIPE, Path(out) / f"rank{rank}",
                    DataSpec(name="synthetic").to_dict(), parallel=DataParallel(rank, world))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def without_ray(tmp_path_factory) -> Path:
    """The checkpoint two plain torch.distributed processes train: what Ray Train must reproduce."""
    folder = tmp_path_factory.mktemp("two-processes")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.start_processes(_rank, args=(2, f"file://{folder}/rendezvous", str(folder)), nprocs=2, join=True,
                       start_method="spawn")
    return folder / "rank0" / "supernet.pt"


def test_a_ray_train_run_survives_a_killed_worker_and_ends_with_the_uninterrupted_checkpoint(
        ray_cluster, without_ray, tmp_path) -> None:
    """The CLI on the two-node cluster (one worker per node); once the first epoch is checkpointed one
    worker is killed; Ray Train restarts the group from that epoch and the run finishes with exactly
    the checkpoint of an uninterrupted data-parallel run: no step lost or repeated."""
    cluster, _ = ray_cluster
    out = tmp_path / "run"
    command = [sys.executable, "-m", "subnetsearch", "train", *ARGS, "--backend", "ray", "--workers", "2",
               "--address", cluster.address, "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "COLUMNS": "200"})
    try:
        deadline = time.monotonic() + 300
        while not list((out / "ray" / "train").glob("checkpoint_*")):  # the first epoch is in
            assert time.monotonic() < deadline and process.poll() is None, "no first checkpoint"
            time.sleep(0.2)
        workers = processes_titled("ray::RayTrainWorker")
        assert workers, "no Ray Train worker process found"
        os.kill(workers[-1], signal.SIGKILL)
        output, _ = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "2 Ray Train worker(s) (gloo, 1 CPU each), batch 16 per worker" in output
    resumed = load_checkpoint(out / "supernet.pt")
    assert [r["epoch"] for r in resumed.metrics["history"]] == list(range(1, EPOCHS + 1))
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log] == list(range(1, EPOCHS + 1))
    reference = load_checkpoint(without_ray)
    assert resumed.arch == reference.arch and resumed.recipe == reference.recipe
    assert resumed.hash == reference.hash  # the same weights, optimizer path and log
    search = subprocess.run([sys.executable, "-m", "subnetsearch", "search", "--checkpoint", str(out / "supernet.pt"),
                             "--strategy", "optuna", "--sampler", "random", "--trials", "2", "--objectives",
                             "accuracy,macs", "--storage", f"sqlite:///{tmp_path / 'store.db'}"],
                            capture_output=True, text=True, timeout=300)
    assert search.returncode == 0, search.stdout + search.stderr


def test_ray_train_settings_and_a_too_small_cluster_are_refused(ray_cluster, tmp_path) -> None:
    with pytest.raises(ValueError, match="--workers must be >= 1"):
        RayTrainSettings(workers=0)
    with pytest.raises(ClusterError, match="3 workers x 1 CPUs need 3 CPUs; the cluster has 2"):
        train_on_ray("wenet", JOB(tmp_path), RayTrainSettings(workers=3))
    with pytest.raises(ClusterError, match="need 2 GPUs; the cluster has 0"):
        train_on_ray("wenet", JOB(tmp_path), RayTrainSettings(workers=2, gpus_per_worker=1))
    with pytest.raises(ValueError, match="the lasso family does not train data parallel"):
        train_on_ray("lasso", JOB(tmp_path), RayTrainSettings(workers=1))
