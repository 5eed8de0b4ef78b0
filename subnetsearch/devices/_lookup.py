"""Latency lookup tables (Once-for-All's predictor, generalized to group-switchable layers).

Each convolution of a materialized mode is one *layer configuration*: its shape, group count, the
activation after it and the channel shuffle that stays after it (a shuffle next to a dense conv is
folded away by `materialize`). A table maps configurations to latencies measured on the device,
each as a small standalone module run by the device's runtime. A mode's predicted latency is the
sum over its convolutions plus a fixed overhead (pooling, adds, classifier, per-call costs) that
no knob changes, measured as the median gap between end-to-end latency and the sum on a few modes.
"""

from __future__ import annotations

import functools
import json
import statistics
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass

import torch
from torch import fx, nn

from subnetsearch.devices._latency import Latency, LatencyProtocol, measure_latencies
from subnetsearch.errors import InputError
from subnetsearch.spaces import Mode
from subnetsearch.supernets import (
    BaseSupernet,
    ChannelShuffle,
    DynamicLeafTracer,
    GroupSwitchConv2d,
    Realization,
    SwitchableBatchNorm2d,
    WeNetSupernet,
    is_relu,
    single_user,
)


@dataclass(frozen=True)
class LayerConfig:
    """One entry of a lookup table (hashable, JSON-able)."""

    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    input_size: tuple[int, int]
    groups: int
    activation: bool
    shuffle_groups: int  # 0: no shuffle after this layer in the materialized network

    def key(self) -> str:
        return _config_key(self)

    def module(self) -> nn.Module:
        layers: list[nn.Module] = [nn.Conv2d(self.in_channels, self.out_channels, self.kernel, self.stride,
                                             self.kernel // 2, groups=self.groups, bias=True)]
        if self.activation:
            layers.append(nn.ReLU())
        if self.shuffle_groups:
            layers.append(ChannelShuffle(self.out_channels, self.shuffle_groups))
        return nn.Sequential(*layers).eval()


@dataclass(frozen=True)
class _ConvSite:
    """Where a convolution sits in the supernet, for building its configuration under any mode."""

    name: str
    knob: str | None
    fixed_groups: int
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    input_size: tuple[int, int]
    activation: bool
    shuffle: ChannelShuffle | None
    consumer_knob: str | None  # the knob of the conv after the shuffle (None: not switchable)
    consumer_fixed_groups: int


def conv_sites(supernet: WeNetSupernet) -> list[_ConvSite]:
    """Trace the supernet once: every convolution, the activation and shuffle that follow it."""
    if getattr(supernet, "width_knobs", None):
        raise InputError(f"latency lookup tables cover group counts; this supernet also has {len(supernet.width_knobs)} "
                         "width knobs, which no table entry models yet: measure its latency instead")
    network = supernet.network
    modules = dict(network.named_modules())
    graph = DynamicLeafTracer().trace(network)
    input_sizes: dict[str, tuple[int, int]] = {}

    def record(name: str):
        return lambda module, inputs, output: input_sizes.__setitem__(name, tuple(inputs[0].shape[-2:]))

    hooks = [m.register_forward_hook(record(name)) for name, m in modules.items()
             if isinstance(m, (nn.Conv2d, GroupSwitchConv2d))]
    was_training = supernet.training
    try:
        supernet.eval()
        with torch.no_grad():
            network(torch.zeros(1, *supernet.input_shape))  # spatial sizes do not depend on the mode
    finally:
        supernet.train(was_training)
        for hook in hooks:
            hook.remove()
    knobs = {knob.name for knob in supernet.space.knobs}

    def is_module(node: fx.Node | None, kinds: tuple[type, ...]) -> bool:
        return node is not None and node.op == "call_module" and isinstance(modules[node.target], kinds)

    sites = []
    for node in graph.nodes:
        if not is_module(node, (nn.Conv2d, GroupSwitchConv2d)):
            continue
        conv = modules[node.target]
        cursor, activation, shuffle, consumer = node, False, None, None
        nxt = single_user(cursor)
        if is_module(nxt, (nn.BatchNorm2d, SwitchableBatchNorm2d)):
            cursor, nxt = nxt, single_user(nxt)
        for _ in range(2):  # activation and shuffle, in either order
            if is_relu(nxt, modules) and not activation:
                activation, cursor, nxt = True, nxt, single_user(nxt)
            elif is_module(nxt, (ChannelShuffle,)) and shuffle is None:
                shuffle, cursor, nxt = modules[str(nxt.target)], nxt, single_user(nxt)  # type: ignore[union-attr]
        if shuffle is not None and nxt is not None and is_module(nxt, (nn.Conv2d, GroupSwitchConv2d)):
            consumer = str(nxt.target)
        kernel = conv.kernel_size if isinstance(conv.kernel_size, int) else conv.kernel_size[0]
        stride = conv.stride if isinstance(conv.stride, int) else conv.stride[0]
        consumer_module = modules.get(consumer) if consumer else None
        sites.append(_ConvSite(
            node.target, node.target if node.target in knobs else None,
            conv.groups if isinstance(conv, nn.Conv2d) else 1, conv.in_channels, conv.out_channels, kernel, stride,
            input_sizes[node.target], activation, shuffle,
            consumer if consumer in knobs else None,
            consumer_module.groups if isinstance(consumer_module, nn.Conv2d) else 1))
    return sites


def layer_configs(sites: Iterable[_ConvSite], mode: Mode, dense: Collection[str] = ()) -> list[LayerConfig]:
    """The configurations a mode's materialized network runs, one per convolution, with the layers in
    `dense` realized as dense equivalents (one group; a shuffle next to one is folded away)."""
    configs = []
    for site in sites:
        groups = 1 if site.knob in dense else (mode.values[site.knob] if site.knob else site.fixed_groups)
        shuffle_groups = 0
        if site.shuffle is not None and site.shuffle.enabled and site.shuffle.max_groups > 1:
            consumer_groups = (1 if site.consumer_knob in dense else mode.values[site.consumer_knob]
                               if site.consumer_knob else site.consumer_fixed_groups)
            if groups > 1 and consumer_groups > 1:  # otherwise materialize folds it into a dense conv
                shuffle_groups = site.shuffle.max_groups
        configs.append(LayerConfig(site.in_channels, site.out_channels, site.kernel, site.stride, site.input_size,
                                   groups, site.activation, shuffle_groups))
    return configs


def all_layer_configs(sites: Iterable[_ConvSite], supernet: WeNetSupernet) -> list[LayerConfig]:
    """Every configuration any mode of the supernet can run (each site at each of its group counts,
    with and without the shuffle after it): a table of these predicts every mode."""
    space = supernet.space
    configs: dict[str, LayerConfig] = {}
    for site in sites:
        choices = space[site.knob].values if site.knob else (site.fixed_groups,)
        shuffles = [0]
        if site.shuffle is not None and site.shuffle.enabled and site.shuffle.max_groups > 1:
            shuffles.append(site.shuffle.max_groups)
        for groups in choices:
            for shuffle_groups in shuffles if groups > 1 else [0]:
                config = LayerConfig(site.in_channels, site.out_channels, site.kernel, site.stride, site.input_size,
                                     groups, site.activation, shuffle_groups)
                configs.setdefault(config.key(), config)
    return list(configs.values())


@dataclass
class LatencyTable:
    """Measured latency (ms) per layer configuration on one device, and how the sum of a mode's
    entries maps to its end-to-end latency: `scale` x sum + `overhead_ms`, fitted on measured modes
    (a runtime fuses and overlaps what the per-layer measurements time alone: each entry carries its
    own call overhead, and the whole network pays one)."""

    protocol: LatencyProtocol
    entries: dict[str, float]
    overhead_ms: float = 0.0
    scale: float = 1.0

    def predict(self, configs: Iterable[LayerConfig]) -> float:
        missing = [c for c in configs if c.key() not in self.entries]
        if missing:
            raise KeyError(f"{len(missing)} layer configuration(s) not in the table, e.g. {missing[0]}")
        return self.scale * sum(self.entries[c.key()] for c in configs) + self.overhead_ms

    def to_dict(self) -> dict:
        payload = {"protocol": asdict(self.protocol), "entries": self.entries, "overhead_ms": self.overhead_ms}
        if self.scale != 1.0:  # tables from before the scale was fitted keep their digest
            payload["scale"] = self.scale
        return payload

    @property
    def digest(self) -> str:
        """A short content hash: predictions from different tables are never mixed in the cache."""
        import hashlib

        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, payload: Mapping) -> LatencyTable:
        return cls(LatencyProtocol(**payload["protocol"]), dict(payload["entries"]), float(payload["overhead_ms"]),
                   float(payload.get("scale", 1.0)))


@functools.lru_cache(maxsize=1 << 16)
def _config_key(config: LayerConfig) -> str:
    """A configuration's table key (cached: a predictor's local search asks for the same few
    configurations many times per mode, and the predictor strategy for thousands of modes)."""
    return json.dumps(asdict(config), sort_keys=True, separators=(",", ":"))


class LatencyPredictor:
    """Predicted latency of any mode of one supernet from a lookup table (no measurement)."""

    def __init__(self, supernet: BaseSupernet, table: LatencyTable) -> None:
        if not isinstance(supernet, WeNetSupernet):
            raise InputError(f"latency lookup tables cover group-switching (wenet) supernets, not a {supernet.family} "
                             "one: measure its latency instead")
        self.table, self.sites = table, conv_sites(supernet)
        self.input_shape = (table.protocol.batch_size, *supernet.input_shape)

    def realization(self, mode: Mode) -> tuple[Realization, float, float]:
        """The per-layer realization the table predicts fastest for `mode` (each grouped layer as a
        grouped kernel or as its dense equivalent; local search, since a shuffle between two layers
        couples them), its predicted latency, and the all-grouped prediction."""

        def predicted(dense: frozenset[str]) -> float:
            configs = layer_configs(self.sites, mode, dense)
            if any(c.key() not in self.table.entries for c in configs):
                return float("inf")  # a table built for other modes: no figure for this realization
            return self.table.predict(configs)

        grouped = self.table.predict(layer_configs(self.sites, mode))
        candidates = [site.knob for site in self.sites if site.knob and int(mode.values[site.knob]) > 1]
        dense: frozenset[str] = frozenset()
        best = grouped
        improved = True
        while improved:
            improved = False
            for name in candidates:
                trial = dense ^ {name}
                value = predicted(trial)
                if value < best - 1e-12:
                    dense, best, improved = trial, value, True
        return Realization(tuple(dense)), best, grouped

    def __call__(self, mode: Mode) -> Latency:
        realization, ms, grouped = self.realization(mode)
        return Latency(ms, 0.0, (), self.table.protocol, self.input_shape, measured=False, table=self.table.digest,
                       realization=realization.to_dict(),
                       alternatives_ms={"grouped": round(grouped, 6)} if realization.dense else None)


def build_table(supernet: WeNetSupernet, modes: Iterable[Mode] | None, protocol: LatencyProtocol,
                calibration_modes: Iterable[Mode]) -> LatencyTable:
    """Measure every configuration the given modes need (each once; `modes=None`: every configuration
    of the supernet), then calibrate on `calibration_modes`, measured end to end as they run (each
    grouped layer as the table's plan realizes it): with two or more modes whose sums differ, a
    least-squares line (scale, overhead) from summed entries to measured latency; else the median gap
    as the overhead."""
    sites = conv_sites(supernet)
    calibration = list(calibration_modes)
    wanted: dict[str, LayerConfig] = {}
    if modes is None:
        wanted.update({config.key(): config for config in all_layer_configs(sites, supernet)})
        modes = []
    for mode in [*modes, *calibration]:
        for config in layer_configs(sites, mode):
            wanted.setdefault(config.key(), config)
    entries = {}
    by_input: dict[tuple[int, ...], dict[str, nn.Module]] = {}
    for key, config in wanted.items():
        by_input.setdefault((config.in_channels, *config.input_size), {})[key] = config.module()
    for input_shape, group in by_input.items():
        entries.update({key: latency.ms for key, latency in measure_latencies(group, input_shape, protocol).items()})
    table = LatencyTable(protocol, entries)
    if not calibration:
        return table
    planner = LatencyPredictor(supernet, table)
    plans = {mode.id: planner.realization(mode)[0] for mode in calibration}
    measured = measure_latencies({mode.id: supernet.realize(mode, plans[mode.id]) for mode in calibration},
                                 supernet.input_shape, protocol)
    sums = [table.predict(layer_configs(sites, mode, plans[mode.id].dense)) for mode in calibration]
    times = [measured[mode.id].ms for mode in calibration]
    spread = max(sums) - min(sums)
    if len(calibration) >= 2 and spread > 1e-3 * max(sums):
        mean_sum, mean_time = statistics.fmean(sums), statistics.fmean(times)
        slope = (sum((s - mean_sum) * (t - mean_time) for s, t in zip(sums, times, strict=True))
                 / sum((s - mean_sum) ** 2 for s in sums))
        if slope > 0:  # a line that rises with the work done (else: the additive overhead alone)
            table.scale, table.overhead_ms = slope, mean_time - slope * mean_sum
            return table
    table.overhead_ms = statistics.median(t - s for s, t in zip(sums, times, strict=True))
    return table
