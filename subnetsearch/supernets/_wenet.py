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
from subnetsearch.supernets._width import WIDTH_LAYERS, WidthState, attention_projections, is_attention

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
    """A trained network whose operating modes are per-layer group counts (paper III-A, III-B) and,
    in a converted model, per-layer widths of the layers no private BN follows (`_width`: a knob
    named by its layer, its values the widths it offers, widest first).

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
        # Width layers: one state for all (a converter may have made several); a knob per producer.
        self._width_state = WidthState()
        self.width_layers = {name: m for name, m in network.named_modules() if isinstance(m, WIDTH_LAYERS)}
        self.width_knobs = {name: m.width_choices for name, m in self.width_layers.items() if m.out_knob == name}
        for module in self.width_layers.values():
            module.state = self._width_state
        self._width_state.widths = {name: choices[0] for name, choices in self.width_knobs.items()}
        self._group_knobs = [knob.name for knob in knobs]
        if self.units and not knobs and not self.width_knobs:
            channels = sorted({c for unit in self.units.values() for c in unit.layer.weight.shape[:2]})
            raise ModeError(f"no switchable layer can use any group count of {list(self.arch.get('group_choices', []))} "
                            f"besides 1: a count must divide a layer's input and output channels {channels}")
        knobs += [Knob(name, "categorical", choices) for name, choices in self.width_knobs.items()]
        self.space = SearchSpace(knobs, context=self.arch)
        if self.width_knobs:
            self.mode_kind = "width+groups" if self._group_knobs else "width"
        # One shared state for all switchable layers and their S-BNs: set_mode swaps one tuple.
        self._switch = SwitchState([unit.layer.groups for unit in self.units.values()])
        for slot, unit in enumerate(self.units.values()):
            unit.layer.bind(self._switch, slot)
            for norm in unit.norms:
                norm.bind(self._switch, slot)
        # validated mode -> (group count per unit, width per width knob)
        self._plans: dict[Mode, tuple[tuple[int, ...], dict[str, int]]] = {}
        self.conversion: ConversionReport | None = None  # what a converter made switchable, if one built it
        self._layers, self._other_params = self._trace_layers()

    # ---- modes -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    @property
    def mode(self) -> Mode:
        values = {name: self.units[name].layer.groups for name in self._group_knobs}
        values.update(self._width_state.widths)
        return Mode({name: values[name] for name in self._knob_names()}, self.space.id)

    def _knob_names(self) -> list[str]:
        return [knob.name for knob in self.space.knobs]

    def _group_counts_offered(self) -> list[int]:
        return sorted({g for knob in self.space.knobs if knob.name in self._group_knobs for g in knob.values})

    def _width_ratios(self) -> list[float]:
        return sorted({float(r) for r in self.arch.get("width_ratios", [1.0])}, reverse=True)

    def uniform_mode(self, groups: int) -> Mode:
        """Every layer at min(groups, its largest allowed group count): the paper's 1/g-network
        (width knobs at full width)."""
        offered = self._group_counts_offered()
        if groups not in offered:
            raise ModeError(f"no layer allows {groups} groups; group counts offered: {offered}")
        values: dict[str, int] = {name: choices[0] for name, choices in self.width_knobs.items()}
        for knob in self.space.knobs:
            if knob.name in self._group_knobs:
                values[knob.name] = max(g for g in knob.values if g <= groups)
        return self.space.mode(values)

    def width_mode(self, ratio: float) -> Mode:
        """Every width knob at `ratio` of its full width (one of the architecture's `width_ratios`),
        one group everywhere."""
        ratios = self._width_ratios()
        if not self.width_knobs or ratio not in ratios:
            raise ModeError(f"no width ratio {ratio}; this supernet offers "
                            f"{ratios if self.width_knobs else 'no width knobs'}")
        values: dict[str, int] = {name: 1 for name in self._group_knobs}
        values.update({name: max(1, round(choices[0] * ratio)) for name, choices in self.width_knobs.items()})
        return self.space.mode(values)

    def uniform_modes(self) -> list[Mode]:
        """The uniform 1/g networks and width shares between full and smallest (the full one where
        there is none)."""
        modes = [self.uniform_mode(g) for g in self._group_counts_offered()[1:-1]]
        modes += [self.width_mode(r) for r in self._width_ratios()[1:-1]] if self.width_knobs else []
        return modes or [self.full_mode()]

    def named_modes(self) -> dict[str, Mode]:
        """Full, the uniform 1/2, 1/4, 1/8 networks (those the layers allow), the width shares,
        smallest."""
        offered = set(self._group_counts_offered())
        uniform = {f"uniform 1/{g}": self.uniform_mode(g) for g in (2, 4, 8) if g in offered}
        if self.width_knobs:
            uniform.update({f"width:{r:g}": self.width_mode(r) for r in self._width_ratios()[1:]})
        return {"full": self.full_mode(), **uniform, "smallest": self.smallest_mode()}

    def mode_named(self, text: str) -> Mode | None:
        """full | smallest | uniform:G | width:R."""
        if text.startswith("uniform:"):
            try:
                groups = int(text.split(":", 1)[1])
            except ValueError:
                raise ModeError(f"uniform:G needs an integer group count, got {text!r}") from None
            return self.uniform_mode(groups)
        if text.startswith("width:"):
            try:
                ratio = float(text.split(":", 1)[1])
            except ValueError:
                raise ModeError(f"width:R needs a share of the channels, got {text!r}") from None
            return self.width_mode(ratio)
        return super().mode_named(text)

    def kind_of(self, mode: Mode) -> str:
        """full, groups, width or width+groups: which kinds of knob `mode` moves from full."""
        grouped = any(int(mode.values[name]) > 1 for name in self._group_knobs)
        narrow = any(int(mode.values[name]) < choices[0] for name, choices in self.width_knobs.items())
        return self.width_and_groups_kind(narrow, grouped)

    def mode_layout(self) -> str:
        if not self.width_knobs:
            return "groups per layer"
        return "width shares per layer" if not self._group_knobs else "groups per layer | width shares per layer"

    def set_mode(self, mode: Mode) -> None:
        plan = self._plans.get(mode)
        if plan is None:  # a Mode is immutable: validate and plan it once
            self.space.validate(mode)  # raises before anything changes
            plan = (tuple(mode.values.get(name, unit.layer.groups) for name, unit in self.units.items()),
                    {name: int(mode.values[name]) for name in self.width_knobs})
            if len(self._plans) > 4096:
                self._plans.clear()
            self._plans[mode] = plan
        self._switch.values = plan[0]
        self._width_state.widths = plan[1]

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
        layers, groups = self.layers_for(mode)
        return network_cost(layers, groups, self._other_params)

    @property
    def layer_shapes(self) -> tuple[LayerShape, ...]:
        return self._layers

    def layers_for(self, mode: Mode) -> tuple[tuple[LayerShape, ...], dict[str, int]]:
        """The layers of the mode (at its widths) and the group counts their knobs take: what the
        energy model counts memory accesses of."""
        self.space.validate(mode)
        if not self.width_knobs:
            return self._layers, dict(mode.values)
        widths = {name: int(mode.values[name]) for name in self.width_knobs}
        return (tuple(layer.at_widths(widths) for layer in self._layers),
                {name: int(mode.values[name]) for name in self._group_knobs})

    def _trace_layers(self) -> tuple[tuple[LayerShape, ...], int]:
        """Record each conv/linear layer's shape once (full mode, batch 1), and which of them carry a
        bias after BN folding, from the materialized full network."""
        shapes: dict[str, tuple[int, int]] = {}  # name -> (output area, input area)
        attention: list[LayerShape] = []  # projections computed inside attention modules
        hooks = []
        for name, module in self.network.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear, GroupSwitchConv2d, GroupSwitchLinear)):
                def record(mod: nn.Module, inputs: tuple, output: torch.Tensor, name: str = name) -> None:
                    shapes[name] = (_positions(mod, output), _positions(mod, inputs[0]))
                hooks.append(module.register_forward_hook(record))
            elif is_attention(module):
                def project(mod: nn.Module, inputs: tuple, output: object, name: str = name) -> None:
                    attention.extend(LayerShape(f"{name}.{part}", "linear", c_in, c_out, 1, positions, positions, 1,
                                                None, bias)
                                     for part, c_in, c_out, positions, bias in attention_projections(mod, inputs[0]))
                hooks.append(module.register_forward_hook(project))
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
            knob = name if name in self._group_knobs else None
            width = self.width_layers.get(name)
            layers.append(LayerShape(name, kind, c_in, c_out, area, *shapes[name], fixed, knob, bias,
                                     width.out_knob if width is not None else None,
                                     width.in_knob if width is not None else None))
        layers.extend(attention)  # their weights: in those layers, not among the other parameters
        other = sum(p.numel() for m in static.modules()
                    if not isinstance(m, (nn.Conv2d, nn.Linear, nn.MultiheadAttention))
                    for p in m.parameters(recurse=False))
        return tuple(layers), other

    def describe(self, mode: Mode) -> str:
        """Group counts per layer in order, e.g. '1-1-2-4-...'; then each width knob's share of its
        channels ('1-2-4 | widths 1 .5 .25'; 'widths 1 .5' without group knobs)."""
        groups = "-".join(str(mode.values[name]) for name in self._group_knobs)
        if not self.width_knobs:
            return groups

        def share(name: str, choices: tuple[int, ...]) -> str:
            return f"{int(mode.values[name]) / choices[0]:.2f}".rstrip("0").rstrip(".").removeprefix("0") or "0"

        widths = "widths " + " ".join(share(name, choices) for name, choices in self.width_knobs.items())
        return f"{groups} | {widths}" if groups else widths

