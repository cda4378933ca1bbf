"""layer_norm over the last axis of a [1, C, H, W] tensor with H > 1: five tasks, H rows as groups.

Evidence: upstream oracle `norm_layer_norm_ax3_1x64x8x8` (Apple's ane-compile-hwx, h13;
transcribed outside the repository).  The L2 regions follow the row softmax (softmax_rows.py:
X, M, P, S as there), in a different order:

  0. NE copy of x into L2 at H x P (P-byte rows), x staged at 2 H P (S-byte rows);
  1. PE mean over W (FinalScale 1 / W), the H rows as H groups: H x C values at 2 H P;
  2. PE x - mean (the mean broadcast along W, Common 0x30 = 0x10) into 0, P-byte rows;
  3. PE 1 / sqrt(mean of squares + eps) over W of those (a reduction with PE OpMode 4, NLMode 2,
     eps in PreScale's low half, FinalScale 1 / W), H groups, into H P (over x);
  4. PE product of the centred values and the factor (broadcast along W), written to DRAM from
     H P + H M (after the factors).

Only W <= 8 (one 16-byte line per channel row, where the softmax's rows are P as here) is
observed; wider rows and what does not fit L2 in one tile are refused.
"""

from __future__ import annotations

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.target import lut
from coreml2hwx.target.h13 import cost, l2, spec as S
from coreml2hwx.target.h13.context import where
from coreml2hwx.target.h13.elementwise import pe_arith
from coreml2hwx.target.h13.operand import stage_runtime
from coreml2hwx.target.h13.softmax_rows import (BROADCAST_W2, L2_READ, LAST_RESULT, LINE,
                                                 ONE_LINE_WIDTH, REDUCE_SOURCE, RowLayout,
                                                 l2_pass, result_region, row_pe)

SQUARE, RSQRT = 4, 2  # PE OpMode / NLMode of the factor task (as the [1, C, 1, 1] form's)


def layer_norm_rows(ctx, op, x, y, eps: float) -> list:
    _, c, h, w = x.shape
    if not 2 <= w <= ONE_LINE_WIDTH:
        raise UnsupportedError(f"layer_norm {'x'.join(map(str, x.shape))} over W: rows of {w} "
                               f"values (only 2 to {ONE_LINE_WIDTH} observed with H > 1) are not "
                               "supported on h13 yet", where=where(op))
    at = RowLayout(c, h, w)
    centred, copy, stats = 0, h * at.p, 2 * h * at.p
    if stats + h * max(at.s, at.m) > l2.L2_BYTES:
        raise UnsupportedError(f"layer_norm {'x'.join(map(str, x.shape))}: does not fit in L2 in "
                               "one tile; tiled layer_norm is not supported on h13 yet",
                               where=where(op))
    return [_copy(ctx, op, x, at, copy, stats), _mean(op, x, at, copy, stats),
            _centre(op, c, h, w, at, copy, stats, centred),
            _factor(op, x, at, centred, copy, eps), _scale(op, c, h, w, at, centred, copy, y)]


def _copy(ctx, op, x, at, copy, staged):
    spec, _ = stage_runtime(ctx, op.name, x, x.shape)
    spec.set("l2.ResultBase", Addr=copy // l2.UNIT)
    spec.set("l2.SourceBase", Addr=staged // l2.UNIT)
    spec.set("l2.SourceRowStride", Stride=at.s // l2.UNIT)
    return spec


def _reduction(op, x, at, *, source, target) -> object:
    _, c, h, w = x.shape
    spec = row_pe(op, c, h, w, tile=1, task_type="reduce")
    spec.set("ne.KernelCfg", Bit12=1)
    l2.source_region(spec, source, at.ch, at.x, at.x, group=at.p)
    result_region(spec, target, LINE, h * at.m, at.m, group=at.m)
    spec.header["ExeCycles"] = int((cost.LINE * c * h + l2_pass(c, h, w)) // cost.UNIT)
    return spec


def _mean(op, x, at, copy, stats):
    spec = _reduction(op, x, at, source=copy, target=stats)
    pe_arith(spec, {}, final=1.0 / x.w)
    spec.set("l2.SourceCfg", **REDUCE_SOURCE)
    return spec


def _centre(op, c, h, w, at, copy, stats, centred):
    spec = row_pe(op, c, h, w, tile=h, task_type="binary")
    spec.set("common.Unk30", Value=BROADCAST_W2)
    pe_arith(spec, dict(OpMode=0, SecSrc=3))
    spec.set("ne.KernelCfg", Bit12=1, Bit14=1)
    l2.source_region(spec, copy, at.ch, at.p, at.x)
    spec.set("l2.SourceCfg", **L2_READ)
    l2.source2_region(spec, stats, LINE, at.m, at.m)
    result_region(spec, centred, at.ch, at.p, at.x)
    return spec


def _factor(op, x, at, centred, copy, eps):
    spec = _reduction(op, x, at, source=centred, target=copy)
    pe_arith(spec, dict(OpMode=SQUARE, NLMode=RSQRT), final=1.0 / x.w)
    spec.set("pe.PreScale", Low16=lut._bits(eps))
    spec.set("ne.KernelCfg", Bit14=1)
    spec.set("l2.SourceCfg", **L2_READ)
    return spec


def _scale(op, c, h, w, at, centred, copy, y):
    spec = row_pe(op, c, h, w, tile=h, task_type="binary")
    spec.set("common.Unk30", Value=BROADCAST_W2)
    pe_arith(spec, dict(OpMode=1, SecSrc=2))
    spec.set("ne.KernelCfg", Bit14=1)
    l2.source_region(spec, centred, at.ch, at.p, at.x)
    spec.set("l2.SourceCfg", **L2_READ)
    l2.source2_region(spec, copy, LINE, at.m, at.m)
    l2.result(spec, base=copy + h * at.m, cfg=LAST_RESULT)
    S.dram_dest(spec, y)
    return spec
