"""The supernet contract (BaseSupernet, register_family), dynamic layers, the families and their builders,
converters from torchvision models, BN calibration, checkpoints."""

from subnetsearch.costs import Cost, LayerShape, layer_cost, network_cost
from subnetsearch.supernets._base import PLAIN, BaseSupernet, Realization, module_device
from subnetsearch.supernets._calibrate import bn_state, calibrated_bn, stored_bn
from subnetsearch.supernets._checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_bytes,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from subnetsearch.supernets._convert import ConversionError, ConversionReport, convert_to_wenet
from subnetsearch.supernets._ddi import DDISupernet
from subnetsearch.supernets._ddi_network import GATINGS, RESOURCES, DDIResNet, resource_loss, signed_alpha
from subnetsearch.supernets._lasso import LassoSupernet, SlimBatchNorm2d, SlimConv2d, scaled_channels, uniform_match
from subnetsearch.supernets._layers import (
    ChannelShuffle,
    GroupSwitchConv2d,
    GroupSwitchLinear,
    SwitchableBatchNorm2d,
    allowed_groups,
    block_diagonal,
)
from subnetsearch.supernets._materialize import DynamicLeafTracer, is_relu, single_user, to_static
from subnetsearch.supernets._models import MODEL_HELP, ModelError, build_model_supernet, model_arch
from subnetsearch.supernets._nested import NESTED_RESNET_DEFAULTS, NestedSupernet
from subnetsearch.supernets._pretrained import (
    DEFAULT_CHECKPOINT,
    DEFAULT_EPOCHS,
    DEFAULT_FAMILY,
    DEFAULT_LR,
    DEFAULT_SHA256,
    DEFAULT_TRAIN_COMMAND,
    DEFAULT_WIDTHS,
    NESTED_CHECKPOINT,
    NESTED_SHA256,
    WENET_CHECKPOINT,
    default_checkpoint,
)
from subnetsearch.supernets._registry import (
    CIFAR_RESNET_DEFAULTS,
    DDI_RESNET_DEFAULTS,
    FAMILIES,
    LASSO_RESNET_DEFAULTS,
    ArchError,
    build_supernet,
    build_supernet_of,
    register_family,
    supernet_from_model,
    unregister_family,
)
from subnetsearch.supernets._resnet import shuffle_groups
from subnetsearch.supernets._wenet import WeNetSupernet

__all__ = [
    "PLAIN",
    "Realization",
    "bn_state",
    "calibrated_bn",
    "stored_bn",
    "Checkpoint",
    "CheckpointError",
    "checkpoint_bytes",
    "load_checkpoint",
    "load_weights",
    "save_checkpoint",
    "DDIResNet",
    "DDISupernet",
    "GATINGS",
    "RESOURCES",
    "resource_loss",
    "signed_alpha",
    "DynamicLeafTracer",
    "is_relu",
    "single_user",
    "DEFAULT_CHECKPOINT",
    "DEFAULT_FAMILY",
    "DEFAULT_WIDTHS",
    "DEFAULT_SHA256",
    "DEFAULT_EPOCHS",
    "DEFAULT_LR",
    "NESTED_CHECKPOINT",
    "NESTED_SHA256",
    "WENET_CHECKPOINT",
    "default_checkpoint",
    "DEFAULT_TRAIN_COMMAND",
    "DDI_RESNET_DEFAULTS",
    "NESTED_RESNET_DEFAULTS",
    "NestedSupernet",
    "scaled_channels",
    "uniform_match",
    "CIFAR_RESNET_DEFAULTS",
    "FAMILIES",
    "ArchError",
    "BaseSupernet",
    "ChannelShuffle",
    "ConversionError",
    "MODEL_HELP",
    "ModelError",
    "build_model_supernet",
    "model_arch",
    "module_device",
    "ConversionReport",
    "Cost",
    "GroupSwitchConv2d",
    "GroupSwitchLinear",
    "LayerShape",
    "SwitchableBatchNorm2d",
    "LASSO_RESNET_DEFAULTS",
    "WeNetSupernet",
    "LassoSupernet",
    "SlimBatchNorm2d",
    "SlimConv2d",
    "allowed_groups",
    "block_diagonal",
    "build_supernet",
    "build_supernet_of",
    "register_family",
    "unregister_family",
    "convert_to_wenet",
    "layer_cost",
    "network_cost",
    "shuffle_groups",
    "supernet_from_model",
    "to_static",
]
