"""Convolution on the NE: one task per conv (census §3.1: every oracle conv is a single task),
or one per round of output channels where the weight layout needs it (below).

Registers (census §1.1 rules, 18 conv tasks): ConvCfg Kw/Kh = kernel, Sx/Sy = stride, Px/Py = the
top/left pad, Ox = Oy = 1, OCGSize = log2(lanes); grouped convs put Cin/G, Cout/G in Cin/Cout and G
in NumGroups, depthwise keeps Cin = Cout = C with NumGroups 1 and UnicastEn; MACCfg = conv
(OpMode 0) with BiasMode = bias and NonlinearMode 1 for a fused relu; the kernel DMA fetches 16
equal chunks (`weights`).  TileDMASrc's group stride is one group's input planes, its depth stride
all of them (the same on the destination side).

Output channels (`conv_tasks`).  Each coefficient channel stores its planes one after another,
unpadded between planes even when a plane is not a 64-byte multiple (upstream
`conv_probe_k1_c64_n512_s16_st1_g1_bias1_same`: 2 planes of 2080 bytes in a 0x1040 chunk), so a
conv whose outputs are a multiple of 16 is one task.  Otherwise it is split into one task per round
of planes (16 x lanes outputs, or the < 16 left over, one per chunk as in tinygrad's conv.hwx:
3 outputs, one 64-byte row each on chunks 0-2); each task writes its channels at their offset in
the output surface through TileDMADst.BaseAddr (tinygrad concat.hwx: TD1 writes at BaseAddr
0x100000 = 16384 planes).

Stride 2: Apple stores the kernel in its zero-skipping form (`sparse`; KernelCfg.SparseFmt and
KernelDMASrc.MasterConfig.KernelSparseFmt set, ConvCfg Sx = Sy = 2, chunks back to back with their
own sizes; all six stride-2 oracles).  `sparse.refusal` names the stride-2 convs without evidence.
"""

from __future__ import annotations

import numpy as np

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.target.h13 import l2, sparse, spec as S, weights
from coreml2hwx.target.h13.activation import sh_max
from coreml2hwx.target.h13.context import where
from coreml2hwx.target.h13.layout import l2_channel_stride
from coreml2hwx.target.h13.spec import TaskSpec

CONV = dict(OpMode=0, KernelMode=0)


def conv_cfg_sh(spec: TaskSpec, *, hout: int, wout: int, kernel: int, dense: bool,
                stride: int = 1):
    """Common.Cfg of a conv task (ActiveNE 4).  Fitted on the 18 oracle convs (census §6.1 notes)
    and the upstream spatial sweep: Hout <= 8 -> SmallSourceMode with ShPref = ShMin = ShMax = 4;
    else ShMax = `activation.sh_max` (log2(128 / W): 3 at 16, upstream conv_probe_*_s32 2, _s64
    1), plus ShPref = ShMin = ShMax for a dense (groups 1) kernel of more than one row when
    2^ShMax rows cover it (3x3: 3 at 16, 2 at 32; upstream `conv_probe_k3_c64_n64_s64_st1_g1_
    bias0_same`: ShMax 1 alone); grouped and depthwise 3x3 kernels keep ShMax alone
    (`env_conv_k3_c64_n64_s16_st1_g64_bias0`, upstream `..._g4_bias1`), and so do stride-2
    kernels (upstream `conv_probe_k3_c64_n64_s32_st2_g1_bias0_valid`: Hout 15, ShMax 3 alone)."""
    if hout <= 8:
        spec.set("common.Cfg", SmallSourceMode=1, ShPref=4, ShMin=4, ShMax=4)
    else:
        shift = sh_max(hout, wout)
        spec.set("common.Cfg", ShMax=shift)
        if kernel > 1 and dense and stride == 1 and (1 << shift) >= kernel:
            spec.set("common.Cfg", ShPref=shift, ShMin=shift)
    spec.set("common.Cfg", ActiveNE=4)


def conv_tasks(ctx, op, relu=False, output=None) -> list[TaskSpec]:
    """The tasks of one conv: one, or one per round of output channels (module docstring)."""
    rounds = channel_rounds(ctx, op)
    if rounds is None:
        return [lower_conv(ctx, op, relu, output)]
    return [lower_conv(ctx, op, relu, output, channels=r) for r in rounds]


def channel_rounds(ctx, op):
    """None when the conv's weight planes fit the evidence as one task, else the (first output,
    outputs, lanes) of each task.  Only dense (groups 1) convs are split."""
    weight = ctx.attr_array(op, "weight")
    if op.attrs.get("groups", 1) != 1:
        return None
    cout = weight.shape[0]
    side = max(ctx.shape(op.outputs[0])[2:])  # the output's side (`weights.ocg_lanes`)
    lanes = weights.ocg_lanes(cout, side) if cout >= weights.CHUNKS else 1
    rounds, first = [], 0
    while first < cout:
        left = cout - first
        g = min(lanes, weights.pow2floor(left // weights.CHUNKS))
        count = weights.CHUNKS * g if g else left
        rounds.append((first, count, max(g, 1)))
        first += count
    if tuple(op.attrs["strides"]) != (1, 1):
        # sparse: rounds of one width share a task, their planes back to back in each chunk
        # (upstream conv_probe_k1_c64_n1024_s16_st2_g1_bias0_same: 2 planes of 32 lanes); rounds
        # of different widths (48 outputs: 2 lanes, then 1) take a task each (sparse.refusal)
        return rounds if len({g for _, _, g in rounds}) > 1 else None
    if cout % weights.CHUNKS == 0:
        # planes back to back in each chunk, 64-byte multiples or not (upstream
        # conv_probe_k1_c64_n512_s16_st1_g1_bias1_same: two planes of 65 x 16 halfwords, 0x1040)
        return None
    return rounds


def lower_conv(ctx, op, relu=False, output=None, channels=None) -> TaskSpec:
    a = op.attrs
    x, y = ctx.surface(op.inputs[0]), ctx.surface(output or op.outputs[0])
    weight = ctx.attr_array(op, "weight")
    bias = ctx.attr_array(op, "bias") if a.get("bias") is not None else None
    n, cin, hin, win = x.shape
    _, cout, hout, wout = y.shape
    first = 0
    if channels is not None:  # one round of a split conv: outputs [first, first + cout)
        first, cout, _ = channels
        weight = weight[first:first + cout]
        bias = None if bias is None else np.asarray(bias).reshape(-1)[first:first + cout]
    groups = a.get("groups", 1)
    kh, kw = weight.shape[2:]
    strides, dil, pads = tuple(a["strides"]), tuple(a.get("dilations", (1, 1))), tuple(a["pads"])
    desc = f"conv {kh}x{kw} stride {strides[0]} groups {groups} {cin}->{cout}"
    if n != 1 or kh != kw or strides[0] != strides[1] or dil != (1, 1):
        raise UnsupportedError(f"{desc}: only square kernels, equal strides, no dilation and batch 1 "
                               "are supported on h13 yet", where=where(op))
    if "bias" in ctx.inline_attrs(op):
        raise UnsupportedError(f"{desc}: an inline bias tensor; Apple's h13 compiler refuses it "
                               "(use a BLOBFILE constant)", where=where(op))
    if kh > 3:
        raise UnsupportedError(f"{desc}: kernel > 3 not supported on h13 yet", where=where(op))
    depthwise = groups == cin == cout and groups > 1
    cin_g, cout_g = (cin, cout) if depthwise else (cin // groups, cout // groups)
    if cout_g % weights.CHUNKS and not depthwise and channels is None:
        raise UnsupportedError(f"{desc}: output channels per group must be a multiple of 16 on h13",
                               where=where(op))
    if depthwise and cout % weights.CHUNKS:
        raise UnsupportedError(f"{desc}: depthwise channels must be a multiple of 16 on h13",
                               where=where(op))
    stride = strides[0]
    kernel = kh
    if channels is not None:
        lanes = channels[2]
    else:
        lanes = 1 if depthwise else weights.ocg_lanes(cout_g, max(hout, wout))
    if stride != 1:
        reason = sparse.refusal(stride, kernel=kh, depthwise=depthwise, outputs=cout_g,
                                lanes=lanes)
        if reason:
            raise UnsupportedError(f"{desc}: {reason}", where=where(op))
    chunks = None
    if stride != 1:
        try:
            data, chunks = sparse.pack_sparse(weight, bias, lanes=lanes, groups=groups,
                                                  hout=hout)
        except ValueError as err:
            raise UnsupportedError(f"{desc}: {err}", where=where(op)) from None
        size = max(s for _, s in chunks)
    elif cout < weights.CHUNKS and not depthwise:
        data, size = weights.pack_per_channel(weight, bias)
    else:
        data, size = weights.pack_dense(weight, bias, lanes=lanes,
                                        groups=1 if depthwise else groups)
    if size > l2.KERNEL_CHUNK_BYTES:
        raise UnsupportedError(f"{desc}: {size} bytes of weights per coefficient channel, more "
                               f"than the {l2.KERNEL_CHUNK_BYTES} Apple's programs show",
                               where=where(op))
    base = ctx.add_constants(data)

    spec = TaskSpec(op.name, "ne")
    S.dims(spec, cin_g, hin, win, cout_g, hout, wout)
    S.conv_cfg(spec, kernel=kernel, stride=stride, pad=pads[0], ocg=lanes.bit_length() - 1)
    spec.set("common.ConvCfg", Px=pads[2], Py=pads[0])
    S.group_cfg(spec, groups=1 if depthwise else groups, unicast=depthwise)
    conv_cfg_sh(spec, hout=hout, wout=wout, kernel=kernel, dense=groups == 1, stride=stride)
    plane_in, plane_out = x.plane, y.plane
    S.dram_source(spec, x, group=(cin if depthwise else cin_g) * plane_in)
    S.dram_dest(spec, y, group=(cout if depthwise else cout_g) * plane_out)
    if first:
        spec.set("tile_dma_dst.BaseAddr", Addr=(y.offset + first * plane_out) // 64)
    ch = l2_channel_stride(win)
    if (groups > 1 and not depthwise) or stride != 1:  # census: +32 at stride 2
        # the row clears one channel's units in the period at stride 1, a quarter of them at
        # stride 2 (upstream conv_probe_*_st1_g4: 64 -> 67, 128 -> 131; _k1_c64_n64_s64_st2:
        # 512 -> 515 with 8-unit channels, where narrower channels keep 128 -> 130, 1024 -> 1026)
        floor = ch // l2.UNIT // stride ** 2
        row = l2.UNIT * l2.conv_row_stride(cin_g * ch // l2.UNIT, floor)
    else:
        row = l2.UNIT * l2.ne_row_stride(cin_g * ch // l2.UNIT, ch // l2.UNIT)
    result_row = cout * l2_channel_stride(wout) + 64  # (tinygrad gemm: 512 ch -> 0x2020)

    def source_rows(t):  # census: rows = min(Hin, TileHeight x S + max(K - S, 0)), 72/74
        if t >= hout:  # one tile stages the whole input, rows a valid stride-2 window skips too
            return hin  # (upstream conv_probe_k3_c64_n64_s{8,32}_st2_g1_*_valid: 8 and 32 rows)
        return min(hin, t * strides[0] + max(kh - strides[0], 0))

    tile = l2.tile_height(hout, lambda t: source_rows(t) * row + t * result_row)
    if tile is None:
        raise UnsupportedError(f"{desc}: one row of {win} pixels does not fit the 2 MiB L2",
                               where=where(op))
    spec.set("common.TileCfg", TileHeight=tile)
    l2.source(spec, base=0, channels=cin_g, width=win, row=row)
    spec.set("l2.SourceCfg", **l2.SOURCE_STREAM)
    l2.result(spec, base=source_rows(tile) * row)
    spec.set("ne.MACCfg", **CONV, BiasMode=int(bias is not None), NonlinearMode=int(relu))
    used = min(cout, weights.CHUNKS) if not depthwise else weights.CHUNKS
    if chunks is not None:
        S.kernel_fetch(spec, [(base + o, s) for o, s in chunks], sparse=True)
        spec.set("ne.KernelCfg", SparseFmt=1)
    else:
        S.kernel_fetch(spec, [(base + i * size, size) for i in range(used)])
    return spec
