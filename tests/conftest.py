"""Shared fixtures: tiny models and data keep the suite fast on 2 cores."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import torch

from subnetsearch.data import synthetic
from subnetsearch.supernets import WeNetSupernet, build_supernet

FULL_TIER = ("slow", "ray", "browser", "zoo")  # what only `pytest --full` runs (CI does)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full", action="store_true", help="the full tier: also the tests marked "
                     + ", ".join(FULL_TIER) + " (the default is the fast tier)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tiers: without --full (and without an explicit -m), the tests marked with a full-tier marker
    are deselected. Tests on the PostgreSQL fixture get the postgres marker; gpu tests skip without
    CUDA, saying so."""
    for item in items:
        if "postgres_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
        if item.get_closest_marker("gpu") is not None and not torch.cuda.is_available():
            from subnetsearch.trainers import cuda_status

            item.add_marker(pytest.mark.skip(reason=f"GPU test (benchmarks/gpu_check.sh runs it on a GPU host): "
                                                    f"{cuda_status()}"))
    if config.getoption("--full") or config.getoption("-m"):
        return
    keep, dropped = [], []
    for item in items:
        (dropped if any(item.get_closest_marker(name) for name in FULL_TIER) else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


ADMIN_URL = os.environ.get("SUBNETSEARCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _postgres_database() -> str:
    """Create a fresh database for this test session; skip (loudly) only outside CI if no server."""
    try:
        import psycopg

        name = f"subnetsearch_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return name
    except Exception as error:  # no driver, no server
        if os.environ.get("CI"):
            raise RuntimeError(f"CI needs PostgreSQL at {ADMIN_URL}: {error}") from error
        pytest.skip(f"NO POSTGRESQL SERVER at {ADMIN_URL} ({error}): PostgreSQL storage tests skipped")


@pytest.fixture(scope="session")
def postgres_url():
    name = _postgres_database()
    base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{base}/{name}"
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_store_url(postgres_url):
    """The session's PostgreSQL database with an empty schema (no tables of an earlier test)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    return postgres_url


@pytest.fixture(scope="module")
def toy_family():
    """The toy fourth family of tests/supernets/toy_family.py, registered for a module's tests and
    unregistered after (nothing stays in the process-wide registry)."""
    from subnetsearch.supernets import register_family, unregister_family
    from subnetsearch.trainers import register_trainer, unregister_trainer
    from tests.supernets.toy_family import ToyMLP, ToyTrainer

    register_family("toy-mlp", ToyMLP)
    register_trainer(ToyTrainer())
    yield "toy-mlp"
    unregister_trainer(ToyTrainer.family)
    unregister_family("toy-mlp")


@pytest.fixture
def toy_strategy():
    """The toy fourth search strategy of tests/search/toy_strategy.py, registered for one test."""
    from subnetsearch.search import register_strategy, unregister_strategy
    from tests.search.toy_strategy import RandomModes

    register_strategy(RandomModes())
    yield RandomModes.name
    unregister_strategy(RandomModes.name)


TINY_ARCH = {
    "family": "wenet-cifar-resnet", "depth": 8, "widths": [8, 16, 16], "in_channels": 1, "num_classes": 4,
    "input_size": 12, "group_choices": [1, 2, 4, 8], "shuffle": True, "shuffle_rule": "balanced",
}


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_arch() -> dict:
    return dict(TINY_ARCH)


@pytest.fixture
def tiny_supernet() -> WeNetSupernet:
    return build_supernet(TINY_ARCH)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A quick trained checkpoint of a family (through its registered trainer, on the synthetic set),
    trained once per test session and shared: `trained("lasso")` is the folder holding supernet.pt
    (and, for DDI, backbone.pt; `trained("ddi")` is a plain backbone: gating none, no exits). Tests
    that train because training is what they test do not use it; tests that need a trained base do."""
    from subnetsearch.data import DataSpec
    from subnetsearch.trainers import TrainJob, get_trainer

    folders: dict[tuple, Path] = {}
    defaults = {"ddi": {"gating": "none", "exits": False}}
    depths = {"ddi": 14}  # depth 14: two blocks per stage, so DDI has skippable blocks

    def get(family: str) -> Path:
        key = (family,)
        if key not in folders:
            out = tmp_path_factory.mktemp(f"trained-{family}")
            job = TrainJob(DataSpec(name="synthetic"), out, 1, 32, max_steps_per_epoch=3,
                           depth=depths.get(family, 8), widths=(8, 16, 16), options=defaults.get(family, {}))
            get_trainer(family).train(job)
            folders[key] = out
        return folders[key]

    return get


@pytest.fixture(scope="session")
def tiny_data():
    return synthetic(num_classes=4, per_class=64, size=12)


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial statistics and affine parameters, so equivalence tests can fail."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
