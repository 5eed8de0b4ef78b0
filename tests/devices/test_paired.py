"""Paired latency: interval maths, drift cancelled by pairing, one figure per realized graph."""

from __future__ import annotations

import statistics
import time

import pytest
import torch
from torch import nn

from subnetsearch.devices import (
    REFERENCE,
    GraphSamples,
    LatencyProtocol,
    MemoryBook,
    Pairing,
    graph_digest,
    median_interval,
    paired_latency,
    reference_for,
)
from subnetsearch.devices._paired import paired_rounds
from subnetsearch.supernets import PLAIN, Realization

PROTOCOL = LatencyProtocol(runtime="eager", threads=1, warmup=1)
QUICK = Pairing(rounds=5, block_s=0.003, enough=1)


def test_median_interval_is_the_order_statistic_interval() -> None:
    median, low, high, confidence = median_interval(range(1, 21))  # n = 20: [x(6), x(15)] covers 95.9 %
    assert (median, low, high) == (10.5, 6, 15)
    assert confidence == pytest.approx(0.9586, abs=1e-4)
    median, low, high, confidence = median_interval([3.0, 1.0, 2.0])  # too few for 95 %: the range, and its level
    assert (median, low, high, confidence) == (2.0, 1.0, 3.0, 0.75)
    with pytest.raises(ValueError, match="no values"):
        median_interval([])


class Drifting:
    """A callable that sleeps `base` seconds times the host's slowdown, which grows with every call
    anyone makes (a host getting busier during the run)."""

    calls = 0

    def __init__(self, base: float, drift_per_call: float) -> None:
        self.base, self.drift = base, drift_per_call

    def __call__(self, _: torch.Tensor) -> None:
        Drifting.calls += 1
        time.sleep(self.base * (1 + self.drift * Drifting.calls))


def test_pairing_recovers_the_true_ratio_under_drift_where_separate_windows_do_not() -> None:
    Drifting.calls = 0
    drift = 0.004  # the host slows down ~3x over the run
    reference, candidate = Drifting(0.002, drift), Drifting(0.001, drift)  # truth: 0.5
    window = paired_rounds(reference, {"half": candidate}, torch.zeros(1), Pairing(rounds=8, block_s=0.012))["half"]
    paired = statistics.median(window.ratios)
    assert 0.4 < paired < 0.62
    # unpaired: each measured alone in its own window, minutes (here: calls) apart
    Drifting.calls = 0
    alone_reference = min(_timed(reference) for _ in range(5))
    for _ in range(300):
        Drifting.calls += 1
    alone_candidate = min(_timed(candidate) for _ in range(5))
    assert alone_candidate / alone_reference > 0.8  # the drift, not the truth, decides the unpaired ratio


def _timed(run: Drifting) -> float:
    start = time.perf_counter()
    run(torch.zeros(1))
    return time.perf_counter() - start


def _conv(groups: int = 1, stride: int = 1) -> nn.Module:
    return nn.Sequential(nn.Conv2d(8, 8, 3, stride, 1, groups=groups), nn.ReLU()).eval()


def test_digest_is_equal_for_identical_graphs_and_differs_for_any_change() -> None:
    digest = graph_digest(_conv(), (8, 6, 6), PROTOCOL)
    assert graph_digest(_conv(), (8, 6, 6), PROTOCOL) == digest  # other weights, same graph
    assert graph_digest(_conv(groups=2), (8, 6, 6), PROTOCOL) != digest
    assert graph_digest(_conv(stride=2), (8, 6, 6), PROTOCOL) != digest
    assert graph_digest(_conv(), (8, 7, 7), PROTOCOL) != digest
    assert graph_digest(_conv().double(), (8, 6, 6), PROTOCOL) != digest
    for change in ({"runtime": "onnxruntime"}, {"threads": 2}, {"batch_size": 4}, {"channels_last": True}):
        other = LatencyProtocol(**{**PROTOCOL.__dict__, **change})
        assert graph_digest(_conv(), (8, 6, 6), other) != digest, change
    assert graph_digest(_conv(), (8, 6, 6), LatencyProtocol(runtime="eager", threads=1, warmup=7, repeats=9)) == digest


def test_every_all_dense_realization_is_the_full_networks_graph(tiny_supernet) -> None:
    full = graph_digest(tiny_supernet.realize(tiny_supernet.full_mode(), PLAIN), tiny_supernet.input_shape, PROTOCOL)
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        mode = tiny_supernet.random_mode(generator)
        grouped = tiny_supernet.grouped_layers(mode)
        if not grouped:
            continue
        dense = tiny_supernet.realize(mode, Realization(tuple(grouped)))  # the grouped layers as dense equivalents
        assert graph_digest(dense, tiny_supernet.input_shape, PROTOCOL) == full
        as_grouped = tiny_supernet.realize(mode, PLAIN)
        assert graph_digest(as_grouped, tiny_supernet.input_shape, PROTOCOL) != full


def test_one_figure_per_graph_measuring_again_adds_windows(tiny_supernet) -> None:
    shape = tiny_supernet.input_shape
    reference = reference_for(tiny_supernet.realize(tiny_supernet.full_mode(), PLAIN), shape, PROTOCOL)
    book = MemoryBook()
    smallest = tiny_supernet.smallest_mode()
    dense = Realization(tuple(tiny_supernet.grouped_layers(smallest)))
    statics = {"grouped": tiny_supernet.realize(smallest, PLAIN), "dense": tiny_supernet.realize(smallest, dense)}
    best, latency = paired_latency(statics, reference, shape, PROTOCOL, book, QUICK)
    assert latency.paired is not None and latency.interval_ms is not None
    others = latency.paired["others"]
    figures = {best: latency.paired["ratio"], **{label: other["ratio"] for label, other in others.items()}}
    assert figures["dense"] == 1.0  # the reference's graph: ratio 1, never timed apart from it
    assert best == min(figures, key=figures.__getitem__)
    grouped_digest = graph_digest(statics["grouped"], shape, PROTOCOL)
    assert book.get(grouped_digest).windows == 1 and len(book.get(grouped_digest).ratios) == QUICK.rounds
    pool = len(book.reference_ms())
    # the same graph again (another mode realizing the same layers would do the same): its figure is reused
    _, again = paired_latency({"grouped": statics["grouped"]}, reference, shape, PROTOCOL, book, QUICK)
    assert again.paired["source"].startswith("graph measured before") and len(book.reference_ms()) == pool
    assert again.paired["ratio"] == book.get(grouped_digest).figure()[0]
    # measuring it again adds a window; with two windows, the figure and its interval are over the
    # windows' medians (windows, not ratios, are the independent samples)
    _, third = paired_latency({"grouped": statics["grouped"]}, reference, shape, PROTOCOL, book, QUICK, remeasure=True)
    samples = book.get(grouped_digest)
    assert samples.windows == 2 and third.paired["ratios"] == 2 * QUICK.rounds
    medians = samples.window_medians
    assert (third.paired["low"], third.paired["high"]) == (min(medians), max(medians))
    assert third.paired["ratio"] == pytest.approx(sum(medians) / 2) and third.paired["confidence"] == 0.5
    # one window, on a device whose ratios move between windows: the interval is widened by that factor
    one = GraphSamples((samples.per_window[0],))
    ratio, low, high, _ = one.figure(between=1.5)
    assert low == pytest.approx(ratio / 1.5) and high == pytest.approx(ratio * 1.5)
    # the full network alone: ratio 1 by definition
    _, full = paired_latency({"full": reference.model}, reference, shape, PROTOCOL, book, QUICK)
    assert full.paired["source"] == REFERENCE and full.ms == book.pooled_reference_ms()
