"""softmax over the channels of a [1, C, H, W] tensor (MIL `softmax(x, axis = 1)`).

Evidence: upstream oracles (joshuaswarren/mil-hwx-compiler research/oracles/h13 at 9cb58d571cd7,
Apple's ane-compile-hwx for h13; transcribed outside the repository), by form:
* vector (H = W = 1): `norm_softmax_a1_1x{64,128,512,1024,2048,4096}x1x1`;
* rows (H > 1, H = W): `norm_softmax_a1_1x32x4x4`, `_1x64x8x8`, `_1x128x16x16`;
* rows (H = 1): `norm_softmax_a1_1x8x1x64`, `_1x8x1x128`, `_1x32x1x32`, `_1x64x1x128`;
* one channel (C = 1): `norm_softmax_a1_1x1x1x64` (`one_channel`).
Every value is one formula in C, H, W over the cases of its form.

Five tasks (C > 1):
  0. NE max over the C channels of every pixel (MACCfg OpMode 3, Cout 1, unicast over the C
     inputs), x read from DRAM and kept in L2;
  1. PE (x - max) x log2(e), the max broadcast along C (Common 0x30 bit 7);
  2. NE exp2 LUT (MACCfg OpMode 4, NonlinearMode 2);
  3. NE sum over the C channels (MACCfg OpMode 0 without weights, Cout 1) through the reciprocal
     LUT: 1 / sum (DPE Category 1);
  4. PE product of the values and 1 / sum, broadcast along C (Common 0x30 bit 3), to DRAM.

L2 of the row form, with S = the channel stride (`l2_channel_stride(W)`), R = the PE row stride
of one channel (`pe_row(1, W)`) and X = that of the C channels (`pe_row(C, W)`: 0x210, 0x420,
0x1020 at 32x4x4, 64x8x8, 128x16x16; unpadded C S when H = 1):
  0          the per-pixel max, later 1 / sum: [1, 1, H, W] with strides (S, R, S);
  H R        the shifted, then exp values as [C, H, W] (S, X, C S), in place;
  H (R + X)  x, kept by task 0 for task 1; the output is written from there.
The exp fetches its table on 2^ActiveNE kernel channels (`active_engines(C)`: 8 at C = 8, 16
from 16 on) and the reciprocal table follows it (constant section 1152 or 2176 bytes).

The vector form keeps the C values as C one-value channels (16-byte lines) but runs the exp on
them laid side by side along W, as the unit-axis softmax does (`softmax.softmax_unit_axis`):
task 1 writes one vector (Common 0x30 FLAT_RESULT) and declares the scratch slot, task 2 reads
it back and writes C channels (Common.Cfg ActiveNE 4 + Bit28, the transposing write) with one
table fetch.  Regions: one line (max, then 1 / sum), C lines of exp values at 0x10, the 2C-byte
vector at 16 C + 0x10 (later the output), x at 18 C + 0x10.  Constant section: exp2 at 0,
reciprocal at 0x80 (256 bytes).

Common.Cfg shifts (ShPref = ShMin = ShMax): `peak_shifts`, `sum_shifts`, `exp_shifts` below;
the shift task's Common 0x2C tile code equals `exp_shifts` in the row form.
ExeCycles: task 0 streams x once (twice when W = 1: 0, 0, 2, 4, 9, 18 over the vector cases;
3 at 128x16x16); task 4 writes the output's 64-byte lines (0, 0, 0, 1, 3, 7; 3); the spatial
exp costs a pass over the values plus its table (`softmax_rows.l2_pass`: 1 at 128x16x16); the
L2-only passes of tasks 1 and 3 cost a quarter of streaming x (1 at C = 2048, 2 at 4096) - a
fit to these cases, not a known formula.

Only the shapes these cases span are compiled (see `supported`); batches, H != W > 1 and other
sizes are refused.
"""

from __future__ import annotations

import math

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.target import lut
from coreml2hwx.target.h13 import cost, l2, spec as S
from coreml2hwx.target.h13.activation import lut_fetch
from coreml2hwx.target.h13.context import where
from coreml2hwx.target.h13.elementwise import pe_arith, pe_row, pe_task
from coreml2hwx.target.h13.layout import l2_channel_stride
from coreml2hwx.target.h13.operand import active_engines
from coreml2hwx.target.h13.softmax import _declare_scratch_read, _declare_scratch_write
from coreml2hwx.target.h13.softmax_rows import l2_pass as rows_l2_pass
from coreml2hwx.target.h13.spec import TaskSpec

LOG2_E = 1.4426950408889634
LINE = 16  # one value per channel of one pixel: one 16-byte L2 line
VECTOR_CHANNELS = range(64, 4096 + 1, 64)  # 1x1: C = 64, 128, 512 ... 4096 observed
SPATIAL_SIZES = (4, 8, 16)  # H = W: 4 (C = 32), 8 (C = 64), 16 (C = 128) observed
SPATIAL_CHANNELS = (32, 64, 128)
ROW_WIDTHS = (32, 64, 128)  # H = 1: (W, C) = (32, 32), (64, 8), (128, 8), (128, 64) observed
ROW_CHANNELS = (8, 16, 32, 64)
ONE_CHANNEL_WIDTHS = (64, 128)  # [1, 1, 1, W]: 64 observed, 128 see `one_channel`
KEEP_SOURCE = dict(SourceType=1, DMAFmt=1, DMAInterleave=1, AliasConvSrc=1, AliasConvRslt=1,
                   AliasPlanarSrc=1, AliasPlanarRslt=1)  # 0x00500171
CHANNEL_READ = dict(AliasConvSrc=1, AliasConvRslt=1, DMAInterleave=1)  # 0x00000130
REDUCE_READ = dict(AliasConvRslt=1, DMAInterleave=1)  # 0x00000120
VECTOR_READ = dict(DMAFmt=1, DMAInterleave=1, AliasPlanarRslt=1)  # 0x00400140
MIDDLE_RESULT = dict(DMAFmt=1, DMAInterleave=1)  # 0x00000140
LAST_RESULT = dict(ResultType=2, L2BfrMode=1, DMAFmt=1, DMAInterleave=1)  # 0x0000014A
# Common 0x30: source 1 / source 2 broadcast along C (bits 3 / 7: one value for every channel),
# the result written as a vector along W (bit 10, as in norm.py).
BROADCAST_C1, BROADCAST_C2, FLAT_RESULT = 0x8, 0x80, 0x400
MAX_SHIFTS = 4  # Common.Cfg shifts cap (4 at 4x4, 8x8, 16x16 for the exp)
ENGINES = 4  # Common.Cfg ActiveNE of the vector form's exp (6/6)


def supported(c: int, h: int, w: int) -> bool:
    if c == 1:
        return h == 1 and w in ONE_CHANNEL_WIDTHS
    if (h, w) == (1, 1):
        return c in VECTOR_CHANNELS
    if h == 1:
        return w in ROW_WIDTHS and c in ROW_CHANNELS
    return h == w and h in SPATIAL_SIZES and c in SPATIAL_CHANNELS


def softmax_channels(ctx, op, x, y) -> list:
    n, c, h, w = x.shape
    if n != 1 or not supported(c, h, w):
        raise UnsupportedError(
            f"softmax {'x'.join(map(str, x.shape))} axis {op.attrs['axis']}: over channels only "
            f"[1, C, 1, 1] with C a multiple of 64 up to 4096, [1, C, H, H] with H in "
            f"{SPATIAL_SIZES} and C in {SPATIAL_CHANNELS}, [1, C, 1, W] with W in "
            f"{ROW_WIDTHS} and C in {ROW_CHANNELS}, and [1, 1, 1, W] with W in "
            f"{ONE_CHANNEL_WIDTHS} are observed on h13",
            where=where(op))
    if c == 1:
        return one_channel(ctx, op, x, y)
    at = Layout(c, h, w)
    return [_peak(op, x, at), _shift(op, x, at), _exp(ctx, op, x, at), _total(ctx, op, x, at),
            _product(op, x, at, y)]


def one_channel(ctx, op, x, y) -> list:
    """One channel ([1, 1, 1, W], upstream `norm_softmax_a1_1x1x1x64`): no max task; the shift
    reads x twice from DRAM (as source 1 at S and source 2 at 2 S, S = the row's bytes) and
    writes (x - x) log2(e) at 0; the exp runs there in place; 1 / sum goes to S; the product
    is written from 2 S.  Four tasks.  W = 128 is compiled by the same formulas: upstream
    `_1x1x1x512` (not compiled) stages its rows in 256-byte pieces, with Common 0x2C width code 7
    and 1 / sum at S + 0x40 (the bank rule of `l2.second_source_base`), and every one of those
    rules gives the W = 64 values at W = 64 and W = 128."""
    _, _, h, w = x.shape
    row = l2_channel_stride(w)
    one = (0, row, row, row)

    shift = _pe(op, x, "binary")
    shift.set("common.Unk30", Value=BROADCAST_C2)
    shift.set("common.Unk2C", Log2TileHeight=exp_shifts(h, w))
    pe_arith(shift, dict(OpMode=0, SecSrc=3), scale=LOG2_E)
    S.dram_source(shift, x)
    S.dram_source2(shift, x)
    l2.source_region(shift, row, row, row, row, row)
    shift.set("l2.SourceCfg", **l2.SOURCE_STREAM)
    l2.source2_region(shift, 2 * row, row, row, row)
    shift.set("l2.Src2GroupStride", Value=row)
    _res(shift, one, cfg=l2.RESULT_KEEP)

    exp = _ne(op, x, 1, 1, w)
    S.group_cfg(exp, unicast=True)
    shifts = exp_shifts(h, w)
    exp.set("common.Cfg", ActiveNE=active_engines(1), ShPref=shifts, ShMin=shifts, ShMax=shifts)
    exp.set("ne.MACCfg", OpMode=4, KernelMode=1, NonlinearMode=2)
    _src(exp, one)
    exp.set("l2.SourceCfg", Dependent=2, DMAInterleave=1)
    _res(exp, one)
    lut_fetch(ctx, exp, lut.exp2(), 1)

    total = _ne(op, x, 1, 1, w)
    S.group_cfg(total)
    shifts = sum_shifts(h, w)
    total.set("common.Cfg", SmallSourceMode=int(small_source(w)), ShPref=shifts, ShMin=shifts,
              ShMax=shifts)
    total.set("common.DPE", Category=1)
    total.set("ne.MACCfg", OpMode=0, KernelMode=1, NonlinearMode=2)
    _src(total, one)
    total.set("l2.SourceCfg", Dependent=1, DMAInterleave=1)
    _res(total, (row, row, row, row))
    lut_fetch(ctx, total, lut.reciprocal(), 1)

    out = _pe(op, x, "binary")
    out.set("common.Unk30", Value=BROADCAST_C1)
    pe_arith(out, dict(OpMode=1, SecSrc=2))
    _src(out, (row, row, row, row))
    out.set("l2.SourceCfg", Dependent=1, **REDUCE_READ)
    _src2(out, one)
    l2.result(out, base=2 * row, cfg=LAST_RESULT)
    S.dram_dest(out, y)
    return [shift, exp, total, out]


class Layout:
    """L2 regions as (base, channel, row, depth) in bytes; see the module docstring."""

    def __init__(self, c: int, h: int, w: int):
        self.vector_form = (h, w) == (1, 1)
        s = l2_channel_stride(w)
        if self.vector_form:
            self.stats = (0, LINE, LINE, LINE)
            self.values = (LINE, LINE, c * LINE, c * LINE)
            self.vector = (LINE + c * LINE, 2 * c, 2 * c, 2 * c)
            self.x = (self.vector[0] + 2 * c, LINE, c * LINE, c * LINE)
        else:
            # one row (H = 1) is not padded (`_1x8x1x64`: 0x400 = 8 x 0x80)
            one, rows = (s, c * s) if h == 1 else (pe_row(1, w), pe_row(c, w))
            self.stats = (0, s, one, s)
            self.values = (h * one, s, rows, c * s)
            self.x = (h * (one + rows), s, rows, c * s)
        self.out = self.vector[0] if self.vector_form else self.x[0]


def _src(spec, region, group=0):
    base, ch, row, depth = region
    l2.source_region(spec, base, ch, row, depth, group)


def _src2(spec, region):
    l2.source2_region(spec, *region)


def _res(spec, region, cfg=MIDDLE_RESULT):
    base, ch, row, depth = region
    l2.result(spec, base=base, cfg=cfg)
    l2.result_strides(spec, ch, row, depth)


def _ne(op, x, cin, cout, win):
    _, _, h, _ = x.shape
    spec = TaskSpec(op.name, "ne")
    S.dims(spec, cin, h, win, cout, h, win)
    S.conv_cfg(spec)
    spec.set("common.TileCfg", TileHeight=h)
    return spec


def _pe(op, x, task_type):
    _, c, h, w = x.shape
    return pe_task(op.name, c=c, h=h, w=w, tile=h, task_type=task_type)


def _log2(value: int) -> int:
    return value.bit_length() - 1


def peak_shifts(h: int, w: int) -> int:
    """Common.Cfg ShPref = ShMin = ShMax of the channel max: min(2 log2 H - 1, log2(128 / W), 4),
    at least 0: 0 at 1x1 and 1x64, 3 at 4x4, 4 at 8x8, 3 at 16x16 (H x W; 5 forms).  Only H = 1
    or H = W is observed, so H against W in the first term is not pinned down."""
    return max(0, min(2 * _log2(h) - 1, _log2(128 // w), MAX_SHIFTS))


def sum_shifts(h: int, w: int) -> int:
    """The channel sum's shifts: 4 with SmallSourceMode (a channel row of one 16-byte line:
    W <= 8), otherwise those of the max (3 at 16x16, 0 at 1x64)."""
    return MAX_SHIFTS if small_source(w) else peak_shifts(h, w)


def exp_shifts(h: int, w: int) -> int:
    """Shifts of the exp of the row form, and the tile code (Common 0x2C bits 7:4) of its shift
    task: min(4, log2(128 H / W)) - 4 at 4x4, 8x8, 16x16; 1 at 1x64 (the same value as the
    last-axis softmax's exp and shift, norm.py: 1 at upstream `norm_softmax_an1_1x8x1x64`, 0 at
    `_an1_1x64x1x128`)."""
    return max(0, min(MAX_SHIFTS, _log2(128 * h // w)))


def small_source(w: int) -> bool:
    """Common.Cfg SmallSourceMode of the sum: set while a channel row is one 16-byte line
    (W <= 8: 8 cases), clear at W = 16 and 64 (`_1x128x16x16`, `_1x8x1x64`)."""
    return l2_channel_stride(w) == LINE


def _peak(op, x, at) -> TaskSpec:
    _, c, h, w = x.shape
    spec = _ne(op, x, c, 1, w)
    S.group_cfg(spec, unicast=True, unicast_cin=c)
    shifts = peak_shifts(h, w)
    spec.set("common.Cfg", ShPref=shifts, ShMin=shifts, ShMax=shifts)
    spec.set("ne.MACCfg", OpMode=3, KernelMode=1)
    spec.set("l2.L2Cfg", PaddingMode=1)
    S.dram_source(spec, x)
    spec.kept_source = True
    _src(spec, at.x, group=at.x[3])
    spec.set("l2.SourceCfg", **KEEP_SOURCE)
    _res(spec, at.stats, cfg=l2.RESULT_KEEP)
    return spec


def _shift(op, x, at) -> TaskSpec:
    spec = _pe(op, x, "binary")
    pe_arith(spec, dict(OpMode=0, SecSrc=3), scale=LOG2_E)
    _src(spec, at.x)
    spec.set("l2.SourceCfg", **CHANNEL_READ)
    _src2(spec, at.stats)
    if at.vector_form:
        spec.set("common.Unk30", Value=FLAT_RESULT | BROADCAST_C2)
        _res(spec, at.vector)
        _declare_scratch_write(spec, at.vector[1])
    else:
        spec.set("common.Unk30", Value=BROADCAST_C2)
        spec.set("common.Unk2C", Log2TileHeight=exp_shifts(x.h, x.w))
        _res(spec, at.values)
    spec.header["ExeCycles"] = l2_pass(x)
    return spec


def _exp(ctx, op, x, at) -> TaskSpec:
    _, c, h, w = x.shape
    spec = _ne(op, x, 1, 1, c) if at.vector_form else _ne(op, x, c, c, w)
    S.group_cfg(spec, unicast=True)
    spec.set("ne.MACCfg", OpMode=4, KernelMode=1, NonlinearMode=2)
    if at.vector_form:
        spec.set("common.Cfg", ActiveNE=ENGINES, Bit28=1)
        _src(spec, at.vector)
        spec.set("l2.SourceCfg", **VECTOR_READ)
        lut_fetch(ctx, spec, lut.exp2(), 1)
        _declare_scratch_read(spec, at.vector[1])
    else:
        shifts = exp_shifts(h, w)
        spec.set("common.Cfg", ActiveNE=active_engines(c), ShPref=shifts, ShMin=shifts,
                 ShMax=shifts)
        _src(spec, at.values)
        spec.set("l2.SourceCfg", Dependent=2, DMAInterleave=1)
        lut_fetch(ctx, spec, lut.exp2(), 1 << active_engines(c))
        # priced as the row softmax's exp: a pass over the values plus the table fetch (0, 0, 1
        # at 4x4, 8x8, 16x16)
        chunks = set(spec.kernel_chunks)
        kernel = (cost.KERNEL_LINE * sum(size for _, size in chunks) / 64
                  + cost.KERNEL_RUN * len(chunks))
        spec.header["ExeCycles"] = int((rows_l2_pass(c, h, w) + kernel) // cost.UNIT)
    _res(spec, at.values)
    return spec


def _total(ctx, op, x, at) -> TaskSpec:
    _, c, _, w = x.shape
    spec = _ne(op, x, c, 1, w)
    S.group_cfg(spec)
    shifts = sum_shifts(x.h, w)
    spec.set("common.Cfg", SmallSourceMode=int(small_source(w)), ShPref=shifts, ShMin=shifts,
             ShMax=shifts)
    spec.set("common.DPE", Category=1)
    spec.set("ne.MACCfg", OpMode=0, KernelMode=1, NonlinearMode=2)
    _src(spec, at.values)
    if at.vector_form:
        spec.set("l2.SourceCfg", **REDUCE_READ)
    else:
        spec.set("l2.SourceCfg", Dependent=1, DMAInterleave=1)
    _res(spec, at.stats)
    lut_fetch(ctx, spec, lut.reciprocal(), 1)
    spec.header["ExeCycles"] = l2_pass(x)
    return spec


def _product(op, x, at, y) -> TaskSpec:
    spec = _pe(op, x, "binary")
    spec.set("common.Unk30", Value=BROADCAST_C1)
    pe_arith(spec, dict(OpMode=1, SecSrc=2))
    _src(spec, at.stats)
    spec.set("l2.SourceCfg", **REDUCE_READ)
    _src2(spec, at.values)
    l2.result(spec, base=at.out, cfg=LAST_RESULT)
    S.dram_dest(spec, y)
    spec.header["ExeCycles"] = int(cost.LINE * _lines(x) // cost.UNIT)
    return spec


def _lines(x) -> int:
    n, c, h, w = x.shape
    return n * c * h * math.ceil(2 * w / 64)


def l2_pass(x) -> int:
    """ExeCycles of a PE or NE pass over x's C channels held in L2: a quarter of streaming x from
    DRAM (0 up to C = 1024 at 1x1, 1 at 2048, 2 at 4096; 0 at 4x4 and 8x8; a fit)."""
    return int(cost.stream_cost(x) / 4 // cost.UNIT)
