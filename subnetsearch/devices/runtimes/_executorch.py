"""`executorch`: the PyTorch runtime for phones and embedded boards, with the XNNPACK delegate
(optional extra `executorch`). `torch.export` -> `to_edge_transform_and_lower(..., [XnnpackPartitioner()])`
-> a `.pte` program for the device's input shape, run by `executorch.runtime` on XNNPACK's thread pool
sized to the device's thread count."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from subnetsearch.devices.runtimes import Runnable, Runtime, register_runtime
from subnetsearch.errors import ExportError


def program_bytes(model: nn.Module, example: torch.Tensor) -> bytes:
    import warnings

    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            exported = torch.export.export(model.eval(), (example.contiguous(),))
            lowered = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
            return bytes(lowered.to_executorch().buffer)
        except Exception as error:  # torch.export and the lowering raise many kinds
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ExportError(f"ExecuTorch export of the materialized mode failed ({type(error).__name__}): "
                               f"{first_line}") from error


def _version() -> str:
    from importlib.metadata import version

    return version("executorch")


class ExecuTorchModel:
    def __init__(self, program: bytes, threads: int) -> None:
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
        from executorch.runtime import Runtime as ExecuTorchRuntime

        self.program_bytes = program
        _unsafe_reset_threadpool(threads)
        self.program = ExecuTorchRuntime.get().load_program(self.program_bytes)  # alive as long as its method
        self.method = self.program.load_method("forward")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.method.execute([x.contiguous()])[0]


@register_runtime
class ExecuTorch(Runtime):
    name = "executorch"
    summary = "ExecuTorch, XNNPACK delegate"
    modules = ("executorch",)
    extra = "executorch"
    format = "executorch"
    suffixes = (".pte",)

    def prepare(self, model: nn.Module, example: torch.Tensor, threads: int) -> Runnable:
        return ExecuTorchModel(program_bytes(model, example), threads)

    def save(self, model: nn.Module, example: torch.Tensor, metadata: dict[str, str]) -> dict[str, bytes]:
        return {".pte": program_bytes(model, example)}

    def save_control_flow(self, model: nn.Module, examples: tuple[torch.Tensor, ...], defaults: dict[str, float],
                          metadata: dict[str, str]) -> dict[str, bytes]:
        # Checked with executorch 1.x on a DDI ResNet-20 (torch.cond blocks, 2026-12-07): the XNNPACK
        # partitioner does not delegate ops inside a branch (`to_edge_transform_and_lower` refuses an
        # undecomposed aten.linear there), and the program `to_edge` lowers, with or without XNNPACK,
        # runs but answers wrongly (another exit and cost than the graph's for the same input).
        raise ExportError("ExecuTorch cannot run this network's control flow correctly yet: its lowering of "
                          "torch.cond branches answers differently from the network (checked with executorch "
                          f"{_version()}); export it as .onnx (ONNX Runtime) or .xml (OpenVINO)")

    def load(self, path: Path, threads: int = 1) -> Runnable:
        self.require()
        return ExecuTorchModel(Path(path).read_bytes(), threads)
