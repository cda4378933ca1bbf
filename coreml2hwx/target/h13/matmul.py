"""matmul on the NE, in the three forms the oracles cover.

1. x runtime [M, K] (rank 2, or rank 3 with a leading 1), constant w [N, K] with transpose_y,
   M <= 8 or M = 64: two tasks (`matmul_m{1,8}_*_ty1`, `env_mm_r{2,3}rb_m1_*_tx0_ty1`, upstream
   `matmul_m64_k{256,1024}_*`; M = 16 takes three tasks upstream and is refused).  Task 0
   copies x into L2 transposed (K channels of M values; NE bypass, result kept in L2, the DRAM
   "scratch" slot 3 named but not written); task 1 is a 1x1 convolution over those K channels
   with N outputs whose weights are packed like a convolution's with 16 lanes (ane-facts §2.10
   matvec permutation).
2. x runtime [K, 1] with transpose_x, constant w [N, K] with transpose_y: the convolution alone
   (`env_mm_r2rb_m1_k2048_n2048_tx1_ty1`).
3. both runtime, x [16, K] times w [K, N] (no transposes): one task reading w as a K-channel image
   of width N and x as the 16 coefficient rows (KBase0 = x's slot, KernelCfg bit 16:
   `rrmm_r2rr_m16_k64_n64_tx0_ty0`, `env_mm_r2rr_m16_k2048_n2048_tx0_ty0`).

Both tasks of form 1 and the form-2 task set Common.Cfg bit 28.  The views: a source or
destination seen as K (or N) channels of M values has its DRAM row stride = the whole tensor, its
plane stride = one row of the tensor.

Refused like Apple refuses them: a constant w without transpose_y ("Metadata data type does not
match requested type"), M = 128 with K = 8192 and a constant w (callback_status=1).
"""

from __future__ import annotations

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.target.h13 import l2, spec as S, weights
from coreml2hwx.target.h13.activation import NE_BYPASS
from coreml2hwx.target.h13.context import where
from coreml2hwx.target.h13.conv import CONV, conv_cfg_sh
from coreml2hwx.target.h13.layout import Surface, l2_channel_stride, round_up
from coreml2hwx.target.h13.operand import STAGING_CHANNEL_CAP
from coreml2hwx.target.h13.spec import SRC_IDLE, TaskSpec

SCRATCH_SLOT = 3
MATVEC_LANES = 16
MAX_ROWS = 8
SMALL_SOURCE_BYTES = 0x4000


def lower_matmul(ctx, op) -> list:
    a, b = op.inputs
    tx, ty = bool(op.attrs.get("transpose_x")), bool(op.attrs.get("transpose_y"))
    xs, ws = ctx.shape(a), ctx.shape(b)
    desc = f"matmul {_dims(ctx.graph.tensors[a].shape)} x {_dims(ctx.graph.tensors[b].shape)}"
    if ctx.is_constant(a):
        raise UnsupportedError(f"{desc}: a constant first operand is not supported on h13 yet",
                               where=where(op))
    if xs[:2] != (1, 1) or ws[:2] != (1, 1):
        raise UnsupportedError(f"{desc}: batched matmul is not supported on h13 yet",
                               where=where(op))
    if ctx.is_constant(b):
        if not ty:
            raise UnsupportedError(f"{desc}: a constant y without transpose_y; Apple's h13 "
                                   "compiler refuses it", where=where(op))
        n, k = ws[2:]
        m = xs[3] if tx else xs[2]
        if m == 128 and k >= 8192:
            raise UnsupportedError(f"{desc}: M = 128 with K = {k} and a constant weight; Apple's "
                                   "h13 compiler refuses it", where=where(op))
        if tx:
            if m != 1:
                raise UnsupportedError(f"{desc}: transpose_x with M > 1 is not supported on h13 "
                                       "yet", where=where(op))
            return [matvec(ctx, op, ctx.surface(a), k, n, m, from_dram=True)]
        if m > MAX_ROWS and m != 64:
            raise UnsupportedError(f"{desc}: M = {m} rows with a constant weight (only M <= "
                                   f"{MAX_ROWS} or 64) is not supported on h13 yet",
                                   where=where(op))
        return [transpose_rows(ctx, op, ctx.surface(a), m, k),
                matvec(ctx, op, None, k, n, m, from_dram=False)]
    if tx or ty or xs[2] != 16:
        raise UnsupportedError(f"{desc}: of runtime x runtime products only 16 x K times K x N "
                               "without transposes is supported on h13 yet", where=where(op))
    return [runtime_product(ctx, op, ctx.surface(a), ctx.surface(b))]


def _channels_view(surface: Surface) -> dict:
    """DMA strides when the tensor's rows become channels: row = the tensor, plane = one row."""
    return dict(row=surface.batch, plane=surface.row, depth=surface.batch, group=surface.batch)


def transposed_channel_stride(m: int) -> int:
    """L2 bytes per channel of the transposed x (K channels of M values): 16 bytes for M <= 8,
    and 0x90 rather than 0x80 for M = 64 (`matmul_m64_*`, upstream): a stride of 16-byte units
    that is a multiple of 8 gets one more unit.  Only these two cases are observed (see
    `lower_matmul`)."""
    units = l2_channel_stride(m) // 16
    return 16 * (units + 1 if units % 8 == 0 else units)


def _scratch_units(m: int) -> int:
    """The transposed x in DRAM scratch: K planes of M values, each padded to 64 bytes."""
    return round_up(2 * m, 64) // 64


def transpose_rows(ctx, op, x: Surface, m: int, k: int) -> TaskSpec:
    spec = TaskSpec(op.name, "ne")
    S.dims(spec, m, 1, k, m, 1, k)
    S.conv_cfg(spec)
    S.group_cfg(spec, unicast=True)
    spec.set("common.TileCfg", TileHeight=1)
    spec.set("common.Cfg", ActiveNE=4, Bit28=1)
    if m <= MAX_ROWS:  # ShPref = ShMax = 3 at M = 1, 2, 8; clear at M = 64 (upstream matmul_m64)
        spec.set("common.Cfg", ShPref=3, ShMax=3)
    spec.set("ne.MACCfg", **NE_BYPASS)
    S.dram_source(spec, x, **_channels_view(x))
    result_ch = transposed_channel_stride(m)
    l2.result(spec, base=0, cfg=l2.RESULT_KEEP)
    spec.set("l2.ConvResultChannelStride", Stride=result_ch // 16)
    spec.set("l2.ConvResultRowStride", Stride=k * result_ch // 16)
    spec.set("l2.ResultDepthStride", Value=k * result_ch)
    staged = min(l2_channel_stride(k), STAGING_CHANNEL_CAP)
    l2.source(spec, base=k * result_ch, channels=m, width=k, channel_stride=staged, row=m * staged)
    spec.set("l2.SourceCfg", **l2.SOURCE_STREAM)
    # The transposed copy names the DRAM scratch (slot 3) as its destination, K planes of 64 bytes,
    # but leaves the tile DMA off: the next task reads it from L2 (census §5, header[6] 0x1000D800).
    unit = _scratch_units(m)
    spec.set("tile_dma_dst.RowStride", RowStride=unit)
    spec.set("tile_dma_dst.PlaneStride", PlaneStride=unit)
    spec.set("tile_dma_dst.DepthStride", DepthStride=k * unit)
    spec.set("tile_dma_dst.GroupStride", GroupStride=k * unit)
    spec.header.update(WBase=SCRATCH_SLOT, WBE=1, TSE=1, TSR=1, DPC=1)
    spec.set("tile_dma_dst.Fmt", **S.DST_FMT)
    spec.first_fetch_is_bypass = True
    return spec


def matvec(ctx, op, x: Surface | None, k: int, n: int, m: int, *, from_dram: bool) -> TaskSpec:
    y = ctx.surface(op.outputs[0])
    w = ctx.constant(op.inputs[1]).reshape(n, k, 1, 1)
    if n % (16 * MATVEC_LANES) and n != 16 * min(MATVEC_LANES, n // 16):
        raise UnsupportedError(f"matmul N = {n}: the weight must split into 16 chunks on h13",
                               where=where(op))
    lanes = min(MATVEC_LANES, n // 16)
    data, size = weights.pack_dense(w, None, lanes=lanes)
    base = ctx.add_constants(data)
    spec = TaskSpec(op.name, "ne")
    S.dims(spec, k, 1, m, n, 1, m)
    S.conv_cfg(spec, ocg=lanes.bit_length() - 1)
    S.group_cfg(spec)
    spec.set("common.TileCfg", TileHeight=1)
    spec.set("common.Cfg", ActiveNE=4, Bit28=1)
    ch = transposed_channel_stride(m) if not from_dram else l2_channel_stride(m)
    # SmallSourceMode (as a conv with Hout <= 8) while the K x M source takes <= 16 KiB of L2:
    # set at K = 256, 512 (matmul_m{1,8}_*), K = 1024 (upstream matmul_m{1,2}_k1024_*), clear at
    # K = 2048 (env_mm_r{2,3}rb_m1_k2048_*, 32 KiB) and M = 64, K = 256 (upstream, 36 KiB).
    if k * ch <= SMALL_SOURCE_BYTES:
        conv_cfg_sh(spec, hout=1, wout=1, kernel=1, dense=True)
    spec.set("ne.MACCfg", **CONV)
    if from_dram:
        S.dram_source(spec, x, **_channels_view(x))
        l2.source(spec, base=0, channels=k, width=m, row=k * ch)
        spec.set("l2.SourceCfg", **l2.SOURCE_STREAM)
        l2.result(spec, base=k * ch)
    else:
        # Reads the transposed x the previous task left in L2; the tile DMA stays off but waits
        # for it (DependencyMode 1), addressed as the scratch slot 3 (census §6.5: 0x48880).
        spec.set("tile_dma_src.DMAConfig", **SRC_IDLE, DependencyMode=1)
        unit = _scratch_units(m)
        spec.set("tile_dma_src.RowStride", Stride=unit)
        spec.set("tile_dma_src.PlaneStride", PlaneStride=unit)
        spec.set("tile_dma_src.DepthStride", Stride=k * unit)
        spec.set("tile_dma_src.GroupStride", Stride=k * unit)
        spec.set("tile_dma_src.Fmt", FmtMode=1, Truncate=3, MemFmt=2, Interleave=1)
        spec.header.update(RBase0=SCRATCH_SLOT, RBE0=1, SPL=1, SPC=1)
        l2.source(spec, base=0, channels=k, width=m, row=k * ch, channel_stride=ch)
        spec.set("l2.Src1GroupStride", Value=0)
        spec.set("l2.SourceCfg", AliasConvRslt=1, DMAFmt=1, DMAInterleave=1)
        l2.result(spec, base=k * ch, cfg=dict(ResultType=2, L2BfrMode=1, DMAFmt=1,
                                              DMAInterleave=1))
    S.dram_dest(spec, y, **_channels_view(y))
    S.kernel_fetch(spec, [(base + i * size, size) for i in range(weights.CHUNKS)])
    return spec


def runtime_product(ctx, op, x: Surface, w: Surface) -> TaskSpec:
    """x [16, K] @ w [K, N]: w is the image (K channels of N), x's rows the 16 kernels."""
    y = ctx.surface(op.outputs[0])
    m, k, n = x.h, x.w, w.w
    spec = TaskSpec(op.name, "ne")
    S.dims(spec, k, 1, n, m, 1, n)
    S.conv_cfg(spec)
    S.group_cfg(spec)
    spec.set("common.TileCfg", TileHeight=1)
    spec.set("common.Cfg", ActiveNE=4)
    spec.set("ne.MACCfg", **CONV)
    spec.set("ne.KernelCfg", Bit16=1)  # coefficients from an input surface (census §6.4)
    S.dram_source(spec, w, **_channels_view(w))
    ch = min(l2_channel_stride(n), STAGING_CHANNEL_CAP)
    l2.source(spec, base=0, channels=k, width=n, row=k * ch, channel_stride=ch)
    spec.set("l2.SourceCfg", **l2.SOURCE_STREAM)
    l2.result(spec, base=k * ch)
    S.dram_dest(spec, y, **_channels_view(y))
    S.kernel_fetch(spec, [(i * x.row, x.row) for i in range(m)], slot=x.slot)
    return spec


def _dims(shape) -> str:
    return "x".join(map(str, shape))
