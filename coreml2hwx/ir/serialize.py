"""Save and load an IR graph exactly: `graph.json` (structure) + `graph.bin` (every array).

Deterministic: the same graph always gives the same bytes (arrays are stored back to back in
graph order, 64-byte aligned, described by offset, dtype and shape).  Used for the host segments of a
compiled model, which `coreml2hwx run OUTPUT_DIR` evaluates with the reference evaluator.
"""

from __future__ import annotations

import json

import numpy as np

from coreml2hwx.errors import ModelError
from coreml2hwx.ir.graph import Graph, Op, TensorInfo, constant_value

ALIGN = 64


class _Blob:
    def __init__(self):
        self.data = bytearray()

    def put(self, array) -> dict:
        array = np.ascontiguousarray(array)
        self.data += bytes(-len(self.data) % ALIGN)
        ref = {"__array__": len(self.data), "dtype": array.dtype.str, "shape": list(array.shape)}
        self.data += array.tobytes()
        return ref


def _encode(value, blob: _Blob):
    if isinstance(value, np.ndarray):
        return blob.put(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, blob) for v in value]}
    if isinstance(value, list):
        return [_encode(v, blob) for v in value]
    if isinstance(value, dict):
        return {"__dict__": [[k, _encode(v, blob)] for k, v in value.items()]}
    return value


def _decode(value, data: bytes):
    if isinstance(value, list):
        return [_decode(v, data) for v in value]
    if isinstance(value, dict):
        if "__array__" in value:
            dtype = np.dtype(value["dtype"])
            count = int(np.prod(value["shape"], dtype=np.int64))
            start = value["__array__"]
            if start + count * dtype.itemsize > len(data):
                raise ModelError("graph.bin is shorter than graph.json says")
            return np.frombuffer(data, dtype, count, start).reshape(value["shape"])
        if "__tuple__" in value:
            return tuple(_decode(v, data) for v in value["__tuple__"])
        if "__dict__" in value:
            return {k: _decode(v, data) for k, v in value["__dict__"]}
    return value


def _info(t: TensorInfo) -> list:
    return [t.name, list(t.shape), t.dtype]


def save(graph: Graph) -> tuple[bytes, bytes]:
    """(graph.json bytes, graph.bin bytes)."""
    blob = _Blob()
    doc = {
        "name": graph.name,
        "tensors": [_info(t) for t in graph.tensors.values()],
        "inputs": [t.name for t in graph.inputs],
        "outputs": [t.name for t in graph.outputs],
        "constants": [[name, blob.put(constant_value(value))]
                      for name, value in graph.constants.items()],
        "ops": [{"type": op.type, "inputs": op.inputs, "outputs": op.outputs, "name": op.name,
                 "source": op.source, "attrs": _encode(op.attrs, blob)} for op in graph.ops],
    }
    return (json.dumps(doc, indent=1) + "\n").encode(), bytes(blob.data)


def load(doc_bytes: bytes, data: bytes, source=None) -> Graph:
    try:
        doc = json.loads(doc_bytes)
        graph = Graph(doc["name"], source=source)
        graph.tensors = {name: TensorInfo(name, tuple(shape), dtype)
                         for name, shape, dtype in doc["tensors"]}
        graph.inputs = [graph.tensors[n] for n in doc["inputs"]]
        graph.outputs = [graph.tensors[n] for n in doc["outputs"]]
        graph.constants = {name: _decode(ref, data) for name, ref in doc["constants"]}
        graph.ops = [Op(o["type"], o["inputs"], o["outputs"], _decode(o["attrs"], data), o["name"],
                        o["source"]) for o in doc["ops"]]
    except (ValueError, KeyError, TypeError) as err:
        raise ModelError(f"not a saved coreml2hwx graph ({err})", file=source) from None
    return graph
