"""L2 (the on-chip tile buffer) placement: where a task stages its sources and its result.

Layout of a staged tensor (census §6.2, 88/98): row after row; within a row the channels follow
each other, each `round_up(2 W, 16)` bytes (the channel stride); the row stride is the channels'
bytes plus a small pad; the depth and group strides are the channels' bytes.

SourceCfg / ResultCfg words by role (census §6.2 notes), as named fields:
* `STREAM`: data streamed through L2 from / to DRAM (0x00500172 / 0x0050017A);
* `STREAM_KEEP`: a result that stays in L2 for the next task (0x00500170).
"""

from __future__ import annotations

from coreml2hwx.target.h13.layout import l2_channel_stride

# -- capacity limits (the one place they are written down) -----------------------------------------
# Tile L2: 2 MiB (M1 MMIO range 0x26BD00000-0x26BF00000, eiln-corr; the 17-bit x 16-byte L2
# address fields cover exactly 2 MiB; ane-facts §2.7.2 [A]).  A task stages TileHeight rows of its
# sources and result at once; TileHeight = Hout whenever the plane fits (census: 96/98 tasks), and
# Apple tiles by 16 / 32 rows when it does not (eiln add 1600x2560: TileHeight 32, src2 at
# 32 x 0x400 + 0x40, result after it; oracle layer_norm_1x512x1x1: 32 of 512 rows).
L2_BYTES = 2 << 20
# Kernel (coefficient) chunks: Apple compiled 16 chunks of 512 KiB (env_mm_r2rb_m1_k2048_n2048:
# 2048 x 2048 fp16) and refused 2 MiB chunks (env_mm_r2rb_m128_k8192_n2048, callback_status=1);
# the CoeffBfrSize field (bits 31:6) is not the limit.  Larger chunks are refused.
KERNEL_CHUNK_BYTES = 512 << 10


MAX_TILE_ROWS = 32  # eiln add 1600x2560: 32 rows per tile although 512 would fit


def tile_height(height: int, footprint) -> int | None:
    """Rows per tile: `height` when `footprint(height)` bytes fit in L2, else 32 rows (Apple's
    choice for the eiln add) or the largest power of two below it that fits; None when not even
    one row fits."""
    if footprint(height) <= L2_BYTES:
        return height
    rows = min(MAX_TILE_ROWS, 1 << (height.bit_length() - 1))
    while rows > 1 and footprint(rows) > L2_BYTES:
        rows //= 2
    return rows if footprint(rows) <= L2_BYTES else None

_ALIAS = dict(AliasConvSrc=1, AliasConvRslt=1, AliasPlanarSrc=1, AliasPlanarRslt=1)
SOURCE_STREAM = dict(SourceType=2, DMAFmt=1, DMAInterleave=1, **_ALIAS)  # 0x00500172
RESULT_STREAM = dict(ResultType=2, L2BfrMode=1, DMAFmt=1, DMAInterleave=1, **_ALIAS)  # 0x0050017A
RESULT_KEEP = dict(ResultType=0, DMAFmt=1, DMAInterleave=1, **_ALIAS)  # 0x00500170


UNIT = 16  # L2 addresses and strides count 16-byte units (ane-facts §2.6)
BANK_PERIOD = 64  # units (1 KiB): the period the placement rules below avoid


def pe_row_stride(units: int) -> int:
    """Row stride (units) of a tensor a PE task streams through L2: the smallest >= its data with
    row mod 64 not in {0, 1, 32}.  Holds for every PE task staging DRAM data (C x W units: 1 -> 2,
    64 -> 66, 96 -> 97, 84 -> 84, 200 -> 200, 128/256/512/1024/1536/3072/4096 -> +2), and for
    stride-2 and grouped 1x1 convolutions (128 -> 130, 256 -> 258, 32 -> 34)."""
    row = units
    while row % BANK_PERIOD in (0, 1, 32):
        row += 1
    return row


def conv_row_stride(units: int, channel_units: int = 0) -> int:
    """Row stride (units) of a grouped or strided convolution's source: the smallest >= the data
    with row mod 64 not in {0, 1, 32, 33} (32 -> 34: `env_conv_k1_c64_n64_s16_st1_g4_bias0`,
    `env_conv_k3_c64_n64_s16_st2_g4_bias1`; 128 -> 130, 256 -> 258 for stride 2) and, given
    `channel_units`, above that many units in the period (grouped stride 1 passes one channel's
    units, 64 -> 67: upstream `conv_probe_k3_c128_n128_s16_st1_g4_bias1_same`)."""
    row = units
    while row % BANK_PERIOD in (0, 1, 32, 33) or row % BANK_PERIOD <= channel_units:
        row += 1
    return row


NE_CHANNEL_CAP = 0x100  # an NE task's source channel holds at most 128 elements (census §6.2: every
# NE task with W >= 256; upstream binary_{pow,real_div}_1x3x224x224: 0x100 for W = 224); PE tasks keep
# the whole row (binary_add_1x3x224x224: 0x1c0)


def wide_row(width: int) -> bool:
    """A row of more than 128 elements: an NE task stages it over several capped channels."""
    return l2_channel_stride(width) > NE_CHANNEL_CAP


WIDE_CHANNEL_UNITS = 8  # 128-byte channels: an NE source row needs no pad (`ne_row_stride`)


def ne_row_stride(units: int, channel_units: int) -> int:
    """Row stride (units) of a source the NE reads row by row: the smallest odd value >= the data
    whose offset in the 64-unit period exceeds one channel's units (8x8: 64 -> 67, 16x16:
    256 -> 259, 1536 -> 1539, 32x32: 1024 -> 1029; stride-1 convolutions alike).  Channels of
    128 bytes or more (W >= 64) are not padded: upstream `conv_probe_k{1,3}_c64_n64_s64_st1_g1_
    bias0_same` (512 units -> 512), and pow's 256-byte staging of W = 224 (upstream
    `binary_pow_1x3x224x224`: 3 x 0x100 -> 0x300)."""
    if channel_units >= WIDE_CHANNEL_UNITS:
        return units
    row = units
    while row % 2 == 0 or row % BANK_PERIOD <= channel_units:
        row += 1
    return row


def pair_row_stride(units: int, channel_units: int) -> int:
    """Row stride (units) of pow's channel pairs [z, log2 x] kept in L2 over several rows: the
    smallest >= the data whose offset in the 64-unit period exceeds one channel's units, odd or
    even (64x8x8: 128 -> 130, upstream `binary_pow_1x64x8x8`; 128x16x16: 512 -> 515, upstream
    `binary_pow_1x128x16x16`)."""
    row = units
    while row % BANK_PERIOD <= channel_units:
        row += 1
    return row


def second_source_base(offset: int) -> int:
    """Src2Base (units): the first free unit at or after `offset` whose place in the 64-unit period
    is at least 4 (binary PE tasks: 2 -> 4, 66 -> 68, 97, 200, 514 -> 516, 528, 4128,
    18816 -> 18820)."""
    base = offset
    while base % BANK_PERIOD < 4:
        base += 1
    return base


def source(spec, *, base, channels, width, row=None, channel_stride=None):
    """Source 1 staged at `base` (bytes); `row` defaults to the unpadded channels' bytes.
    Returns the row stride in bytes."""
    ch = channel_stride or l2_channel_stride(width)
    if channel_stride is None and spec.is_ne:
        ch = min(ch, NE_CHANNEL_CAP)
    row = row or channels * ch
    spec.set("l2.SourceBase", Addr=base // 16)
    spec.set("l2.SourceChannelStride", Stride=ch // 16)
    spec.set("l2.SourceRowStride", Stride=row // 16)
    spec.set("l2.Src1DepthStride", Value=channels * ch)  # 98/98
    spec.set("l2.Src1GroupStride", Value=channels * ch)
    return row


def source2(spec, *, base, channels, width, row=None, channel_stride=None):
    ch = channel_stride or l2_channel_stride(width)
    row = row or channels * ch
    spec.set("l2.Src2Base", Value=base)
    spec.set("l2.Src2ChannelStride", Value=ch)
    spec.set("l2.Src2RowStride", Value=row)
    spec.set("l2.Src2DepthStride", Value=channels * ch)
    spec.set("l2.Src2GroupStride", Value=channels * ch)
    return row


def result(spec, *, base, cfg=RESULT_STREAM):
    spec.set("l2.ResultCfg", **cfg)
    spec.set("l2.ResultBase", Addr=base // 16)


# -- one staged region's registers (base and strides in bytes) ------------------------------------
def source_region(spec, base, ch, row, depth, group=0):
    """Source 1 staged at `base`: channel, row, depth and group strides."""
    spec.set("l2.SourceBase", Addr=base // UNIT)
    spec.set("l2.SourceChannelStride", Stride=ch // UNIT)
    spec.set("l2.SourceRowStride", Stride=row // UNIT)
    spec.set("l2.Src1DepthStride", Value=depth)
    spec.set("l2.Src1GroupStride", Value=group)


def source2_region(spec, base, ch, row, depth):
    """Source 2 read from L2 (not fetched by DMA) at `base`."""
    spec.set("l2.Src2Base", Value=base)
    spec.set("l2.Src2ChannelStride", Value=ch)
    spec.set("l2.Src2RowStride", Value=row)
    spec.set("l2.Src2DepthStride", Value=depth)
    spec.l2_operand = True


def result_strides(spec, ch, row, depth, group=0):
    """The result's channel, row, depth and group strides (its base is set with the result)."""
    spec.set("l2.ConvResultChannelStride", Stride=ch // UNIT)
    spec.set("l2.ConvResultRowStride", Stride=row // UNIT)
    spec.set("l2.ResultDepthStride", Value=depth)
    spec.set("l2.ResultGroupStride", Value=group)
