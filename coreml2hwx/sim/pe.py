"""The planar engine (PE): element-wise ops, per-channel bias/scale rows and reductions.

Common.Cfg bits 6:4 give the PE task type (census §6.1 [A-obs]); PE.Cfg the operation
(ane-facts §2.7.3, census §6.3).  What each computes, in fp32 and rounded once to fp16 by the
caller [H, checked against every Apple program in ../shared by tests/sim]:

* 2 unary:   Scale * g(PreScale * a) + Bias, g = abs when Cond = 1 (eiln abs, log, log10, sigmoid)
* 3 binary:  Scale * OP(PreScale * a, b) + Bias; OP = add/mul/max/min (OpMode 0-3), or a - b when
             SecSrc = 3 (softmax's x - max); ReluEn clamps at 0 last (oracle chain_add_relu)
* 4 rows:    OP(PreScale * a, row0) * row1 - a per-channel (bias, scale) pair read as two rows of
             the second operand (oracle blob constants, real_div by a scalar, layer_norm#2)
* 5 reduce:  sum (PoolMode 0) or max (PoolMode 2) over depth, height and width, times FinalScale,
             then NLMode 1 = reciprocal (softmax 1/sum) or 2 = rsqrt
             OpMode 4 (PE.Cfg 0x2010): rsqrt(FinalScale * sum(a^2) + eps) (layer_norm over
             centred values, upstream norm_layer_norm_ax1_* / ax3_*; `_mean_square`)
* 6 variance: rsqrt(FinalScale * sum((b - a)^2) + eps), eps = PreScale bits 15:0 as fp16
             (layer_norm#1: PE.Cfg 0x92010)
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
OPS = {0: np.add, 1: np.multiply, 2: np.maximum, 3: np.minimum}
SQUARE = 4  # PE.Cfg OpMode of layer_norm's factor passes (0x92010, 0x2010)
AXES = (1, 3, 4)  # reductions run over depth, height and width; groups and channels stay


class PeParams:
    def __init__(self, f):
        self.f = f
        self.kind = f.get("common.Cfg.Bits6_4")
        self.cfg = f.word("pe.Cfg")
        self.pool = f.get("pe.Cfg.PoolMode")
        self.op = f.get("pe.Cfg.OpMode")
        self.relu = f.get("pe.Cfg.ReluEn")
        self.cond = f.get("pe.Cfg.Cond")
        self.nl = f.get("pe.Cfg.NLMode")
        self.first = f.get("pe.Cfg.FirstSrc")
        self.second = f.get("pe.Cfg.SecSrc")
        self.bias = F32(f.get("pe.BiasScale.Bias"))
        self.scale = F32(f.get("pe.BiasScale.Scale"))
        self.prescale = F32(f.get("pe.PreScale.PreScale"))
        self.eps_bits = f.get("pe.PreScale.Low16")
        self.final = F32(f.get("pe.FinalScale.FinalScale"))

    def unsupported(self, why: str):
        return self.f.fail(f"pe.Cfg = {self.cfg:#x} in a type-{self.kind} PE task: {why}")

    def require(self, ok: bool, why: str):
        if not ok:
            raise self.unsupported(why)

    @property
    def identity_scales(self) -> bool:
        return self.scale == 1 and self.bias == 0 and self.prescale == 1


def needs_second(kind: int) -> bool:
    return kind in (3, 4, 6)


def run(p: PeParams, a: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    handler = {2: _unary, 3: _binary, 4: _rows, 5: _reduce, 6: _variance}.get(p.kind)
    if handler is None:
        raise p.f.fail(f"common.Cfg.Bits6_4 = {p.kind}: no PE task of this type")
    with np.errstate(all="ignore"):
        b = None if b is None else b.astype(F32, copy=False)
        return handler(p, a.astype(F32, copy=False), b)


def _binary_op(p: PeParams):
    if p.second == 3:
        p.require(p.op == 0, "SecSrc 3 (subtract) seen only with OpMode 0")
        return np.subtract
    p.require(p.second == 2, f"SecSrc {p.second} with a second operand")
    return OPS[p.op] if p.op in OPS else None


def _prescaled(p: PeParams, a):
    return a if p.prescale == 1 else p.prescale * a


def _finish(p: PeParams, v):
    """Scale * v + Bias, then ReluEn; v is a fresh array (updated in place).  The bias is added
    even when 0: that turns -0 into +0, as the unfused formula always did."""
    if p.scale != 1:
        v *= p.scale
    v += p.bias
    return np.maximum(v, F32(0), out=v) if p.relu else v


def _unary(p: PeParams, a, b):
    p.require(p.op == 0 and p.second == 0 and p.pool == 0 and p.nl == 0 and p.first == 0,
              "a unary PE task only scales, biases and takes abs")
    v = p.prescale * a
    if p.cond == 1:
        np.abs(v, out=v)
    return _finish(p, v)


def _binary(p: PeParams, a, b):
    p.require(p.pool == 0 and p.nl == 0 and p.cond == 0 and p.first == 0,
              "binary PE tasks seen use only OpMode, SecSrc and ReluEn")
    op = _binary_op(p)
    p.require(op is not None, f"OpMode {p.op}")
    return _finish(p, op(_prescaled(p, a), b))


def _rows(p: PeParams, a, rows):
    p.require(p.pool == 0 and p.nl == 0 and p.cond == 0 and p.first == 0 and not p.relu,
              "bias/scale-row PE tasks seen use only OpMode and SecSrc")
    p.require(p.scale == 1 and p.bias == 0, "scale/bias beside the rows never seen")
    op = _binary_op(p)
    p.require(op is not None, f"OpMode {p.op}")
    return op(_prescaled(p, a), rows[:, :, :, 0:1]) * rows[:, :, :, 1:2]


def _reduce(p: PeParams, a, b):
    if p.op == SQUARE:
        return _mean_square(p, a)
    p.require(p.op == 0 and p.second == 0 and p.cond == 0 and p.first == 0 and not p.relu,
              "reductions seen use only PoolMode, NLMode and FinalScale")
    p.require(p.identity_scales, "scale, bias or prescale on a reduction never seen")
    p.require(p.eps_bits == 0, "an epsilon on a plain reduction never seen")
    if p.pool == 0:
        v = np.sum(a, axis=AXES, keepdims=True, dtype=F32)
    elif p.pool == 2:
        v = np.max(a, axis=AXES, keepdims=True)
    else:
        raise p.unsupported(f"PoolMode {p.pool}")
    return _nonlinear(p, v * p.final)


def _mean_square(p: PeParams, a):
    """PE.Cfg 0x2010 (OpMode 4, NLMode 2) with eps in PreScale bits 15:0: rsqrt(FinalScale *
    sum(a^2) + eps), the single-source twin of the variance pass (OpMode 4 there squares b - a).
    Upstream (joshuaswarren/mil-hwx-compiler research/oracles/h13 at 9cb58d571cd7)
    norm_layer_norm_ax1_1x{32x4x4,64x8x8,128x16x16}#4 and norm_layer_norm_ax3_1x{64x8x8,
    128x16x16}#3: the reduction runs over values already centred on their mean, and its result
    scales them into the output - layer_norm only with this factor.  Inputs of variance ~ eps
    (tests/target/test_h13_coverage4.py) give layer_norm only with eps added after FinalScale
    (not omitted, not added to the sum); whether the engine adds the fp16 0xA8 (1.0014e-5) or a
    wider 1e-5 no test can tell apart."""
    p.require(p.cfg == 0x2010, "only layer_norm's 0x2010 reduction of squares is known")
    p.require(p.identity_scales, "scales beside the reduction of squares")
    v = np.sum(a * a, axis=AXES, keepdims=True, dtype=F32) * p.final + _fp16(p.eps_bits)
    return _nonlinear(p, v)


def _fp16(bits: int) -> np.float32:
    return F32(np.array([bits], np.uint16).view(np.float16)[0])


def _variance(p: PeParams, mean, x):
    p.require(p.cfg == 0x92010, "only layer_norm's 0x92010 variance pass is known")
    p.require(p.scale == 1 and p.bias == 0 and p.prescale == 1, "scales beside the variance")
    d = x - mean
    v = np.sum(d * d, axis=AXES, keepdims=True, dtype=F32) * p.final + _fp16(p.eps_bits)
    return _nonlinear(p, v)


def _nonlinear(p: PeParams, v):
    if p.nl == 0:
        return v
    if p.nl == 1:
        return F32(1) / v
    return F32(1) / np.sqrt(v)
