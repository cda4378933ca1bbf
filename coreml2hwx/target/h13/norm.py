"""softmax and layer_norm: fixed task sequences that keep their intermediates in L2.

layer_norm over the channels of a [1, C, 1, 1] tensor (no affine; `layer_norm_1x512x1x1`,
`norm_layer_norm_ax1_2_3_1x64x1x1`), 3 PE tasks:
  0. the mean: a sum-reduction over the C values viewed as C rows (FinalScale 1/C), keeping x;
  1. 1/sqrt(variance + eps) from x and the mean (PE.Cfg 0x92010, eps in PreScale's low half);
  2. (x - mean) x that factor, with [mean; factor] as the L2 operand (PE subtract, bias/scale form).
layer_norm over C > 512 channels lays the C values along W first (`layer_norm_vector`, 5 tasks).
layer_norm over W: of a [1, C, 1, W] tensor `layer_norm_last_axis` (3 tasks), with H > 1
`norm_rows.layer_norm_rows` (5 tasks; rows of 9 to 16 values: `layer_norm_spatial.rows`).
layer_norm of a [1, C, H, W] tensor with H x W > 1 over other axes: `layer_norm_spatial`.
softmax over a last axis of size 1 ([1, C, 1, 1]): `softmax.softmax_unit_axis`.
softmax over the last axis of a [1, C, 1, W] tensor (`norm_softmax_an1_1x1x1x64`, upstream
`norm_softmax_an1_1x8x1x64`), 5 tasks:
  0. max over W (PE PoolMode 2), keeping x;  1. (x - max) x log2(e) (PE subtract, Scale);
  2. exp2 LUT on log2(C) NEs (in place);  3. 1 / sum over W (PE.Cfg 0x1000);  4. the product.
softmax over the last axis with H > 1: `softmax_rows.softmax_rows` (6 tasks, H rows as groups).
The reductions whose result stays in L2 set NE.KernelCfg bit 12 (and header DisallowAbort), the
tasks that read such a result bit 14 (census §6.4 notes).
"""

from __future__ import annotations

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.target import lut
from coreml2hwx.target.h13 import cost, l2, spec as S
from coreml2hwx.target.h13.activation import lut_fetch
from coreml2hwx.target.h13.context import where
from coreml2hwx.target.h13.elementwise import pe_arith, pe_channel, pe_row, pe_task
from coreml2hwx.target.h13.layout import l2_channel_stride, round_up
from coreml2hwx.target.h13.operand import active_engines
from coreml2hwx.target.h13.softmax import VECTOR_MAX_CHANNELS, softmax_unit_axis
from coreml2hwx.target.h13.layer_norm_spatial import layer_norm_spatial, rows as spatial_rows
from coreml2hwx.target.h13.softmax_rows import softmax_rows
from coreml2hwx.target.h13.softmax_channels import softmax_channels
from coreml2hwx.target.h13.spec import SRC_FETCH_KEEP, SRC_FETCH_LAST, TaskSpec

LOG2_E = 1.4426950408889634
KEEP_SOURCE = dict(SourceType=1, DMAFmt=1, DMAInterleave=1, AliasConvSrc=1, AliasConvRslt=1,
                   AliasPlanarSrc=1, AliasPlanarRslt=1)  # 0x00500171
L2_READ = dict(DMAInterleave=1, AliasPlanarRslt=1)  # 0x00400100
MIDDLE_RESULT = dict(DMAFmt=1, DMAInterleave=1)  # 0x00000140
LAST_RESULT = dict(ResultType=2, L2BfrMode=1, DMAFmt=1, DMAInterleave=1)  # 0x0000014A
LN_MAX_ROWS = 512  # C rows at most; beyond, the C values are laid along W (see layer_norm_vector)
LN_FIRST_TILE = 32  # layer_norm task 0 tiles its C rows 32 at a time (both oracles)
# Common 0x30 flags of the softmax PE tasks: a source broadcast along W, a source that is a
# per-channel vector (source 1 / source 2), and a reduction writing such a vector.
BROADCAST_W1, BROADCAST_W2, VECTOR1, VECTOR2, FLAT_RESULT = 0x1, 0x10, 0x100, 0x200, 0x400


def _region(spec, prefix, base, ch, row, depth, group=0):
    if prefix == "src":
        l2.source_region(spec, base, ch, row, depth, group)
    elif prefix == "src2":
        l2.source2_region(spec, base, ch, row, depth)
    else:
        spec.set("l2.ResultBase", Addr=base // l2.UNIT)
        l2.result_strides(spec, ch, row, depth)


def layer_norm(ctx, op) -> list:
    x, y = ctx.surface(op.inputs[0]), ctx.surface(op.outputs[0])
    n, c, h, w = x.shape
    rank = len(ctx.graph.tensors[op.inputs[0]].shape)
    axes = {a + 4 - rank for a in op.attrs["axes"]}
    if op.attrs.get("gamma") is not None or op.attrs.get("beta") is not None:
        raise UnsupportedError("layer_norm with gamma/beta: Apple's h13 compiler refuses the "
                               "affine form", where=where(op))
    eps = float(op.attrs.get("epsilon", 1e-5))
    if {a % rank + 4 - rank for a in op.attrs["axes"]} == {3} and n == 1 and w > 1:
        if h > 1:
            return spatial_rows(ctx, op, x, y, eps)  # norm_rows up to W = 8
        return layer_norm_last_axis(op, x, y, eps)
    if h * w > 1:  # spatial shapes over other axes (layer_norm_spatial.py)
        return layer_norm_spatial(ctx, op, x, y, eps)
    if n != 1 or (h, w) != (1, 1) or 1 not in axes:
        raise UnsupportedError(f"layer_norm {'x'.join(map(str, x.shape))} axes "
                               f"{list(op.attrs['axes'])}: only [1, C, 1, 1] over C is supported "
                               "on h13 yet", where=where(op))
    if c > LN_MAX_ROWS:
        return layer_norm_vector(op, x, y, eps)
    unit, pair = 0x10, 0x20  # one value per row; [mean, factor] rows side by side
    x_base = 2 * pair  # x stays in L2 after the two statistics rows

    mean = pe_task(op.name, c=1, h=c, w=1, tile=LN_FIRST_TILE, task_type="reduce")
    pe_arith(mean, {}, final=1.0 / c)
    mean.set("ne.KernelCfg", Bit12=1)
    S.dram_source(mean, x, cache=SRC_FETCH_KEEP, row=x.plane, plane=x.batch, depth=x.plane)
    _region(mean, "src", x_base, unit, pair, unit, unit)
    mean.set("l2.SourceCfg", **KEEP_SOURCE)
    l2.result(mean, base=0, cfg=l2.RESULT_KEEP)
    _region(mean, "res", 0, unit, pair, unit)

    factor = pe_task(op.name, c=1, h=c, w=1, tile=c, task_type="variance")
    factor.set("common.Unk2C", Log2TileHeight=4)
    factor.set("common.Unk30", Value=2)
    pe_arith(factor, dict(OpMode=4, NLMode=2, FirstSrc=1, SecSrc=2), final=1.0 / c)
    factor.set("pe.PreScale", Low16=lut._bits(eps))
    factor.set("ne.KernelCfg", Bit12=1, Bit14=1)
    _region(factor, "src", 0, unit, pair, unit)
    factor.set("l2.SourceCfg", **L2_READ)
    _region(factor, "src2", x_base, unit, pair, unit)
    l2.result(factor, base=pair, cfg=MIDDLE_RESULT)
    _region(factor, "res", pair, unit, pair, unit)

    out = pe_task(op.name, c=c, h=1, w=1, tile=1, task_type="scale_bias")
    out.set("common.Unk30", Value=0x80)
    pe_arith(out, dict(OpMode=0, SecSrc=3))
    out.set("ne.KernelCfg", Bit14=1)
    S.dram_source(out, x, cache=SRC_FETCH_LAST)
    row = pe_row(c, 1)
    _region(out, "src", x_base, unit, row, c * unit, c * unit)
    out.set("l2.SourceCfg", SourceType=2, DMAFmt=1, DMAInterleave=1, AliasPlanarRslt=1)
    _region(out, "src2", 0, unit, pair, unit)
    l2.result(out, base=x_base + row, cfg=LAST_RESULT)
    S.dram_dest(out, y)
    return [mean, factor, out]


def softmax(ctx, op) -> list:
    x, y = ctx.surface(op.inputs[0]), ctx.surface(op.outputs[0])
    n, c, h, w = x.shape
    rank = len(ctx.graph.tensors[op.inputs[0]].shape)
    if n == 1 and h > 1 and op.attrs["axis"] % rank == rank - 1:
        return softmax_rows(ctx, op, x, y)
    if rank == 4 and op.attrs["axis"] % rank == 1:  # over C: `softmax_channels` (or refused)
        return softmax_channels(ctx, op, x, y)
    if (n, h) != (1, 1) or op.attrs["axis"] % rank != rank - 1:
        raise UnsupportedError(f"softmax {'x'.join(map(str, x.shape))} axis {op.attrs['axis']}: "
                               "only the last axis of a [1, C, 1, W] tensor is supported on h13 "
                               "yet", where=where(op))
    if w == 1:
        if VECTOR_MAX_CHANNELS < c < 2 * VECTOR_MAX_CHANNELS:
            raise UnsupportedError(f"softmax {'x'.join(map(str, x.shape))} axis "
                                   f"{op.attrs['axis']}: a last axis of size 1 with 128 < C < 256 "
                                   "(between the observed vector and channel layouts) is not "
                                   "supported on h13", where=where(op))
        return softmax_unit_axis(ctx, op, x, y)
    # Per-channel max and 1/sum sit at 0 as one vector (16 bytes for C <= 8), the C rows of W
    # values after it, x after them (`norm_softmax_an1_1x1x1x64`, upstream `..._1x8x1x64`).
    ch = l2_channel_stride(w)
    unit, row = round_up(2 * c, 16), c * ch
    values, x_base = unit, unit + row
    vector = c > 1  # the per-channel results travel as a vector along W (Common 0x30 flags)

    peak = pe_task(op.name, c=c, h=1, w=w, tile=1, task_type="reduce")
    pe_arith(peak, dict(PoolMode=2))
    peak.set("l2.L2Cfg", PaddingMode=1)
    peak.set("ne.KernelCfg", Bit12=1)
    if vector:
        peak.set("common.Unk30", Value=FLAT_RESULT)
    S.dram_source(peak, x)
    _region(peak, "src", x_base, ch, row, row, row)
    peak.set("l2.SourceCfg", **KEEP_SOURCE)
    l2.result(peak, base=0, cfg=l2.RESULT_KEEP)
    _region(peak, "res", 0, unit, unit, unit)

    shift = pe_task(op.name, c=c, h=1, w=w, tile=1, task_type="binary")
    # One 16-byte line of per-channel values (C <= 8): tile code 1 and NE shifts 1
    # (`norm_softmax_an1_1x1x1x64`, upstream `..._1x8x1x64`); C = 64: 0 and none (upstream
    # `norm_softmax_an1_1x64x1x128`).
    one_line = unit == l2.UNIT
    shift.set("common.Unk2C", Log2TileHeight=int(one_line))
    shift.set("common.Unk30", Value=BROADCAST_W2 | (VECTOR2 if vector else 0))
    pe_arith(shift, dict(OpMode=0, SecSrc=3), scale=LOG2_E)
    shift.set("ne.KernelCfg", Bit14=1)
    _region(shift, "src", x_base, ch, row, row)
    shift.set("l2.SourceCfg", **L2_READ)
    _region(shift, "src2", 0, unit, unit, unit)
    l2.result(shift, base=values, cfg=MIDDLE_RESULT)
    _region(shift, "res", values, ch, row, row)

    exp = TaskSpec(op.name, "ne")
    S.dims(exp, c, 1, w, c, 1, w)
    S.conv_cfg(exp)
    S.group_cfg(exp, unicast=True)
    exp.set("common.TileCfg", TileHeight=1)
    shifts = 1 if one_line else 0
    exp.set("common.Cfg", ActiveNE=active_engines(c), ShPref=shifts, ShMin=shifts, ShMax=shifts)
    exp.set("ne.MACCfg", OpMode=4, KernelMode=1, NonlinearMode=2)
    _region(exp, "src", values, ch, row, row)
    exp.set("l2.SourceCfg", Dependent=2, DMAInterleave=1)
    l2.result(exp, base=values, cfg=MIDDLE_RESULT)
    _region(exp, "res", values, ch, row, row)
    lut_fetch(ctx, exp, lut.exp2(), min(c, 16))

    total = pe_task(op.name, c=c, h=1, w=w, tile=1, task_type="reduce")
    if vector:
        total.set("common.Unk30", Value=FLAT_RESULT)
    pe_arith(total, dict(NLMode=1))
    total.set("ne.KernelCfg", Bit12=1)
    _region(total, "src", values, ch, row, row)
    total.set("l2.SourceCfg", Dependent=1, DMAInterleave=1, AliasPlanarRslt=1)
    l2.result(total, base=0, cfg=MIDDLE_RESULT)
    _region(total, "res", 0, unit, unit, unit)

    out = pe_task(op.name, c=c, h=1, w=w, tile=1, task_type="binary")
    out.set("common.Unk30", Value=BROADCAST_W1 | (VECTOR1 if vector else 0))
    pe_arith(out, dict(OpMode=1, SecSrc=2))
    out.set("ne.KernelCfg", Bit14=1)
    _region(out, "src", 0, unit, unit, unit)
    out.set("l2.SourceCfg", Dependent=2, DMAInterleave=1)
    _region(out, "src2", values, ch, row, row)
    l2.result(out, base=x_base, cfg=LAST_RESULT)
    S.dram_dest(out, y)
    return [peak, shift, exp, total, out]


def layer_norm_vector(op, x, y, eps: float) -> list:
    """layer_norm over the C values of a [1, C, 1, 1] tensor with C > 512, 5 PE tasks on the C
    values laid side by side along W (upstream `norm_layer_norm_ax1_1x{1024,4096}x1x1`; C = 512
    still takes the row form: `layer_norm_1x512x1x1`):
      0. x from DRAM into L2 as one [1, 1, 1, C] vector at 0x40 (Common 0x30 FLAT_RESULT);
      1. the mean over W (FinalScale 1/C) at 0;  2. the factor 1/sqrt(var + eps) at 0x20, the
         mean broadcast along W;  3. (x - mean) x factor in place, [mean; factor] as source 2;
      4. the vector back into C channels, to DRAM (Common 0x30 VECTOR1)."""
    c = x.c
    unit, pair, vector = 0x10, 0x20, 2 * c
    x_base = 2 * pair

    spread = pe_task(op.name, c=c, h=1, w=1, tile=1, task_type="unary")
    spread.set("common.Unk30", Value=FLAT_RESULT)
    pe_arith(spread, {})
    spread.set("ne.KernelCfg", Bit12=1)
    S.dram_source(spread, x)
    staged = x_base + vector
    row = pe_row(c, 1)
    _region(spread, "src", staged, unit, row, c * unit, c * unit)
    spread.set("l2.SourceCfg", **l2.SOURCE_STREAM)
    l2.result(spread, base=x_base, cfg=l2.RESULT_KEEP)
    _region(spread, "res", x_base, vector, vector, vector)
    # The W = 1 source costs twice, the vector written out once per line (fit to both cases:
    # ExeCycles 4 and 18 for task 0, 1 and 7 for task 4).
    spread.header["ExeCycles"] = int(2 * cost.view_cost(x, c) // cost.UNIT)

    mean = pe_task(op.name, c=1, h=1, w=c, tile=1, task_type="reduce")
    pe_arith(mean, {}, final=1.0 / c)
    mean.set("ne.KernelCfg", Bit12=1, Bit14=1)
    _region(mean, "src", x_base, vector, vector, vector)
    mean.set("l2.SourceCfg", **L2_READ)
    l2.result(mean, base=0, cfg=MIDDLE_RESULT)
    _region(mean, "res", 0, unit, pair, unit)

    factor = pe_task(op.name, c=1, h=1, w=c, tile=1, task_type="variance")
    factor.set("common.Unk30", Value=BROADCAST_W1)
    pe_arith(factor, dict(OpMode=4, NLMode=2, FirstSrc=1, SecSrc=2), final=1.0 / c)
    factor.set("pe.PreScale", Low16=lut._bits(eps))
    factor.set("ne.KernelCfg", Bit12=1, Bit14=1)
    _region(factor, "src", 0, unit, pair, unit)
    factor.set("l2.SourceCfg", Dependent=2, DMAInterleave=1)
    _region(factor, "src2", x_base, vector, vector, vector)
    l2.result(factor, base=pair, cfg=MIDDLE_RESULT)
    _region(factor, "res", pair, unit, pair, unit)

    scaled = pe_task(op.name, c=1, h=1, w=c, tile=1, task_type="scale_bias")
    scaled.set("common.Unk30", Value=VECTOR2)
    pe_arith(scaled, dict(OpMode=0, SecSrc=3))
    scaled.set("ne.KernelCfg", Bit12=1, Bit14=1)
    _region(scaled, "src", x_base, vector, vector, vector)
    scaled.set("l2.SourceCfg", **L2_READ)
    _region(scaled, "src2", 0, unit, pair, unit)
    l2.result(scaled, base=x_base, cfg=MIDDLE_RESULT)
    _region(scaled, "res", x_base, vector, vector, vector)

    out = pe_task(op.name, c=c, h=1, w=1, tile=1, task_type="unary")
    out.set("common.Unk30", Value=VECTOR1)
    pe_arith(out, {})
    out.set("ne.KernelCfg", Bit14=1)
    _region(out, "src", x_base, vector, vector, vector)
    out.set("l2.SourceCfg", **L2_READ)
    l2.result(out, base=staged, cfg=LAST_RESULT)
    S.dram_dest(out, y)
    out.header["ExeCycles"] = int(cost.LINE * c // cost.UNIT)
    return [spread, mean, factor, scaled, out]


LN_VECTOR_CHANNELS = 8  # [1, C, 1, W] over W: the C statistics fit one 16-byte line (C <= 8 seen)
LN_MAX_WIDTH = 512  # one PE channel line (`pe_channel`) holds the row


def layer_norm_last_axis(op, x, y, eps: float) -> list:
    """layer_norm over W of a [1, C, 1, W] tensor (upstream `norm_layer_norm_ax3_1x{8,1}x1x64`), the
    three PE tasks of the [1, C, 1, 1] form with the roles of C and W swapped: the C rows of W
    values are reduced along W, and the C means (then the C factors) travel as one vector along
    W (Common 0x30 0x400 / 0x501 / 0x200, the softmax flags).  L2: the mean vector at 0, the
    factor vector at 0x20, x kept at 0x40 by task 0 for task 2, the output after x."""
    _, c, _, w = x.shape
    if c > LN_VECTOR_CHANNELS or w > LN_MAX_WIDTH:
        raise UnsupportedError(f"layer_norm {'x'.join(map(str, x.shape))} over W: only C <= "
                               f"{LN_VECTOR_CHANNELS} rows of W <= {LN_MAX_WIDTH} are supported "
                               "on h13 yet", where=where(op))
    unit, pair = l2.UNIT, 2 * l2.UNIT  # one vector line each; [mean; factor] 0x20 apart
    x_base, ch = 2 * pair, pe_channel(w)
    row = c * ch

    # One row (C = 1) is no vector: no vector flags (upstream `..._ax3_1x1x1x64`: 0x1 and 0 on
    # tasks 1 and 2, as the [1, C, 1, W] softmax drops them at C = 1).
    vector = c > 1
    mean = pe_task(op.name, c=c, h=1, w=w, tile=1, task_type="reduce")
    if vector:
        mean.set("common.Unk30", Value=FLAT_RESULT)
    pe_arith(mean, {}, final=1.0 / w)
    mean.set("ne.KernelCfg", Bit12=1)
    S.dram_source(mean, x)
    _region(mean, "src", x_base, ch, row, row, row)
    mean.set("l2.SourceCfg", **KEEP_SOURCE)
    l2.result(mean, base=0, cfg=l2.RESULT_KEEP)
    _region(mean, "res", 0, unit, pair, unit)

    factor = pe_task(op.name, c=c, h=1, w=w, tile=1, task_type="variance")
    factor.set("common.Unk30", Value=(FLAT_RESULT | VECTOR1 if vector else 0) | BROADCAST_W1)
    pe_arith(factor, dict(OpMode=4, NLMode=2, FirstSrc=1, SecSrc=2), final=1.0 / w)
    factor.set("pe.PreScale", Low16=lut._bits(eps))
    factor.set("ne.KernelCfg", Bit12=1, Bit14=1)
    _region(factor, "src", 0, unit, pair, unit)
    factor.set("l2.SourceCfg", **L2_READ)
    _region(factor, "src2", x_base, ch, row, row)
    l2.result(factor, base=pair, cfg=MIDDLE_RESULT)
    _region(factor, "res", pair, unit, pair, unit)

    out = pe_task(op.name, c=c, h=1, w=w, tile=1, task_type="scale_bias")
    if vector:
        out.set("common.Unk30", Value=VECTOR2)
    pe_arith(out, dict(OpMode=0, SecSrc=3))
    out.set("ne.KernelCfg", Bit14=1)
    _region(out, "src", x_base, ch, row, row)
    out.set("l2.SourceCfg", **L2_READ)
    _region(out, "src2", 0, unit, pair, unit)
    l2.result(out, base=x_base + row, cfg=LAST_RESULT)
    S.dram_dest(out, y)
    return [mean, factor, out]
