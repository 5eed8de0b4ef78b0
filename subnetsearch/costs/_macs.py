"""Analytical cost model: MACs and parameters of a materialized mode, as pure functions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class LayerShape:
    """Static facts of one conv / linear layer, recorded once by a shape trace of the supernet."""

    name: str
    kind: str  # "conv" or "linear"
    in_channels: int
    out_channels: int
    kernel_area: int  # k_h * k_w (1 for linear)
    output_area: int  # h_out * w_out (1 for linear)
    input_area: int  # h_in * w_in (1 for linear)
    fixed_groups: int  # groups of a static layer (depthwise convs keep theirs); 1 for switchable ones
    knob: str | None  # the knob that sets this layer's group count, if it is switchable
    bias: bool  # whether the materialized layer has a bias (own bias, or a folded BN)
    out_knob: str | None = None  # the width knob that sets its output channels (a prefix of them)
    in_knob: str | None = None  # the width knob of the layer whose output it reads

    def at_widths(self, widths: Mapping[str, int]) -> LayerShape:
        """This layer with its width knobs at `widths` (a knob missing from `widths`: full width)."""
        if self.out_knob is None and self.in_knob is None:
            return self
        return replace(self, out_channels=int(widths.get(self.out_knob, self.out_channels)) if self.out_knob
                       else self.out_channels,
                       in_channels=int(widths.get(self.in_knob, self.in_channels)) if self.in_knob else self.in_channels)


@dataclass(frozen=True)
class Cost:
    macs: int
    params: int


def layer_cost(layer: LayerShape, groups: int) -> Cost:
    """Paper Eq. (2)-(3): MACs = h_o * w_o * c_i * c_o * k * k / g; weights c_o * c_i/g * k * k (+ bias)."""
    weights = layer.out_channels * (layer.in_channels // groups) * layer.kernel_area
    macs = weights * layer.output_area
    return Cost(macs, weights + (layer.out_channels if layer.bias else 0))


def network_cost(layers: Iterable[LayerShape], groups: Mapping[str, int], other_params: int = 0) -> Cost:
    """Sum of layer costs under a mode's group counts. `other_params`: parameters outside conv/linear
    layers (BN layers that could not be folded), which no knob changes."""
    macs, params = 0, other_params
    for layer in layers:
        cost = layer_cost(layer, groups[layer.knob] if layer.knob else layer.fixed_groups)
        macs += cost.macs
        params += cost.params
    return Cost(macs, params)
