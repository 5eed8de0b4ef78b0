"""The analytic cost models, pure functions of layer shapes that every other package may use: MACs
and parameters (the WeNet paper's Eq. 2-3) and energy (the DDI paper's Eq. 6, a memory-hierarchy
access model). Supernets record their layers' shapes; devices keep energy coefficients."""

from subnetsearch.costs._energy import (
    BYTES_PER_VALUE,
    Accesses,
    EnergyCoefficients,
    energy_pj,
    layer_accesses,
    network_accesses,
)
from subnetsearch.costs._macs import Cost, LayerShape, layer_cost, network_cost

__all__ = [
    "BYTES_PER_VALUE",
    "Accesses",
    "Cost",
    "EnergyCoefficients",
    "LayerShape",
    "energy_pj",
    "layer_accesses",
    "layer_cost",
    "network_accesses",
    "network_cost",
]
