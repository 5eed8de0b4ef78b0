"""What runs on the device: a front of modes in one artifact (`subnetsearch export --front`), its
manifest, switching modes without reloading and choosing one by budget (`DynamicModel`).

Importable without torch: it needs only the artifact's runtime (onnxruntime, openvino, executorch)
and numpy. The budget rule (`choose`) is the one the store's `best` query applies."""

from subnetsearch.deploy._manifest import (
    FORMS,
    MANIFEST_VERSION,
    DeployError,
    Manifest,
    ModeEntry,
    jsonable,
    manifest_path,
)
from subnetsearch.deploy._model import MANIFEST_KEY, DynamicModel
from subnetsearch.deploy._onnx_front import CombinedOnnx, combine_onnx
from subnetsearch.deploy._select import BUDGET_RULE, OBJECTIVES, Candidate, Z, budget_limits, choose, meets

__all__ = ["BUDGET_RULE", "FORMS", "MANIFEST_KEY", "MANIFEST_VERSION", "OBJECTIVES", "Z", "Candidate", "CombinedOnnx",
           "DeployError", "DynamicModel", "Manifest", "ModeEntry", "budget_limits", "choose", "combine_onnx", "jsonable",
           "manifest_path", "meets"]
