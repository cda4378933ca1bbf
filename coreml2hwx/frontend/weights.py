"""Compressed ML Program weights (`constexpr_*` ops) expanded to dense numpy arrays.

Semantics follow the MIL op definitions (coremltools `mil/ops/defs/iOS16/constexpr_ops.py`,
`iOS18/compression.py`):
- affine dequantize (iOS16):  out = scale * (data - zero_point), scale/zero_point per `axis`;
- blockwise shift scale (iOS18): out = scale * (data - offset), scale/offset repeated per block
  (block size = data.shape[i] / scale.shape[i]);
- LUT (iOS16): `indices` packed LSB-first, log2(len(lut)) bits each, into a flat uint8 vector, plus
  `shape`; LUT (iOS18): `indices` a uintN tensor, `lut` [*blocks, palettes, vector_size] with
  per-block tables and optional vector palettization along `vector_axis`;
- sparse (iOS16): `mask` packed LSB-first bits in uint8 plus `shape`; sparse (iOS18): `mask` a
  uint1 tensor; nonzero values fill the set bits in row-major order;
- the joint forms (`constexpr_lut_to_sparse`, `constexpr_sparse_blockwise_shift_scale`) produce
  (mask, nonzero values) for a following `constexpr_sparse_to_dense`.
When an input is still an unresolved weight blob, the result is a `Deferred` that expands on use.
"""

from __future__ import annotations

import math

import numpy as np

from coreml2hwx.ir.dtypes import numpy_dtype, unpack_bits


class Deferred:
    """A constant computed from other constants that are not loaded yet (shape and dtype known)."""

    def __init__(self, dtype: str, shape, compute):
        self.dtype = dtype
        self.shape = tuple(int(d) for d in shape)
        self._compute = compute
        self._value = None

    def load(self) -> np.ndarray:
        if self._value is None:
            self._value = self._compute()
        return self._value

    def __repr__(self):
        return f"Deferred({self.dtype}{list(self.shape)})"


def _lazy(value) -> bool:
    return hasattr(value, "load")


def _load(value):
    return value.load() if _lazy(value) else value


def _per_axis(vec, rank, axis):
    vec = np.asarray(vec)
    if vec.ndim == 0 or vec.size == 1:
        return vec.reshape(())
    shape = [1] * rank
    shape[axis % rank] = vec.size
    return vec.reshape(shape)


def affine_dequantize(data, zero_point, scale, axis):
    data = np.asarray(data)
    rank = data.ndim
    scale = np.asarray(scale)
    out = (data.astype(np.float32) - _per_axis(zero_point, rank, int(axis)).astype(np.float32)) \
        * _per_axis(scale, rank, int(axis)).astype(np.float32)
    return out.astype(scale.dtype)


def _repeat_blocks(values, shape):
    for axis, (size, blocks) in enumerate(zip(shape, values.shape)):
        if size % blocks:
            raise ValueError(f"{blocks} blocks do not divide dimension {axis} of size {size}")
        if blocks != size:
            values = np.repeat(values, size // blocks, axis=axis)
    return values


def blockwise_shift_scale(data, scale, offset=None):
    data = np.asarray(data)
    scale = np.asarray(scale)
    if scale.ndim != data.ndim:
        raise ValueError(f"scale rank {scale.ndim} differs from data rank {data.ndim}")
    values = data.astype(np.float32)
    if offset is not None:
        values = values - _repeat_blocks(np.asarray(offset).astype(np.float32), data.shape)
    return (values * _repeat_blocks(scale.astype(np.float32), data.shape)).astype(scale.dtype)


def lut_packed(indices, lut, shape):
    """iOS16 form: flat packed indices."""
    lut = np.asarray(lut).reshape(-1)
    nbits = int(math.log2(lut.size))
    if 2 ** nbits != lut.size:
        raise ValueError(f"a look-up table of {lut.size} entries is not a power of two")
    count = math.prod(shape)
    index = unpack_bits(np.asarray(indices, np.uint8).tobytes(), nbits, count)
    return lut[index.astype(np.intp)].reshape(tuple(shape))


def lut_blocked(indices, lut, vector_axis=None):
    """iOS18 form: indices tensor, lut [*blocks, palettes, vector_size]."""
    indices = np.asarray(indices)
    lut = np.asarray(lut)
    vector = lut.shape[-1]
    rank = indices.ndim
    if lut.ndim != rank + 2:
        raise ValueError(f"look-up table rank {lut.ndim} does not match indices rank {rank} + 2")
    axis = None
    if vector > 1:
        if vector_axis is None:
            raise ValueError("vector palettization needs vector_axis")
        axis = int(vector_axis) % rank
        indices = np.swapaxes(indices, -1, axis)
        lut = np.swapaxes(lut, -3, axis)
    blocks = lut.shape[:-2]
    reps = []
    for size, count in zip(indices.shape, blocks):
        if size % count:
            raise ValueError(f"{count} tables do not divide a dimension of size {size}")
        reps.append(size // count)
    grid = np.indices(indices.shape, sparse=True)
    table = tuple(g // r for g, r in zip(grid, reps))
    values = lut[table + (indices.astype(np.intp),)]  # indices.shape + (vector,)
    out = values.reshape(*indices.shape[:-1], indices.shape[-1] * vector)
    return np.swapaxes(out, -1, axis) if axis is not None else out


def sparse_packed(nonzero, mask, shape):
    """iOS16 form: mask bits packed LSB-first in uint8."""
    count = math.prod(shape)
    bits = unpack_bits(np.asarray(mask, np.uint8).tobytes(), 1, count)
    return sparse(nonzero, bits.reshape(tuple(shape)))


def sparse(nonzero, mask):
    nonzero = np.asarray(nonzero).reshape(-1)
    mask = np.asarray(mask) != 0
    if int(mask.sum()) != nonzero.size:
        raise ValueError(f"mask has {int(mask.sum())} set bits for {nonzero.size} values")
    out = np.zeros(mask.shape, dtype=nonzero.dtype)
    out[mask] = nonzero
    return out


def _expand(op_type, p):
    if op_type == "constexpr_affine_dequantize":
        return [affine_dequantize(p["quantized_data"], p["zero_point"], p["scale"], p["axis"])]
    if op_type == "constexpr_blockwise_shift_scale":
        return [blockwise_shift_scale(p["data"], p["scale"], p.get("offset"))]
    if op_type == "constexpr_cast":
        return [np.asarray(p["source_val"]).astype(numpy_dtype(str(p["output_dtype"])))]
    if op_type == "constexpr_lut_to_dense":
        if "shape" in p:
            return [lut_packed(p["indices"], p["lut"], tuple(int(d) for d in p["shape"]))]
        return [lut_blocked(p["indices"], p["lut"], p.get("vector_axis"))]
    if op_type == "constexpr_sparse_to_dense":
        if "shape" in p:
            return [sparse_packed(p["nonzero_data"], p["mask"], tuple(int(d) for d in p["shape"]))]
        return [sparse(p["nonzero_data"], p["mask"])]
    if op_type == "constexpr_lut_to_sparse":
        mask = np.asarray(p["indices_mask"])
        dense = lut_blocked(sparse(p["indices_nonzero_data"], mask), p["lut"], p.get("vector_axis"))
        if p.get("vector_axis") is not None:
            mask = np.repeat(mask, np.asarray(p["lut"]).shape[-1], axis=int(p["vector_axis"]))
        return [mask, dense[mask != 0]]
    if op_type == "constexpr_sparse_blockwise_shift_scale":
        mask = np.asarray(p["data_mask"])
        dense = blockwise_shift_scale(sparse(p["nonzero_data"], mask), p["scale"], p.get("offset"))
        return [mask, dense[mask != 0]]
    raise ValueError(f"unknown compressed-weight op {op_type}")


def expand_constexpr(op_type: str, params: dict, outputs) -> list:
    """Dense values of a constexpr op.  `outputs`: [(MIL dtype, shape)] as the op declares them."""
    if any(_lazy(v) for v in params.values()):
        cache = {}

        def compute(i):
            if "v" not in cache:
                cache["v"] = _checked(op_type, {k: _load(v) for k, v in params.items()}, outputs)
            return cache["v"][i]
        return [Deferred(dtype, shape, lambda i=i: compute(i)) for i, (dtype, shape) in enumerate(outputs)]
    return _checked(op_type, params, outputs)


def _checked(op_type, params, outputs):
    values = _expand(op_type, params)
    result = []
    for value, (dtype, shape) in zip(values, outputs):
        value = np.asarray(value)
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"expands to shape {list(value.shape)}, the model declares {list(shape)}")
        result.append(value.astype(numpy_dtype(dtype), copy=False))
    return result
