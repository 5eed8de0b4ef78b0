"""Figures with intervals: the noise-aware front, paired accuracy, the store's graph book, `best` with
its rule and confidence, and migration 0010."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import inspect

from subnetsearch.devices import LatencyProtocol, PairedWindow
from subnetsearch.storage import Budget, Figures, Store, StoredEvaluation, noise_front, paired_accuracy_difference


def _point(accuracy: float, latency: float, width: float = 0.0, accuracy_width: float = 0.0) -> Figures:
    return Figures({"accuracy": accuracy, "latency": latency},
                   {"accuracy": accuracy - accuracy_width, "latency": latency - width},
                   {"accuracy": accuracy + accuracy_width, "latency": latency + width})


def test_a_point_inside_anothers_interval_is_dominated() -> None:
    full = _point(0.93, 1.00, width=0.03, accuracy_width=0.001)
    noise = _point(0.929, 0.98, width=0.03, accuracy_width=0.001)  # faster by less than the intervals
    real = _point(0.90, 0.50, width=0.03, accuracy_width=0.001)  # faster beyond them
    assert noise_front([full, noise, real], ("accuracy", "latency")) == [True, False, True]
    # exact figures (no intervals): classical Pareto order
    assert noise_front([_point(0.93, 1.0), _point(0.929, 0.98)], ("accuracy", "latency")) == [True, True]


def test_equal_within_noise_on_every_objective_keeps_the_better_point_once() -> None:
    a, b = _point(0.92, 1.0, 0.1, 0.01), _point(0.921, 1.01, 0.1, 0.01)
    assert noise_front([a, b], ("accuracy", "latency")) == [False, True]
    assert noise_front([b, a], ("accuracy", "latency")) == [True, False]


def test_paired_accuracy_separates_what_unpaired_intervals_cannot() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(5000) < 0.92
    b = a.copy()
    b[np.flatnonzero(a)[:40]] = False  # b loses 40 images a gets right, and wins none: 0.8 pt worse
    difference, error = paired_accuracy_difference(a, b)
    assert difference == pytest.approx(40 / 5000) and difference > 5 * error
    unpaired = 1.96 * np.sqrt(0.92 * 0.08 / 5000)
    assert difference < 2 * unpaired  # the binomial intervals overlap: unpaired, they would look equal
    figures = [Figures({"accuracy": a.mean(), "latency": 1.0}, {"accuracy": a.mean() - unpaired, "latency": 1.0},
                       {"accuracy": a.mean() + unpaired, "latency": 1.0}, a),
               Figures({"accuracy": b.mean(), "latency": 0.99}, {"accuracy": b.mean() - unpaired, "latency": 0.99},
                       {"accuracy": b.mean() + unpaired, "latency": 0.99}, b)]
    assert noise_front(figures, ("accuracy", "latency")) == [True, True]
    with pytest.raises(ValueError, match="same images"):
        paired_accuracy_difference(a, b[:10])


def _window(ratio: float, reference_ms: float, n: int = 15, spread: float = 0.01) -> PairedWindow:
    ratios = tuple(ratio * (1 + spread * ((i % 5) - 2) / 2) for i in range(n))
    return PairedWindow(ratios, tuple(r * reference_ms for r in ratios), (reference_ms,) * (n + 1))


def test_the_store_book_is_shared_and_grows(stored) -> None:
    store, _ = stored
    protocol = LatencyProtocol(runtime="eager")
    book = store.graph_book("dev-a", protocol, "ref")
    assert book.get("g") is None and book.reference_ms() == ()
    book.add("g", _window(0.5, 2.0))
    other = Store(store.url if "sqlite" not in store.url else str(store.engine.url)).graph_book("dev-a", protocol, "ref")
    assert other.get("g").windows == 1 and other.pooled_reference_ms() == 2.0
    other.add("g", _window(0.5, 4.0))
    assert book.get("g").windows == 2 and len(book.get("g").ratios) == 30
    assert len(book.reference_ms()) == 32
    # another protocol's kernels or another reference: another book
    assert store.graph_book("dev-a", LatencyProtocol(runtime="eager", threads=1), "ref").get("g") is None
    assert store.graph_book("dev-a", protocol, "ref2").get("g") is None


def _evaluation(supernet_hash: str, mode_id: str, accuracy: float, ratio: float, low: float, high: float,
                graph: str, pooled: float = 2.0) -> StoredEvaluation:
    paired = {"ratio": ratio, "low": low, "high": high, "confidence": 0.96, "ratios": 15, "windows": 1,
              "graph": graph, "reference": "ref", "reference_ms": pooled, "source": "measured now"}
    latency = {"ms": ratio * pooled, "interval_ms": [low * pooled, high * pooled], "paired": paired, "measured": True,
               "runtime": "eager", "batch_size": 1, "threads": 2, "channels_last": False}
    return StoredEvaluation(supernet_hash, "dev-a", mode_id, "{}", "k", {"split": "val"}, accuracy, 0.3,
                            int(ratio * 1e6), 10, ratio * pooled, latency, ratio * 0.01, "model", None, None, 5000)


def test_best_meets_the_budget_with_the_upper_end_of_the_interval_and_says_how_sure(stored) -> None:
    store, supernet_hash = stored
    book = store.graph_book("dev-a", LatencyProtocol(runtime="eager"), "ref")
    book.add("ref", _window(1.0, 2.0))
    book.add("fast", _window(0.5, 2.0, spread=0.02))
    book.add("edge", _window(0.7, 2.0, spread=0.2))  # median 1.4 ms, but its interval reaches past 1.5 ms
    store.put_evaluation(_evaluation(supernet_hash, "full", 0.93, 1.0, 1.0, 1.0, "ref"))
    store.put_evaluation(_evaluation(supernet_hash, "fast", 0.85, *book.get("fast").figure()[:3], "fast"))
    store.put_evaluation(_evaluation(supernet_hash, "edge", 0.90, *book.get("edge").figure()[:3], "edge"))
    edge = next(e for e in store.refresh_latency(store.list_evaluations("dev-a")) if e.mode_id == "edge")
    assert edge.latency_ms < 1.5 < edge.latency["interval_ms"][1]
    answer = store.best_mode("dev-a", Budget(max_latency_ms=1.5))
    assert answer.best is not None and answer.best.mode_id == "fast"  # edge's point figure fits, its interval not
    assert "upper end of its interval" in answer.rule
    assert answer.confidence["latency"]["confidence"] > 0.99 and "sign test" in answer.confidence["latency"]["how"]
    front = store.get_front("dev-a")
    assert [e.mode_id for e in front] == ["fast", "edge", "full"]
    assert all(e.latency.get("interval_ms") for e in front)


def test_migration_0010_up_and_down(store_url, migrated) -> None:
    Store(store_url).dispose()
    with migrated(store_url, "0009", downgrade=True) as connection:
        assert "ss_latency_graphs" not in inspect(connection).get_table_names()
        assert "correct" not in {c["name"] for c in inspect(connection).get_columns("ss_evaluations")}
    with migrated(store_url, "0010") as connection:
        assert "ss_latency_graphs" in inspect(connection).get_table_names()
        assert "noise" in {c["name"] for c in inspect(connection).get_columns("ss_devices")}
