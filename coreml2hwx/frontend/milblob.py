"""MILBlob weight files (`weights/weight.bin` of an .mlpackage / .mlmodelc).

Layout, as coremltools' MILBlob storage writes it (all little-endian):
- file header, 64 bytes: u32 count, u32 version (2), padding;
- per blob a 64-byte metadata record: u32 sentinel 0xDEADBEEF, u32 data type, u64 size in bytes,
  u64 offset of the data in the file, padding.  A MIL `BLOBFILE(offset = N)` points at the record.

Sub-byte types (int4, uint1/2/3/4/6) are packed from the least significant bit upward.  A record
that breaks these rules is rejected with a ModelError naming the file and the record offset; we do
not guess (Apple's compiler reads a misaligned record as data offset 0 — see the oracle README's
"Regenerating the weights" — and we do not imitate that).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from construct import Bytes, Int32ul, Int64ul, Struct

from coreml2hwx.errors import ModelError
from coreml2hwx.ir.dtypes import SUB_BYTE_BITS, numpy_dtype, unpack_bits
from coreml2hwx.ir.graph import BlobRef

SENTINEL = 0xDEADBEEF
RECORD_SIZE = 64

FileHeader = Struct("count" / Int32ul, "version" / Int32ul, "reserved" / Bytes(56))
BlobMetadata = Struct(
    "sentinel" / Int32ul,
    "dtype" / Int32ul,
    "size" / Int64ul,
    "offset" / Int64ul,
    "reserved" / Bytes(40),
)

# MILBlob BlobDataType codes -> MIL element type names.
BLOB_TYPES = {
    1: "fp16", 2: "fp32", 3: "uint8", 4: "int8", 5: "bf16", 6: "int16", 7: "uint16", 8: "int4",
    9: "uint1", 10: "uint2", 11: "uint4", 12: "uint3", 13: "uint6", 14: "int32", 15: "uint32",
    16: "fp8e4m3fn", 17: "fp8e5m2",
}


class WeightFile:
    """One MILBlob file, read once; `blob(offset, dtype, shape)` returns a numpy array."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.data = self.path.read_bytes()
        except OSError as err:
            raise ModelError(f"cannot read weight file: {err.strerror}", file=self.path) from None
        if len(self.data) < FileHeader.sizeof():
            raise ModelError(f"weight file is corrupt: {len(self.data)} bytes, shorter than the "
                             "64-byte MILBlob header", file=self.path)

    def _error(self, offset, rule):
        return ModelError(f"weight file is corrupt: {rule}", file=self.path, where=f"offset {offset:#x}")

    def record(self, offset: int):
        if offset < FileHeader.sizeof() or offset + RECORD_SIZE > len(self.data):
            raise self._error(offset, f"blob record at {offset} lies outside the file "
                                      f"({len(self.data)} bytes)")
        meta = BlobMetadata.parse(self.data[offset:offset + RECORD_SIZE])
        if meta.sentinel != SENTINEL:
            raise self._error(offset, f"record sentinel is {meta.sentinel:#010x}, expected 0xdeadbeef")
        if meta.dtype not in BLOB_TYPES:
            raise self._error(offset, f"record data type code {meta.dtype} is unknown")
        if meta.offset < offset + RECORD_SIZE or meta.offset + meta.size > len(self.data):
            raise self._error(offset, f"data at {meta.offset} (+{meta.size} bytes) lies outside the "
                                      f"file ({len(self.data)} bytes) or before its record")
        return meta

    def blob(self, offset: int, dtype: str, shape) -> np.ndarray:
        """The tensor whose record is at `offset`, as the MIL type `dtype` and `shape` declare."""
        meta = self.record(offset)
        stored = BLOB_TYPES[meta.dtype]
        if stored != dtype:
            raise self._error(offset, f"record holds {stored} data but the model declares {dtype}")
        count = math.prod(shape)
        if dtype in SUB_BYTE_BITS:
            need = math.ceil(count * SUB_BYTE_BITS[dtype] / 8)
        else:
            need = count * numpy_dtype(dtype).itemsize
        if meta.size != need:
            raise self._error(offset, f"record size is {meta.size} bytes, a {dtype} tensor of shape "
                                      f"{list(shape)} needs {need}")
        raw = self.data[meta.offset:meta.offset + meta.size]
        if dtype in SUB_BYTE_BITS:
            values = unpack_bits(raw, SUB_BYTE_BITS[dtype], count, signed=dtype.startswith("int"))
        else:
            values = np.frombuffer(raw, dtype=numpy_dtype(dtype), count=count)
        return values.reshape(tuple(shape))


_OPEN: dict[str, WeightFile] = {}


def weight_file(path) -> WeightFile:
    """A (cached) WeightFile; the cache is keyed by path and file modification time."""
    path = Path(path)
    try:
        key = f"{path.resolve()}:{path.stat().st_mtime_ns}:{path.stat().st_size}"
    except OSError:
        raise ModelError("weight file not found", file=path) from None
    if key not in _OPEN:
        if len(_OPEN) >= 2:  # a model is usually read once or twice in a row
            _OPEN.clear()
        _OPEN[key] = WeightFile(path)
    return _OPEN[key]


def read_blob(path, offset: int, dtype: str, shape) -> np.ndarray:
    return weight_file(path).blob(offset, dtype, tuple(shape))


def read_ref(ref: BlobRef) -> np.ndarray:
    """Reader for `coreml2hwx.ir.BlobRef`."""
    return read_blob(ref.path, ref.offset, ref.dtype, ref.shape)


def blob_ref(path, offset: int, dtype: str, shape) -> BlobRef:
    return BlobRef(str(path), int(offset), dtype, tuple(int(d) for d in shape), reader=read_ref)
