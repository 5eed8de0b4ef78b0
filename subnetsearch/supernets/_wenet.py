"""The WeNet supernet: a network of group-switchable layers, its search space, and mode handling."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from subnetsearch.costs import Cost, LayerShape, network_cost
from subnetsearch.errors import InputError
from subnetsearch.spaces import Knob, Mode, ModeError, SearchSpace
from subnetsearch.supernets._base import PLAIN, BaseSupernet, Realization
from subnetsearch.supernets._convert import ConversionReport
from subnetsearch.supernets._layers import GroupSwitchConv2d, GroupSwitchLinear, SwitchableBatchNorm2d, SwitchState
from subnetsearch.supernets._materialize import DynamicLeafTracer, materialize_network

SwitchLayer = GroupSwitchConv2d | GroupSwitchLinear


@dataclass(frozen=True)
class SwitchUnit:
    """One knob: a switchable layer and the S-BN layers keyed by its group count."""

    name: str
    layer: SwitchLayer
    norms: tuple[SwitchableBatchNorm2d, ...]


def _positions(module: nn.Module, tensor: torch.Tensor) -> int:
    """How many times (at batch 1) the layer applies its weights: a convolution once per output
    pixel (NCHW, the last two dimensions), a linear layer once per vector along all leading
    dimensions (1 for a (1, C) input; H x W for a channels-last (1, H, W, C) input, as in ConvNeXt)."""
    if isinstance(module, (nn.Conv2d, GroupSwitchConv2d)):
        return int(tensor.shape[-2] * tensor.shape[-1]) if tensor.dim() == 4 else 1
    return int(tensor.numel() // tensor.shape[-1]) if tensor.dim() > 0 else 1


def find_switch_units(network: nn.Module) -> list[SwitchUnit]:
    """Pair every S-BN with the switchable layer that feeds it, by tracing the data flow."""
    graph = DynamicLeafTracer().trace(network)
    modules = dict(network.named_modules())
    norms: dict[str, list[SwitchableBatchNorm2d]] = {}
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], SwitchableBatchNorm2d):
            source = node.args[0]
            if not (source.op == "call_module" and isinstance(modules[source.target], GroupSwitchConv2d)):
                raise InputError(f"switchable BN {node.target} does not follow a group-switchable conv")
            norms.setdefault(source.target, []).append(modules[node.target])
    return [SwitchUnit(name, module, tuple(norms.get(name, ())))
            for name, module in network.named_modules() if isinstance(module, (GroupSwitchConv2d, GroupSwitchLinear))]


class WeNetSupernet(BaseSupernet):
    """A trained network whose operating modes are per-layer group counts (paper III-A, III-B).

    Contract: `set_mode` validates first and changes nothing on error; then it swaps one tuple of
    group counts shared by every dynamic layer (O(1) once a mode has been seen; no weight copy or
    allocation). `materialize` returns an independent static network and leaves the supernet's
    mode unchanged. `cost` is a pure function of the mode. Not thread-safe: one mode is active at a
    time, so threads that evaluate different modes need their own supernet.
    """

    family = "wenet"
    mode_kind = "groups"

    def __init__(self, network: nn.Module, arch: Mapping, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.network = network
        self.arch = dict(arch)
        self.input_shape = (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
        self.units = {unit.name: unit for unit in find_switch_units(network)}
        knobs = [Knob(name, "ordered", unit.layer.group_choices)
                 for name, unit in self.units.items() if len(unit.layer.group_choices) > 1]
        if self.units and not knobs:
            channels = sorted({c for unit in self.units.values() for c in unit.layer.weight.shape[:2]})
            raise ModeError(f"no switchable layer can use any group count of {list(self.arch.get('group_choices', []))} "
                            f"besides 1: a count must divide a layer's input and output channels {channels}")
        self.space = SearchSpace(knobs, context=self.arch)
        # One shared state for all switchable layers and their S-BNs: set_mode swaps one tuple.
        self._switch = SwitchState([unit.layer.groups for unit in self.units.values()])
        for slot, unit in enumerate(self.units.values()):
            unit.layer.bind(self._switch, slot)
            for norm in unit.norms:
                norm.bind(self._switch, slot)
        self._plans: dict[Mode, tuple[int, ...]] = {}  # validated mode -> group count per unit
        self.conversion: ConversionReport | None = None  # what a converter made switchable, if one built it
        self._layers, self._other_params = self._trace_layers()

    # ---- modes -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    @property
    def mode(self) -> Mode:
        return Mode({name: self.units[name].layer.groups for name in self._knob_names()}, self.space.id)

    def _knob_names(self) -> list[str]:
        return [knob.name for knob in self.space.knobs]

    def uniform_mode(self, groups: int) -> Mode:
        """Every layer at min(groups, its largest allowed group count): the paper's 1/g-network."""
        offered = sorted({g for knob in self.space.knobs for g in knob.values})
        if groups not in offered:
            raise ModeError(f"no layer allows {groups} groups; group counts offered: {offered}")
        values = {}
        for knob in self.space.knobs:
            allowed = [g for g in knob.values if g <= groups]
            values[knob.name] = max(allowed)
        return self.space.mode(values)

    def uniform_modes(self) -> list[Mode]:
        """The uniform 1/g networks between full and smallest (the full one where there is none)."""
        choices = sorted({g for knob in self.space.knobs for g in knob.values})[1:-1] or [1]
        return [self.uniform_mode(g) for g in choices]

    def named_modes(self) -> dict[str, Mode]:
        """Full, the uniform 1/2, 1/4, 1/8 networks (those the layers allow), smallest."""
        offered = {g for knob in self.space.knobs for g in knob.values}
        uniform = {f"uniform 1/{g}": self.uniform_mode(g) for g in (2, 4, 8) if g in offered}
        return {"full": self.full_mode(), **uniform, "smallest": self.smallest_mode()}

    def mode_named(self, text: str) -> Mode | None:
        """full | smallest | uniform:G."""
        if text.startswith("uniform:"):
            try:
                groups = int(text.split(":", 1)[1])
            except ValueError:
                raise ModeError(f"uniform:G needs an integer group count, got {text!r}") from None
            return self.uniform_mode(groups)
        return super().mode_named(text)

    def mode_layout(self) -> str:
        return "groups per layer"

    def set_mode(self, mode: Mode) -> None:
        plan = self._plans.get(mode)
        if plan is None:  # a Mode is immutable: validate and plan it once
            self.space.validate(mode)  # raises before anything changes
            plan = tuple(mode.values.get(name, unit.layer.groups) for name, unit in self.units.items())
            if len(self._plans) > 4096:
                self._plans.clear()
            self._plans[mode] = plan
        self._switch.values = plan

    def set_bn_tracking(self, enabled: bool) -> None:
        """Whether S-BN layers update their running statistics in training mode."""
        for unit in self.units.values():
            for norm in unit.norms:
                norm.update_running_stats = enabled

    # ---- static networks and cost ------------------------------------------------------------
    def materialize(self, mode: Mode) -> nn.Module:
        return self.realize(mode, PLAIN)

    def grouped_layers(self, mode: Mode) -> tuple[str, ...]:
        self.space.validate(mode)
        return tuple(name for name in self.units if int(mode.values.get(name, 1)) > 1)

    def realize(self, mode: Mode, realization: Realization = PLAIN) -> nn.Module:
        unknown = sorted(set(realization.dense) - set(self.units))
        if unknown:
            raise InputError(f"no switchable layer {unknown[0]!r} in this supernet to compute densely")
        previous = self.mode
        self.set_mode(mode)
        try:
            return materialize_network(self.network, realization.dense, realization.shuffle)
        finally:
            self.set_mode(previous)

    def cost(self, mode: Mode) -> Cost:
        self.space.validate(mode)
        return network_cost(self._layers, dict(mode.values), self._other_params)

    @property
    def layer_shapes(self) -> tuple[LayerShape, ...]:
        return self._layers

    def layers_for(self, mode: Mode) -> tuple[tuple[LayerShape, ...], dict[str, int]]:
        """The layers of the mode and the group counts their knobs take: what the energy model counts
        memory accesses of."""
        return self._layers, dict(mode.values)

    def _trace_layers(self) -> tuple[tuple[LayerShape, ...], int]:
        """Record each conv/linear layer's shape once (full mode, batch 1), and which of them carry a
        bias after BN folding, from the materialized full network."""
        knobs = set(self._knob_names())
        shapes: dict[str, tuple[int, int]] = {}  # name -> (output area, input area)
        hooks = []
        for name, module in self.network.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear, GroupSwitchConv2d, GroupSwitchLinear)):
                def record(mod: nn.Module, inputs: tuple, output: torch.Tensor, name: str = name) -> None:
                    shapes[name] = (_positions(mod, output), _positions(mod, inputs[0]))
                hooks.append(module.register_forward_hook(record))
        previous, was_training = self.mode, self.training
        try:
            self.set_mode(self.full_mode())
            self.eval()
            with torch.no_grad():
                self.network(torch.zeros(1, *self.input_shape))
            static = materialize_network(self.network)
        finally:
            for hook in hooks:
                hook.remove()
            self.set_mode(previous)
            self.train(was_training)
        static_modules = dict(static.named_modules())
        layers = []
        for name, module in self.network.named_modules():
            if name not in shapes:
                continue
            if isinstance(module, (GroupSwitchConv2d, nn.Conv2d)):
                kind, c_in, c_out, area = "conv", module.in_channels, module.out_channels, module.kernel_size
                area = area * area if isinstance(area, int) else area[0] * area[1]
                fixed = getattr(module, "groups", 1) if isinstance(module, nn.Conv2d) else 1
            else:
                kind, c_in, c_out, area, fixed = "linear", module.in_features, module.out_features, 1, 1
            twin = static_modules.get(name)
            bias = (twin.bias is not None) if isinstance(twin, (nn.Conv2d, nn.Linear)) else module.bias is not None
            knob = name if name in knobs else None
            layers.append(LayerShape(name, kind, c_in, c_out, area, *shapes[name], fixed, knob, bias))
        other = sum(p.numel() for m in static.modules() if not isinstance(m, (nn.Conv2d, nn.Linear))
                    for p in m.parameters(recurse=False))
        return tuple(layers), other

    def describe(self, mode: Mode) -> str:
        """Group counts per layer in order, e.g. '1-1-2-4-...'."""
        return "-".join(str(mode.values[name]) for name in self._knob_names())

