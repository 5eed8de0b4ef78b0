"""`onnxruntime`: the ONNX export (dynamic batch axis) run by ONNX Runtime's CPU provider with every
graph optimization."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
from torch import nn

from subnetsearch.devices.runtimes import Runnable, Runtime, register_runtime
from subnetsearch.errors import ExportError


def export_onnx(model: nn.Module, example: torch.Tensor) -> bytes:
    """ONNX bytes of a static model, its batch axis dynamic (a device of another batch size, or an
    OpenVINO reshape, runs the same file). The TorchScript-based exporter takes ~1 s where the dynamo
    one takes ~8 s for ResNet-50; both give the same graph here, so the fast one is used."""
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.eval(), (example,), buffer, dynamo=False, opset_version=17,  # type: ignore[arg-type]
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    except Exception as error:  # the exporter raises many kinds
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ExportError(f"ONNX export of the materialized mode failed ({type(error).__name__}): {first_line}") from error
    return buffer.getvalue()


def export_onnx_control_flow(model: nn.Module, examples: tuple[torch.Tensor, ...], defaults: dict[str, float],
                             output_names: tuple[str, ...]) -> bytes:
    """ONNX bytes of a batch-1 model with `torch.cond` control flow (If nodes): `torch.export`, then
    the dynamo-based exporter (the TorchScript one cannot keep branches). Inputs: `input` (the
    pixels), then the names of `defaults`, every one required: an initializer of an input's name
    would make it optional, but ONNX Runtime 1.2x then refuses it as a feed ("Failed to find input
    with name"), so the defaults are the caller's to document (the export's metadata)."""
    import onnx

    names = ["input", *defaults]
    if len(names) != len(examples):
        raise ExportError(f"{len(examples)} example inputs for {len(names)} names {names}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exported = torch.export.export(model.eval(), examples)
            program = torch.onnx.export(exported, dynamo=True, input_names=names, output_names=list(output_names),
                                        verbose=False)
    except Exception as error:  # torch.export and the exporter raise many kinds
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ExportError(f"ONNX export of the control flow failed ({type(error).__name__}): {first_line}") from error
    assert program is not None
    graph = program.model_proto
    onnx.checker.check_model(graph)
    return graph.SerializeToString()


CONTROL_FLOW_OUTPUTS = ("logits", "cost", "exit")  # a gated network's: its answer, what it cost, which exit


class OnnxRuntimeModel:
    """A materialized mode exported to ONNX and run by ONNX Runtime's CPU provider."""

    def __init__(self, model: nn.Module | None, example: torch.Tensor | None, threads: int,
                 onnx_bytes: bytes | None = None) -> None:
        import onnxruntime

        if onnx_bytes is None:
            assert model is not None and example is not None
            onnx_bytes = export_onnx(model, example)
        self.onnx_bytes = onnx_bytes
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(self.onnx_bytes, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input_name: x.contiguous().numpy()})[0])


@register_runtime
class OnnxRuntime(Runtime):
    name = "onnxruntime"
    # one Gather per shuffle instead of Reshape-Transpose-Reshape: grouped modes 1.08-1.24x of full against
    # 0.97-1.35x (benchmarks/results/shuffle_forms.json, paired, 2 threads)
    shuffle = "gather"
    summary = "ONNX Runtime, CPU execution provider"
    modules = ("onnxruntime",)
    format = "onnx"
    suffixes = (".onnx",)

    def prepare(self, model: nn.Module, example: torch.Tensor, threads: int) -> Runnable:
        return OnnxRuntimeModel(model, example, threads)

    def save(self, model: nn.Module, example: torch.Tensor, metadata: dict[str, str]) -> dict[str, bytes]:
        import onnx

        graph = onnx.load_from_string(export_onnx(model, example))
        onnx.helper.set_model_props(graph, metadata)
        return {".onnx": graph.SerializeToString()}

    def save_control_flow(self, model: nn.Module, examples: tuple[torch.Tensor, ...], defaults: dict[str, float],
                          metadata: dict[str, str]) -> dict[str, bytes]:
        import onnx

        graph = onnx.load_from_string(export_onnx_control_flow(model, examples, defaults, CONTROL_FLOW_OUTPUTS))
        onnx.helper.set_model_props(graph, metadata)
        return {".onnx": graph.SerializeToString()}

    def load(self, path: Path, threads: int = 1) -> Runnable:
        self.require()
        return OnnxRuntimeModel(None, None, threads, Path(path).read_bytes())
