"""Dynamic layers, supernet builders, converters from torchvision models, checkpoints."""

from subnetsearch.supernets._base import BaseSupernet
from subnetsearch.supernets._convert import ConversionError, ConversionReport, convert_to_wenet, convert_with_report
from subnetsearch.supernets._cost import Cost, LayerShape, layer_cost, network_cost
from subnetsearch.supernets._layers import (
    DEFAULT_GROUP_CHOICES,
    ChannelShuffle,
    GroupSwitchConv2d,
    GroupSwitchLinear,
    SwitchableBatchNorm2d,
    allowed_groups,
    block_diagonal,
)
from subnetsearch.supernets._materialize import fold_shuffles, materialize_network, to_static
from subnetsearch.supernets._registry import (
    CIFAR_RESNET_DEFAULTS,
    FAMILIES,
    WIDTH_RESNET_DEFAULTS,
    ArchError,
    build_supernet,
    register_family,
    supernet_from_model,
)
from subnetsearch.supernets._resnet import CifarResNet, shuffle_groups
from subnetsearch.supernets._wenet import SwitchUnit, WeNetSupernet, find_switch_units
from subnetsearch.supernets._width import WidthSupernet

__all__ = [
    "CIFAR_RESNET_DEFAULTS",
    "DEFAULT_GROUP_CHOICES",
    "FAMILIES",
    "ArchError",
    "BaseSupernet",
    "ChannelShuffle",
    "ConversionError",
    "ConversionReport",
    "CifarResNet",
    "Cost",
    "GroupSwitchConv2d",
    "GroupSwitchLinear",
    "LayerShape",
    "SwitchUnit",
    "SwitchableBatchNorm2d",
    "WIDTH_RESNET_DEFAULTS",
    "WeNetSupernet",
    "WidthSupernet",
    "allowed_groups",
    "block_diagonal",
    "build_supernet",
    "register_family",
    "convert_to_wenet",
    "convert_with_report",
    "find_switch_units",
    "fold_shuffles",
    "layer_cost",
    "materialize_network",
    "network_cost",
    "shuffle_groups",
    "supernet_from_model",
    "to_static",
]
