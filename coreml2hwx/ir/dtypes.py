"""Element types: MIL names (fp16, int8, uint4, ...) and the numpy dtypes that hold them.

Sub-byte MIL types (int4, uint1/2/3/4/6) are held one element per byte (int8 / uint8).
"""

from __future__ import annotations

import numpy as np

from coreml2hwx.errors import UnsupportedError

MIL_TO_NUMPY = {
    "fp16": "float16", "fp32": "float32", "fp64": "float64",
    "int4": "int8", "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64",
    "uint1": "uint8", "uint2": "uint8", "uint3": "uint8", "uint4": "uint8", "uint6": "uint8",
    "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
    "bool": "bool", "string": "object",
}

# Bits per element of the packed MIL types.
SUB_BYTE_BITS = {"int4": 4, "uint1": 1, "uint2": 2, "uint3": 3, "uint4": 4, "uint6": 6}

NUMPY_NAMES = set(MIL_TO_NUMPY.values())


def numpy_dtype(name: str) -> np.dtype:
    """numpy dtype for a MIL type name or a numpy dtype name."""
    if name in MIL_TO_NUMPY:
        return np.dtype(MIL_TO_NUMPY[name])
    if name in NUMPY_NAMES:
        return np.dtype(name)
    raise UnsupportedError(f"element type {name!r} is not supported")


def is_float(dtype: str) -> bool:
    return dtype.startswith("float") or dtype in ("fp16", "fp32", "fp64")


def bits_per_element(mil_type: str) -> int:
    if mil_type in SUB_BYTE_BITS:
        return SUB_BYTE_BITS[mil_type]
    return numpy_dtype(mil_type).itemsize * 8


def unpack_bits(data: bytes | np.ndarray, nbits: int, count: int, *, signed: bool = False,
                msb_first: bool = False) -> np.ndarray:
    """Unpack `count` integers of `nbits` each from packed bytes.

    MIL sub-byte tensors pack from the least significant bit of each byte upward (coremltools
    `pack_elements_into_bits`); NeuralNetwork quantized `rawValue` packs from the most significant
    bit (`msb_first=True`).
    """
    raw = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) \
        else np.asarray(data, dtype=np.uint8)
    order = "big" if msb_first else "little"
    bits = np.unpackbits(raw, bitorder=order)[: count * nbits]
    if bits.size < count * nbits:
        raise ValueError(f"{raw.size} bytes hold fewer than {count} {nbits}-bit values")
    bits = bits.reshape(count, nbits).astype(np.uint16)
    weights = (1 << np.arange(nbits, dtype=np.uint16))
    if msb_first:
        weights = weights[::-1]
    values = (bits * weights).sum(axis=1).astype(np.uint8)
    if signed:
        values = values.astype(np.int16)
        values[values >= 1 << (nbits - 1)] -= 1 << nbits
        return values.astype(np.int8)
    return values
