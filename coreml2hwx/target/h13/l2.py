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

_ALIAS = dict(AliasConvSrc=1, AliasConvRslt=1, AliasPlanarSrc=1, AliasPlanarRslt=1)
SOURCE_STREAM = dict(SourceType=2, DMAFmt=1, DMAInterleave=1, **_ALIAS)  # 0x00500172
RESULT_STREAM = dict(ResultType=2, L2BfrMode=1, DMAFmt=1, DMAInterleave=1, **_ALIAS)  # 0x0050017A
RESULT_KEEP = dict(ResultType=0, DMAFmt=1, DMAInterleave=1, **_ALIAS)  # 0x00500170


def source(spec, *, base, channels, width, row_pad=0, channel_stride=None):
    """Source 1 staged at `base`: returns the bytes one row takes (its row stride)."""
    ch = channel_stride or l2_channel_stride(width)
    row = channels * ch + row_pad
    spec.set("l2.SourceBase", Addr=base // 16)
    spec.set("l2.SourceChannelStride", Stride=ch // 16)
    spec.set("l2.SourceRowStride", Stride=row // 16)
    spec.set("l2.Src1DepthStride", Value=channels * ch)  # 98/98
    spec.set("l2.Src1GroupStride", Value=channels * ch)
    return row


def source2(spec, *, base, channels, width, row_pad=0, channel_stride=None):
    ch = channel_stride or l2_channel_stride(width)
    row = channels * ch + row_pad
    spec.set("l2.Src2Base", Value=base)
    spec.set("l2.Src2ChannelStride", Value=ch)
    spec.set("l2.Src2RowStride", Value=row)
    spec.set("l2.Src2DepthStride", Value=channels * ch)
    spec.set("l2.Src2GroupStride", Value=channels * ch)
    return row


def result(spec, *, base, cfg=RESULT_STREAM):
    spec.set("l2.ResultCfg", **cfg)
    spec.set("l2.ResultBase", Addr=base // 16)
