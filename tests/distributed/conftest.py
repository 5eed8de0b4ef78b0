"""A real two-node Ray cluster for the whole test session (started once: ~5 s): a head node and an
"edge" node that alone advertises the custom resource `device:edge`, one CPU each."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from subnetsearch.devices import Device, LatencyProtocol
from subnetsearch.distributed._cluster import OBJECT_STORE_BYTES
from subnetsearch.storage import Store
from subnetsearch.supernets import save_checkpoint

# Slow enough (a few tenths of a second per measurement) that a worker can be killed mid-evaluation.
EDGE = Device("edge", "ray-node", LatencyProtocol(runtime="eager", threads=1, repeats=2, warmup=2, min_run_time=0.1))


@pytest.fixture(scope="session")
def ray_cluster():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": OBJECT_STORE_BYTES // 2, "include_dashboard": False})
    edge = cluster.add_node(num_cpus=1, resources={EDGE.ray_resource: 1}, object_store_memory=OBJECT_STORE_BYTES // 2)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    yield cluster, edge.node_id
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def cluster_store(ray_cluster, tmp_path, tiny_supernet, request):
    """(store URL, checkpoint path) with the edge device recorded; SQLite unless the test asks for
    PostgreSQL with `@pytest.mark.parametrize("cluster_store", ["postgresql"], indirect=True)`."""
    kind = getattr(request, "param", "sqlite")
    url = request.getfixturevalue("postgres_store_url") if kind == "postgresql" else f"sqlite:///{tmp_path / 's.db'}"
    store = Store(url)
    store.add_device(EDGE)
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, tiny_supernet, {}, {"name": "synthetic", "split_seed": 0}, {})
    yield url, path
    store.dispose()


def processes_titled(prefix: str) -> list[int]:
    """PIDs whose command line (Ray sets it to `ray::<Class>.<method>` while a call runs) starts with
    `prefix`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(prefix.encode()):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return [pid for pid in pids if pid != os.getpid()]
