"""Export a device's front as one artifact that switches modes on the device (`subnetsearch.deploy`):
every mode of the front (or the modes asked for), materialized with the BN statistics it was
evaluated with and taking raw pixels, in one file per runtime (ONNX: If nodes on a `mode` input;
ExecuTorch: one method per mode; OpenVINO: the ONNX form as IR) or a directory of static files, with
a manifest of each mode's figures, their intervals and how they were measured."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from subnetsearch.deploy import BUDGET_RULE, MANIFEST_KEY, Manifest, ModeEntry, combine_onnx, jsonable, manifest_path
from subnetsearch.devices import Device, RuntimeUnavailable, export_formats
from subnetsearch.errors import ExportError
from subnetsearch.files import write_atomically
from subnetsearch.search._export import RawPixels, _checkpoint_of, materialized_model, mode_document, preprocessing_of
from subnetsearch.spaces import Mode
from subnetsearch.storage import Figures, StorageError, Store, StoredEvaluation

# the single-file forms, by suffix; anything else is a directory of one static file per mode
FILE_FORMS = {".onnx": "onnx", ".pte": "executorch", ".xml": "openvino"}
RUNTIME_OF = {"onnx": "onnxruntime", "executorch": "executorch", "openvino": "openvino"}


@dataclass(frozen=True)
class FrontExport:
    path: Path
    files: tuple[Path, ...]  # everything written (the artifact, its companions, its manifest)
    manifest: Manifest


def front_evaluations(store: Store, device: str, mode_ids: Sequence[str] | None = None,
                      supernet_hash: str | None = None) -> list[tuple[StoredEvaluation, Figures]]:
    """The modes to export with their figures: the ones `best` chooses from (the device's
    Pareto-optimal modes), or the stored modes `mode_ids` name; most accurate first. All of one
    supernet (they share one preprocessing and one digest)."""
    if mode_ids:
        rows = []
        for mode_id in mode_ids:
            found = store.find_evaluations(device, mode_id, supernet_hash)
            if not found:
                raise ExportError(f"no stored mode {mode_id!r} on device {device}")
            rows.append(found[0])
        refreshed = store.refresh_latency(rows)
        chosen = list(zip(refreshed, store.figures(refreshed), strict=True))
    else:
        chosen = store.best_candidates(device, supernet_hash)
        if not chosen:
            raise ExportError(f"nothing stored for device {device} yet: run `subnetsearch search --device {device}` "
                              "first")
    supernets = sorted({row.supernet_hash for row, _ in chosen})
    if len(supernets) > 1:
        raise ExportError(f"the modes of {device} come from {len(supernets)} supernets "
                          f"({', '.join(h[:12] for h in supernets)}): choose one with --supernet")
    unique = {row.mode_id: (row, figure) for row, figure in chosen}
    # the order `select` breaks ties in: the first mode is what an unconstrained `best` answers
    return sorted(unique.values(), key=lambda pair: (-pair[0].accuracy, pair[0].macs, pair[0].mode_id))


def _entry(index: int, evaluation: StoredEvaluation, figure: Figures, kind: str, device: Device,
           preprocessing: dict) -> ModeEntry:
    document = mode_document(evaluation, device, preprocessing)
    return ModeEntry(index=index, id=evaluation.mode_id, kind=kind, mode=document["mode"],
                     metrics=document["metrics"], low=dict(figure.low), high=dict(figure.high),
                     measurement=jsonable(document["measurement"]))


def export_front(store: Store, device_name: str, path: Path, format: str | None = None,
                 mode_ids: Sequence[str] | None = None, supernet_hash: str | None = None) -> FrontExport:
    """Write the front of `device_name` to `path`: `.onnx`, `.pte` or `.xml` for one multi-mode file
    (its manifest inside the ONNX model, beside the others as `<name>.manifest.json`), or a directory
    of static files of `format` (onnx, executorch, openvino) with `manifest.json`. Written to a
    temporary place and moved in last: a failure leaves nothing half-written."""
    path = Path(path)
    form = FILE_FORMS.get(path.suffix.lower())
    if form is None:
        form = "directory"
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ExportError(f"{path} exists and is not an empty folder: a front is written to a new or empty one "
                              f"(or give a file: {', '.join(FILE_FORMS)})")
        format = format or "onnx"
        if format not in RUNTIME_OF:
            raise ExportError(f"a directory of modes holds onnx, executorch or openvino files, not {format!r}")
    elif format is not None and format != form:
        raise ExportError(f"{path.name!r} says {form} but the format asked for is {format}: change the suffix or "
                          "the format")
    runtime_format = format if form == "directory" else form
    assert runtime_format is not None
    runtime = export_formats()[runtime_format]
    try:
        runtime.require()
    except RuntimeUnavailable as error:
        raise ExportError(f"{runtime_format} export: {error}") from None
    try:
        device = store.get_device(device_name)
        chosen = front_evaluations(store, device_name, mode_ids, supernet_hash)
        preprocessing = preprocessing_of(store, chosen[0][0])
        supernet, _ = _checkpoint_of(store, chosen[0][0])
        models = []
        entries = []
        for index, (evaluation, figure) in enumerate(chosen):
            model, input_shape = materialized_model(store, evaluation)
            if getattr(model, "data_dependent", False):
                raise ExportError(f"mode {evaluation.mode_id} decides per input which blocks run (data-dependent "
                                  "control flow): a front export holds static graphs only. Export the mode alone "
                                  f"(`export {evaluation.mode_id} -o mode.onnx`): one graph with its branches, "
                                  "whose exit budget is an input")
            models.append(RawPixels(model, preprocessing).eval())
            kind = supernet.kind_of(Mode.from_json(evaluation.mode_json))
            entries.append(_entry(index, evaluation, figure, kind, device, preprocessing))
    except StorageError as error:
        raise ExportError(str(error)) from None
    example = torch.rand((device.protocol.batch_size, *input_shape)) * 255
    manifest = Manifest(form=form, runtime=RUNTIME_OF[runtime_format], suffix=runtime.suffixes[0],
                        device=jsonable(device.to_dict()), supernet_hash=chosen[0][0].supernet_hash,
                        preprocessing=jsonable(preprocessing), input_shape=list(example.shape), rule=BUDGET_RULE,
                        modes=tuple(entries))
    metadata = {"subnetsearch.preprocessing": json.dumps(preprocessing),
                "subnetsearch.supernet_hash": manifest.supernet_hash,
                "subnetsearch.input": "raw pixels 0..255, float32 NCHW, and the int64 scalar `mode` (a mode's index "
                                      "in the manifest); the graph normalizes the pixels"}
    try:
        if form == "directory":
            return _write_directory(path, manifest, models, example, runtime_format)
        if form == "executorch":
            return _write_program(path, manifest, models, example)
        return _write_onnx_form(path, manifest, models, example, metadata, openvino=form == "openvino")
    except RuntimeError as error:
        raise ExportError(f"{form} export of the front failed: {error}") from None


def _write_onnx_form(path: Path, manifest: Manifest, models: Sequence[torch.nn.Module], example: torch.Tensor,
                     metadata: dict[str, str], openvino: bool) -> FrontExport:
    from subnetsearch.devices.runtimes._onnxruntime import export_onnx

    combined = combine_onnx([export_onnx(model, example) for model in models], {})
    manifest = _with_sharing(manifest, {"initializers_stored_once": combined.shared_initializers,
                                        "bytes_saved": combined.shared_bytes_saved,
                                        "how": "initializers of equal bytes in several modes stored once"})
    if not openvino:
        import onnx

        model = onnx.load_from_string(combined.model)
        onnx.helper.set_model_props(model, {**metadata, MANIFEST_KEY: manifest.to_json()})
        write_atomically(path, model.SerializeToString())
        return FrontExport(path, (path,), manifest)
    import openvino as ov

    network = ov.Core().read_model(combined.model)
    for key, value in metadata.items():
        network.set_rt_info(value, ["subnetsearch", key.removeprefix("subnetsearch.")])
    with tempfile.TemporaryDirectory() as folder:
        xml = Path(folder) / "front.xml"
        ov.save_model(network, str(xml), compress_to_fp16=False)
        # companions first, the main file last: a reader that finds the .xml finds its .bin and manifest
        write_atomically(path.with_suffix(".bin"), xml.with_suffix(".bin").read_bytes())
        write_atomically(manifest_path(path), manifest.to_json().encode())
        write_atomically(path, xml.read_bytes())
    return FrontExport(path, (path, path.with_suffix(".bin"), manifest_path(path)), manifest)


def _write_program(path: Path, manifest: Manifest, models: Sequence[torch.nn.Module], example: torch.Tensor) -> FrontExport:
    """One ExecuTorch program with a method per mode (`mode_<index>`), lowered to XNNPACK together:
    constants of equal bytes are stored once by ExecuTorch's serializer."""
    import warnings

    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            programs = {f"mode_{entry.index}": torch.export.export(model.eval(), (example.contiguous(),))
                        for entry, model in zip(manifest.modes, models, strict=True)}
            lowered = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])
            data = bytes(lowered.to_executorch().buffer)
        except Exception as error:  # torch.export and the lowering raise many kinds
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ExportError(f"ExecuTorch export of the front failed: {first_line}") from error
    manifest = _with_sharing(manifest, {"how": "ExecuTorch's serializer stores constants of equal bytes once"})
    write_atomically(manifest_path(path), manifest.to_json().encode())
    write_atomically(path, data)
    return FrontExport(path, (path, manifest_path(path)), manifest)


def _write_directory(path: Path, manifest: Manifest, models: Sequence[torch.nn.Module], example: torch.Tensor,
                     format: str) -> FrontExport:
    runtime = export_formats()[format]
    manifest = _with_sharing(manifest, {"how": "nothing shared: one static file per mode"})
    staging = Path(tempfile.mkdtemp(prefix=".front-", dir=path.parent if path.parent.exists() else None))
    try:
        for entry, model in zip(manifest.modes, models, strict=True):
            files = runtime.save(model, example, {"subnetsearch.mode_id": entry.id})
            assert files is not None
            for suffix, payload in files.items():
                (staging / f"mode_{entry.index}{suffix}").write_bytes(payload)
        (staging / "manifest.json").write_text(manifest.to_json())
        if path.exists():
            path.rmdir()  # empty, checked above
        staging.rename(path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return FrontExport(path, tuple(sorted(path.iterdir())), manifest)


def _with_sharing(manifest: Manifest, sharing: dict) -> Manifest:
    return replace(manifest, sharing=sharing)
