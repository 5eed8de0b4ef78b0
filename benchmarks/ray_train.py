"""Issue 18: Algorithm 1 data parallel on Ray Train, on this 2-core host (a local Ray instance).

1. Equivalence: one Algorithm 1 step (full + smallest + 2 sampled sub-networks, distillation) of the
   shipped ResNet-20 architecture on Fashion-MNIST with 2 Ray Train workers at batch B each, against
   one process at batch 2B with the same sub-networks: relative L2 difference of all gradients and
   the worst tensor's max difference (relative to its largest gradient), with synchronized BN and
   without (plain data parallel: each worker's own batch statistics); as the floor, the
   one-process step against itself at another thread count; and synchronized BN in a process group
   of one against native BN (the step, and the full network's logits and gradients).
2. Scaling: samples per second of training (the epochs' own seconds, Ray start-up excluded and
   reported apart) with 1 and 2 CPU workers, B images per worker; parallel efficiency.
3. A worker killed once the first epoch is checkpointed: extra wall time over an uninterrupted run,
   and the steps redone (Ray Train restarts the group from the last epoch's checkpoint).

Writes results/ray_train.json. One Ray Train run at a time; repeats alternate 1 and 2 workers.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch
from _common import RESULTS, environment, write_result

from subnetsearch.data import DataSpec, load_data
from subnetsearch.distributed import RayTrainSettings, connect, train_on_ray
from subnetsearch.supernets import CIFAR_RESNET_DEFAULTS, build_supernet
from subnetsearch.trainers import TrainJob, WeNetRecipe, WeNetStep

ARCH = {**CIFAR_RESNET_DEFAULTS, "family": "wenet-cifar-resnet"}
BATCH = 64


def _step_worker(config: dict) -> None:
    import ray.train
    import torch.distributed as dist

    from subnetsearch.trainers import DataParallel, sync_batchnorm

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(1)
    splits = load_data(DataSpec())
    torch.manual_seed(0)
    supernet = build_supernet(ARCH).train()
    for tensor in supernet.state_dict().values():
        dist.broadcast(tensor, 0)
    if config["sync"]:
        sync_batchnorm(supernet, True)
    step = WeNetStep(supernet, torch.optim.SGD(supernet.parameters(), lr=0.0), seed=3,
                     reduce_gradients=DataParallel(rank, world).reduce_gradients)
    generator = torch.Generator().manual_seed(5)
    step(*next(splits.batches(splits.train, BATCH, shuffle=True, generator=generator, shard=(rank, world))))
    grads = {name: p.grad for name, p in supernet.named_parameters() if p.grad is not None}
    if rank == 0:
        with tempfile.TemporaryDirectory() as folder:
            torch.save(grads, Path(folder) / "grads.pt")
            ray.train.report({}, checkpoint=ray.train.Checkpoint.from_directory(folder))
    else:
        ray.train.report({})


def ray_gradients(sync: bool) -> dict[str, torch.Tensor]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    with tempfile.TemporaryDirectory() as storage:
        result = TorchTrainer(_step_worker, train_loop_config={"sync": sync},
                              scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                              torch_config=TorchConfig(backend="gloo"),
                              run_config=RunConfig(name="step", storage_path=storage)).fit()
        assert result.checkpoint is not None
        with result.checkpoint.as_directory() as folder:
            return torch.load(Path(folder) / "grads.pt", weights_only=True)


def one_process_gradients() -> dict[str, torch.Tensor]:
    splits = load_data(DataSpec())
    torch.manual_seed(0)
    supernet = build_supernet(ARCH).train()
    step = WeNetStep(supernet, torch.optim.SGD(supernet.parameters(), lr=0.0), seed=3)
    generator = torch.Generator().manual_seed(5)
    step(*next(splits.batches(splits.train, 2 * BATCH, shuffle=True, generator=generator)))
    return {name: p.grad.clone() for name, p in supernet.named_parameters() if p.grad is not None}


def synchronized_in_one_process(reference: dict) -> dict:
    """Synchronized BN with no data parallelism (a process group of 1, the one-process batch): the
    whole step's gradients against native BN's, and the full network's logits and plain
    cross-entropy gradients against native BN's, so a residual can be told from the parallelism."""
    import torch.distributed as dist
    import torch.nn.functional as F

    from subnetsearch.trainers import sync_batchnorm

    splits = load_data(DataSpec())
    images, labels = next(splits.batches(splits.train, 2 * BATCH, shuffle=True,
                                         generator=torch.Generator().manual_seed(5)))

    def model(sync: bool):
        torch.manual_seed(0)
        supernet = build_supernet(ARCH).train()
        sync_batchnorm(supernet, sync)
        return supernet

    with tempfile.TemporaryDirectory() as folder:
        dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=0, world_size=1)
        try:
            synced = model(True)
            step = WeNetStep(synced, torch.optim.SGD(synced.parameters(), lr=0.0), seed=3)
            step(images, labels)
            whole_step = difference({n: p.grad for n, p in synced.named_parameters() if p.grad is not None},
                                    reference)
            logits, grads = [], []
            for sync in (False, True):
                supernet = model(sync)
                supernet.set_mode(supernet.full_mode())
                out = supernet(images)
                F.cross_entropy(out, labels).backward()
                logits.append(out.detach())
                grads.append({n: p.grad for n, p in supernet.named_parameters() if p.grad is not None})
        finally:
            dist.destroy_process_group()
    return {"algorithm1_step": whole_step,
            "full_network_logits_relative_l2": float((logits[1] - logits[0]).norm() / logits[0].norm()),
            "full_network_cross_entropy_gradients": difference(grads[1], grads[0])}


def difference(ray_grads: dict, reference: dict) -> dict:
    assert set(ray_grads) == set(reference), "different parameters have gradients"
    flat_ray = torch.cat([ray_grads[k].reshape(-1) for k in sorted(reference)])
    flat_ref = torch.cat([reference[k].reshape(-1) for k in sorted(reference)])
    worst = max(float((ray_grads[k] - g).abs().max() / (g.abs().max() + 1e-12)) for k, g in reference.items())
    return {"relative_l2": float((flat_ray - flat_ref).norm() / flat_ref.norm()), "worst_tensor_relative_max": worst,
            "tensors": len(reference)}


def training_run(workers: int, out: Path, epochs: int, steps: int, kill_after_first: bool = False) -> dict:
    recipe = WeNetRecipe(epochs=epochs, batch_size=BATCH, max_steps_per_epoch=steps)
    outcome: dict = {}
    started = time.perf_counter()

    def run() -> None:
        job = TrainJob(DataSpec(), out, recipe.epochs, recipe.batch_size, max_steps_per_epoch=recipe.max_steps_per_epoch)
        outcome["result"] = train_on_ray("wenet", job, RayTrainSettings(workers=workers, max_failures=2))

    thread = threading.Thread(target=run)
    thread.start()
    killed_at = None
    if kill_after_first:
        while not list((out / "ray" / "train").glob("checkpoint_*")):
            time.sleep(0.1)
        outcome["first_checkpoint_s"] = time.perf_counter() - started
        time.sleep(2.0)  # into the second epoch
        import psutil  # a dependency of Ray

        pid = [p.pid for p in psutil.process_iter(["cmdline"])
               if (p.info["cmdline"] or [""])[0].startswith("ray::RayTrainWorker")][-1]
        os.kill(pid, signal.SIGKILL)
        killed_at = time.perf_counter() - started
    thread.join()
    wall = time.perf_counter() - started
    history = outcome["result"].history
    train_seconds = sum(record["seconds"] for record in history)
    return {"workers": workers, "wall_s": round(wall, 1), "train_s": round(train_seconds, 1),
            "startup_and_reports_s": round(wall - train_seconds, 1),
            "samples_per_s": round(epochs * steps * BATCH * workers / train_seconds, 1),
            "epoch_seconds": [record["seconds"] for record in history],
            "killed_after_s": None if killed_at is None else round(killed_at, 1),
            "killed_after_checkpoint_s": None if killed_at is None else round(killed_at - outcome["first_checkpoint_s"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--equivalence-only", action="store_true", help="Measure part 1 again and keep the "
                        "committed scaling and kill results (each part says when it was measured).")
    args = parser.parse_args()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    print(connect())
    reference = one_process_gradients()
    equivalence = {f"{'synchronized' if sync else 'plain'}_bn": difference(ray_gradients(sync), reference)
                   for sync in (True, False)}
    threads = torch.get_num_threads()  # the floor: one process against itself with other summation orders
    torch.set_num_threads(1 if threads > 1 else 2)
    equivalence["one_process_other_thread_count"] = difference(one_process_gradients(), reference)
    torch.set_num_threads(threads)
    equivalence["synchronized_bn_in_one_process"] = synchronized_in_one_process(reference)
    equivalence["measured"] = environment()["date"]
    print(equivalence, flush=True)
    if args.equivalence_only:
        kept = json.loads((RESULTS / "ray_train.json").read_text())
        kept["equivalence_2x_batch_vs_one_process"] = equivalence
        for part in ("scaling", "kill"):
            kept[part].setdefault("measured", kept["environment"]["date"])
        write_result("ray_train", {k: v for k, v in kept.items() if k not in ("benchmark", "environment")})
        return
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for repeat, workers in enumerate((1, 2, 2, 1)):
            runs.append(training_run(workers, Path(folder) / f"scale{repeat}", epochs=1, steps=20))
            print(runs[-1], flush=True)
        plain = training_run(2, Path(folder) / "plain", epochs=3, steps=10)
        killed = training_run(2, Path(folder) / "killed", epochs=3, steps=10, kill_after_first=True)
    rates = {w: statistics.median(r["samples_per_s"] for r in runs if r["workers"] == w) for w in (1, 2)}
    step_s = statistics.median(plain["epoch_seconds"]) / 10
    write_result("ray_train", {
        "arch": "shipped ResNet-20 (Fashion-MNIST, 28x28)", "batch_per_worker": BATCH,
        "equivalence_2x_batch_vs_one_process": equivalence,
        "scaling": {"runs": runs, "median_samples_per_s": rates,
                    "parallel_efficiency": round(rates[2] / (2 * rates[1]), 3)},
        "kill": {"uninterrupted": plain, "killed": killed,
                 "extra_wall_s": round(killed["wall_s"] - plain["wall_s"], 1),
                 # the steps of the epoch the kill interrupted, all redone from its start
                 "steps_redone_estimate": round(min(10.0, killed["killed_after_checkpoint_s"] / step_s), 1),
                 "checkpoint_every": "epoch (10 steps here)"},
    })


if __name__ == "__main__":
    main()
