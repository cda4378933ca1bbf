"""Reductions: reduce_sum / reduce_mean / reduce_max over the axes the oracles cover.

* over H and W (or W of a one-row tensor): one PE task that keeps the input's view and lets the
  PE reduce (Common.Cfg task type 5; PE.Cfg 0 sum, PoolMode 2 max with L2Cfg.PaddingMode 1;
  FinalScale 1/N for a mean): `reduce_{sum,mean}_axes_2_3`, `reduce_probe_mean_ax3_1x8x1x64`;
  with keep_dims = False the [1, C] result is written along W (ResultType 1, Common 0x30 = 0x400):
  `reduce_probe_max_ax2_3_1x64x8x8_flat` (sum and mean alike);
* over W of a several-row tensor: the same task with each row a group (upstream
  `reduce_probe_sum_ax3_1x64x8x8`);
* over C, H and W: the same PE task viewing the tensor as one channel of C rows by W, with H as
  depth (`reduce_probe_sum_ax1_2_3_1x128x16x16`);
* max over C: one NE task (MACCfg OpMode 3, UnicastCin = C, one NE): `reduce_max_axes_1`;
* sum / mean of [1, C, 1, 1] over C: the C x H x W task above (upstream
  `reduce_probe_mean_ax1_1x4096x1x1`); over axes of size 1: one NE copy (upstream
  `reduce_probe_sum_ax1_1x1x1x64`);
* over H alone: NE copy with channels and rows swapped, a PE reduction over each pixel's H
  values, an NE copy back out (upstream `reduce_probe_sum_ax2_1x{64x8x8,32x4x4}`);
* sum / mean over C: an NE copy that transposes each pixel's channels into L2 (8 NEs, Cfg bit 28),
  then a PE reduction over them (`reduce_mean_axes_1`); of a one-row [1, C, 1, W]: the matmul
  transposed-copy form instead (`channel_sum_row`, upstream `reduce_probe_sum_ax1_1x8x1x64`).
"""

from __future__ import annotations

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.target.h13 import cost, l2, matmul, spec as S
from coreml2hwx.target.h13.activation import NE_BYPASS, ne_row, sh_max
from coreml2hwx.target.h13.context import where
from coreml2hwx.target.h13.elementwise import pe_arith, pe_row, pe_task
from coreml2hwx.target.h13.layout import l2_channel_stride, round_up
from coreml2hwx.target.h13.operand import _ne_task as _ne_copy_task
from coreml2hwx.target.h13.spec import TaskSpec

REDUCTIONS = {"reduce_sum", "reduce_mean", "reduce_max"}
FLAT_RESULT = 0x400  # Common 0x30 when the reduced result is written along W
L2_READ = dict(DMAInterleave=1, AliasPlanarRslt=1)  # 0x00400100: a source left in L2


def _reduce_arith(spec, op, count: int) -> None:
    """The PE words of a reduction over `count` values; max reductions pad with PaddingMode 1."""
    fields, final = _pe_op(op, count)
    pe_arith(spec, fields, final=final)
    if op.type == "reduce_max":
        spec.set("l2.L2Cfg", PaddingMode=1)


def _pe_op(op, count: int) -> tuple[dict, float]:
    if op.type == "reduce_max":
        return dict(PoolMode=2), 1.0
    return {}, 1.0 / count if op.type == "reduce_mean" else 1.0


def lower_reduce(ctx, op) -> list:
    x, y = ctx.surface(op.inputs[0]), ctx.surface(op.outputs[0])
    rank = len(ctx.graph.tensors[op.inputs[0]].shape)
    axes = tuple(sorted(a + 4 - rank for a in op.attrs["axes"]))  # on the [N, C, H, W] view
    n, c, h, w = x.shape
    desc = f"{op.type} {'x'.join(map(str, x.shape))} axes {list(op.attrs['axes'])}"
    if n != 1 or rank != 4:
        raise UnsupportedError(f"{desc}: only rank-4 inputs with batch 1 are supported on h13 yet",
                               where=where(op))
    # Over C (and H, W) the result surface is [1, 1, H, W] with or without keep_dims, and so is
    # the program (upstream reduce_probe_{sum,max}_ax1_1x512x1x1_flat).
    keep = bool(op.attrs.get("keep_dims")) or axes in ((1,), (1, 2, 3))
    if all(x.shape[a] == 1 for a in axes):
        return [copy(ctx, op, x, y)]
    if axes == (1,) and h == w == 1 and op.type != "reduce_max":
        # [1, C, 1, 1] over C is the C x H x W reduction: one PE task over C rows, the result
        # surface the same with or without keep_dims (upstream
        # reduce_probe_sum_ax1_1x512x1x1_flat).
        return [whole(ctx, op, x, y)]
    if axes == (2, 3) or (axes == (3,) and h == 1):
        # The flattened form is observed for reduce_max; sum and mean differ from it only in
        # the PE operation, as their keep_dims forms differ from max's (reduce_*_axes_2_3).
        return [spatial(ctx, op, x, y, flat=not keep)]
    if axes == (3,) and keep:
        return [rows(ctx, op, x, y)]
    if axes == (2,) and keep:
        return over_rows(ctx, op, x, y)
    if axes == (1, 2, 3) and keep:
        return [whole(ctx, op, x, y)]
    if axes == (1,) and keep:
        if op.type == "reduce_max":
            return [channel_max(ctx, op, x, y)]
        if h == 1 and c <= matmul.MAX_TRANSPOSED_ROWS and not _chained(ctx):
            return channel_sum_row(ctx, op, x, y)
        return channel_sum(ctx, op, x, y)
    raise UnsupportedError(f"{desc} keep_dims={keep}: this reduction is not supported on h13 yet",
                           where=where(op))


def copy(ctx, op, x, y) -> TaskSpec:
    """A reduction over axes of size 1 is a copy: one NE bypass task, DRAM to DRAM (upstream
    reduce_probe_sum_ax1_1x1x1x64: DebugLogEvents 0x6A like the other bypass-first tasks)."""
    _, c, h, w = x.shape
    spec = _ne_copy_task(op.name, c, h, w, active_ne=0)
    spec.first_fetch_is_bypass = True
    return _ne_dram_to_dram(spec, x, y)


def _ne_dram_to_dram(spec, x, y):
    """An NE task's source streamed from DRAM into L2 at 0, its result after the rows, to DRAM."""
    _, c, h, w = x.shape
    S.dram_source(spec, x)
    row = l2.source(spec, base=0, channels=c, width=w, row=ne_row(c, h, w))
    spec.set("l2.SourceCfg", **l2.SOURCE_STREAM)
    l2.result(spec, base=h * row)
    S.dram_dest(spec, y)
    return spec


def spatial(ctx, op, x, y, *, flat: bool) -> TaskSpec:
    _, c, h, w = x.shape
    spec = pe_task(op.name, c=c, h=h, w=w, tile=h, task_type="reduce")
    _reduce_arith(spec, op, h * w)
    S.dram_source(spec, x)
    row = l2.source(spec, base=0, channels=c, width=w, row=pe_row(c, w))
    spec.set("l2.SourceCfg", **l2.SOURCE_STREAM)
    l2.result(spec, base=h * row)
    S.dram_dest(spec, y)
    if flat:
        vector = round_up(2 * c, 16)
        spec.set("common.Unk30", Value=FLAT_RESULT)
        spec.set("l2.ResultCfg", ResultType=1, L2BfrMode=0)
        spec.set("l2.ConvResultChannelStride", Stride=vector // 16)
        spec.set("l2.ConvResultRowStride", Stride=vector // 16)
        spec.set("l2.ResultDepthStride", Value=vector)
        spec.set("l2.ResultGroupStride", Value=vector)
        spec.set("tile_dma_dst.DMAConfig", L2BfrMode=0)
    return spec


def rows(ctx, op, x, y) -> TaskSpec:
    """Over W of a several-row tensor: the one-row reduction with each of the H rows a group
    (DMA views: group stride = one row, row stride = the whole tensor; upstream
    `reduce_probe_sum_ax3_1x64x8x8`)."""
    _, c, h, w = x.shape
    spec = pe_task(op.name, c=c, h=1, w=w, tile=1, task_type="reduce", groups=h)
    _reduce_arith(spec, op, w)
    S.dram_source(spec, x, row=x.batch, group=x.row)
    row = l2.source(spec, base=0, channels=c, width=w, row=pe_row(c, w))
    spec.set("l2.SourceCfg", **l2.SOURCE_STREAM)
    l2.result(spec, base=row)
    S.dram_dest(spec, y, row=y.batch, group=y.row)
    return spec


def whole(ctx, op, x, y) -> TaskSpec:
    """C x H x W viewed as one channel of C rows (x's plane stride) with H as depth (x's rows)."""
    _, c, h, w = x.shape
    spec = pe_task(op.name, c=1, h=c, w=w, tile=c, task_type="reduce")
    S.dims(spec, 1, c, w, 1, c, w, depth=h)
    spec.set("common.Unk2C", Log2TileHeight=min(5, c.bit_length() - 1))
    _reduce_arith(spec, op, c * h * w)
    if h == w == 1:
        # the C rows are x's own channels: x's own strides (reduce_probe_sum_ax1_1x512x1x1_flat)
        S.dram_source(spec, x)
    else:
        S.dram_source(spec, x, row=x.plane, plane=x.batch, depth=x.row, group=x.batch)
    ch = l2_channel_stride(w)
    row = pe_row(h, w)
    l2.source(spec, base=0, channels=1, width=w, row=row)
    spec.set("l2.Src1GroupStride", Value=h * ch)
    spec.set("l2.SourceCfg", **l2.SOURCE_STREAM)
    l2.result(spec, base=c * row)
    S.dram_dest(spec, y)
    return spec


def channel_max(ctx, op, x, y) -> TaskSpec:
    _, c, h, w = x.shape
    spec = TaskSpec(op.name, "ne")
    S.dims(spec, c, h, w, 1, h, w)
    S.conv_cfg(spec)
    S.group_cfg(spec, unicast=True, unicast_cin=c)
    spec.set("common.TileCfg", TileHeight=h)
    spec.set("common.Cfg", ActiveNE=0, ShMax=sh_max(h, w))
    spec.set("l2.L2Cfg", PaddingMode=1)
    spec.set("ne.MACCfg", OpMode=3, KernelMode=1)
    return _ne_dram_to_dram(spec, x, y)


def channel_sum(ctx, op, x, y) -> list:
    _, c, h, w = x.shape
    pixel = round_up(2 * c, 16)  # one pixel's C values, side by side
    result_row = l2.UNIT * l2.pe_row_stride(w * pixel // l2.UNIT)

    copy = TaskSpec(op.name, "ne")
    S.dims(copy, c, h, w, c, h, w)
    S.conv_cfg(copy)
    S.group_cfg(copy, unicast=True)
    copy.set("common.TileCfg", TileHeight=h)
    copy.set("common.Cfg", ActiveNE=3, ShMax=sh_max(h, w), Bit28=1)
    copy.set("ne.MACCfg", **NE_BYPASS)
    copy.first_fetch_is_bypass = True
    S.dram_source(copy, x)
    l2.result(copy, base=0, cfg=l2.RESULT_KEEP)
    copy.set("l2.ConvResultChannelStride", Stride=pixel // 16)
    copy.set("l2.ConvResultRowStride", Stride=result_row // 16)
    copy.set("l2.ResultDepthStride", Value=w * pixel)
    base = h * result_row
    l2.source(copy, base=base, channels=c, width=w, row=ne_row(c, h, w))
    copy.set("l2.SourceCfg", **l2.SOURCE_STREAM)

    total = pe_task(op.name, c=w, h=1, w=c, tile=1, task_type="reduce", groups=h)
    total.set("common.Unk30", Value=FLAT_RESULT)
    fields, final = _pe_op(op, c)
    pe_arith(total, fields, final=final)
    l2.source(total, base=0, channels=w, width=c, channel_stride=pixel, row=w * pixel)
    total.set("l2.Src1GroupStride", Value=result_row)
    total.set("l2.SourceCfg", AliasConvRslt=1, DMAInterleave=1)
    l2.result(total, base=base, cfg=dict(ResultType=1, DMAFmt=1, DMAInterleave=1))
    total.set("l2.ConvResultChannelStride", Stride=1)
    total.set("l2.ConvResultRowStride", Stride=pixel // 16)
    total.set("l2.ResultDepthStride", Value=16)
    S.dram_dest(total, y, row=y.batch, plane=y.batch, depth=y.batch, group=y.row)
    total.set("tile_dma_dst.DMAConfig", L2BfrMode=0)
    return [copy, total]


ROW_SHIFT_WIDTH = 64  # widest W with ShMin 1 on the transposed copy (see `channel_sum_row`)


def _chained(ctx) -> bool:
    """Whether the graph has intermediates, which take the DRAM scratch slot 3 that the one-row
    form names (then the transposing form above is used: it computes the same sum)."""
    consumers = ctx.graph.consumers()
    return any(name in consumers and name not in ctx.slots for name in ctx.graph.producers())


def channel_sum_row(ctx, op, x, y) -> list:
    """Sum / mean over C of a one-row [1, C, 1, W]: Apple's transposed copy of the two-task matmul
    form (`matmul.transpose_rows`: W pixels of C values, channel stride 16 * (units | 1), ActiveNE 4,
    the scratch slot 3 named but not written), then one PE reduction over each pixel's C values
    that reads them as `matmul.read_transposed_copy` does (upstream
    `reduce_probe_sum_ax1_1x{8x1x64,8x1x128,64x1x64}`)."""
    _, c, _, w = x.shape
    copy = matmul.transpose_rows(ctx, op, x, c, w)
    # ShMin 1 at W = 64, 0 at W = 128 (upstream ..._1x8x1x64 / _1x8x1x128); ShPref = ShMax = 3
    # only for C <= 8 as in the matmul copy (clear at ..._1x64x1x64)
    if c <= matmul.MAX_ROWS and w <= ROW_SHIFT_WIDTH:
        copy.set("common.Cfg", ShMin=1)
    S.dram_source(copy, x)

    total = pe_task(op.name, c=w, h=1, w=c, tile=1, task_type="reduce")
    total.set("common.Unk30", Value=FLAT_RESULT)
    fields, final = _pe_op(op, c)
    pe_arith(total, fields, final=final)
    matmul.read_transposed_copy(total, w, c)
    total.set("l2.ResultCfg", ResultType=1, L2BfrMode=0)
    # each result value one output row apart (0x80 at W = 64, 0x100 at W = 128)
    out_row = l2_channel_stride(w)
    total.set("l2.ConvResultChannelStride", Stride=out_row // 16)
    total.set("l2.ConvResultRowStride", Stride=out_row // 16)
    total.set("l2.ResultDepthStride", Value=out_row)
    total.set("l2.ResultGroupStride", Value=out_row)
    S.dram_dest(total, y)
    total.set("tile_dma_dst.DMAConfig", L2BfrMode=0)
    return [copy, total]


TRANSPOSE_SHIFT = 4  # Common.Cfg ShPref = ShMin = ShMax of both NE copies (both H-reduction probes)
L2_BYTES = 2 << 20  # tile L2 of M1 (ane-facts §2.7.2)
OUT_TILE = 16  # TileHeight of the copy out (C = 32 and 64 alike)


def _ne_copy(op, *, cin, hin, win, tile) -> TaskSpec:
    spec = TaskSpec(op.name, "ne")
    S.dims(spec, cin, hin, win, cin, hin, win)
    S.conv_cfg(spec)
    S.group_cfg(spec, unicast=True)
    spec.set("common.TileCfg", TileHeight=tile)
    spec.set("common.Cfg", ActiveNE=3, ShPref=TRANSPOSE_SHIFT, ShMin=TRANSPOSE_SHIFT,
             ShMax=TRANSPOSE_SHIFT, Bit28=1)
    spec.set("ne.MACCfg", **NE_BYPASS)
    spec.first_fetch_is_bypass = True
    return spec


def _transposed_row(units: int) -> int:
    """Row stride (units) of the channel-swapped copy: the smallest >= the data that is not a
    multiple of 8 units (8 -> 9 at 64x8x8, 4 -> 4 at 32x4x4)."""
    row = units
    while row % 8 == 0:
        row += 1
    return row


def over_rows(ctx, op, x, y) -> list:
    """reduce over H of [1, C, H, W], three tasks (upstream `reduce_probe_sum_ax2_1x64x8x8`,
    `..._1x32x4x4`):
      0. NE copy of x viewed as H channels of C rows (DMA row stride = x's plane, plane stride =
         x's row), written channel-dense (Cfg bit 28): the H values of a pixel side by side,
         element (c, h, w) at c*row + w*pixel + 2h;
      1. PE reduction of each pixel's H values (its width), the W pixels as groups: one value
         per (w, c), at w*C*16 + c*16;
      2. NE copy of those out, the W groups as channels written channel-dense, C rows.
    Register parity is checked with H = W <= 8 (one 16-byte pixel); other sizes follow the same
    strides, and the simulator computes the reduction for H != W and 16 x 16 alike."""
    _, c, h, w = x.shape
    desc = f"{op.type} {'x'.join(map(str, x.shape))} axes {list(op.attrs['axes'])}"
    line = l2_channel_stride(w)  # one staged row of W values
    pixel = l2_channel_stride(h)  # the H values of one pixel, channel-dense
    row = l2.UNIT * _transposed_row(w * pixel // l2.UNIT)
    block = c * l2.UNIT  # one value per channel of one group
    staged = c * row
    if staged + max(c * h * line, 2 * w * block) > L2_BYTES:
        raise UnsupportedError(f"{desc}: the transposed tensor does not fit the 2 MiB L2",
                               where=where(op))

    transpose = _ne_copy(op, cin=h, hin=c, win=w, tile=c)
    S.dram_source(transpose, x, row=x.plane, plane=x.row)
    l2.source(transpose, base=staged, channels=h, width=w, row=h * line)
    transpose.set("l2.SourceCfg", **l2.SOURCE_STREAM)
    l2.result(transpose, base=0, cfg=l2.RESULT_KEEP)
    transpose.set("l2.ConvResultChannelStride", Stride=pixel // 16)
    transpose.set("l2.ConvResultRowStride", Stride=row // 16)
    transpose.set("l2.ResultDepthStride", Value=w * pixel)

    total = pe_task(op.name, c=c, h=1, w=h, tile=1, task_type="reduce", groups=w)
    _reduce_arith(total, op, h)
    l2.source(total, base=0, channels=c, width=h, channel_stride=row, row=w * pixel)
    total.set("l2.Src1DepthStride", Value=w * pixel)
    total.set("l2.Src1GroupStride", Value=pixel)
    total.set("l2.SourceCfg", AliasConvRslt=1, DMAInterleave=1)
    l2.result(total, base=staged, cfg=dict(DMAFmt=1, DMAInterleave=1))
    total.set("l2.ConvResultChannelStride", Stride=1)
    total.set("l2.ConvResultRowStride", Stride=w * block // 16)
    total.set("l2.ResultDepthStride", Value=block)
    total.set("l2.ResultGroupStride", Value=block)
    # Priced like a DMA stream of its source, one run per (channel, group) row
    # (ExeCycles 1 at 64x8x8, 0 at 32x4x4).
    total.header["ExeCycles"] = int(cost.stream_cost(x, (1, c * w, 1, h)) // cost.UNIT)

    out = _ne_copy(op, cin=w, hin=c, win=1, tile=min(c, OUT_TILE))
    l2.source(out, base=staged, channels=w, width=1, channel_stride=block, row=l2.UNIT)
    out.set("l2.Src1DepthStride", Value=block)
    out.set("l2.Src1GroupStride", Value=0)
    out.set("l2.SourceCfg", **L2_READ)
    l2.result(out, base=staged + w * block,
              cfg=dict(ResultType=2, L2BfrMode=1, DMAFmt=1, DMAInterleave=1))
    S.dram_dest(out, y)
    return [transpose, total, out]
