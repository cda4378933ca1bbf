"""softmax over a last axis of size 1: [1, C, 1, 1] with axis -1 / 3 (every value becomes 1, but
Apple's compiler still emits the full 5-task sequence).

Evidence: upstream `norm_softmax_an1_1x{64,128,256}x1x1`, `softmax_1x512x1x1`.  The tasks are the
ones of the [1, C, 1, W] softmax (`norm.softmax`: max, (x - max) log2 e, exp2 LUT, 1 / sum,
product), run on C channels of one value.  Between the shift and the exp the values travel as one
[1, 1, 1, C] vector which the tasks route "through" BAR slot 3: the shift declares a write there
(header WBase 3 / WBE, TileDMA destination strides set, DMA disabled) and the exp a read
(RBase0 3 / RBE0, TileDMA source DependencyMode 1, DMA disabled); no byte moves through DRAM.

Two layouts, by C:
* C <= 128 ("vector"): the max, the exp values and 1 / sum are [1, 1, 1, C] vectors at
  0, V and V (V = 2C bytes), x kept at 2V (`..._1x64x1x1`, `..._1x128x1x1`);
* C >= 256 ("channels"): the max, the exp values and 1 / sum stay C channels of one value
  (16-byte lines, R = 16 C bytes per row) at 0, 0 and R + 0x40; only the shifted values are a
  vector, at R; x kept at R + V (`..._1x256x1x1`, `softmax_1x512x1x1`).
"""

from __future__ import annotations

from coreml2hwx.target import lut
from coreml2hwx.target.h13 import cost, l2, spec as S
from coreml2hwx.target.h13.activation import lut_fetch
from coreml2hwx.target.h13.elementwise import pe_arith, pe_task
from coreml2hwx.target.h13.layout import round_up
from coreml2hwx.target.h13.spec import DRAM_FMT, DST_FMT, DST_IDLE, SRC_IDLE, TaskSpec

LOG2_E = 1.4426950408889634
SCRATCH_SLOT = 3  # the BAR slot the vector is declared to pass through (header WBase / RBase0)
VECTOR_MAX_CHANNELS = 128  # C <= 128 vector layout, C >= 256 channel layout
SUM_GAP = 0x40  # the channel-layout 1 / sum sits 0x40 bytes past the shifted vector's start
EXP_ENGINES = 4  # Common.Cfg.ActiveNE of the channel-layout exp (C = 256 and 512)
KEEP_SOURCE = dict(SourceType=1, DMAFmt=1, DMAInterleave=1, AliasConvSrc=1, AliasConvRslt=1,
                   AliasPlanarSrc=1, AliasPlanarRslt=1)  # 0x00500171
L2_READ = dict(DMAInterleave=1, AliasPlanarRslt=1)  # 0x00400100
MIDDLE_RESULT = dict(DMAFmt=1, DMAInterleave=1)  # 0x00000140
LAST_RESULT = dict(ResultType=2, L2BfrMode=1, DMAFmt=1, DMAInterleave=1)  # 0x0000014A
# Common 0x30 flags (see norm.py): broadcast along W of source 1 / 2, source 1 / 2 a vector,
# the result written as a vector.
BROADCAST_W1, BROADCAST_W2, VECTOR1, VECTOR2, FLAT_RESULT = 0x1, 0x10, 0x100, 0x200, 0x400


class _Layout:
    """Byte regions of one unit-axis softmax in L2: (base, channel, row, depth) per operand."""

    def __init__(self, c: int):
        self.vec = round_up(2 * c, 16)
        self.row = 16 * c  # C channels of one value, one 16-byte line each
        self.vector_form = c <= VECTOR_MAX_CHANNELS
        v, r = self.vec, self.row
        self.x = (2 * v if self.vector_form else r + v, 16, r, r)
        self.as_vector = lambda base: (base, v, v, v)
        self.as_channels = lambda base: (base, 16, r, r)
        if self.vector_form:
            self.peak, self.shifted = self.as_vector(0), self.as_vector(v)
            self.values, self.total = self.as_vector(0), self.as_vector(v)
        else:
            self.peak, self.shifted = self.as_channels(0), self.as_vector(r)
            self.values, self.total = self.as_channels(0), self.as_channels(r + SUM_GAP)
        # the result is written past the last region in use
        self.out = 2 * v if self.vector_form else 2 * r + SUM_GAP


def _set(spec, role: str, region, group=None):
    base, ch, row, depth = region
    if role == "src":
        l2.source_region(spec, base, ch, row, depth, depth if group is None else group)
    elif role == "src2":
        l2.source2_region(spec, base, ch, row, depth)
    else:
        spec.set("l2.ResultBase", Addr=base // l2.UNIT)
        l2.result_strides(spec, ch, row, depth)


def _flags(spec, value: int):
    if value:
        spec.set("common.Unk30", Value=value)


def softmax_unit_axis(ctx, op, x, y) -> list:
    c = x.c
    at = _Layout(c)
    vector_form = at.vector_form

    peak = pe_task(op.name, c=c, h=1, w=1, tile=1, task_type="reduce")
    _flags(peak, FLAT_RESULT if vector_form else 0)
    pe_arith(peak, dict(PoolMode=2))
    peak.set("l2.L2Cfg", PaddingMode=1)
    peak.set("ne.KernelCfg", Bit12=1)
    S.dram_source(peak, x)
    peak.kept_source = True
    _set(peak, "src", at.x)
    peak.set("l2.SourceCfg", **KEEP_SOURCE)
    l2.result(peak, base=at.peak[0], cfg=l2.RESULT_KEEP)
    _set(peak, "res", at.peak)

    shift = pe_task(op.name, c=c, h=1, w=1, tile=1, task_type="binary")
    _flags(shift, FLAT_RESULT | BROADCAST_W2 | (VECTOR2 if vector_form else 0))
    pe_arith(shift, dict(OpMode=0, SecSrc=3), scale=LOG2_E)
    shift.set("ne.KernelCfg", Bit14=1)
    _set(shift, "src", at.x, group=0)
    shift.set("l2.SourceCfg", **L2_READ)
    _set(shift, "src2", at.peak)
    l2.result(shift, base=at.shifted[0], cfg=MIDDLE_RESULT)
    _set(shift, "res", at.shifted)
    _declare_scratch_write(shift, at.vec)

    exp = TaskSpec(op.name, "ne")
    S.dims(exp, 1, 1, c, 1, 1, c)
    S.conv_cfg(exp)
    S.group_cfg(exp, unicast=True)
    exp.set("common.TileCfg", TileHeight=1)
    if not vector_form:  # written back as C channels: the transposing write (Cfg bit 28)
        exp.set("common.Cfg", ActiveNE=EXP_ENGINES, Bit28=1)
    exp.set("ne.MACCfg", OpMode=4, KernelMode=1, NonlinearMode=2)
    _set(exp, "src", at.shifted, group=0)
    exp.set("l2.SourceCfg", DMAFmt=1, DMAInterleave=1, AliasPlanarRslt=1)
    l2.result(exp, base=at.values[0], cfg=MIDDLE_RESULT)
    _set(exp, "res", at.values)
    lut_fetch(ctx, exp, lut.exp2(), 1)
    _declare_scratch_read(exp, at.vec)

    total = pe_task(op.name, c=c, h=1, w=1, tile=1, task_type="reduce")
    _flags(total, (FLAT_RESULT | VECTOR1) if vector_form else 0)
    pe_arith(total, dict(NLMode=1))
    total.set("ne.KernelCfg", Bit12=1)
    _set(total, "src", at.values, group=0)
    total.set("l2.SourceCfg", AliasConvRslt=1, DMAInterleave=1)
    l2.result(total, base=at.total[0], cfg=MIDDLE_RESULT)
    _set(total, "res", at.total)
    # A PE reduction over L2 is priced like a DMA stream of its C one-value channels
    # (ExeCycles 1 at C = 512, 0 at C <= 256).
    total.header["ExeCycles"] = int(cost.stream_cost(x) // cost.UNIT)

    out = pe_task(op.name, c=c, h=1, w=1, tile=1, task_type="binary")
    _flags(out, BROADCAST_W1 | (VECTOR1 | VECTOR2 if vector_form else 0))
    pe_arith(out, dict(OpMode=1, SecSrc=2))
    out.set("ne.KernelCfg", Bit14=1)
    _set(out, "src", at.total, group=0)
    out.set("l2.SourceCfg", Dependent=2, DMAInterleave=1)
    _set(out, "src2", at.values)
    l2.result(out, base=at.out, cfg=LAST_RESULT)
    S.dram_dest(out, y)
    # Writing C one-value channels from L2 costs its 64-byte lines only (as layer_norm's vector
    # form: ExeCycles 0 at C = 512; 1 and 7 at C = 1024 and 4096 there).
    out.header["ExeCycles"] = int(cost.LINE * c // cost.UNIT)
    return [peak, shift, exp, total, out]


def _declare_scratch_write(spec, vec: int):
    spec.set("tile_dma_dst.DMAConfig", **DST_IDLE)
    for name in ("RowStride", "PlaneStride", "DepthStride", "GroupStride"):
        spec.set(f"tile_dma_dst.{name}", **{name: vec // 64})
    spec.set("tile_dma_dst.Fmt", **DST_FMT)
    spec.header.update(WBase=SCRATCH_SLOT, WBE=1, TSE=1, TSR=1, DPC=1)


def _declare_scratch_read(spec, vec: int):
    spec.set("tile_dma_src.DMAConfig", **SRC_IDLE, DependencyMode=1)
    spec.set("tile_dma_src.RowStride", Stride=vec // 64)
    spec.set("tile_dma_src.PlaneStride", PlaneStride=vec // 64)
    spec.set("tile_dma_src.DepthStride", Stride=vec // 64)
    spec.set("tile_dma_src.GroupStride", Stride=vec // 64)
    spec.set("tile_dma_src.Fmt", **DRAM_FMT)
    spec.header.update(RBase0=SCRATCH_SLOT, RBE0=1, SPL=1, SPC=1)
