"""`openvino`: Intel's runtime for its CPUs and GPUs (optional extra `openvino`). The mode's ONNX
export is read by OpenVINO, reshaped to the device's input shape and compiled for latency on the CPU
plugin with the device's thread count, in fp32; export writes OpenVINO IR (`mode.xml` + `mode.bin`, fp32
weights, dynamic batch)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from subnetsearch.devices.runtimes import Runnable, Runtime, register_runtime
from subnetsearch.devices.runtimes._onnxruntime import CONTROL_FLOW_OUTPUTS, export_onnx, export_onnx_control_flow


class OpenVinoModel:
    """A network OpenVINO read (an ONNX export or IR), compiled for one input shape or, without
    `shape`, for the shapes it declares."""

    def __init__(self, network, threads: int, shape: tuple[int, ...] | None = None) -> None:
        import openvino

        core = openvino.Core()
        network = core.read_model(network) if isinstance(network, (bytes, str)) else network
        if shape is not None:
            network.reshape({0: list(shape)})
        self.compiled = core.compile_model(network, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                            "PERFORMANCE_HINT": "LATENCY",
                                                            # fp32 as measured for accuracy (bf16 CPUs would
                                                            # otherwise run bf16: other outputs, other accuracy)
                                                            "INFERENCE_PRECISION_HINT": "f32"})
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.request.infer({0: x.contiguous().numpy()})
        return torch.from_numpy(self.request.get_output_tensor(0).data.copy())


@register_runtime
class OpenVino(Runtime):
    name = "openvino"
    summary = "OpenVINO, CPU plugin, latency hint"
    modules = ("openvino",)
    extra = "openvino"
    format = "openvino"
    suffixes = (".xml",)
    companions = (".bin",)

    def prepare(self, model: nn.Module, example: torch.Tensor, threads: int) -> Runnable:
        return OpenVinoModel(export_onnx(model, example), threads, tuple(example.shape))

    def save(self, model: nn.Module, example: torch.Tensor, metadata: dict[str, str]) -> dict[str, bytes]:
        return self._ir(export_onnx(model, example), metadata)

    def save_control_flow(self, model: nn.Module, examples: tuple[torch.Tensor, ...], defaults: dict[str, float],
                          metadata: dict[str, str]) -> dict[str, bytes]:
        """The ONNX form's If nodes read by OpenVINO (its ONNX reader keeps them as If operations)."""
        return self._ir(export_onnx_control_flow(model, examples, defaults, CONTROL_FLOW_OUTPUTS), metadata)

    @staticmethod
    def _ir(onnx_bytes: bytes, metadata: dict[str, str]) -> dict[str, bytes]:
        import openvino

        network = openvino.Core().read_model(onnx_bytes)
        for key, value in metadata.items():
            network.set_rt_info(value, ["subnetsearch", key.removeprefix("subnetsearch.")])
        with tempfile.TemporaryDirectory() as folder:
            xml = Path(folder) / "mode.xml"
            openvino.save_model(network, os.fspath(xml), compress_to_fp16=False)
            return {".xml": xml.read_bytes(), ".bin": xml.with_suffix(".bin").read_bytes()}

    def load(self, path: Path, threads: int = 1) -> Runnable:
        self.require()
        return OpenVinoModel(str(path), threads)
