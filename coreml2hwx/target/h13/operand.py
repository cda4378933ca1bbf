"""Two-task forms: an NE task leaves an operand in L2, then a PE task combines it with x.

Apple emits this whenever the second operand of an element-wise op is not a same-shape DRAM input
(oracle README: "even a per-channel broadcast add takes 2 tasks"):

* a runtime operand of a broadcast shape is copied into L2 by an NE bypass task
  (`env_bcast_add_1x64x8x8_runtime_1x64x1x1`, `..._runtime_1x1x8x8`);
* a constant operand is fetched from the constant section (BAR 1) by an NE bypass task: a blob
  as is (`binary_minimum_c64_constant_blob`, `env_bcast_add_1x375x1024_blob_1x1x1024`), an add
  operand as rows [bias; scale = 1] and real_div by a scalar as [bias = 0; scale = 1/c]
  (`binary_add_c512_constant_blob`, `binary_real_div_c64_constant_scalar`);
* real_div y is 1/y from the reciprocal LUT, and x + f(x) keeps x in L2 while the LUT computes f(x)
  (`binary_real_div_1x64x1x1`, `env_chain_residual_{gelu,silu}_1x768x1x1`).

The producer puts its result at L2 address 0 and its own input right after it; the PE task stages
x in the same place (or reads it there when the producer kept it) and reads the operand at 0.
Common 0x30 tells the PE how the operand broadcasts (census §6.1 notes): 0x10 along W, 0x20 along
H, 0x80 along C, 0x200 a per-channel vector stored along W (x with H = W = 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coreml2hwx.target import lut
from coreml2hwx.target.h13 import l2, spec as S
from coreml2hwx.target.h13.activation import NE_BYPASS, lut_fetch, ne_row, sh_max
from coreml2hwx.target.h13.elementwise import pe_arith, pe_channel, pe_row, pe_task
from coreml2hwx.target.h13.layout import Surface, l2_channel_stride, round_up
from coreml2hwx.target.h13.spec import TaskSpec

BROADCAST_W, BROADCAST_H, BROADCAST_C, CHANNEL_VECTOR = 0x10, 0x20, 0x80, 0x200
CONSTANT_SLOT = 1  # the constant section's BAR slot (census §3.2)
STAGING_CHANNEL_CAP = 0x100  # an NE task stages wide rows 128 elements per "channel" (census §6.2)


@dataclass
class Operand:
    """An operand an earlier task left in L2 at address 0, as the PE task reads it (Src2*)."""

    channel: int
    row: int
    depth: int
    broadcast: int  # Common 0x30 code
    source_base: int  # where the producer staged its input (the consumer's source goes there)
    source_row: int = 0  # the producer's input row stride, when it kept x for the consumer
    kept_source: bool = False


def _ne_task(name, c, h, w, *, active_ne):
    spec = TaskSpec(name, "ne")
    S.dims(spec, c, h, w, c, h, w)
    S.conv_cfg(spec)
    S.group_cfg(spec, unicast=True)
    spec.set("common.TileCfg", TileHeight=h)
    spec.set("common.Cfg", ActiveNE=active_ne, ShMax=sh_max(h, w))
    spec.set("ne.MACCfg", **NE_BYPASS)
    return spec


def _keep_result(spec, *, channel, row, depth):
    l2.result(spec, base=0, cfg=l2.RESULT_KEEP)
    spec.set("l2.ConvResultChannelStride", Stride=channel // 16)
    spec.set("l2.ConvResultRowStride", Stride=row // 16)
    spec.set("l2.ResultDepthStride", Value=depth)


def active_engines(channels: int) -> int:
    """log2 of the NEs a copy task uses: 16 for 16+ channels, 1 for one channel (0 -> ActiveNE 0:
    `..._runtime_1x1x8x8` and the constant staging tasks; 4 for 64 channels); enough NEs for
    every channel: 4 for 3 channels (upstream `binary_{pow,real_div}_1x3x224x224`: ActiveNE 2)."""
    return min(4, (max(channels, 1) - 1).bit_length())


def lut_channels(channels: int) -> int:
    """Kernel channels fetching a 16-NE LUT task's table: one per channel up to 16 (3 at C = 3:
    upstream `binary_{pow,real_div}_1x3x224x224`, constant section 3 x 128 bytes per table)."""
    return min(channels, 16)


def stage_runtime(ctx, name: str, z: Surface, x_shape) -> tuple[TaskSpec, Operand]:
    """NE copy of a broadcast-shaped runtime operand into L2 (normal layout)."""
    _, c, h, w = z.shape
    spec = _ne_task(name, c, h, w, active_ne=active_engines(c))
    spec.first_fetch_is_bypass = True
    ch = l2_channel_stride(w)
    row_r = c * ch if h == 1 else pe_row(c, w)
    _keep_result(spec, channel=ch, row=row_r, depth=c * ch)
    from coreml2hwx.target.h13.activation import ne_row
    base = h * row_r
    l2.source(spec, base=base, channels=c, width=w, row=ne_row(c, h, w))
    spec.set("l2.SourceCfg", **l2.SOURCE_STREAM)
    S.dram_source(spec, z)
    code = ((BROADCAST_C if c == 1 < x_shape[1] else 0) | (BROADCAST_H if h == 1 < x_shape[2] else 0)
            | (BROADCAST_W if w == 1 < x_shape[3] else 0))
    return spec, Operand(ch, row_r, c * ch, code, base)


def stage_constant(ctx, name: str, rows: np.ndarray, broadcast: int) -> tuple[TaskSpec, Operand]:
    """NE copy of constant rows [H, W] (fp16) from the constant section into L2."""
    h, w = rows.shape
    offset = ctx.add_constants(rows.astype("<f2").tobytes())
    surface = Surface("constant", (1, 1, h, w), CONSTANT_SLOT)
    spec = _ne_task(name, 1, h, w, active_ne=0)
    spec.first_fetch_is_bypass = True
    ch = l2_channel_stride(w)
    # rows of a staged constant are padded like any PE row, wide ones too (no 0x400 cap: upstream
    # env_bcast_add_1x768x8x8_blob_1x768x1x1 stages [z; 1] at a 0x610 row stride)
    row_r = ch if h == 1 else l2.UNIT * l2.pe_row_stride(ch // l2.UNIT)
    _keep_result(spec, channel=ch, row=row_r, depth=ch)
    base = h * row_r
    staged = min(ch, STAGING_CHANNEL_CAP)
    l2.source(spec, base=base, channels=1, width=w, channel_stride=staged, row=staged)
    spec.set("l2.SourceCfg", **l2.SOURCE_STREAM)
    S.dram_source(spec, surface)
    if offset:
        spec.set("tile_dma_src.BaseAddr", Addr=offset // 64)
    return spec, Operand(ch, row_r, ch, broadcast, base)


def lut_vector(ctx, name: str, x: Surface, table: bytes, *, keep_source: bool
               ) -> tuple[TaskSpec, Operand]:
    """NE LUT of a [C, 1, 1] input whose result the next PE task reads as a per-channel vector.

    These producers run on 8 NEs (ActiveNE 3, 8 LUT channels, Common.Cfg bit 28): real_div task 0,
    x + gelu(x) and x + silu(x) task 0 (3/3)."""
    _, c, h, w = x.shape
    spec = _ne_task(name, c, h, w, active_ne=3)
    spec.set("common.Cfg", Bit28=1)
    spec.set("ne.MACCfg", NonlinearMode=2)
    vector = round_up(2 * c, 16)
    _keep_result(spec, channel=vector, row=vector, depth=vector)
    row = c * l2_channel_stride(w)
    l2.source(spec, base=vector, channels=c, width=w, row=row)
    spec.set("l2.SourceCfg", **l2.SOURCE_STREAM)
    if keep_source:
        spec.set("l2.SourceCfg", SourceType=1)
        spec.kept_source = True
    S.dram_source(spec, x)
    lut_fetch(ctx, spec, table, 8)
    return spec, Operand(vector, vector, vector, CHANNEL_VECTOR, vector, source_row=row,
                         kept_source=keep_source)


def lut_surface(ctx, name: str, x: Surface, table: bytes, *, keep_source: bool
                ) -> tuple[TaskSpec, Operand]:
    """NE LUT of a spatial [C, H, W] input whose result the next PE task reads as a same-shape
    second source: the usual 16-NE LUT task, but its result stays in L2 at 0 laid out as a PE
    source (`pe_row` rows) and its input is staged right after it, at H rows of that
    (`binary_real_div_1x64x8x8`, upstream oracle: result 0x420/0x10, source at 0x2100).
    Keeping the input for the PE task (x + f(x), upstream `env_chain_residual_gelu_1x64x8x8`)
    stages it with PE rows too and sets ShPref = ShMin = ShMax = 4."""
    _, c, h, w = x.shape
    spec = _ne_task(name, c, h, w, active_ne=active_engines(c))
    spec.set("ne.MACCfg", NonlinearMode=2)
    row, channel = pe_row(c, w), pe_channel(w)
    _keep_result(spec, channel=channel, row=row, depth=c * channel)
    source_row = row if keep_source else ne_row(c, h, w)
    l2.source(spec, base=h * row, channels=c, width=w, row=source_row)
    spec.set("l2.SourceCfg", **l2.SOURCE_STREAM)
    if keep_source:
        spec.set("l2.SourceCfg", SourceType=1)
        spec.set("common.Cfg", ShPref=4, ShMin=4, ShMax=4)
        spec.kept_source = True
    S.dram_source(spec, x)
    lut_fetch(ctx, spec, table, lut_channels(c))
    return spec, Operand(channel, row, c * channel, 0, h * row, source_row=source_row,
                         kept_source=keep_source)


def pe_with_operand(name: str, x: Surface | None, y: Surface, operand: Operand, op_fields: dict,
                    *, scale_bias=False, shape=None) -> TaskSpec:
    """The PE task: x (from DRAM, or kept in L2 by the producer) combined with the L2 operand."""
    n, c, h, w = shape or y.shape
    spec = pe_task(name, c=c, h=h, w=w, tile=h, groups=n,
                   task_type="scale_bias" if scale_bias else "binary")
    spec.set("common.Unk30", Value=operand.broadcast)
    pe_arith(spec, op_fields)
    spec.l2_operand = True
    base = operand.source_base
    if operand.kept_source:
        row = l2.source(spec, base=base, channels=c, width=w, row=operand.source_row)
        spec.set("l2.Src1GroupStride", Value=0)
        spec.set("l2.SourceCfg", AliasConvSrc=1, AliasConvRslt=1, DMAInterleave=1)
    else:
        row = l2.source(spec, base=base, channels=c, width=w, row=pe_row(c, w),
                        channel_stride=pe_channel(w))
        spec.set("l2.SourceCfg", SourceType=2, AliasConvSrc=1, AliasConvRslt=1, DMAFmt=1,
                 DMAInterleave=1)
        S.dram_source(spec, x)
    spec.set("l2.Src2Base", Value=0)
    spec.set("l2.Src2ChannelStride", Value=operand.channel)
    spec.set("l2.Src2RowStride", Value=operand.row)
    spec.set("l2.Src2DepthStride", Value=operand.depth)
    l2.result(spec, base=base + h * row, cfg=RESULT_LAST)
    S.dram_dest(spec, y)
    return spec


RESULT_LAST = dict(ResultType=2, L2BfrMode=1, DMAFmt=1, DMAInterleave=1)  # 0x0000014A


def power_tasks(ctx, name: str, x: Surface, z: Surface, y: Surface) -> list:
    """The three tasks of x ** z for same-shape operands (see `binary.power`)."""
    _, c, h, w = x.shape
    pair = 2 * l2_channel_stride(w)  # [z, log2 x] side by side per channel
    # One row of pairs is unpadded; several rows are padded past one channel (`l2.pair_row_stride`),
    # and each task's own input comes after them.
    row = c * pair if h == 1 else l2.UNIT * l2.pair_row_stride(c * pair // l2.UNIT,
                                                              l2_channel_stride(w) // l2.UNIT)
    source_row = ne_row(c, h, w)

    copy = _ne_task(name, c, h, w, active_ne=active_engines(c))
    copy.first_fetch_is_bypass = True
    _keep_result(copy, channel=pair, row=row, depth=c * pair)
    l2.source(copy, base=h * row, channels=c, width=w, row=source_row)
    copy.set("l2.SourceCfg", **l2.SOURCE_STREAM)
    S.dram_source(copy, z)

    log = _ne_task(name, c, h, w, active_ne=active_engines(c))
    log.set("ne.MACCfg", NonlinearMode=2)
    l2.source(log, base=h * row, channels=c, width=w, row=source_row)
    log.set("l2.SourceCfg", SourceType=2, DMAFmt=1, DMAInterleave=1)
    _keep_result(log, channel=pair, row=row, depth=c * pair)
    log.set("l2.ResultCfg", AliasConvSrc=0, AliasConvRslt=0, AliasPlanarSrc=0, AliasPlanarRslt=0)
    log.set("l2.ResultBase", Addr=l2_channel_stride(w) // 16)
    S.dram_source(log, x)
    lut_fetch(ctx, log, lut.log2(), lut_channels(c))

    exp = TaskSpec(name, "ne")
    S.dims(exp, 2 * c, h, w, c, h, w)
    S.conv_cfg(exp)
    S.group_cfg(exp, unicast=True, unicast_cin=2, elem_mult=True)
    exp.set("common.TileCfg", TileHeight=h)
    exp.set("common.Cfg", ActiveNE=active_engines(c), ShMax=sh_max(h, w))
    if not l2.wide_row(w):  # ShPref = ShMin = 1, ShMax >= 1 (binary_pow_1x64x1x1, upstream
        # ..._1x128x16x16); all three clear but ShMax at W = 224 (upstream ..._1x3x224x224)
        exp.set("common.Cfg", ShPref=1, ShMin=1, ShMax=max(1, sh_max(h, w)))
    exp.set("common.DPE", Category=2)
    exp.set("ne.MACCfg", OpMode=2, KernelMode=1, NonlinearMode=2)
    # the pairs the first two tasks left in L2: whole rows, not the capped NE staging
    l2.source(exp, base=0, channels=2 * c, width=w, row=row, channel_stride=l2_channel_stride(w))
    exp.set("l2.Src1GroupStride", Value=0)
    exp.set("l2.SourceCfg", AliasConvRslt=1, DMAInterleave=1)
    l2.result(exp, base=h * row, cfg=RESULT_LAST)
    S.dram_dest(exp, y)
    lut_fetch(ctx, exp, lut.exp2(), lut_channels(c))
    return [copy, log, exp]
