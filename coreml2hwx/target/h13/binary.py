"""Binary element-wise ops: which task form Apple uses for which operands.

* both operands runtime, same shape: one PE task (`elementwise.binary_same_shape`);
* a runtime operand of a broadcast shape: NE copy into L2 + PE task (`operand`);
* real_div of two runtime tensors: reciprocal LUT + PE multiply (`binary_real_div_1x64x1x1`:
  8 NEs, the result a per-channel vector; upstream `binary_real_div_1x64x8x8`: 16 NEs, the result
  a PE-layout operand);
* pow of two runtime tensors: three NE tasks (`binary_pow_1x64x1x1`, upstream `..._1x64x8x8`);
* a scalar constant c: add / mul fold into one PE task's Bias / Scale (`binary_add_c64_constant_scalar`,
  `env_bcast_mul_*_scalar`); maximum / minimum become a two-line LUT clip(c, +inf) / clip(-inf, c)
  on the NE (`binary_maximum_c512_constant_scalar`); real_div stages rows [0; 1/c] (2 tasks);
* a BLOBFILE tensor constant: staged from the constant section, add / mul as rows [bias; scale]
  ([c; 1], [-c; 1] and [0; c]: `binary_add_c512_constant_blob`, upstream
  `binary_sub_c64_constant_blob`, h14 `binary_mul_c512_constant_blob`), the other ops use it as a
  plain operand (`binary_minimum_c64_constant_blob`).

Refused like Apple refuses them: inline tensor constants, real_div by a BLOBFILE tensor (oracle
README "Things worth knowing"; callback_status=1).
"""

from __future__ import annotations

import numpy as np

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.target import lut
from coreml2hwx.target.h13 import activation, elementwise, operand
from coreml2hwx.target.h13.context import where

COMMUTATIVE = {"add", "mul", "maximum", "minimum"}
SAME_SHAPE_RELU = {"add", "sub", "mul", "maximum", "minimum"}
PE_BINARY_OPS = {"add", "sub", "mul", "maximum", "minimum", "real_div", "pow"}
ADD = elementwise.PE_OPS["add"]


def lower_binary(ctx, op) -> list:
    a, b = op.inputs
    if ctx.is_constant(a) and op.type in COMMUTATIVE:
        a, b = b, a
    if ctx.is_constant(a):
        raise UnsupportedError(f"{op.type} with a constant first operand is not supported on h13 yet",
                               where=where(op))
    if ctx.is_constant(b):
        return constant_operand(ctx, op, a, b)
    x, z = ctx.shape(a), ctx.shape(b)
    if x != z and op.type in COMMUTATIVE and _covers(z, x):
        a, b, x, z = b, a, z, x
    y = ctx.surface(op.outputs[0])
    if x == z == y.shape:
        if op.type == "pow":
            return power(ctx, op, a, b)
        if op.type == "real_div":
            return real_div(ctx, op, a, b)
        return [elementwise.binary_same_shape(ctx, op, inputs=(a, b))]
    if not _covers(x, z) or x != y.shape or op.type == "real_div":
        raise UnsupportedError(f"{op.type} {_dims(x)} with {_dims(z)}: only a second operand that "
                               "broadcasts to the first is supported on h13", where=where(op))
    producer, staged = operand.stage_runtime(ctx, op.name, ctx.surface(b), x)
    consumer = operand.pe_with_operand(op.name, ctx.surface(a), y, staged,
                                       elementwise.PE_OPS[op.type])
    return [producer, consumer]


def real_div(ctx, op, a, b) -> list:
    x, z = ctx.surface(a), ctx.surface(b)
    if x.n != 1 or z.shape != x.shape:
        raise UnsupportedError(f"real_div {_dims(x.shape)} by {_dims(z.shape)}: only same-shape "
                               "operands with batch 1 are supported on h13 yet", where=where(op))
    if x.shape[2:] == (1, 1):
        producer, staged = operand.lut_vector(ctx, op.name, z, lut.reciprocal(), keep_source=False)
    else:
        producer, staged = operand.lut_surface(ctx, op.name, z, lut.reciprocal(),
                                               keep_source=False)
    consumer = operand.pe_with_operand(op.name, x, ctx.surface(op.outputs[0]), staged,
                                       elementwise.PE_OPS["mul"])
    return [producer, consumer]


def constant_operand(ctx, op, a, b) -> list:
    value = ctx.constant(b)
    origin = ctx.constant_origin(b)
    if value.ndim == 0:
        return scalar_operand(ctx, op, a, float(value))
    if origin == "inline":
        raise UnsupportedError(f"{op.type} with an inline tensor constant: Apple's h13 compiler "
                               "refuses inline tensor operands (use a BLOBFILE constant)",
                               where=where(op))
    if op.type == "real_div":
        raise UnsupportedError("real_div by a BLOBFILE tensor: Apple's h13 compiler refuses it",
                               where=where(op))
    x, y = ctx.surface(a), ctx.surface(op.outputs[0])
    z = ctx.shape(b)
    if not _covers(x.shape, z) or x.shape != y.shape:
        raise UnsupportedError(f"{op.type} {_dims(x.shape)} with constant {_dims(z)}: the constant "
                               "must broadcast to the first operand", where=where(op))
    flat = np.asarray(value, np.float16).reshape(-1)
    # A per-channel constant is staged as a vector along W whatever x's spatial size
    # (`env_bcast_mul_1x64x8x8_blob_1x64x1x1`: Common 0x30 = 0x200 with an 8x8 x).
    per_channel = z[1] == x.shape[1] > 1 and z[2] == z[3] == 1
    if op.type in ("add", "sub", "mul") and per_channel:
        # rows [bias; scale]: x + z = [z; 1], x - z = [-z; 1] (upstream
        # binary_sub_c64_constant_blob), x * z = [0; z]
        ones, zeros = np.ones_like(flat), np.zeros_like(flat)
        rows = np.stack({"add": [flat, ones], "sub": [-flat, ones], "mul": [zeros, flat]}[op.type])
        producer, staged = operand.stage_constant(ctx, op.name, rows, operand.CHANNEL_VECTOR)
        return [producer, operand.pe_with_operand(op.name, x, y, staged, ADD, scale_bias=True)]
    if per_channel:
        code = operand.CHANNEL_VECTOR
    elif z[1] == 1 and z[2] == 1 and z[3] == x.shape[3] and x.shape[1] == 1:
        code = operand.BROADCAST_H if x.shape[2] > 1 else 0
    else:
        raise UnsupportedError(f"{op.type} {_dims(x.shape)} with constant {_dims(z)}: this "
                               "broadcast of a constant is not supported on h13 yet", where=where(op))
    producer, staged = operand.stage_constant(ctx, op.name, flat.reshape(1, -1), code)
    consumer = operand.pe_with_operand(op.name, x, y, staged, elementwise.PE_OPS[op.type])
    return [producer, consumer]


def scalar_operand(ctx, op, a, c: float) -> list:
    x, y = ctx.surface(a), ctx.surface(op.outputs[0])
    if op.type in ("add", "sub"):
        bias = c if op.type == "add" else -c
        return [elementwise.unary_pe(ctx, op, op_fields={}, bias=bias, inputs=(a,))]
    if op.type == "mul":
        return [elementwise.unary_pe(ctx, op, op_fields={}, scale=c, inputs=(a,))]
    if op.type == "maximum":
        return [activation.lut_task(ctx, op, x, y, lut.clip(c, float("inf")))]
    if op.type == "minimum":
        return [activation.lut_task(ctx, op, x, y, lut.clip(-float("inf"), c))]
    if op.type == "real_div":
        if x.shape[2:] != (1, 1):
            raise UnsupportedError(f"real_div {_dims(x.shape)} by a scalar: only [1, C, 1, 1] is "
                                   "supported on h13 yet", where=where(op))
        rows = np.stack([np.zeros(x.c, np.float16), np.full(x.c, np.float16(1.0 / c))])
        producer, staged = operand.stage_constant(ctx, op.name, rows, operand.CHANNEL_VECTOR)
        return [producer, operand.pe_with_operand(op.name, x, y, staged, ADD, scale_bias=True)]
    raise UnsupportedError(f"{op.type} with a scalar constant is not supported on h13 yet",
                           where=where(op))


def _covers(big, small) -> bool:
    return all(s in (1, b) for b, s in zip(big, small))


def _dims(shape) -> str:
    return "x".join(map(str, shape))


def residual(ctx, act, add) -> list:
    """y = x + f(x): the LUT task keeps x in L2 (SourceType 1) for the PE add (2 tasks)."""
    x = ctx.surface(act.inputs[0])
    if x.n != 1:
        raise UnsupportedError(f"{act.type} + add residual {_dims(x.shape)}: batch > 1 is not "
                               "supported on h13 yet", where=where(add))
    if act.type == "relu":
        # One PE add fetching x twice, L2Cfg bit 4 set: the relu of one operand happens on its
        # way into the PE (upstream env_chain_residual_relu_1x768x1x1: one task, one input
        # descriptor, otherwise the `binary_add_*` task).
        spec = elementwise.binary_same_shape(ctx, add, inputs=(act.inputs[0], act.inputs[0]),
                                          shared_source=True)
        spec.set("l2.L2Cfg", Bit4=1)
        return [spec]
    table = activation.table_of(act)
    if x.shape[2:] == (1, 1):
        producer, staged = operand.lut_vector(ctx, act.name, x, table, keep_source=True)
    else:
        producer, staged = operand.lut_surface(ctx, act.name, x, table, keep_source=True)
    consumer = operand.pe_with_operand(add.name, None, ctx.surface(add.outputs[0]), staged, ADD,
                                       shape=x.shape)
    return [producer, consumer]


def power(ctx, op, a, b) -> list:
    """x ** y as exp2(y * log2 x) in three NE tasks (`binary_pow_1x64x1x1`, upstream
    `binary_pow_1x64x8x8`): copy y into L2,
    log2(x) from its LUT next to it (channel pairs [y, log2 x], 0x10 apart), then an element-wise
    product of each pair (ElemMultMode, UnicastCin 2) through the exp2 LUT.  H13 places the second
    table 0x800 after the first (lut-rules §2)."""
    x, z, y = ctx.surface(a), ctx.surface(b), ctx.surface(op.outputs[0])
    if x.shape != z.shape or x.n != 1:
        raise UnsupportedError(f"pow {_dims(x.shape)} ** {_dims(z.shape)}: only same-shape "
                               "operands with batch 1 are supported on h13 yet", where=where(op))
    return operand.power_tasks(ctx, op.name, x, z, y)
