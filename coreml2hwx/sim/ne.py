"""The neural engine (NE): MAC modes, then post-scale and the nonlinearity.

NE.MACCfg (ane-facts §2.7.4, printer layout [A]) selects what the multiply-accumulate stage does:

| OpMode | KernelMode | what | evidence |
|---|---|---|---|
| 4 | 1 | bypass: the input value as is | eiln relu/LUT ops, tinygrad relu/sigmoid/concat |
| 0 | 1 | the input plus AccBias (fp16 bits) | eiln inv/rsqrt (0x68e), oracle rsqrt (0x11 = eps) |
| 0 | 1 | no UnicastEn: the sum of the Cin channels into Cout 1 | upstream softmax_a1 |
| 0 | 0 | convolution / matmul, weights from the coefficient DMA | tinygrad conv, oracle conv_* |
| 3 | 1 | maximum over UnicastCin consecutive input channels | oracle reduce_max_axes_1 |
| 2 | 1 | product of UnicastCin consecutive channels (ElemMultMode) | oracle binary_pow#2 |

Then y = PostScale * acc (fp16 PostScale; eiln exp = exp2 table with PostScale log2 e) and the
NonlinearMode: 0 none, 1 ReLU, 2 the lookup table fetched by coefficient channel 0 (`lut.Lut`).
Accumulation is fp32; the caller rounds the result to fp16 once.
"""

from __future__ import annotations

import numpy as np

from coreml2hwx.sim import kernel
from coreml2hwx.sim.lut import TABLE_BYTES, Lut

F32 = np.float32


def run(f, memory, x: np.ndarray, out_shape) -> np.ndarray:
    op = f.get("ne.MACCfg.OpMode")
    weights = not f.get("ne.MACCfg.KernelMode")
    acc_bias = _fp16(f.get("ne.AccBias.AccBias"))
    if acc_bias and (op != 0 or weights):
        raise f.fail(f"ne.AccBias.AccBias = {f.get('ne.AccBias.AccBias'):#x} outside an OpMode-0 "
                     "task without weights: never seen")
    if f.get("ne.MACCfg.BiasMode") and not weights:
        raise f.fail("ne.MACCfg.BiasMode = 1 in a task without weights: never seen")
    x = x.astype(F32, copy=False)
    with np.errstate(all="ignore"):
        if weights:
            if op != 0:
                raise f.fail(f"ne.MACCfg.OpMode = {op} with weights: never seen")
            acc = kernel.convolve(f, memory, x, out_shape)
        else:
            acc = _elementwise(f, op, x, acc_bias, out_shape)
        scale = F32(f.get("ne.PostScale.PostScale"))
        if scale != 1:
            acc = acc * scale
        return _nonlinear(f, memory, acc, fresh=acc is not x)


def fp16_clamp(f, memory, in_shape, out_shape):
    """The whole computation of a bypass task whose only work is a clamp table (relu6), as a
    function on fp16 values (`Lut.fp16_clip`: exact, no fp32 round trip), or None.  Only for
    register values `run` accepts and computes the same way: OpMode 4 bypass, no weights, bias,
    AccBias or PostScale, one channel per output channel, output shape = input shape."""
    if (f.get("ne.MACCfg.OpMode"), f.get("ne.MACCfg.KernelMode"),
            f.get("ne.MACCfg.NonlinearMode")) != (4, 1, 2):
        return None
    if (f.get("ne.MACCfg.BiasMode") or f.get("ne.AccBias.AccBias")
            or F32(f.get("ne.PostScale.PostScale")) != 1):
        return None
    if (f.get("common.GroupConvCfg.UnicastCin") != 1 or f.get("common.GroupConvCfg.ElemMultMode")
            or tuple(out_shape) != tuple(in_shape)):
        return None
    return _table(f, memory).fp16_clip()


def _fp16(bits: int) -> float:
    return float(np.array([bits], np.uint16).view(np.float16)[0])


def _elementwise(f, op, x, acc_bias, out_shape):
    unicast = f.get("common.GroupConvCfg.UnicastCin")
    mult = f.get("common.GroupConvCfg.ElemMultMode")
    g, d, c, h, w = x.shape
    if (op == 2) != bool(mult):
        raise f.fail(f"ne.MACCfg.OpMode = {op} with GroupConvCfg.ElemMultMode = {int(mult)}: "
                     "the channel product is seen only as OpMode 2 with ElemMultMode")
    if op == 0 and not f.get("common.GroupConvCfg.UnicastEn") and c > 1:
        return _channel_sum(f, x, acc_bias, out_shape)
    if op in (0, 4):
        if unicast != 1 or tuple(out_shape) != x.shape:
            raise f.fail(f"ne.MACCfg.OpMode = {op}: an element-wise NE task with UnicastCin "
                         f"{unicast}, input {list(x.shape)}, output {list(out_shape)}")
        return x + F32(acc_bias) if op == 0 else x
    if op in (2, 3):
        if c % unicast or out_shape[2] != c // unicast or tuple(out_shape[3:]) != (h, w):
            raise f.fail(f"ne.MACCfg.OpMode = {op}: {c} input channels do not combine "
                         f"{unicast} at a time into {out_shape[2]}")
        grouped = x.reshape(g, d, c // unicast, unicast, h, w)
        return grouped.max(axis=3) if op == 3 else grouped.prod(axis=3, dtype=F32)
    raise f.fail(f"ne.MACCfg.OpMode = {op} without weights: never seen")


def _channel_sum(f, x, acc_bias, out_shape):
    """MAC without weights and without unicast: the one output channel accumulates every input
    channel (weights of 1).  Upstream norm_softmax_a1_{1x64x1x1 ... 1x4096x1x1, 1x32x4x4,
    1x64x8x8, 1x128x16x16, 1x8x1x64, 1x8x1x128, 1x32x1x32, 1x64x1x128}#3 (joshuaswarren/
    mil-hwx-compiler research/oracles/h13 at 9cb58d571cd7): C channels into Cout 1 through the
    reciprocal table, whose result task 4 multiplies into the C exp values - softmax only when
    this is the sum over C.  The one element-wise MAC in ../shared (unary_rsqrt_c64#0, Cin = Cout)
    sets UnicastEn.  More than one output channel is never seen: what each would sum is open."""
    g, d, c, h, w = x.shape
    if (f.get("common.GroupConvCfg.UnicastCin") != 1 or acc_bias
            or tuple(out_shape) != (g, d, 1, h, w)):
        raise f.fail(f"ne.MACCfg.OpMode = 0 without weights or unicast: only the sum of {c} "
                     f"channels into one (UnicastCin 1, no AccBias) is seen, not input "
                     f"{list(x.shape)} into {list(out_shape)}")
    return x.sum(axis=2, keepdims=True, dtype=F32)


def _nonlinear(f, memory, acc, fresh: bool):
    """The NonlinearMode on acc (in place when `fresh`: acc is no one else's array)."""
    mode = f.get("ne.MACCfg.NonlinearMode")
    if mode == 0:
        return acc
    if mode == 1:
        return np.maximum(acc, F32(0), out=acc if fresh else None)
    if mode != 2:
        raise f.fail(f"ne.MACCfg.NonlinearMode = {mode}: never seen")
    return _table(f, memory)(acc)


def _table(f, memory) -> Lut:
    return kernel.from_constants(f, "lut", lambda: Lut(kernel.coefficients(
        f, memory, channel=0, size=TABLE_BYTES, what="lookup table"), where=f.where))
