"""`subnetsearch search --backend ray` as a user runs it: a fresh process with no address starts the
embedded local Ray instance (this machine's CPUs, the host device's resource) and stops it after."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from subnetsearch.storage import Store
from subnetsearch.supernets import save_checkpoint

pytestmark = pytest.mark.ray  # the full tier (pytest --full); see pyproject.toml


def test_search_on_the_embedded_local_ray_instance(tmp_path, tiny_supernet) -> None:
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, tiny_supernet, {}, {"name": "synthetic", "split_seed": 0}, {})
    url = f"sqlite:///{tmp_path / 'local.db'}"
    cli = [sys.executable, "-m", "subnetsearch"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    subprocess.run([*cli, "devices", "add", "quick", "--runtime", "eager", "--threads", "1", "--repeats", "1",
                    "--storage", url], check=True, capture_output=True, env=env)
    done = subprocess.run([*cli, "search", "--backend", "ray", "--device", "quick", "--cost", "macs",
                           "--max-iterations", "1", "--delta", "0", "--checkpoint", str(checkpoint),
                           "--storage", url], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"a local Ray instance ({os.cpu_count()} CPUs)" in done.stdout
    assert "latency measured on the node with resource device:quick" in done.stdout
    store = Store(url)
    try:
        stored = store.list_evaluations("quick")
        # multi-fidelity (the default): a first look at the full network and one candidate per layer of
        # the depth-8 net, each fanned out to the workers; the full evaluation of those that could join
        looks = [evaluation for evaluation in stored if evaluation.settings.get("fidelity") == "low"]
        full = [evaluation for evaluation in stored if evaluation.settings.get("fidelity", "full") == "full"]
        assert len(looks) == 1 + 8 and 1 <= len(full) <= 1 + 8 and len(looks) + len(full) == len(stored)
        assert {evaluation.mode_id for evaluation in full} <= {evaluation.mode_id for evaluation in looks}
        assert all(evaluation.latency["measured"] and evaluation.latency.get("node") for evaluation in stored)
        assert [search.status for search in store.list_searches("quick")] == ["finished"]
    finally:
        store.dispose()


def test_the_embedded_instance_runs_its_workers_at_normal_priority() -> None:
    # Ray's default (nice 15) lets any other process on a shared host starve the search's workers
    code = ("import os, ray\nfrom subnetsearch.distributed import connect\nconnect()\n"
            "print(ray.get(ray.remote(lambda: os.nice(0)).remote()))")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_worker_niceness")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "0"


def test_an_address_where_no_ray_head_listens_is_refused_fast_with_the_reason(ray_cluster) -> None:
    """A real head answers the gRPC probe; a silent TCP listener and a PostgreSQL server (standing in
    for the Redis of Ray's default port) are refused within the probe's timeout, naming the address."""
    import socket
    import time

    import pytest

    from subnetsearch.devices import Device
    from subnetsearch.distributed import ClusterError
    from subnetsearch.distributed._cluster import check_reachable, missing_device_message

    cluster, _ = ray_cluster
    check_reachable(cluster.address)  # the test cluster's GCS: accepted
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        for address in (f"127.0.0.1:{silent.getsockname()[1]}", "127.0.0.1:5432"):
            started = time.monotonic()
            with pytest.raises(ClusterError, match=f"something listens at {address}, but it is not a Ray head"):
                check_reachable(address, timeout=2.0)
            assert time.monotonic() - started < 5
    # the hint for joining a device node names the connected cluster's own head address
    assert f"--address={cluster.address}" in missing_device_message(Device("nowhere", "ray-node"))
