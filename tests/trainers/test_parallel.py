"""Data-parallel Algorithm 1 with real processes (torch.distributed, gloo): ranks sample the same
sub-networks, the averaged gradients equal one process's on the whole batch when batch norm is
synchronized (and differ without it: each rank's own batch statistics), and ranks that disagree
fail clearly instead of averaging gradients of different sub-networks."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from subnetsearch.data import synthetic
from subnetsearch.supernets import build_supernet
from subnetsearch.trainers import DataParallel, SyncedBatchNorm2d, WeNetStep, sync_batchnorm
from tests.conftest import TINY_ARCH

BATCH = 8  # per rank
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the spawned ranks talk over loopback only


def _batch(splits, world: int, rank: int | None):
    """The first global batch (2 x BATCH images), or this rank's share of it."""
    generator = torch.Generator().manual_seed(5)
    shard = (0, 1) if rank is None else (rank, world)
    size = BATCH * world if rank is None else BATCH
    return next(splits.batches(splits.train, size, shuffle=True, generator=generator, shard=shard))


def _model(sync: bool):
    torch.manual_seed(0)
    supernet = build_supernet(TINY_ARCH).train()
    if sync:
        sync_batchnorm(supernet, True)
    return supernet


def _gradients(supernet) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in supernet.named_parameters() if p.grad is not None}


def _rank(rank: int, world: int, init: str, out: str, sync: bool, seed_offset: int) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        splits = synthetic(num_classes=4, per_class=64, size=12)
        supernet = _model(sync)
        optimizer = torch.optim.SGD(supernet.parameters(), lr=0.0)  # gradients only: weights stay put
        step = WeNetStep(supernet, optimizer, seed=3 + seed_offset * rank, distill=True,
                         reduce_gradients=DataParallel(rank, world).reduce_gradients)
        patterns = step.patterns()
        step.generator.manual_seed(3 + seed_offset * rank)  # the step below samples the same patterns again
        error = ""
        try:
            step(*_batch(splits, world, rank))
        except RuntimeError as caught:
            error = str(caught)
        torch.save({"patterns": [m.to_json() for m, _ in patterns], "grads": _gradients(supernet), "error": error},
                   Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _run_ranks(sync: bool, seed_offset: int = 0, world: int = 2) -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        init = f"file://{folder}/rendezvous"
        mp.start_processes(_rank, args=(world, init, folder, sync, seed_offset), nprocs=world, join=True,
                           start_method="spawn")
        return [torch.load(Path(folder) / f"rank{r}.pt", weights_only=True) for r in range(world)]


def _one_process() -> dict[str, torch.Tensor]:
    splits = synthetic(num_classes=4, per_class=64, size=12)
    supernet = _model(False)  # one process: plain BN over the whole batch is what synchronized BN computes
    step = WeNetStep(supernet, torch.optim.SGD(supernet.parameters(), lr=0.0), seed=3, distill=True)
    step(*_batch(splits, 2, None))
    return _gradients(supernet)


@pytest.fixture(scope="module")
def one_process() -> dict[str, torch.Tensor]:
    return _one_process()


def test_ranks_sample_the_same_subnetworks_and_synchronized_bn_gives_the_one_process_gradients(one_process) -> None:
    ranks = _run_ranks(sync=True)
    assert ranks[0]["patterns"] == ranks[1]["patterns"] and len(ranks[0]["patterns"]) == 4
    assert not ranks[0]["error"] and not ranks[1]["error"]
    assert set(ranks[0]["grads"]) == set(one_process)  # the same parameters used, no more
    for name, expected in one_process.items():
        for rank in ranks:
            torch.testing.assert_close(rank["grads"][name], expected, rtol=1e-4, atol=1e-6, msg=name)


def test_without_synchronized_bn_each_rank_normalizes_with_its_own_batch(one_process) -> None:
    ranks = _run_ranks(sync=False)
    torch.testing.assert_close(ranks[0]["grads"], ranks[1]["grads"])  # averaged: the same on every rank
    differences = [float((ranks[0]["grads"][n] - g).abs().max() / (g.abs().max() + 1e-12)) for n, g in one_process.items()]
    assert max(differences) > 1e-3  # plain data parallel is not the one-process step


def test_ranks_that_sample_different_subnetworks_fail_with_a_clear_error() -> None:
    ranks = _run_ranks(sync=False, seed_offset=1)
    assert ranks[0]["patterns"] != ranks[1]["patterns"]
    for rank in ranks:
        assert "trained different sub-networks" in rank["error"]


def test_synchronized_bn_is_plain_bn_outside_a_process_group_and_swaps_back() -> None:
    supernet = _model(sync=False)
    plain = {k: v.clone() for k, v in supernet.state_dict().items()}
    switched = sync_batchnorm(supernet, True)
    assert switched == sum(isinstance(m, SyncedBatchNorm2d) for m in supernet.modules()) > 0
    x = torch.randn(4, 1, 12, 12)
    reference = _model(sync=False)
    torch.testing.assert_close(supernet(x), reference(x))  # no process group: ordinary training-mode BN
    assert sync_batchnorm(supernet, False) == switched
    assert not any(isinstance(m, SyncedBatchNorm2d) for m in supernet.modules())
    assert set(supernet.state_dict()) == set(plain)


def test_a_shard_is_refused_outside_its_world() -> None:
    splits = synthetic(num_classes=4, per_class=8, size=12)
    with pytest.raises(ValueError, match="rank"):
        next(splits.batches(splits.train, 4, shard=(2, 2)))
    with pytest.raises(ValueError, match="rank must be in"):
        DataParallel(3, 2)


def test_shards_together_are_the_one_process_batch() -> None:
    splits = synthetic(num_classes=4, per_class=16, size=12)
    whole = _batch(splits, 2, None)
    parts = [_batch(splits, 2, rank) for rank in (0, 1)]
    assert sorted(torch.cat([p[1] for p in parts]).tolist()) == sorted(whole[1].tolist())
    torch.testing.assert_close(torch.cat([parts[0][0], parts[1][0]]).sum(0), whole[0].sum(0))



def _large_mean_batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    return 1e4 + torch.randn(2 * BATCH, 3, 4, 4, generator=generator)  # |mean| >> std: one-pass variance fails


def _bn_rank(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        bn = SyncedBatchNorm2d(3).train()
        result = bn(_large_mean_batch()[rank::world])
        torch.save({"out": result.detach(), "running_var": bn.running_var.clone()}, Path(out) / f"bn{rank}.pt")
        dist.barrier()  # no rank tears gloo down while its peer still talks to it (an abort at exit otherwise)
    finally:
        dist.destroy_process_group()


def test_synchronized_statistics_hold_where_the_mean_dwarfs_the_spread() -> None:
    with tempfile.TemporaryDirectory() as folder:
        mp.start_processes(_bn_rank, args=(2, f"file://{folder}/rendezvous", folder), nprocs=2, join=True,
                           start_method="spawn")
        ranks = [torch.load(Path(folder) / f"bn{r}.pt", weights_only=True) for r in range(2)]
    batch = _large_mean_batch()
    reference = torch.nn.BatchNorm2d(3).train()
    expected = reference(batch).detach()
    for rank, result in enumerate(ranks):
        torch.testing.assert_close(result["out"], expected[rank::2], rtol=1e-3, atol=5e-3)
        torch.testing.assert_close(result["running_var"], reference.running_var, rtol=1e-3, atol=1e-4)
