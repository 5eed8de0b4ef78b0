"""`DynamicModel`: a device's front in one artifact, every mode loaded once, switched in O(1).

    from subnetsearch.deploy import DynamicModel
    model = DynamicModel.load("front.onnx")          # or front.pte, front.xml, a directory
    model.switch(model.select(max_latency_ms=0.5))  # the most accurate mode within 0.5 ms
    logits = model(pixels)                           # raw pixels 0..255, float32 NCHW (numpy)

It imports no torch: only the artifact's runtime (onnxruntime, openvino; executorch brings its own
torch) and numpy, which every runtime depends on."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from subnetsearch.deploy._manifest import DeployError, Manifest, ModeEntry, manifest_path
from subnetsearch.deploy._onnx_front import INPUT, SELECTOR, onnx_metadata
from subnetsearch.deploy._select import budget_limits, choose
from subnetsearch.errors import InputError

MANIFEST_KEY = "subnetsearch.manifest"  # the ONNX metadata_props key that holds the manifest
_INSTALL = {"onnxruntime": "pip install onnxruntime", "openvino": "pip install 'subnetsearch[openvino]'",
            "executorch": "pip install 'subnetsearch[executorch]'"}


def _require(module: str, runtime: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise DeployError(f"this artifact runs on {runtime}, which is not installed here: `{_INSTALL[runtime]}`")


def _threads(manifest: Manifest, threads: int | None) -> int:
    if threads is not None:
        if threads < 1:
            raise DeployError(f"threads must be at least 1, got {threads}")
        return threads
    return int(manifest.device.get("protocol", {}).get("threads", 1))


def _onnx_session(model: str | bytes, threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _openvino_compiled(path: str, threads: int) -> Any:
    import openvino

    compiled = openvino.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                          "PERFORMANCE_HINT": "LATENCY",
                                                          "INFERENCE_PRECISION_HINT": "f32"})
    return compiled.create_infer_request()


class DynamicModel:
    """Every mode of a multi-mode artifact, loaded once. `switch` changes which one `__call__` runs
    (an index change: nothing is loaded or compiled); `select` answers a budget from the manifest
    by the same rule as the store's `best`."""

    def __init__(self, manifest: Manifest, runners: list[Callable[[Any], Any]], source: str) -> None:
        self.manifest = manifest
        self._runners = runners
        self._current = 0
        self.source = source

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None) -> DynamicModel:
        """Load a front artifact: `.onnx`, `.pte` or `.xml` (manifest inside or beside it), or a
        directory of per-mode files with its `manifest.json`. `threads`: the runtime's intra-op
        threads (default: the device's, as its figures were measured)."""
        path = Path(path)
        if not path.exists():
            raise DeployError(f"no front artifact at {path}")
        if path.suffix.lower() == ".onnx" and path.is_file():
            return cls._load_onnx(path, threads)
        where = manifest_path(path)
        if not where.is_file():
            raise DeployError(f"{path}: its manifest {where.name} is not {'in it' if path.is_dir() else 'beside it'}; "
                              "export the front again (subnetsearch export --front)")
        manifest = Manifest.from_json(where.read_text(), str(where))
        count = len(manifest.modes)
        if path.is_dir():
            if manifest.form != "directory":
                raise DeployError(f"{where} describes a {manifest.form} artifact, not a directory of modes")
            files = [path / f"mode_{index}{manifest.suffix}" for index in range(count)]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise DeployError(f"{path} lacks {', '.join(missing)} of its manifest")
            return cls(manifest, [_static_runner(manifest, f, _threads(manifest, threads)) for f in files], str(path))
        expected = {".pte": "executorch", ".xml": "openvino"}.get(path.suffix.lower())
        if expected is None or manifest.form != expected:
            raise DeployError(f"{path}: a front artifact is .onnx, .pte, .xml or a directory, and its manifest says "
                              f"{manifest.form}")
        if manifest.form == "executorch":
            return cls(manifest, _executorch_methods(path, count, _threads(manifest, threads)), str(path))
        _require("openvino", "openvino")
        request = _openvino_compiled(str(path), _threads(manifest, threads))
        return cls(manifest, [_openvino_branch(request, index) for index in range(count)], str(path))

    @classmethod
    def _load_onnx(cls, path: Path, threads: int | None) -> DynamicModel:
        _require("onnxruntime", "onnxruntime")
        try:  # the manifest first (it names the threads), read without a session: one session is built
            text = onnx_metadata(path.read_bytes()).get(MANIFEST_KEY)
        except InputError:
            raise DeployError(f"{path} is not an ONNX model ONNX Runtime can load: it is not a protobuf message") \
                from None
        if text is None:
            raise DeployError(f"{path} has no subnetsearch manifest in its metadata: a single mode's export? "
                              "Load it with onnxruntime, or export a front (subnetsearch export --front)")
        manifest = Manifest.from_json(text, f"{path}'s manifest")
        if manifest.form != "onnx":
            raise DeployError(f"{path}'s manifest says {manifest.form}, not onnx")
        try:
            session = _onnx_session(str(path), _threads(manifest, threads))
        except Exception as error:  # onnxruntime raises its own exception types
            raise DeployError(f"{path} is not an ONNX model ONNX Runtime can load: {error}") from None
        return cls(manifest, [_onnx_branch(session, index) for index in range(len(manifest.modes))], str(path))

    @property
    def modes(self) -> tuple[str, ...]:
        """The mode ids, in the artifact's order (most accurate first, as the front is exported)."""
        return tuple(entry.id for entry in self.manifest.modes)

    @property
    def mode(self) -> str:
        """The id of the mode `__call__` runs now."""
        return self.manifest.modes[self._current].id

    def info(self, mode_id: str | None = None) -> ModeEntry:
        """A mode's manifest entry (metrics, intervals, how measured); default: the current mode."""
        return self.manifest.modes[self._current] if mode_id is None else self.manifest.entry(mode_id)

    def switch(self, mode_id: str) -> None:
        """Run mode `mode_id` (an id or a unique prefix) from the next call on."""
        self._current = self.manifest.entry(mode_id).index

    def select(self, max_latency_ms: float | None = None, min_accuracy: float | None = None,
               max_energy_mj: float | None = None, max_macs: float | None = None,
               objective: str = "accuracy") -> str | None:
        """The id of the mode that optimizes `objective` among those that meet the budget with the
        manifest's intervals (`manifest.rule`, the store's `best` rule); None if none does. It does
        not switch: `model.switch(model.select(...))`."""
        limits = budget_limits(max_latency_ms, max_macs, max_energy_mj, min_accuracy)
        chosen = choose([entry.candidate for entry in self.manifest.modes], limits, objective)
        return None if chosen is None else chosen.mode_id

    def __call__(self, pixels: Any) -> Any:
        """The current mode's logits (numpy) for raw pixels (0..255, float32, NCHW, numpy)."""
        return self._runners[self._current](pixels)

    def __repr__(self) -> str:
        return (f"DynamicModel({self.source!r}, {len(self.modes)} modes, {self.manifest.form} on "
                f"{self.manifest.runtime}, current {self.mode[:12]})")


def _as_float32(pixels: Any) -> Any:
    import numpy as np

    array = np.ascontiguousarray(pixels, dtype=np.float32)
    if array.ndim != 4:
        raise DeployError(f"pixels must be a 4-d NCHW array, got shape {array.shape}")
    return array


def _onnx_branch(session: Any, index: int) -> Callable[[Any], Any]:
    import numpy as np

    selector = np.array(index, dtype=np.int64)
    return lambda pixels: session.run(None, {INPUT: _as_float32(pixels), SELECTOR: selector})[0]


def _openvino_branch(request: Any, index: int) -> Callable[[Any], Any]:
    import numpy as np

    selector = np.array(index, dtype=np.int64)

    def run(pixels: Any) -> Any:
        request.infer({INPUT: _as_float32(pixels), SELECTOR: selector})
        return request.get_output_tensor(0).data.copy()
    return run


def _executorch_program(path: Path, threads: int) -> Any:
    _require("executorch", "executorch")
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    from executorch.runtime import Runtime

    _unsafe_reset_threadpool(threads)
    try:
        return Runtime.get().load_program(path.read_bytes())
    except Exception as error:  # the runtime raises its own types
        raise DeployError(f"{path} is not an ExecuTorch program this runtime loads: {error}") from None


def _executorch_runner(program: Any, name: str) -> Callable[[Any], Any]:
    """A method's runner; it holds the program too, which its methods need alive (freeing the program
    under a loaded method crashes the process)."""
    import torch  # ExecuTorch's Python runtime takes and gives torch tensors (it depends on torch)

    method = program.load_method(name)

    def run(pixels: Any, program: Any = program) -> Any:
        return method.execute([torch.from_numpy(_as_float32(pixels))])[0].numpy()
    return run


def _executorch_methods(path: Path, count: int, threads: int) -> list[Callable[[Any], Any]]:
    program = _executorch_program(path, threads)
    names = set(program.method_names)
    missing = [f"mode_{i}" for i in range(count) if f"mode_{i}" not in names]
    if missing:
        raise DeployError(f"{path} lacks the methods {', '.join(missing)} its manifest names")
    return [_executorch_runner(program, f"mode_{i}") for i in range(count)]


def _static_runner(manifest: Manifest, path: Path, threads: int) -> Callable[[Any], Any]:
    """One mode's static file of the directory form, loaded by its runtime."""
    if manifest.runtime == "onnxruntime":
        _require("onnxruntime", "onnxruntime")
        session = _onnx_session(str(path), threads)
        name = session.get_inputs()[0].name
        return lambda pixels: session.run(None, {name: _as_float32(pixels)})[0]
    if manifest.runtime == "openvino":
        _require("openvino", "openvino")
        request = _openvino_compiled(str(path), threads)

        def run(pixels: Any) -> Any:
            request.infer({0: _as_float32(pixels)})
            return request.get_output_tensor(0).data.copy()
        return run
    if manifest.runtime == "executorch":
        return _executorch_runner(_executorch_program(path, threads), "forward")
    raise DeployError(f"{manifest_path(path.parent)} names runtime {manifest.runtime!r}; a directory of modes runs on "
                      "onnxruntime, openvino or executorch")
