"""One latency figure per realized graph: the realizations of a mode, digested, paired against the
device's reference, kept in a `GraphBook`, and the fastest realization's figure returned."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import nn

from subnetsearch.devices._digest import graph_digest
from subnetsearch.devices._latency import Latency, LatencyProtocol
from subnetsearch.devices._paired import PAIRING, GraphBook, PairedWindow, Pairing, measure_paired

PairedMeter = Callable[[Mapping[str, nn.Module], nn.Module, tuple[int, ...], LatencyProtocol, Pairing],
                       dict[str, PairedWindow]]
"""Times candidates against a reference in one window (`measure_paired` on this host; a distributed
search sends them to the device's node)."""

REFERENCE = "the reference graph (the full network as realized): ratio 1 by definition"


@dataclass(frozen=True)
class Reference:
    """A device's reference network for one supernet: its full network as realized, and its digest."""

    model: nn.Module
    digest: str


def reference_for(model: nn.Module, input_shape: tuple[int, ...], protocol: LatencyProtocol) -> Reference:
    return Reference(model.eval(), graph_digest(model, input_shape, protocol))


def paired_latency(statics: Mapping[str, nn.Module], reference: Reference, input_shape: tuple[int, ...],
                   protocol: LatencyProtocol, book: GraphBook, pairing: Pairing = PAIRING,
                   meter: PairedMeter | None = None, remeasure: bool = False,
                   between: float = 1.0) -> tuple[str, Latency]:
    """The latency of the fastest of `statics` (realization label -> static network of one mode).

    Each is digested; a graph identical to the reference gets ratio 1; a graph the book already holds
    `pairing.enough` windows for gets its figure without a new window (unless `remeasure`); the others
    (one network per distinct digest) are timed in one paired window, and their ratios added to the
    book. Returns the fastest label and its figure: ms = median ratio x the reference's pooled median,
    with the interval likewise (`GraphSamples.figure`; `between`, the device's between-window factor
    from its noise profile, widens a one-window interval)."""
    digests = {label: graph_digest(model, input_shape, protocol) for label, model in statics.items()}
    todo: dict[str, nn.Module] = {}
    for label, digest in digests.items():
        if digest == reference.digest or digest in {digests[other] for other in todo}:
            continue
        known = book.get(digest)
        if remeasure or known is None or known.windows < pairing.enough:
            todo[label] = statics[label]
    if not todo and not book.reference_ms():  # no window on this device yet: the pool needs the reference's times
        todo["__reference_copy__"] = reference.model
        digests["__reference_copy__"] = reference.digest
    windows = (meter or measure_paired)(todo, reference.model, input_shape, protocol, pairing) if todo else {}
    for label, window in windows.items():
        book.add(digests[label], window)
    pooled = book.pooled_reference_ms()
    assert pooled is not None  # a window was measured above if the pool was empty
    figures = {}
    for label, digest in digests.items():
        if label == "__reference_copy__":
            continue
        if digest == reference.digest:
            figures[label] = (1.0, 1.0, 1.0, 1.0, 0, 0, REFERENCE)
            continue
        samples = book.get(digest)
        assert samples is not None
        ratio, low, high, achieved = samples.figure(pairing.confidence, between)
        measured_now = any(digests[other] == digest for other in windows)
        source = ("measured now" + (f", added to {samples.windows - 1} earlier windows" if samples.windows > 1 else "")
                  if measured_now else f"graph measured before ({samples.windows} windows)")
        figures[label] = (ratio, low, high, achieved, len(samples.ratios), samples.windows, source)
    best = min(figures, key=lambda label: figures[label][0])
    ratio, low, high, achieved, count, window_count, source = figures[best]
    timed = next((windows[other] for other in windows if digests[other] == digests[best]), None)
    blocks = timed.candidate_ms if timed is not None else ()
    quartiles = statistics.quantiles(blocks, n=4) if len(blocks) >= 2 else [0.0, 0.0, 0.0]
    paired = {"ratio": ratio, "low": low, "high": high, "confidence": achieved, "ratios": count,
              "windows": window_count, "graph": digests[best], "reference": reference.digest,
              "reference_ms": pooled, "reference_blocks": len(book.reference_ms()), "source": source,
              "between": between,
              "pairing": pairing.to_dict(),
              "others": {label: {"ratio": figure[0], "graph": digests[label][:12]} for label, figure in figures.items()
                         if label != best}}
    node = next((window.node for window in windows.values() if window.node is not None), None)
    latency = Latency(ratio * pooled, quartiles[2] - quartiles[0], tuple(blocks), protocol,
                      (protocol.batch_size, *input_shape), node=node, paired=paired,
                      interval_ms=(low * pooled, high * pooled))
    return best, latency
