import pytest

from subnetsearch.costs import Accesses, EnergyCoefficients, energy_pj, layer_accesses, network_accesses
from subnetsearch.supernets import LayerShape


def test_energy_of_a_hand_computed_layer() -> None:
    # 3x3 conv, 16 -> 32 channels, 8x8 output from a 8x8 input, 2 groups, folded-BN bias.
    layer = LayerShape("c", "conv", 16, 32, 9, 64, 64, 1, "c", True)
    accesses = layer_accesses(layer, groups=2)
    weights = 32 * 8 * 9 + 32  # c_out * c_in/g * k*k + bias = 2336
    macs = 32 * 8 * 9 * 64  # 147456
    inputs, outputs = 16 * 64, 32 * 64
    assert accesses == Accesses(dram=weights + inputs + outputs, cache=weights + inputs * 1 + outputs,
                                register=3 * macs, macs=macs)
    coefficients = EnergyCoefficients(mac_pj=1, register_pj=2, cache_pj=3, dram_pj=4)
    expected = 4 * (2336 + 1024 + 2048) + 3 * (2336 + 1024 + 2048) + 2 * 3 * 147456 + 147456
    assert energy_pj(accesses, coefficients) == expected


def test_grouping_cuts_energy_and_batch_amortizes_weights(tiny_supernet) -> None:
    layers = tiny_supernet.layer_shapes
    full = network_accesses(layers, dict(tiny_supernet.full_mode().values))
    smallest = network_accesses(layers, dict(tiny_supernet.smallest_mode().values))
    assert energy_pj(smallest) < energy_pj(full)
    assert full.macs == tiny_supernet.cost(tiny_supernet.full_mode()).macs
    batch8 = network_accesses(layers, dict(tiny_supernet.full_mode().values), batch=8)
    assert batch8.dram < 8 * full.dram  # weights are read once per batch


def test_bad_coefficients_are_refused() -> None:
    with pytest.raises(ValueError, match="dram_pj"):
        EnergyCoefficients(dram_pj=-1)
