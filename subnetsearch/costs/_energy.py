"""Analytical energy model, Eq. (6) of the DDI paper:

    E = sum_i  #acc_i * e_i  +  #MAC * e_MAC

over three memory levels (main memory, cache / global buffer, register file), as in Eyeriss
(Chen, Emer, Sze, ISCA 2016), which the DDI paper follows. Access counts come from a simple
dataflow model per layer (below), not from a cycle-level simulator such as SCALE-Sim: figures from
this module are always labelled "model", never "measured".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from subnetsearch.costs._macs import LayerShape, layer_cost
from subnetsearch.errors import InputError

BYTES_PER_VALUE = 4  # float32


@dataclass(frozen=True)
class EnergyCoefficients:
    """Energy per operation in picojoules.

    Default: Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm, 32-bit floating point:
    multiply 3.7 pJ + add 0.9 pJ = 4.6 pJ per MAC; 32-bit read from an 8 KB SRAM 5 pJ (register
    file / small local buffer level; the paper's 64-bit figure is 10 pJ); from a 1 MB SRAM 50 pJ
    (cache level, his 64-bit 100 pJ halved); DRAM 640 pJ per 32-bit word (his 1.3-2.6 nJ per 64 bits).
    """

    mac_pj: float = 4.6
    register_pj: float = 5.0
    cache_pj: float = 50.0
    dram_pj: float = 640.0
    source: str = "Horowitz ISSCC 2014, 45 nm, fp32"

    def __post_init__(self) -> None:
        for name in ("mac_pj", "register_pj", "cache_pj", "dram_pj"):
            if not getattr(self, name) >= 0:
                raise InputError(f"energy coefficient {name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Accesses:
    """Memory accesses (32-bit words) and MACs of one inference."""

    dram: int
    cache: int
    register: int
    macs: int

    def __add__(self, other: Accesses) -> Accesses:
        return Accesses(self.dram + other.dram, self.cache + other.cache, self.register + other.register,
                        self.macs + other.macs)


REGISTER_TILE = 16  # output channels whose partial sums one fetched input value updates in registers


def layer_accesses(layer: LayerShape, groups: int, batch: int = 1) -> Accesses:
    """Dataflow model of one conv / linear layer at `groups` groups, for `batch` inputs.

    DRAM: the weights once per batch; every input and output value once per input.
    Cache: every weight once per input; every input value once per tile of REGISTER_TILE output
    channels of its group (a value feeds c_out / g outputs: grouping cuts this traffic); every
    output value once. Registers: each MAC reads two operands and updates one partial sum.
    """
    cost = layer_cost(layer, groups)
    weights = cost.params
    inputs = layer.in_channels * layer.input_area
    outputs = layer.out_channels * layer.output_area
    tiles = -(-(layer.out_channels // groups) // REGISTER_TILE)  # ceil
    macs = cost.macs * batch
    dram = weights + batch * (inputs + outputs)
    cache = batch * (weights + inputs * tiles + outputs)
    return Accesses(dram, cache, 3 * macs, macs)


def network_accesses(layers: Iterable[LayerShape], groups: Mapping[str, int], batch: int = 1) -> Accesses:
    total = Accesses(0, 0, 0, 0)
    for layer in layers:
        total = total + layer_accesses(layer, groups[layer.knob] if layer.knob else layer.fixed_groups, batch)
    return total


def energy_pj(accesses: Accesses, coefficients: EnergyCoefficients = EnergyCoefficients()) -> float:
    """Eq. (6): sum over memory levels of accesses x energy per access, plus MACs x e_MAC."""
    return (accesses.dram * coefficients.dram_pj + accesses.cache * coefficients.cache_pj
            + accesses.register * coefficients.register_pj + accesses.macs * coefficients.mac_pj)
