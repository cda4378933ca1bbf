"""softmax over the last axis of a [1, C, H, W] tensor with H > 1: six tasks, the H rows as groups.

Evidence: upstream oracles `norm_softmax_an1_1x32x4x4`, `..._1x64x8x8` and `..._1x128x16x16`
(Apple's ane-compile-hwx, h13; transcribed outside the repository).  Regions in L2, with
X = C x round_up(2W, 16) bytes (a row of x), M = C x 16 (a row of per-(h, c) values, one 16-byte
line each), P = the PE row stride of X (`pe_row`: 0x210, 0x420, 0x1020) and S = the NE row stride
(`ne_row`: 0x430 at 64x8x8, 0x1030 at 128x16x16):

  0. NE copy of x into L2 at 0 with P-byte rows (the operand staging copy, as
     `operand.stage_runtime`), x staged at H x P with S-byte rows;
  1. PE max over W with the H rows as H groups (group stride P, row stride X): H x C values at
     the "peaks" region (row H x M, group / depth M);
  2. PE (x - max) x log2(e) into the "values" region at H x P, V-byte rows (the max broadcast
     along W, Common 0x30 = 0x10), V = P for W <= 8 (0x210, 0x420) and S for W = 16 (0x1030);
  3. NE exp2 LUT in place on 16 NEs;
  4. PE 1 / sum over W (PE NLMode 1), the H rows as groups again, into 0 (over x);
  5. PE product (1 / sum broadcast along W, Common 0x30 = 1), written to DRAM from the peaks
     region, which starts after the values: H x P + H x V (0x1080, 0x4200, 0x20500).

Only 2 <= W <= 16 (one or two 16-byte lines per channel row) is observed; other widths and what
does not fit L2 in one tile are refused.
"""

from __future__ import annotations

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.target import lut
from coreml2hwx.target.h13 import cost, l2, spec as S
from coreml2hwx.target.h13.activation import lut_fetch, ne_row
from coreml2hwx.target.h13.context import where
from coreml2hwx.target.h13.elementwise import pe_arith, pe_row, pe_task
from coreml2hwx.target.h13.layout import ceil_div, l2_channel_stride
from coreml2hwx.target.h13.operand import stage_runtime
from coreml2hwx.target.h13.spec import TaskSpec

LOG2_E = 1.4426950408889634
LINE = 16  # one per-(h, c) value: one 16-byte L2 line
MAX_WIDTH = 16  # W = 4, 8, 16 observed
ONE_LINE_WIDTH = 8  # up to 8 values a channel row is one line (V = P), at 16 two lines (V = S)
L2_READ = dict(DMAInterleave=1, AliasPlanarRslt=1)  # 0x00400100
REDUCE_SOURCE = dict(AliasConvRslt=1, DMAInterleave=1)  # 0x00000120
MIDDLE_RESULT = dict(DMAFmt=1, DMAInterleave=1)  # 0x00000140
LAST_RESULT = dict(ResultType=2, L2BfrMode=1, DMAFmt=1, DMAInterleave=1)  # 0x0000014A
BROADCAST_W1, BROADCAST_W2 = 0x1, 0x10  # Common 0x30: source 1 / source 2 broadcast along W
SHIFT_TILE_CODE = 4  # the shift's Common 0x2C bits 7:4: 4 at H = 4, 8 and 16 (3/3), not log2 H
HALF_PERIOD = l2.BANK_PERIOD // 2


class RowLayout:
    def __init__(self, c: int, h: int, w: int):
        self.ch = l2_channel_stride(w)
        self.x = c * self.ch  # a row of x, unpadded
        self.m = c * LINE  # a row of per-(h, c) values
        self.p = pe_row(c, w)  # the padded row of x copied to 0
        self.s = staging_row(c, h, w)
        self.v = self.p if w <= ONE_LINE_WIDTH else ne_row(c, h, w)
        self.values = h * self.p  # x staged, then the shifted and exp values
        self.peaks = self.values + h * self.v  # the per-row max, then the output


def staging_row(c: int, h: int, w: int) -> int:
    """Row stride of x staged for the copy: `ne_row`, except that a row of exactly half the 64-unit
    bank period stays unpadded (0x200 at 1x32x4x4, where `ne_row` gives 0x210; 64 units still
    pad to 67 at 1x64x8x8, 256 to 259 at 1x128x16x16)."""
    units = c * l2_channel_stride(w) // l2.UNIT
    return units * l2.UNIT if units == HALF_PERIOD else ne_row(c, h, w)


def softmax_rows(ctx, op, x, y) -> list:
    _, c, h, w = x.shape
    if not 2 <= w <= MAX_WIDTH:
        raise UnsupportedError(f"softmax {'x'.join(map(str, x.shape))} axis {op.attrs['axis']}: "
                               f"rows of {w} values (only 2 to {MAX_WIDTH} observed with H > 1) "
                               "are not supported on h13 yet", where=where(op))
    at = RowLayout(c, h, w)
    if max(at.peaks + h * at.m, at.values + h * at.s) > l2.L2_BYTES:
        raise UnsupportedError(f"softmax {'x'.join(map(str, x.shape))}: does not fit in L2 in "
                               "one tile; tiled softmax is not supported on h13 yet",
                               where=where(op))
    return [_copy(ctx, op, x, at), _row_reduce(op, x, at, peak=True), _shift(op, c, h, w, at),
            _exp(ctx, op, c, h, w, at), _row_reduce(op, x, at, peak=False),
            _product(op, c, h, w, at, y)]


def _copy(ctx, op, x, at) -> TaskSpec:
    spec, _ = stage_runtime(ctx, op.name, x, x.shape)
    spec.set("l2.SourceRowStride", Stride=at.s // l2.UNIT)
    return spec


def row_pe(op, c, h, w, *, tile, task_type) -> TaskSpec:
    return pe_task(op.name, c=c, h=tile, w=w, tile=tile, task_type=task_type, groups=h // tile)


def result_region(spec, base, ch, row, depth, group=0, cfg=MIDDLE_RESULT):
    l2.result(spec, base=base, cfg=cfg)
    l2.result_strides(spec, ch, row, depth, group)


def _row_reduce(op, x, at, *, peak: bool) -> TaskSpec:
    """Max (task 1) or 1 / sum (task 4) over W: one row per group, H groups P bytes apart."""
    _, c, h, w = x.shape
    spec = row_pe(op, c, h, w, tile=1, task_type="reduce")
    pe_arith(spec, dict(PoolMode=2) if peak else dict(NLMode=1))
    if peak:
        spec.set("l2.L2Cfg", PaddingMode=1)
    spec.set("ne.KernelCfg", Bit12=1)
    l2.source_region(spec, 0 if peak else at.values, at.ch, at.x, at.x, group=at.p if peak else at.v)
    spec.set("l2.SourceCfg", **REDUCE_SOURCE)
    result_region(spec, at.peaks if peak else 0, LINE, h * at.m, at.m, group=at.m)
    spec.header["ExeCycles"] = int((cost.LINE * c * h + l2_pass(c, h, w)) // cost.UNIT)
    return spec


def _shift(op, c, h, w, at) -> TaskSpec:
    spec = row_pe(op, c, h, w, tile=h, task_type="binary")
    spec.set("common.Unk2C", Log2TileHeight=SHIFT_TILE_CODE)
    spec.set("common.Unk30", Value=BROADCAST_W2)
    pe_arith(spec, dict(OpMode=0, SecSrc=3), scale=LOG2_E)
    spec.set("ne.KernelCfg", Bit14=1)
    l2.source_region(spec, 0, at.ch, at.p, at.x)
    spec.set("l2.SourceCfg", **L2_READ)
    l2.source2_region(spec, at.peaks, LINE, at.m, at.m)
    result_region(spec, at.values, at.ch, at.v, at.x)
    return spec


def _exp(ctx, op, c, h, w, at) -> TaskSpec:
    spec = TaskSpec(op.name, "ne")
    S.dims(spec, c, h, w, c, h, w)
    S.conv_cfg(spec)
    S.group_cfg(spec, unicast=True)
    spec.set("common.TileCfg", TileHeight=h)
    shifts = exp_shifts(w)
    spec.set("common.Cfg", ActiveNE=4, ShPref=shifts, ShMin=shifts, ShMax=shifts)
    spec.set("ne.MACCfg", OpMode=4, KernelMode=1, NonlinearMode=2)
    l2.source_region(spec, at.values, at.ch, at.v, at.x)
    spec.set("l2.SourceCfg", Dependent=2, DMAInterleave=1)
    result_region(spec, at.values, at.ch, at.v, at.x)
    lut_fetch(ctx, spec, lut.exp2(), 16)
    chunks = set(spec.kernel_chunks)
    kernel = cost.KERNEL_LINE * sum(size for _, size in chunks) / 64 + cost.KERNEL_RUN * len(chunks)
    spec.header["ExeCycles"] = int((l2_pass(c, h, w) + kernel) // cost.UNIT)
    return spec


def l2_pass(c: int, h: int, w: int) -> float:
    """ExeCycles share of a pass over the L2-resident x: `cost.PLANE` per 16-byte line.  A fit,
    not a known formula: with it the row reductions (tasks 1, 4: plus `cost.LINE` per row) give
    0, 1, 5 and the exp (task 3: plus its table fetch) 0, 0, 1 at 32x4x4, 64x8x8, 128x16x16, as
    Apple's headers do (3/3 each); the one-line-per-row cases alone cannot tell it from the
    generic per-run price."""
    return cost.PLANE * c * h * ceil_div(2 * w, LINE)


def exp_shifts(w: int) -> int:
    """The exp task's ShPref = ShMin = ShMax: log2(128 / W) capped at 4 (4 at W = 4 and 8, 3 at
    W = 16)."""
    return min(4, (128 // w).bit_length() - 1)


def _product(op, c, h, w, at, y) -> TaskSpec:
    spec = row_pe(op, c, h, w, tile=h, task_type="binary")
    spec.set("common.Unk30", Value=BROADCAST_W1)
    pe_arith(spec, dict(OpMode=1, SecSrc=2))
    spec.set("ne.KernelCfg", Bit14=1)
    l2.source_region(spec, 0, LINE, at.m, at.m)
    spec.set("l2.SourceCfg", **L2_READ)
    l2.source2_region(spec, at.values, at.ch, at.v, at.x)
    l2.result(spec, base=at.peaks, cfg=LAST_RESULT)
    S.dram_dest(spec, y)
    return spec
