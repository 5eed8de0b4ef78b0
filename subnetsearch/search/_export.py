"""Export a stored mode, ready to run on its device: the mode's JSON with its measured metrics, or the
materialized static network (with the BN statistics it was evaluated with) in a runtime's format:
ONNX, TorchScript, OpenVINO IR (.xml + .bin) or an ExecuTorch program (.pte)."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from subnetsearch.data import DataError, DataSpec, Splits, load_data
from subnetsearch.devices import Device, Runtime, RuntimeUnavailable, export_formats
from subnetsearch.errors import ExportError
from subnetsearch.files import write_atomically
from subnetsearch.search._evaluator import EvaluationSettings, calibration_batches
from subnetsearch.spaces import Mode, ModeError
from subnetsearch.storage import StorageError, Store, StoredEvaluation
from subnetsearch.supernets import Checkpoint, CheckpointError, Realization, calibrated_bn, load_checkpoint, stored_bn


def _formats() -> dict[str, tuple[str, ...]]:
    """Export format -> its file suffixes: every runtime's own format (subnetsearch.devices.runtimes),
    and the mode's JSON."""
    return {**{name: runtime.suffixes for name, runtime in export_formats().items()}, "json": (".json",)}


FORMATS = tuple(_formats())
SUFFIXES = {suffix: name for name, suffixes in _formats().items() for suffix in suffixes}


def format_for(path: Path, format: str | None) -> str:
    """The export format: from the suffix, or `format` (refused if the suffix says another one)."""
    implied = SUFFIXES.get(path.suffix.lower())
    if format is None:
        if implied is None:
            raise ExportError(f"cannot tell the format from {path.name!r}: use one of "
                              f"{', '.join(sorted(SUFFIXES))}, or --format")
        format = implied
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {FORMATS}")
    if implied is not None and implied != format:
        raise ExportError(f"{path.name!r} says {implied} but the format asked for is {format}: change the suffix or "
                          "the format")
    return format


def mode_document(evaluation: StoredEvaluation, device: Device, preprocessing: dict | None = None) -> dict:
    """What a deployment needs to know about a stored mode, with how every number was measured, and
    how to feed the network (input shape, pixel scale, mean/std, class names)."""
    return {"mode_id": evaluation.mode_id, "mode": json.loads(evaluation.mode_json),
            "supernet_hash": evaluation.supernet_hash, "device": device.to_dict(),
            "metrics": {"accuracy": evaluation.accuracy, "loss": evaluation.loss, "macs": evaluation.macs,
                        "params": evaluation.params, "latency_ms": evaluation.latency_ms,
                        "energy_mj": evaluation.energy_mj},
            "measurement": {"evaluation_settings": evaluation.settings, "latency": evaluation.latency,
                            "energy_source": evaluation.energy_source},
            "preprocessing": preprocessing}


class RawPixels(torch.nn.Module):
    """An exported network that takes raw pixels (0..255, NCHW, float) and normalizes them the way
    the evaluator did (x / scale - mean) / std, so feeding it images needs no source code."""

    def __init__(self, model: torch.nn.Module, preprocessing: dict) -> None:
        super().__init__()
        self.model = model
        self.mean: torch.Tensor
        self.std: torch.Tensor
        channels = len(preprocessing["mean"])
        self.register_buffer("mean", torch.tensor(preprocessing["mean"], dtype=torch.float32).view(1, channels, 1, 1))
        self.register_buffer("std", torch.tensor(preprocessing["std"], dtype=torch.float32).view(1, channels, 1, 1))
        self.scale = float(preprocessing["pixel_scale"])

    def forward(self, pixels: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model((pixels / self.scale - self.mean) / self.std, *inputs)


def _checkpoint_of(store: Store, evaluation: StoredEvaluation) -> tuple[Any, Checkpoint]:
    record = store.get_supernet(evaluation.supernet_hash)
    try:
        state = load_checkpoint(Path(record.checkpoint_path))
        supernet = state.build()
    except CheckpointError as error:
        raise ExportError(f"the checkpoint of supernet {record.content_hash[:12]} cannot be loaded: {error}") from None
    if state.hash != record.content_hash:
        raise ExportError(f"checkpoint {record.checkpoint_path} has content hash {state.hash[:12]}, but the stored "
                          f"supernet is {record.content_hash[:12]}: the file was replaced; its stored modes do not "
                          "apply to it")
    return supernet, state


def _training_data(state: Checkpoint, why: str) -> Splits:
    """The checkpoint's data, for what an older store did not keep; a clear error if it moved."""
    try:
        return load_data(DataSpec.from_dict(state.data))
    except DataError as error:
        raise ExportError(f"{why}, and the training data cannot be read: {error}. Run any search of this supernet "
                          "(it records them), or give the data where it is now with `search --data-root`") from None


def preprocessing_of(store: Store, evaluation: StoredEvaluation) -> dict:
    """How the supernet of a stored mode is fed: as the store recorded it, else from its data."""
    record = store.get_supernet(evaluation.supernet_hash)
    if record.preprocessing is not None:
        return record.preprocessing
    _, state = _checkpoint_of(store, evaluation)
    return _training_data(state, "the store has no preprocessing for this supernet (stored by an older "
                                 "version)").preprocessing()


def materialized_model(store: Store, evaluation: StoredEvaluation) -> tuple[torch.nn.Module, tuple[int, ...]]:
    """The static network of a stored mode, with the BN statistics it was evaluated with (kept with
    the evaluation; evaluations stored before they were kept are recalibrated on the same training
    images), realized as it was measured (its grouped layers as grouped kernels or as dense
    equivalents: the recorded `realization` of its latency). Needs only the checkpoint."""
    supernet, state = _checkpoint_of(store, evaluation)
    try:
        mode = Mode.from_json(evaluation.mode_json)
        supernet.space.validate(mode)
    except (ModeError, ValueError, KeyError) as error:
        raise ExportError(f"stored mode {evaluation.mode_id} does not fit supernet {state.hash[:12]}: "
                          f"{error}") from None
    realization = Realization.from_dict((evaluation.latency or {}).get("realization"))
    known = {f.name for f in fields(EvaluationSettings)}
    settings = EvaluationSettings(**{k: v for k, v in evaluation.settings.items() if k in known})
    if not settings.calibration_batches:
        supernet.set_mode(mode)
        return supernet.realize(mode, realization).eval(), supernet.input_shape
    calibrated = store.get_bn_state(evaluation)
    if calibrated is not None:
        try:
            with stored_bn(supernet, mode, calibrated):
                return supernet.realize(mode, realization).eval(), supernet.input_shape
        except ValueError as error:
            raise ExportError(f"stored mode {evaluation.mode_id}: {error}") from None
    splits = _training_data(state, f"evaluation of mode {evaluation.mode_id} predates stored BN statistics")
    with calibrated_bn(supernet, mode, calibration_batches(splits, settings)):
        return supernet.realize(mode, realization).eval(), supernet.input_shape


def export_mode(store: Store, evaluation: StoredEvaluation, path: Path, format: str | None = None) -> Path:
    """Write a stored mode to `path` as JSON or a runtime's format (format from the suffix if None)."""
    format = format_for(path, format)
    device = store.get_device(evaluation.device)
    try:
        preprocessing = preprocessing_of(store, evaluation)
        if format == "json":
            document = mode_document(evaluation, device, preprocessing)
            write_atomically(path, (json.dumps(document, indent=2) + "\n").encode())
            return path
        model, input_shape = materialized_model(store, evaluation)
    except StorageError as error:
        raise ExportError(str(error)) from None
    metadata = {"subnetsearch.preprocessing": json.dumps(preprocessing), "subnetsearch.mode_id": evaluation.mode_id,
                "subnetsearch.supernet_hash": evaluation.supernet_hash,
                "subnetsearch.input": "raw pixels 0..255, float32 NCHW; the graph normalizes them"}
    runtime = export_formats()[format]
    if getattr(model, "data_dependent", False):
        files = _control_flow_files(model, evaluation, runtime, format, preprocessing, input_shape, metadata)
    else:
        files = _static_files(model, evaluation, runtime, format, preprocessing, device, input_shape, metadata)
    main = runtime.suffixes[0]
    # Companion files first (OpenVINO's .bin beside its .xml), each atomically: the main file appears
    # last, so a reader that finds it finds everything it refers to.
    for suffix, payload in files.items():
        if suffix != main:
            write_atomically(path.with_suffix(suffix), payload)
    write_atomically(path, files[main])
    return path


def _control_flow_files(model: Any, evaluation: StoredEvaluation, runtime: Runtime, format: str, preprocessing: dict,
                        input_shape: tuple[int, ...], metadata: dict[str, str]) -> dict[str, bytes]:
    """A mode that decides per input what runs (DDI's gates): its graph with real branches, for
    batch 1, its budget an input (the mode's is in the metadata)."""
    graph, defaults = model.control_flow()
    examples = (torch.rand(1, *input_shape) * 255, *(torch.full((1,), value) for value in defaults.values()))
    metadata = {**metadata, "subnetsearch.control_flow": json.dumps({
        "batch": 1, "inputs": {"input": metadata["subnetsearch.input"],
                               **{name: f"float32 [1], required; this mode's: {value:g}" for name, value in
                                  defaults.items()}},
        "outputs": {"logits": "float32 [1, classes]", "cost": "float32 [1]: what the answer cost, a fraction of the "
                    "plain network's MACs", "exit": "int64 [1]: the exit that answered (the last: the final "
                    "classifier)"},
        "budget": "a fraction of the plain network's MACs; inference halts at the last exit that fits (1: no budget)",
        "skipping": "a skipped block is an If branch that computes nothing; a channel-gated block computes all its "
                    "channels when any is selected (the graph has static shapes)"})}
    try:
        runtime.require()
        return runtime.save_control_flow(RawPixels(graph, preprocessing).eval(), examples, defaults, metadata)
    except RuntimeUnavailable as error:
        raise ExportError(f"{format} export: {error}") from None
    except ExportError as error:
        raise ExportError(f"mode {evaluation.mode_id} decides per input which blocks and channels run "
                          f"(data-dependent control flow), and {format} export of it is refused: {error}. Export "
                          "the mode as .onnx or .xml, or as JSON (-o mode.json) to run it from the supernet's "
                          "checkpoint") from None


def _static_files(model: torch.nn.Module, evaluation: StoredEvaluation, runtime: Runtime, format: str,
                  preprocessing: dict, device: Device, input_shape: tuple[int, ...],
                  metadata: dict[str, str]) -> dict[str, bytes]:
    shape = (device.protocol.batch_size, *input_shape)
    example = torch.rand(shape) * 255
    model = RawPixels(model, preprocessing).eval()
    try:
        runtime.require()
        files = runtime.save(model, example, metadata)
    except RuntimeUnavailable as error:
        raise ExportError(f"{format} export: {error}") from None
    except RuntimeError as error:
        raise ExportError(f"{format} export of mode {evaluation.mode_id} failed: {error}") from None
    assert files is not None, f"runtime {runtime.name} names format {format} but writes no files"
    return files
