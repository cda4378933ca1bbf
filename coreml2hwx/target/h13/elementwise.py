"""Element-wise binary ops on the planar engine (PE).

Two runtime operands of one shape compile to a single PE task that fetches both by DMA
(`binary_{add,sub,mul,maximum,minimum}_*`, `env_bcast_*_runtime_<same shape>`): PE.Cfg selects the
operation (census §6.3: add 0x80000, mul 0x80004, max 0x80008, min 0x8000C, sub 0xC0000, + bit 5
for a fused relu), BiasScale holds Scale 1, PreScale 1, FinalScale 1.0.  A batch N > 1 becomes
N groups (`env_bcast_add_{2,8}x…`: GroupConvCfg.NumGroups = N).
"""

from __future__ import annotations

import math

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.target.h13 import l2, spec as S
from coreml2hwx.target.h13.layout import l2_channel_stride
from coreml2hwx.target.h13.spec import TaskSpec

PE_OPS = {  # PE.Cfg fields per MIL op (census §6.3 notes)
    "add": dict(OpMode=0, SecSrc=2),
    "mul": dict(OpMode=1, SecSrc=2),
    "maximum": dict(OpMode=2, SecSrc=2),
    "minimum": dict(OpMode=3, SecSrc=2),
    "sub": dict(OpMode=0, SecSrc=3),
}
PE_BINARY = "binary"  # Common.Cfg Bits6_4 by PE task type (ane-facts §2.7.1 table)
PE_TASK_TYPE = {"unary": 2, "binary": 3, "scale_bias": 4, "reduce": 5, "variance": 6}


def log2_width_code(width: int) -> int:
    """Common 0x2C bits 3:0 on PE tasks: clamp(ceil(log2 W), 4, 9) (census, 41/41)."""
    return min(max(math.ceil(math.log2(width)) if width > 1 else 0, 4), 9)


def log2_tile_code(tile_height: int) -> int:
    """Common 0x2C bits 7:4: log2(TileHeight) for a power of two, 0 otherwise (35/41 + 2)."""
    return tile_height.bit_length() - 1 if tile_height & (tile_height - 1) == 0 else 0


def pe_task(name: str, *, c: int, h: int, w: int, tile: int, task_type: str,
            depth: int = 1, groups: int = 1) -> TaskSpec:
    """A PE task over [c, h, w] in and out (`groups` of them): the 1x1 stride-1 ConvCfg and the
    common words of `pe_common`."""
    spec = TaskSpec(name, "pe")
    S.dims(spec, c, h, w, c, h, w, depth=depth)
    S.conv_cfg(spec)
    S.group_cfg(spec, groups=groups)
    pe_common(spec, task_type=task_type, width=w, tile_height=tile)
    return spec


def pe_common(spec: TaskSpec, *, task_type: str, width: int, tile_height: int):
    spec.set("common.TileCfg", TileHeight=tile_height)
    spec.set("common.Unk2C", Log2Width=log2_width_code(width),
             Log2TileHeight=log2_tile_code(tile_height))
    spec.set("common.Cfg", Bits6_4=PE_TASK_TYPE[task_type])


def pe_arith(spec: TaskSpec, op_fields: dict, *, scale=1.0, bias=0.0, prescale=1.0, final=1.0):
    spec.set("pe.Cfg", **op_fields)
    spec.set("pe.BiasScale", Scale=scale, Bias=bias)
    spec.set("pe.PreScale", PreScale=prescale)
    spec.set("pe.FinalScale", FinalScale=final)


def binary_same_shape(ctx, op, relu=False, inputs=None, output=None,
                      shared_source=False) -> TaskSpec:
    """x (op) z with both operands DRAM inputs of the output's shape: one PE task.
    `shared_source`: both operands are one tensor; its second copy is staged right after the
    first, not moved off the bank start (upstream env_chain_residual_relu_1x768x1x1: Src2Base
    0x302 units where `binary`/`env_bcast_add_1x768x1x1_runtime_1x768x1x1` use 0x304)."""
    x, z = (ctx.surface(name) for name in (inputs or op.inputs))
    y = ctx.surface(output or op.outputs[0])
    n, c, h, w = y.shape
    row = pe_row(c, w)
    # eiln add 1600x2560 (TileHeight 32): src2 at 32 rows + 0x40, the result 32 rows after it
    tile = _tile(op, h, lambda t: l2.UNIT * l2.second_source_base(t * row // l2.UNIT)
                 + 2 * t * row)
    spec = pe_task(op.name, c=c, h=h, w=w, tile=tile, task_type=PE_BINARY, groups=n)
    pe_arith(spec, dict(PE_OPS[op.type], ReluEn=int(relu)))
    S.dram_source(spec, x)
    S.dram_source2(spec, z)
    S.dram_dest(spec, y)
    l2.source(spec, base=0, channels=c, width=w, row=row, channel_stride=pe_channel(w))
    src2 = tile * row if shared_source else l2.UNIT * l2.second_source_base(tile * row // l2.UNIT)
    row2 = l2.source2(spec, base=src2, channels=c, width=w, row=row, channel_stride=pe_channel(w))
    spec.set("l2.SourceCfg", **l2.SOURCE_STREAM)
    l2.result(spec, base=src2 + tile * row2)
    return spec


PE_CHANNEL_CAP = 0x400  # a PE task stages rows wider than 512 elements 512 at a time


def pe_channel(width: int) -> int:
    """L2 channel stride of a PE task's source: the row's bytes, at most 0x400 (512 elements;
    `env_bcast_add_1x375x1024_blob_1x1x1024` task 1 stages its 1024-wide rows at 0x400)."""
    return min(l2_channel_stride(width), PE_CHANNEL_CAP)


def pe_row(channels: int, width: int) -> int:
    """Bytes per L2 row of a tensor a PE task stages (see `l2.pe_row_stride`); rows of a source
    staged in 512-element pieces are not padded (the 1x375x1024 case above: 0x400)."""
    if l2_channel_stride(width) > PE_CHANNEL_CAP:
        return channels * PE_CHANNEL_CAP
    return l2.UNIT * l2.pe_row_stride(channels * l2_channel_stride(width) // l2.UNIT)


def unary_pe(ctx, op, *, op_fields: dict, scale=1.0, bias=0.0, task_type="unary",
             inputs=None) -> TaskSpec:
    """One PE task on a single DRAM source: abs (PE.Cfg bit 6), x*c (Scale), x+c (Bias)."""
    x, y = ctx.surface((inputs or op.inputs)[0]), ctx.surface(op.outputs[0])
    n, c, h, w = y.shape
    tile = _tile(op, h, lambda t: 2 * t * pe_row(c, w))
    spec = pe_task(op.name, c=c, h=h, w=w, tile=tile, task_type=task_type, groups=n)
    pe_arith(spec, op_fields, scale=scale, bias=bias)
    S.dram_source(spec, x)
    S.dram_dest(spec, y)
    row = l2.source(spec, base=0, channels=c, width=w, row=pe_row(c, w),
                    channel_stride=pe_channel(w))
    spec.set("l2.SourceCfg", **l2.SOURCE_STREAM)
    l2.result(spec, base=tile * row)
    return spec


def _tile(op, height: int, footprint) -> int:
    tile = l2.tile_height(height, footprint)
    if tile is None:
        raise UnsupportedError(f"{op.type}: one row does not fit the 2 MiB L2", where=op.source)
    return tile
