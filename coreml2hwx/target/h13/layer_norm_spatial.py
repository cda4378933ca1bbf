"""layer_norm (no gamma/beta) of a [1, C, H, W] tensor with H x W > 1: over axes [1, 2, 3], [2, 3],
[1], and over the last axis with rows of 9 to 16 values.

Evidence: upstream oracles of Apple's ane-compile-hwx (joshuaswarren/mil-hwx-compiler
`research/oracles/h13/` at 9cb58d571cd7, not in ../shared), named below by their case names
`norm_layer_norm_ax<axes>_<shape>`.  Four forms:

* over C, H and W (`whole`, 3 PE tasks; `ax1_2_3_1x{32x4x4,64x8x8,128x16x16,8x1x64}`): the
  [1, C, 1, 1] form of norm.py grown by the view of `reduce.whole` - tasks 0 and 1 see x as one
  channel of C rows of W values with H as depth (DMA row stride = x's plane, depth stride = x's
  row), task 2 re-reads x from DRAM; with H = W = 1 every word is the [1, C, 1, 1] form's
  (`norm_layer_norm_ax1_2_3_1x64x1x1`, ../shared).  One channel takes the next form
  (`ax1_2_3_1x1x1x{64,512}`);
* over H and W of each channel (`per_channel`, 3 PE tasks; `ax2_3_1x{32x4x4,64x8x8,
  128x16x16}`): `norm.layer_norm_last_axis` with H rows - the C means, then the C factors, as
  vectors along W (Common 0x30 0x400 / 0x503 / 0x200), x kept in L2 by task 0 for task 2; with
  H = 1 every word is that form's;
* over C at every pixel (`across_channels`, 6 tasks; `ax1_1x{32x4x4,64x8x8,128x16x16}`): NE
  copies bring each pixel's C values side by side, as `reduce.channel_sum` does;
* over W with H > 1 (`rows`): `norm_rows` up to W = 8, its two-line variant at W = 16
  (`ax3_1x128x16x16`).

Byte sizes: ch = round_up(2W, 16) (one channel row), `pe_row` the padded L2 row of a PE source
(`l2.pe_row_stride`), V = round_up(2C, 16) (C values side by side).  Rules fitted on fewer than
three shapes say so where they are applied.
"""

from __future__ import annotations

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.target import lut
from coreml2hwx.target.h13 import l2, norm_rows, spec as S
from coreml2hwx.target.h13.activation import NE_BYPASS
from coreml2hwx.target.h13.context import where
from coreml2hwx.target.h13.elementwise import (log2_tile_code, log2_width_code, pe_arith,
                                               pe_row, pe_task)
from coreml2hwx.target.h13.layout import l2_channel_stride, round_up
from coreml2hwx.target.h13.softmax_rows import ONE_LINE_WIDTH, RowLayout
from coreml2hwx.target.h13.spec import SRC_FETCH_KEEP, SRC_FETCH_LAST, TaskSpec

KEEP_SOURCE = dict(SourceType=1, DMAFmt=1, DMAInterleave=1, AliasConvSrc=1, AliasConvRslt=1,
                   AliasPlanarSrc=1, AliasPlanarRslt=1)  # 0x00500171
REFETCH_SOURCE = dict(SourceType=2, DMAFmt=1, DMAInterleave=1, AliasPlanarRslt=1)  # 0x00400142
L2_READ = dict(DMAInterleave=1, AliasPlanarRslt=1)  # 0x00400100
MIDDLE_RESULT = dict(DMAFmt=1, DMAInterleave=1)  # 0x00000140
LAST_RESULT = dict(ResultType=2, L2BfrMode=1, DMAFmt=1, DMAInterleave=1)  # 0x0000014A
SQUARE, RSQRT = 4, 2  # PE OpMode / NLMode of the factor task (PE.Cfg 0x92010 with its sources)
UNIT = l2.UNIT
STATS_BASE = 0x40  # x after [mean; factor] (2 x 0x20) in the whole form (all five oracles)
FIRST_TILE = 32  # the whole form's mean task tiles its C rows 32 at a time (8 when C = 8)
# Common 0x30 bits (census §6.1 notes, softmax/layer_norm oracles): source 1 broadcast along W,
# along the rows (H of the task's view) and along its depth; source 2 broadcast along C; a
# source 1 / source 2 that is a per-channel vector along W; a result written along W.
BCAST_W1, BCAST_H1, BCAST_D1, BCAST_C2 = 0x1, 0x2, 0x4, 0x80
VECTOR1, VECTOR2, FLAT_RESULT = 0x100, 0x200, 0x400


def layer_norm_spatial(ctx, op, x, y, eps: float) -> list:
    """Dispatch on the normalized axes of the [N, C, H, W] view."""
    rank = len(ctx.graph.tensors[op.inputs[0]].shape)
    axes = frozenset(a % rank + 4 - rank for a in op.attrs["axes"])
    desc = f"layer_norm {'x'.join(map(str, x.shape))} axes {list(op.attrs['axes'])}"
    if x.n != 1 or rank > 4:
        raise UnsupportedError(f"{desc}: only batch 1 (rank <= 4) is supported on h13 yet",
                               where=where(op))
    if axes == {1, 2, 3} and x.c == 1:
        # One channel: Apple compiles the per-channel form, the product still broadcasting the
        # statistics along C (`norm_layer_norm_ax1_2_3_1x1x1x64`: task 2 Common 0x30 = 0x80,
        # where `norm_layer_norm_ax3_1x1x1x64` has 0; every other word alike).
        return per_channel(op, x, y, eps, desc, product_flags=BCAST_C2)
    if axes == {1, 2, 3}:
        return whole(op, x, y, eps, desc)
    if axes == {2, 3}:
        return per_channel(op, x, y, eps, desc)
    if axes == {1}:
        return across_channels(op, x, y, eps, desc)
    raise UnsupportedError(f"{desc}: only axes [1], [1, 2, 3], [2, 3] or the last axis of a "
                           "spatial tensor are supported on h13 yet", where=where(op))


def _source(spec, base, ch, row, depth, group=0):
    l2.source_region(spec, base, ch, row, depth, group)


def _result(spec, base, cfg, ch=0, row=0, depth=0):
    l2.result(spec, base=base, cfg=cfg)
    l2.result_strides(spec, ch, row, depth)


def _factor_tile(spec, *, width: int, tile: int):
    """Common 0x2C of the factor task: log2 of the tile at most 4, and with a tile above one row
    the two codes sum to at most 8 (0x44 at C x W = 64x1, 512x1, 32x4, 64x8, 128x16; 0x35 at
    8 x 64 - `norm_layer_norm_ax1_2_3_1x8x1x64`; 0x09 at 1 x 1024 - upstream
    `norm_layer_norm_ax1_1x1024x1x1`, one row)."""
    tile_code = min(log2_tile_code(tile), 4)
    width_code = log2_width_code(width)
    if tile_code and tile_code + width_code > 8:
        width_code = 8 - tile_code
    spec.set("common.Unk2C", Log2Width=width_code, Log2TileHeight=tile_code)


def _statistics_pe(spec, op_fields: dict, count: int, eps: float | None = None):
    pe_arith(spec, op_fields, final=1.0 / count)
    if eps is not None:
        spec.set("pe.PreScale", Low16=lut._bits(eps))


def _fits(op, desc: str, nbytes: int):
    if nbytes > l2.L2_BYTES:
        raise UnsupportedError(f"{desc}: does not fit in L2 in one tile; tiled layer_norm is not "
                               "supported on h13 yet", where=where(op))


def whole(op, x, y, eps: float, desc: str) -> list:
    """Over C, H and W: mean (PE reduction), factor 1/sqrt(var + eps) (PE variance), the product.

    L2: mean at 0, factor at 0x20 (16-byte lines), x staged at 0x40.  Tasks 0 and 1 see x as one
    channel of C rows, each row the H x W values of a channel laid row after row:
      row stride R = pe_row(H x ch): 0x40, 0x80, 0x210 at H x ch = 4, 8, 32 lines (4x4, 8x8,
      16x16), 0x80 at 8 x 64 and 0x20 at 1 x 1 (one line, padded to 2); depth stride ch, group
      stride H x ch.
    Task 2 re-fetches x (channels at ch, rows at pe_row(C, W) = 0x210, 0x420, 0x1020; unpadded
    C x ch = 0x400 for one row of W = 64 - `..._1x8x1x64`, as `norm.layer_norm_last_axis`) and
    writes after it."""
    _, c, h, w = x.shape
    ch, count = l2_channel_stride(w), c * h * w
    row = UNIT * l2.pe_row_stride(h * ch // UNIT)
    out_row = c * ch if h == 1 and w > 1 else pe_row(c, w)
    line, pair = UNIT, 2 * UNIT
    _fits(op, desc, STATS_BASE + max(c * row, 2 * h * out_row))

    mean = pe_task(op.name, c=1, h=c, w=w, depth=h, tile=min(c, FIRST_TILE), task_type="reduce")
    _statistics_pe(mean, {}, count)
    mean.set("ne.KernelCfg", Bit12=1)
    S.dram_source(mean, x, cache=SRC_FETCH_KEEP, row=x.plane, plane=x.batch, depth=x.row)
    _source(mean, STATS_BASE, ch, row, ch, h * ch)
    mean.set("l2.SourceCfg", **KEEP_SOURCE)
    _result(mean, 0, l2.RESULT_KEEP, line, pair, line)

    factor = pe_task(op.name, c=1, h=c, w=w, depth=h, tile=c, task_type="variance")
    _factor_tile(factor, width=w, tile=c)
    factor.set("common.Unk30", Value=(BCAST_W1 if w > 1 else 0) | (BCAST_H1 if c > 1 else 0)
               | (BCAST_D1 if h > 1 else 0))
    _statistics_pe(factor, dict(OpMode=SQUARE, NLMode=RSQRT, FirstSrc=1, SecSrc=2), count, eps)
    factor.set("ne.KernelCfg", Bit12=1, Bit14=1)
    _source(factor, 0, line, pair, line)
    factor.set("l2.SourceCfg", **L2_READ)
    l2.source2_region(factor, STATS_BASE, ch, row, ch)
    _result(factor, pair, MIDDLE_RESULT, line, pair, line)

    out = pe_task(op.name, c=c, h=h, w=w, tile=h, task_type="scale_bias")
    out.set("common.Unk30", Value=BCAST_C2)
    pe_arith(out, dict(OpMode=0, SecSrc=3))
    out.set("ne.KernelCfg", Bit14=1)
    S.dram_source(out, x, cache=SRC_FETCH_LAST)
    _source(out, STATS_BASE, ch, out_row, c * ch, c * ch)
    out.set("l2.SourceCfg", **REFETCH_SOURCE)
    l2.source2_region(out, 0, line, pair, line)
    l2.result(out, base=STATS_BASE + h * out_row, cfg=LAST_RESULT)
    S.dram_dest(out, y)
    return [mean, factor, out]


def per_channel(op, x, y, eps: float, desc: str, product_flags: int = 0) -> list:
    """Over H and W of each channel: C means, C factors, the product (x kept in L2 by task 0).

    L2: the mean vector at 0, the factor vector at M, x at 2 M, the output after x; M =
    pe_row(V) (0x80 for C = 64, 0x20 for C <= 8 where V is one line: `..._ax3_1x8x1x64`); x with
    rows of pe_row(C, W) (0x420 at 64x8x8; C x ch for one row, as the last-axis form)."""
    _, c, h, w = x.shape
    ch, count = l2_channel_stride(w), h * w
    vector = round_up(2 * c, UNIT)
    stats = UNIT * l2.pe_row_stride(vector // UNIT)
    row = c * ch if h == 1 else pe_row(c, w)
    x_base = 2 * stats
    _fits(op, desc, x_base + 2 * h * row)
    # One channel is no vector: no vector flags (upstream `norm_layer_norm_ax3_1x1x1x64`).
    many = c > 1

    mean = pe_task(op.name, c=c, h=h, w=w, tile=h, task_type="reduce")
    if many:
        mean.set("common.Unk30", Value=FLAT_RESULT)
    _statistics_pe(mean, {}, count)
    mean.set("ne.KernelCfg", Bit12=1)
    S.dram_source(mean, x)
    _source(mean, x_base, ch, row, c * ch, c * ch)
    mean.set("l2.SourceCfg", **KEEP_SOURCE)
    _result(mean, 0, l2.RESULT_KEEP, vector, stats, vector)

    factor = pe_task(op.name, c=c, h=h, w=w, tile=h, task_type="variance")
    _factor_tile(factor, width=w, tile=h)
    factor.set("common.Unk30", Value=(FLAT_RESULT | VECTOR1 if many else 0) | BCAST_W1
               | (BCAST_H1 if h > 1 else 0))
    _statistics_pe(factor, dict(OpMode=SQUARE, NLMode=RSQRT, FirstSrc=1, SecSrc=2), count, eps)
    factor.set("ne.KernelCfg", Bit12=1, Bit14=1)
    _source(factor, 0, vector, stats, vector)
    factor.set("l2.SourceCfg", **L2_READ)
    l2.source2_region(factor, x_base, ch, row, c * ch)
    _result(factor, stats, MIDDLE_RESULT, vector, stats, vector)

    out = pe_task(op.name, c=c, h=h, w=w, tile=h, task_type="scale_bias")
    out.set("common.Unk30", Value=(VECTOR2 if many else 0) | product_flags)
    pe_arith(out, dict(OpMode=0, SecSrc=3))
    out.set("ne.KernelCfg", Bit14=1)
    _source(out, x_base, ch, row, c * ch)
    out.set("l2.SourceCfg", **L2_READ)
    l2.source2_region(out, 0, vector, stats, vector)
    l2.result(out, base=x_base + h * row, cfg=LAST_RESULT)
    S.dram_dest(out, y)
    return [mean, factor, out]


# -- over C at every pixel ------------------------------------------------------------------------
PE_ROW_ELEMENTS = 512  # the reductions over a pixel's C values see at most 512 values per row
MAX_WIDTH = 16  # W = 4, 8, 16 observed


class PixelLayout:
    """L2 regions of `across_channels` (bytes).  ch = round_up(2W, 16); P = round_up(2C, 16), one
    pixel's C values side by side (the NE copies write channel-dense, Common.Cfg bit 28);
    X = pe_row(C, W) the rows of x staged; V the rows of the centred values (`RowLayout.v`: X up
    to W = 8, the NE row stride at W = 16, as the row softmax); T the rows of the pixel-major
    copies: the smallest above W x P with T mod 64 units not in {0, 1, 32} - 0x110 and 0x420 at
    32x4x4 and 64x8x8 - but W x P itself at W = 16 (0x1000, 128x16x16; one oracle, as the
    placement of x below and the copy's 16 NEs).
      stats  0            H rows of ch: the mean (then the factor) of every pixel;
      a      H ch         x pixel-major (task 0), then the centred values (task 2);
      b      a + H V      the centred values pixel-major (task 3), then the output (task 5);
      x      b + H T      x staged for task 0 and kept for task 2 - at b itself at W = 16."""

    def __init__(self, c: int, h: int, w: int):
        row_layout = RowLayout(c, h, w)
        self.ch, self.x, self.v = row_layout.ch, row_layout.p, row_layout.v
        self.pixel = round_up(2 * c, UNIT)
        self.wide = w > ONE_LINE_WIDTH
        data = w * self.pixel // UNIT
        self.t = UNIT * (data if self.wide else l2.pe_row_stride(data + 1))
        self.a = h * self.ch
        self.b = self.a + h * self.v
        self.x_base = self.b if self.wide else self.b + h * self.t
        self.end = max(self.b + h * max(self.t, self.v), self.x_base + h * self.x)


def across_channels(op, x, y, eps: float, desc: str) -> list:
    """Over C at every pixel, six tasks (upstream `norm_layer_norm_ax1_1x{32x4x4,64x8x8,
    128x16x16}`), the C values of each pixel brought side by side by an NE copy as
    `reduce.channel_sum` does (`reduce_mean_axes_1`):
      0. NE copy of x (staged at x, kept) into a, pixel-major;
      1. PE mean of each pixel's C values (the W pixels of a row as channels, the H rows as
         groups, the mean of pixel (h, w) written along W: stats + h ch + 2w);
      2. PE x - mean (broadcast along C, Common 0x30 = 0x80) into a, V-byte rows;
      3. NE copy of the centred values into b, pixel-major;
      4. PE 1 / sqrt(mean of squares + eps) of each pixel (PE.Cfg 0x2010) over the mean;
      5. PE centred x factor (broadcast along C), written to DRAM from b."""
    _, c, h, w = x.shape
    if w > MAX_WIDTH:
        raise UnsupportedError(f"{desc}: rows of {w} values (only up to {MAX_WIDTH} observed) are "
                               "not supported on h13 yet", where=where(op))
    pixel_row = min(c, PE_ROW_ELEMENTS // w)  # 32 of 128 values at 16x16 (4 rows), C below
    if c % pixel_row:
        raise UnsupportedError(f"{desc}: C = {c} is not a multiple of the {pixel_row} values a "
                               "pixel row holds", where=where(op))
    at = PixelLayout(c, h, w)
    _fits(op, desc, at.end)
    return [_to_pixels(op, x, at, first=True), _pixel_statistics(op, x, at, pixel_row, at.a),
            _centre(op, x, at), _to_pixels(op, x, at, first=False),
            _pixel_statistics(op, x, at, pixel_row, at.b, eps), _product(op, x, y, at)]


def _ne_shifts(h: int, w: int, *, first: bool) -> int:
    """Common.Cfg ShPref = ShMin = ShMax of the two NE copies: min(4, log2(128 / W)), and for the
    copy from DRAM also at most log2 H + 1 (task 0: 3, 4, 3 and task 3: 4, 4, 3 at 32x4x4,
    64x8x8, 128x16x16)."""
    shift = min(4, (128 // w).bit_length() - 1)
    return min(shift, h.bit_length()) if first else shift


def _to_pixels(op, x, at: PixelLayout, *, first: bool) -> TaskSpec:
    _, c, h, w = x.shape
    spec = TaskSpec(op.name, "ne")
    S.dims(spec, c, h, w, c, h, w)
    S.conv_cfg(spec)
    S.group_cfg(spec, unicast=True)
    spec.set("common.TileCfg", TileHeight=h)
    shift = _ne_shifts(h, w, first=first)
    # 8 NEs at W = 4 and 8, 16 at W = 16 (both copies; 32x4x4, 64x8x8 / 128x16x16)
    spec.set("common.Cfg", ActiveNE=4 if at.wide else 3, ShPref=shift, ShMin=shift,
             ShMax=shift, Bit28=1)
    spec.set("ne.MACCfg", **NE_BYPASS)
    if first:
        spec.first_fetch_is_bypass = True
        S.dram_source(spec, x)
        _source(spec, at.x_base, at.ch, at.x, c * at.ch, c * at.ch)
        spec.set("l2.SourceCfg", **KEEP_SOURCE)
        _result(spec, at.a, l2.RESULT_KEEP, at.pixel, at.t, w * at.pixel)
    else:
        spec.set("ne.KernelCfg", Bit12=1)
        spec.header["DebugLogEvents"] = 0  # a middle NE copy logs nothing (3/3 oracles)
        _source(spec, at.a, at.ch, at.v, c * at.ch)
        # 0x108 (Dependent 2) after rows of X bytes, 0x00400100 after NE-stride rows (W = 16)
        spec.set("l2.SourceCfg", **(L2_READ if at.wide else dict(Dependent=2, DMAInterleave=1)))
        _result(spec, at.b, MIDDLE_RESULT, at.pixel, at.t, w * at.pixel)
    return spec


def _pixel_statistics(op, x, at: PixelLayout, pixel_row: int, source: int, eps=None):
    """The W pixels of a row as W channels of one pixel's C values (rows of `pixel_row`), the H
    rows as groups; one value per pixel, written along W into the stats rows."""
    _, c, h, w = x.shape
    lines = c // pixel_row
    spec = pe_task(op.name, c=w, h=lines, w=pixel_row, tile=lines, task_type="reduce", groups=h)
    spec.set("common.Unk30", Value=FLAT_RESULT)
    fields = {} if eps is None else dict(OpMode=SQUARE, NLMode=RSQRT)
    _statistics_pe(spec, fields, c, eps)
    spec.set("ne.KernelCfg", Bit12=1, Bit14=int(eps is not None))
    row = round_up(2 * pixel_row, UNIT) if lines > 1 else w * at.pixel
    _source(spec, source, at.pixel, row, w * at.pixel, at.t)
    spec.set("l2.SourceCfg", AliasConvRslt=1, DMAInterleave=1)  # 0x00000120
    l2.result(spec, base=0, cfg=MIDDLE_RESULT)
    l2.result_strides(spec, at.ch, h * at.ch, at.ch, at.ch)
    return spec


def _centre(op, x, at: PixelLayout) -> TaskSpec:
    _, c, h, w = x.shape
    spec = pe_task(op.name, c=c, h=h, w=w, tile=h, task_type="binary")
    spec.set("common.Unk2C", Log2TileHeight=4)  # 4 at H = 4, 8, 16, as the row softmax's shift
    spec.set("common.Unk30", Value=BCAST_C2)
    pe_arith(spec, dict(OpMode=0, SecSrc=3))
    spec.set("ne.KernelCfg", Bit12=1, Bit14=1)
    _source(spec, at.x_base, at.ch, at.x, c * at.ch)
    spec.set("l2.SourceCfg", **L2_READ)
    l2.source2_region(spec, 0, at.ch, at.ch, at.ch)
    _result(spec, at.a, MIDDLE_RESULT, at.ch, at.v, c * at.ch)
    return spec


def _product(op, x, y, at: PixelLayout) -> TaskSpec:
    _, c, h, w = x.shape
    spec = pe_task(op.name, c=c, h=h, w=w, tile=h, task_type="binary")
    spec.set("common.Unk30", Value=BCAST_C2)
    pe_arith(spec, dict(OpMode=1, SecSrc=2))
    spec.set("ne.KernelCfg", Bit14=1)
    _source(spec, at.a, at.ch, at.v, c * at.ch)
    spec.set("l2.SourceCfg", **L2_READ)
    l2.source2_region(spec, 0, at.ch, at.ch, at.ch)
    l2.result(spec, base=at.b, cfg=LAST_RESULT)
    S.dram_dest(spec, y)
    return spec


# -- over W with H > 1, rows of two 16-byte lines --------------------------------------------------
def rows(ctx, op, x, y, eps: float) -> list:
    """layer_norm over the last axis with H > 1: `norm_rows` up to W = 8; with rows of 9 to 16
    values (two lines, W = 16 observed: upstream `norm_layer_norm_ax3_1x128x16x16`) the same five
    tasks with the copy and the centred values trading places, as far as 16 x 16 shows:
      copy of x at 0 (P-byte rows), x staged for it at H P (NE rows, `staging_row`);
      the means at 2 H P; the centred values at H P (over the staged x); the factors at 0
      (over the copy); the output at 2 H P (over the means).
    At W <= 8 (`norm_rows`): centred values at 0, copy at H P, output after the factors."""
    _, c, h, w = x.shape
    if w <= ONE_LINE_WIDTH:
        return norm_rows.layer_norm_rows(ctx, op, x, y, eps)
    desc = f"layer_norm {'x'.join(map(str, x.shape))} over W"
    if w > MAX_WIDTH:
        raise UnsupportedError(f"{desc}: rows of {w} values (only 2 to {MAX_WIDTH} observed with "
                               "H > 1) are not supported on h13 yet", where=where(op))
    at = RowLayout(c, h, w)
    copy, centred, stats = 0, h * at.p, 2 * h * at.p
    _fits(op, desc, stats + h * max(at.m, at.p))
    out = norm_rows._scale(op, c, h, w, at, centred, copy, y)
    l2.result(out, base=stats, cfg=LAST_RESULT)
    return [norm_rows._copy(ctx, op, x, at, copy, centred), norm_rows._mean(op, x, at, copy, stats),
            norm_rows._centre(op, c, h, w, at, copy, stats, centred),
            norm_rows._factor(op, x, at, centred, copy, eps), out]
