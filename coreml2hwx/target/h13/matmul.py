"""matmul / linear on the NE, in the forms the oracles cover.

1. x runtime [M, K] (rank 2, or rank 3 with a leading 1), constant w [N, K] with transpose_y
   (or a `linear` with weight [N, K]): two tasks (`matmul_m{1,8}_*_ty1`,
   `env_mm_r{2,3}rb_m1_*_tx0_ty1`, upstream `matmul_m64_k{256,1024}_*`,
   `rrmm_r2rb_m32_k256_n{64,256}_tx0_ty1`).  Task 0 copies x into L2 transposed (K channels of
   M values; NE bypass, result kept in L2, the DRAM "scratch" slot 3 named but not written);
   task 1 is a 1x1 convolution over those K channels with N outputs whose weights are packed
   like a convolution's with 16 lanes (ane-facts §2.10 matvec permutation).  Rows: M <= 64 while
   K < 2048; at K = 2048 Apple blocks x into groups of 8 rows and adds a third task (upstream
   `env_mm_r2rb_m16_k2048_n2048_tx0_ty1`, `rrmm_r2rb_m64_k2048_n2048_tx0_ty1`), refused here.
2. x runtime [K, 1] with transpose_x, constant w [N, K] with transpose_y: the convolution alone
   (`env_mm_r2rb_m1_k2048_n2048_tx1_ty1`).
3. both runtime, x [16, K] times w [K, N] (no transposes): one task reading w as a K-channel image
   of width N and x as the 16 coefficient rows (KBase0 = x's slot, KernelCfg bit 16:
   `rrmm_r2rr_m16_k64_n64_tx0_ty0`, `env_mm_r2rr_m16_k2048_n2048_tx0_ty0`).
4. both runtime, x [16 L, K] with L = 2, 4 lanes: a PE copy first writes x to the scratch slot
   in kernel layout (L rows interleaved per halfword), then form 3's task reads its coefficients
   there (upstream `rrmm_r2rr_m{32,64}_k64_n64_tx0_ty0`); with transpose_y a third task between
   them stages w^T in L2 like form 1's task 0 (upstream `rrmm_r2rr_m32_k64_n64_tx0_ty1`,
   `env_mm_r3rr_m64_k64_n64_tx0_ty1_b1`).  At M = 16 with transpose_y there is no copy: form 1
   with w in x's place and x's rows as the kernels (upstream `rrmm_r2rr_m16_k64_n64_tx0_ty1`).

Both tasks of form 1 and the form-2 task set Common.Cfg bit 28.  The views: a source or
destination seen as K (or N) channels of M values has its DRAM row stride = the whole tensor, its
plane stride = one row of the tensor.

A `linear`'s bias goes into the convolution's weight planes with BiasMode, as a 1x1
convolution's bias does (`conv.py`; upstream `conv_probe_k1_c64_n512_s16_st1_g1_bias1_same`).
No Apple program shows a linear with a bias: this is the composition of the two observed forms.

Refused like Apple refuses them: a constant w without transpose_y ("Metadata data type does not
match requested type"), M = 128 with K = 8192 and a constant w (callback_status=1).
"""

from __future__ import annotations

import numpy as np

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.target.h13 import l2, spec as S, weights
from coreml2hwx.target.h13.activation import NE_BYPASS
from coreml2hwx.target.h13.elementwise import pe_arith, pe_task
from coreml2hwx.target.h13.context import where
from coreml2hwx.target.h13.conv import CONV, conv_cfg_sh
from coreml2hwx.target.h13.layout import Surface, l2_channel_stride, round_up
from coreml2hwx.target.h13.operand import STAGING_CHANNEL_CAP
from coreml2hwx.target.h13.spec import SRC_IDLE, TaskSpec

SCRATCH_SLOT = 3
MATVEC_LANES = 16
MAX_ROWS = 8           # ShPref/ShMax set on the transposed copy up to here
MAX_TRANSPOSED_ROWS = 64   # largest M seen in the two-task form (upstream matmul_m64_*)
BLOCKED_K = 2048       # from here on Apple splits M > 8 rows into 8-row blocks (3 tasks)
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
        return constant_weight(ctx, op, desc, ctx.constant(b), None, transpose_x=tx)
    m = xs[2]
    if tx or m not in (TRANSPOSED_W_ROWS if ty else RUNTIME_ROWS):
        raise UnsupportedError(f"{desc}: of runtime x runtime products only M x K times K x N "
                               f"with M in {sorted(RUNTIME_ROWS)}, and times N x K transposed "
                               f"with M in {sorted(TRANSPOSED_W_ROWS)}, are supported on h13 yet",
                               where=where(op))
    x, w = ctx.surface(a), ctx.surface(b)
    if m == MATVEC_LANES and ty:
        # w^T through L2 as form 1 transposes x, x's rows the kernels (upstream
        # rrmm_r2rr_m16_k64_n64_tx0_ty1: two tasks)
        n, k = w.h, w.w
        return [transpose_rows(ctx, op, w, n, k),
                runtime_product(ctx, op, x, None, transposed=(k, n))]
    if m == MATVEC_LANES:
        return [runtime_product(ctx, op, x, w)]
    lanes = m // MATVEC_LANES
    layout = kernel_layout(ctx, op, m, xs[3])
    copy = kernel_layout_copy(ctx, op, x, layout)
    if not ty:
        return [copy, runtime_product(ctx, op, layout, w, lanes=lanes)]
    # w [N, K] first goes to L2 as K channels of N values, as form 1 transposes x (upstream
    # env_mm_r3rr_m64_k64_n64_tx0_ty1_b1: copy, transpose, convolution)
    n, k = w.h, w.w
    return [copy, transpose_rows(ctx, op, w, n, k, names_scratch=False),
            runtime_product(ctx, op, layout, None, lanes=lanes, transposed=(k, n))]


def lower_linear(ctx, op) -> list:
    """linear(x [.., M, K], weight [N, K], bias [N]) = x @ weight^T + bias: form 1 or 2."""
    x = op.inputs[0]
    desc = f"linear {_dims(ctx.graph.tensors[x].shape)}"
    if ctx.shape(x)[:2] != (1, 1):
        raise UnsupportedError(f"{desc}: batched linear is not supported on h13 yet",
                               where=where(op))
    bias = ctx.attr_array(op, "bias") if op.attrs.get("bias") is not None else None
    return constant_weight(ctx, op, desc, ctx.attr_array(op, "weight"), bias, transpose_x=False)


def constant_weight(ctx, op, desc, w, bias, *, transpose_x) -> list:
    """x runtime times a constant w [N, K] (w read transposed): forms 1 and 2."""
    x = op.inputs[0]
    xs = ctx.shape(x)
    n, k = w.shape[-2:]
    m = xs[3] if transpose_x else xs[2]
    if m == 128 and k >= 8192:
        raise UnsupportedError(f"{desc}: M = 128 with K = {k} and a constant weight; Apple's "
                               "h13 compiler refuses it", where=where(op))
    if transpose_x:
        if m != 1:
            raise UnsupportedError(f"{desc}: transpose_x with M > 1 is not supported on h13 "
                                   "yet", where=where(op))
        return [matvec(ctx, op, ctx.surface(x), w, bias, m, from_dram=True)]
    reason = row_refusal(m, k)
    if reason:
        raise UnsupportedError(f"{desc}: {reason}", where=where(op))
    return [transpose_rows(ctx, op, ctx.surface(x), m, k),
            matvec(ctx, op, None, w, bias, m, from_dram=False)]


def row_refusal(m: int, k: int) -> str | None:
    """Why M rows of K are outside the two-task form's evidence, or None."""
    if m <= MAX_ROWS:
        return None
    if k >= BLOCKED_K:
        return (f"M = {m} rows with K = {k}: Apple splits x into 8-row blocks in three tasks "
                "(upstream env_mm_r2rb_m16_k2048_*, rrmm_r2rb_m64_k2048_*), not supported on "
                "h13 yet")
    if m > MAX_TRANSPOSED_ROWS:
        return (f"M = {m} rows with a constant weight (only M <= {MAX_TRANSPOSED_ROWS}) is not "
                "supported on h13 yet")
    return None


def _channels_view(surface: Surface) -> dict:
    """DMA strides when the tensor's rows become channels: row = the tensor, plane = one row."""
    return dict(row=surface.batch, plane=surface.row, depth=surface.batch, group=surface.batch)


def transposed_channel_stride(m: int) -> int:
    """L2 bytes per channel of the transposed x (K channels of M values): an odd number of
    16-byte units, one more than the packed M values when those fill an even number: 0x10 at
    M <= 8 (`matmul_m{1,8}_*`), 0x50 at M = 32 (upstream `rrmm_r2rb_m32_k256_n{64,256}_*`),
    0x90 at M = 64 (upstream `matmul_m64_*`)."""
    units = l2_channel_stride(m) // 16
    return 16 * (units | 1)


def _scratch_units(m: int) -> int:
    """The transposed x in DRAM scratch: K planes of M values, each padded to 64 bytes."""
    return round_up(2 * m, 64) // 64


def transpose_rows(ctx, op, x: Surface, m: int, k: int, names_scratch=True) -> TaskSpec:
    spec = TaskSpec(op.name, "ne")
    S.dims(spec, m, 1, k, m, 1, k)
    S.conv_cfg(spec)
    S.group_cfg(spec, unicast=True)
    spec.set("common.TileCfg", TileHeight=1)
    spec.set("common.Cfg", ActiveNE=4, Bit28=1)
    if m <= MAX_ROWS:  # ShPref = ShMax = 3 at M = 1, 2, 8; clear at M = 32, 64 (upstream)
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
    if not names_scratch:
        # the runtime w of a transposed runtime product: no destination named, other L2 alias
        # hints, DebugLogEvents 0 (upstream env_mm_r3rr_m64_k64_n64_tx0_ty1_b1 task 1)
        spec.set("l2.SourceCfg", AliasPlanarSrc=0, AliasPlanarRslt=0)
        spec.set("l2.ResultCfg", AliasPlanarSrc=0)
        spec.header.update(DebugLogEvents=0, SPL=1)
        return spec
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


def matvec(ctx, op, x: Surface | None, w, bias, m: int, *, from_dram: bool) -> TaskSpec:
    y = ctx.surface(op.outputs[0])
    n, k = w.shape[-2:]
    w = np.asarray(w).reshape(n, k, 1, 1)
    if n % (16 * MATVEC_LANES) and n != 16 * min(MATVEC_LANES, n // 16):
        raise UnsupportedError(f"matmul N = {n}: the weight must split into 16 chunks on h13",
                               where=where(op))
    lanes = min(MATVEC_LANES, n // 16)
    data, size = weights.pack_dense(w, bias, lanes=lanes)
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
    spec.set("ne.MACCfg", **CONV, BiasMode=int(bias is not None))
    if from_dram:
        S.dram_source(spec, x, **_channels_view(x))
        l2.source(spec, base=0, channels=k, width=m, row=k * ch)
        spec.set("l2.SourceCfg", **l2.SOURCE_STREAM)
        l2.result(spec, base=k * ch)
    else:
        read_transposed_copy(spec, k, m)
    S.dram_dest(spec, y, **_channels_view(y))
    S.kernel_fetch(spec, [(base + i * size, size) for i in range(weights.CHUNKS)])
    return spec


def read_transposed_copy(spec, k: int, m: int):
    """Source: the K channels of M values `transpose_rows` left in L2.  The tile DMA stays off
    but waits for it (DependencyMode 1), addressed as the scratch slot 3 (census §6.5: 0x48880)."""
    ch = transposed_channel_stride(m)
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
    l2.result(spec, base=k * ch, cfg=dict(ResultType=2, L2BfrMode=1, DMAFmt=1, DMAInterleave=1))


# Runtime x runtime with M = 16 L rows: x becomes the coefficients of 16 kernel-DMA channels of
# L lanes each.  At L = 1 they are x's own rows (`rrmm_r2rr_m16_k64_n64_tx0_ty0`); at L = 2, 4 a
# PE copy first writes x to the scratch slot with its DMA interleaving L rows per halfword, one
# channel = L x K halfwords (upstream `rrmm_r2rr_m{32,64}_k64_n64_tx0_ty0`).  The copy and the
# convolution then differ from the L = 1 task only in these counts and in L2 alias hints, whose
# observed values are quoted below (no rule for them: three cases, three patterns).
RUNTIME_ROWS = {16, 32, 64}
TRANSPOSED_W_ROWS = {16, 32, 64}
ALIAS_HINTS = {  # lanes -> (SourceCfg, ResultCfg) AliasPlanarSrc/AliasPlanarRslt of the conv
    1: (dict(AliasPlanarSrc=1, AliasPlanarRslt=1), dict(AliasPlanarSrc=1, AliasPlanarRslt=1)),
    2: (dict(AliasPlanarSrc=0, AliasPlanarRslt=1), dict(AliasPlanarSrc=0, AliasPlanarRslt=0)),
    4: (dict(AliasPlanarSrc=1, AliasPlanarRslt=0), dict(AliasPlanarSrc=0, AliasPlanarRslt=1)),
}


def kernel_layout(ctx, op, m: int, k: int) -> Surface:
    """A scratch region for x in kernel layout, placed after everything allocated so far (it
    lives only between the two tasks of this op)."""
    ctx.surface(op.outputs[0])  # the output's own range first, if it is an intermediate
    shape = (1, m // MATVEC_LANES, 1, MATVEC_LANES * k)  # 16 channels of L x K halfwords
    offset = round_up(ctx.scratch_size, 64)
    ctx.scratch_size = offset + 2 * m * k
    return Surface(f"{op.outputs[0]}/kernels", shape, SCRATCH_SLOT, offset)


def kernel_layout_copy(ctx, op, x: Surface, layout: Surface) -> TaskSpec:
    """PE copy of x [M, K] (M channels of K) to the scratch, L rows interleaved per halfword."""
    m, k = x.h, x.w
    lanes = m // MATVEC_LANES
    spec = pe_task(op.name, c=m, h=1, w=k, tile=1, task_type="unary")
    pe_arith(spec, {})
    S.dram_source(spec, x, **_channels_view(x))
    l2.source(spec, base=0, channels=m, width=k)
    spec.set("l2.SourceCfg", **l2.SOURCE_STREAM)
    l2.result(spec, base=m * l2_channel_stride(k), cfg=dict(l2.RESULT_STREAM,
                                                             DMAInterleave=lanes))
    channel = 2 * lanes * k
    S.dram_dest(spec, layout, row=channel, plane=channel, depth=2 * m * k, group=2 * m * k)
    spec.set("tile_dma_dst.Fmt", Interleave=lanes)
    return spec


def runtime_product(ctx, op, x: Surface, w: Surface | None, lanes: int = 1,
                    transposed: tuple[int, int] | None = None) -> TaskSpec:
    """x [16 L, K] @ w [K, N]: w is the image (K channels of N), x's rows the 16 L kernels.
    `transposed` = (K, N): w^T is already in L2 (the task before staged it)."""
    y = ctx.surface(op.outputs[0])
    k, n = transposed or (w.h, w.w)
    m = MATVEC_LANES * lanes
    spec = TaskSpec(op.name, "ne")
    S.dims(spec, k, 1, n, m, 1, n)
    S.conv_cfg(spec, ocg=lanes.bit_length() - 1)
    S.group_cfg(spec)
    spec.set("common.TileCfg", TileHeight=1)
    spec.set("common.Cfg", ActiveNE=4)
    spec.set("ne.MACCfg", **CONV)
    spec.set("ne.KernelCfg", Bit16=1)  # coefficients from an input surface (census §6.4)
    if transposed and lanes == 1:
        read_transposed_copy(spec, k, n)  # form 1 with w in x's place
    elif transposed:
        ch = transposed_channel_stride(n)
        l2.source(spec, base=0, channels=k, width=n, row=k * ch, channel_stride=ch)
        spec.set("l2.Src1GroupStride", Value=0)
        spec.set("l2.SourceCfg", AliasConvRslt=1, DMAInterleave=1)  # DMAFmt 0: 0x120
        l2.result(spec, base=k * ch, cfg=dict(ResultType=2, L2BfrMode=1, DMAFmt=1,
                                              DMAInterleave=1))
    else:
        S.dram_source(spec, w, **_channels_view(w))
        ch = min(l2_channel_stride(n), STAGING_CHANNEL_CAP)
        l2.source(spec, base=0, channels=k, width=n, row=k * ch, channel_stride=ch)
        source_alias, result_alias = ALIAS_HINTS[lanes]
        spec.set("l2.SourceCfg", **dict(l2.SOURCE_STREAM, **source_alias))
        l2.result(spec, base=k * ch, cfg=dict(l2.RESULT_STREAM, **result_alias))
    S.dram_dest(spec, y, **_channels_view(y))
    chunk = 2 * lanes * k if lanes > 1 else x.row
    S.kernel_fetch(spec, [(x.offset + i * chunk, chunk) for i in range(MATVEC_LANES)],
                   slot=x.slot)
    if lanes > 1:
        # kernels from the scratch the copy just wrote: TDE set, one extension word 0; SPL when
        # w also comes by DMA (upstream rrmm_r2rr_m{32,64}_k64_n64_tx0_ty0 task 1: 0x31009800,
        # env_mm_r3rr_m64_k64_n64_tx0_ty1_b1 task 2: 0x21009000; 11 header words)
        spec.header.update(TDE=1, SPL=int(not transposed))
    return spec


def _dims(shape) -> str:
    return "x".join(map(str, shape))
