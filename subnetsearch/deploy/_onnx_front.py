"""One ONNX model holding several modes, selected by an input: each mode's graph becomes a branch of a
balanced tree of `If` nodes on the int64 scalar input `mode` (its index in the manifest), so a run
executes one mode's nodes and log2(modes) comparisons. Initializers whose bytes are equal in several
modes (the preprocessing constants, layers a mode leaves at full width) are stored once, in the
outer graph, and read by every branch that uses them; the rest stay inside their branch, where
ONNX Runtime optimizes and pre-packs them as in a static file. Needs only the `onnx` package.

Measured trade-off (2026-12-07, the default supernet's front of 5 modes, 2 cores): ONNX Runtime keeps
a branch's initializers twice (the model's copy and its own), so this file takes about 2x the memory
of one session per mode (40 MB against 21 MB). Moving every initializer to the outer graph brings it
to the sessions' memory (21.9 against 22.4 MB) but costs 1.36-2.02x in latency (a branch reading
outer-scope weights is not pre-packed), so the weights stay in their branch: speed is what a mode is
chosen for. A device short of memory loads the folder form (one static file per mode)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from subnetsearch.errors import InputError

INPUT = "input"  # raw pixels, as every exported mode takes them
SELECTOR = "mode"  # int64 scalar: the mode's index in the manifest
OUTPUT = "logits"


@dataclass(frozen=True)
class CombinedOnnx:
    model: bytes
    shared_initializers: int  # stored once for several modes
    shared_bytes_saved: int  # bytes the sharing saved against one copy per mode


def _digest(tensor) -> str:  # noqa: ANN001 - onnx.TensorProto
    return hashlib.sha256(f"{tensor.data_type}|{list(tensor.dims)}|".encode() + tensor.raw_data).hexdigest()


def combine_onnx(models: Sequence[bytes], metadata: dict[str, str]) -> CombinedOnnx:
    """The ONNX model of `models` (each a mode's export: input `input`, output `logits`) selected by
    `mode`; `metadata` becomes its metadata_props. Every input model must have initializers stored as
    raw data (as torch's exporter writes them)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if not models:
        raise InputError("no modes to combine")
    graphs = [onnx.load_from_string(data) for data in models]
    first = graphs[0]
    opsets = {(o.domain, o.version) for g in graphs for o in g.opset_import}
    counts: dict[str, int] = {}
    for graph in graphs:
        for digest in {_digest(t) for t in graph.graph.initializer if t.raw_data}:
            counts[digest] = counts.get(digest, 0) + 1
    shared: dict[str, onnx.TensorProto] = {}
    saved = 0
    branches = []
    for index, model in enumerate(graphs):
        graph = model.graph
        if [i.name for i in graph.input] != [INPUT] or [o.name for o in graph.output] != [OUTPUT]:
            raise InputError(f"mode {index}'s graph must take {INPUT!r} and give {OUTPUT!r}")
        prefix = f"m{index}/"
        renamed: dict[str, str] = {}
        local = []
        for tensor in graph.initializer:
            key = _digest(tensor) if tensor.raw_data else None
            if key is not None and counts[key] > 1:
                name = f"shared/{key[:16]}"
                if name not in shared:
                    copy = onnx.TensorProto()
                    copy.CopyFrom(tensor)
                    copy.name = name
                    shared[name] = copy
                else:
                    saved += len(tensor.raw_data)
                renamed[tensor.name] = name
            else:
                renamed[tensor.name] = prefix + tensor.name
                copy = onnx.TensorProto()
                copy.CopyFrom(tensor)
                copy.name = renamed[tensor.name]
                local.append(copy)
        for node in graph.node:
            for output in node.output:
                if output:
                    renamed[output] = prefix + output
        nodes: list[onnx.NodeProto] = []
        for node in graph.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.name = prefix + (node.name or f"node{len(nodes)}")
            copy.input[:] = [renamed.get(name, name) if name else name for name in node.input]
            copy.output[:] = [renamed.get(name, name) if name else name for name in node.output]
            nodes.append(copy)
        output = onnx.ValueInfoProto()
        output.CopyFrom(graph.output[0])
        output.name = renamed[OUTPUT]
        branches.append(helper.make_graph(nodes, f"mode_{index}", [], [output], initializer=local))

    def tree(low: int, high: int, depth: int) -> onnx.GraphProto:
        """The graph giving `OUTPUT` of the modes [low, high) (one mode: its branch)."""
        if high - low == 1:
            return branches[low]
        middle = (low + high) // 2
        tag = f"t{low}_{high}"
        bound = helper.make_node("Constant", [], [f"{tag}/bound"], name=f"{tag}/bound",
                                 value=numpy_helper.from_array(_int64(middle), f"{tag}/bound_value"))
        less = helper.make_node("Less", [SELECTOR, f"{tag}/bound"], [f"{tag}/low"], name=f"{tag}/less")
        pick = helper.make_node("If", [f"{tag}/low"], [f"{tag}/out"], name=f"{tag}/if",
                                then_branch=tree(low, middle, depth + 1), else_branch=tree(middle, high, depth + 1))
        output = helper.make_tensor_value_info(f"{tag}/out", TensorProto.FLOAT, None)
        return helper.make_graph([bound, less, pick], tag, [], [output])

    if len(branches) == 1:
        body = branches[0]
        nodes = list(body.node) + [helper.make_node("Identity", [body.output[0].name], [OUTPUT], name="out")]
        local_initializers = list(body.initializer)
    else:
        top = tree(0, len(branches), 0)
        nodes = list(top.node) + [helper.make_node("Identity", [top.output[0].name], [OUTPUT], name="out")]
        local_initializers = []
    selector = helper.make_tensor_value_info(SELECTOR, TensorProto.INT64, [])
    output = onnx.ValueInfoProto()
    output.CopyFrom(first.graph.output[0])
    main = helper.make_graph(nodes, "front", [first.graph.input[0], selector], [output],
                             initializer=[*shared.values(), *local_initializers])
    combined = helper.make_model(main, opset_imports=[helper.make_opsetid(domain, version)
                                                      for domain, version in sorted(opsets)],
                                 producer_name="subnetsearch")
    combined.ir_version = first.ir_version
    helper.set_model_props(combined, metadata)
    onnx.checker.check_model(combined)
    return CombinedOnnx(combined.SerializeToString(), len(shared), saved)


def _int64(value: int):  # noqa: ANN202 - a numpy scalar array
    import numpy as np

    return np.array(value, dtype=np.int64)


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if position >= len(data):
            raise InputError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def onnx_metadata(data: bytes) -> dict[str, str]:
    """The metadata_props of a serialized ONNX ModelProto (field 14: key 1, value 2), read from the
    protobuf wire format without the onnx package and without building a session: a device reads the
    manifest first, then creates the one session it runs. An InputError if the bytes are not a
    well-formed protobuf message."""
    found: dict[str, str] = {}
    position = 0
    while position < len(data):
        tag, position = _varint(data, position)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _, position = _varint(data, position)
        elif wire == 1:
            position += 8
        elif wire == 5:
            position += 4
        elif wire == 2:
            length, position = _varint(data, position)
            end = position + length
            if end > len(data):
                raise InputError("truncated field")
            if field == 14:
                entry, inner = {}, position
                while inner < end:
                    inner_tag, inner = _varint(data, inner)
                    inner_length, inner = _varint(data, inner)
                    if inner_tag & 7 != 2 or inner + inner_length > end:
                        raise InputError("malformed metadata entry")
                    entry[inner_tag >> 3] = data[inner:inner + inner_length].decode("utf-8", "replace")
                    inner += inner_length
                found[entry.get(1, "")] = entry.get(2, "")
            position = end
        else:
            raise InputError(f"unsupported protobuf wire type {wire}")
    return found
