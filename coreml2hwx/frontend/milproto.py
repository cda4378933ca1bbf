"""The MIL protobuf of an ML Program (`spec.mlProgram`) as a `MilProgram`.

Immediate values follow coremltools' serialization: fp32 in `floats`, fp64 in `doubles`, int32 /
int16 / uint16 in `ints`, int64 / uint64 in `longInts`, fp16 / int8 / uint8 / uint32 and the packed
sub-byte types in `bytes`.  Blob values name a file relative to `@model_path`, the folder that holds
the model file; they become `BlobRef`s, read when the program is translated to IR.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from coreml2hwx.errors import ModelError, UnsupportedError
from coreml2hwx.frontend.mil import MilFunction, MilOp, MilProgram, MilVar, Ref
from coreml2hwx.frontend.milblob import blob_ref
from coreml2hwx.frontend.proto import mil_pb2
from coreml2hwx.ir.dtypes import SUB_BYTE_BITS, numpy_dtype, unpack_bits

_TYPE_NAMES = {
    "FLOAT16": "fp16", "FLOAT32": "fp32", "FLOAT64": "fp64", "BFLOAT16": "bf16",
    "INT4": "int4", "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "UINT1": "uint1", "UINT2": "uint2", "UINT3": "uint3", "UINT4": "uint4", "UINT6": "uint6",
    "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "BOOL": "bool", "STRING": "string",
}


class _Reader:
    def __init__(self, file, model_dir):
        self.file = file
        self.model_dir = Path(model_dir)
        enum = mil_pb2().DataType
        self.types = {enum.Value(k): v for k, v in _TYPE_NAMES.items()}

    def value_type(self, vt):
        kind = vt.WhichOneof("type")
        if kind != "tensorType":
            return "", (), {"listType": "list", "tupleType": "tuple", "dictionaryType": "dict",
                            "stateType": "state"}.get(kind, str(kind))
        tt = vt.tensorType
        dtype = self.types.get(tt.dataType)
        if dtype is None:
            raise UnsupportedError(f"MIL data type {tt.dataType} is not supported", file=self.file)
        shape = tuple(d.constant.size if d.WhichOneof("dimension") == "constant" else "?"
                      for d in tt.dimensions)
        return dtype, shape, "tensor"

    def value(self, v, where):
        dtype, shape, kind = self.value_type(v.type)
        which = v.WhichOneof("value")
        if which == "blobFileValue":
            name = v.blobFileValue.fileName
            if name.startswith("@model_path"):
                name = str(self.model_dir / name[len("@model_path"):].lstrip("/"))
            return blob_ref(name, v.blobFileValue.offset, dtype, shape)
        immediate = v.immediateValue.WhichOneof("value")
        if immediate in ("list", "tuple"):  # e.g. a classifier's class labels
            return [self.value(item, where) for item in getattr(v.immediateValue, immediate).values]
        if kind != "tensor" or immediate != "tensor":
            return None  # dictionaries: not used by the ops we read
        return self.tensor(v.immediateValue.tensor, dtype, shape, where)

    def tensor(self, tv, dtype, shape, where):
        if any(isinstance(d, str) for d in shape):
            raise UnsupportedError(f"constant with dynamic shape {list(shape)}", file=self.file,
                                   where=where)
        field = tv.WhichOneof("value")
        count = math.prod(shape)
        if dtype == "string":
            values = list(tv.strings.values)
            return values[0] if not shape and values else np.array(values, dtype=object).reshape(shape)
        if field == "bytes":
            raw = tv.bytes.values
            if dtype in SUB_BYTE_BITS:
                array = unpack_bits(raw, SUB_BYTE_BITS[dtype], count, signed=dtype.startswith("int"))
            else:
                array = np.frombuffer(raw, dtype=numpy_dtype(dtype))
        elif field in ("floats", "doubles", "ints", "longInts", "bools"):
            array = np.array(getattr(tv, field).values).astype(numpy_dtype(dtype))
        elif field is None:
            array = np.zeros(0, numpy_dtype(dtype))
        else:
            raise UnsupportedError(f"MIL immediate value field {field!r}", file=self.file, where=where)
        if array.size != count:
            raise ModelError(f"ML Program is corrupt: {array.size} values for a {dtype} tensor of "
                             f"shape {list(shape)}", file=self.file, where=where)
        return array.reshape(shape)

    def op(self, op_pb):
        outputs = [MilVar(o.name, *self.value_type(o.type)) for o in op_pb.outputs]
        where = outputs[0].name if outputs else op_pb.type
        params = {}
        for key, arg in op_pb.inputs.items():
            items = [Ref(b.name) if b.WhichOneof("binding") == "name" else self.value(b.value, where)
                     for b in arg.arguments]
            params[key] = items[0] if len(items) == 1 else items
        name = where
        for key, val in op_pb.attributes.items():
            if key == "name":
                name = str(self.value(val, where))
            else:
                params[key] = self.value(val, where)
        return MilOp(op_pb.type, outputs, params, name, None, len(op_pb.blocks))

    def function(self, name, fn):
        opset = fn.opset
        if opset not in fn.block_specializations:
            raise ModelError(f"ML Program is corrupt: function {name!r} has no block for its opset "
                             f"{opset!r}", file=self.file)
        block = fn.block_specializations[opset]
        inputs = [MilVar(i.name, *self.value_type(i.type)) for i in fn.inputs]
        ops = [self.op(op) for op in block.operations]
        return MilFunction(name, opset, inputs, ops, list(block.outputs))


def read_program(program_pb, model_dir, file=None) -> MilProgram:
    """Turn `spec.mlProgram` into a `MilProgram`; blobs resolve against `model_dir`."""
    reader = _Reader(file, model_dir)
    prog = MilProgram(str(program_pb.version))
    for name, fn in program_pb.functions.items():
        try:
            prog.functions[name] = reader.function(name, fn)
        except (ValueError, TypeError, IndexError, KeyError) as err:  # malformed values
            raise ModelError(f"ML Program is corrupt: function {name!r}: {err}", file=file) from err
    if not prog.functions:
        raise ModelError("ML Program has no function", file=file)
    return prog
