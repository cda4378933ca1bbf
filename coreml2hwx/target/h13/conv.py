"""Convolution on the NE: one task per conv (census §3.1: every oracle conv is a single task).

Registers (census §1.1 rules, 18 conv tasks): ConvCfg Kw/Kh = kernel, Sx/Sy = stride, Px/Py = the
top/left pad, Ox = Oy = 1, OCGSize = log2(lanes); grouped convs put Cin/G, Cout/G in Cin/Cout and G
in NumGroups, depthwise keeps Cin = Cout = C with NumGroups 1 and UnicastEn; MACCfg = conv
(OpMode 0) with BiasMode = bias and NonlinearMode 1 for a fused relu; the kernel DMA fetches 16
equal chunks (`weights`).  TileDMASrc's group stride is one group's input planes, its depth stride
all of them (the same on the destination side).

Stride 2 is refused for now: Apple stores those kernels in a zero-skipping sparse form
(KernelCfg.SparseFmt) whose layout for 3x3 kernels we have not reproduced.
"""

from __future__ import annotations

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.target.h13 import l2, spec as S, weights
from coreml2hwx.target.h13.context import where
from coreml2hwx.target.h13.layout import l2_channel_stride
from coreml2hwx.target.h13.spec import TaskSpec

CONV = dict(OpMode=0, KernelMode=0)


def conv_cfg_sh(spec: TaskSpec, *, hout: int, kernel: int, dense: bool):
    """Common.Cfg of a conv task (ActiveNE 4).  Fitted on the 18 oracle convs (census §6.1 notes):
    Hout <= 8 -> SmallSourceMode with ShPref = ShMin = ShMax = 4; Hout 16 -> ShMax 3, plus
    ShPref = ShMin = 3 for a dense (groups 1) 3x3 kernel; grouped and depthwise 3x3 kernels keep
    ShMax 3 alone (`env_conv_k3_c64_n64_s16_st1_g64_bias0`, upstream `..._g4_bias1`)."""
    if hout <= 8:
        spec.set("common.Cfg", SmallSourceMode=1, ShPref=4, ShMin=4, ShMax=4)
    elif kernel > 1 and dense:
        spec.set("common.Cfg", ShPref=3, ShMin=3, ShMax=3)
    else:
        spec.set("common.Cfg", ShMax=3)
    spec.set("common.Cfg", ActiveNE=4)


def lower_conv(ctx, op, relu=False, output=None) -> TaskSpec:
    a = op.attrs
    x, y = ctx.surface(op.inputs[0]), ctx.surface(output or op.outputs[0])
    weight = ctx.attr_array(op, "weight")
    bias = ctx.attr_array(op, "bias") if a.get("bias") is not None else None
    n, cin, hin, win = x.shape
    _, cout, hout, wout = y.shape
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
    if strides[0] != 1:
        raise UnsupportedError(f"{desc}: stride {strides[0]} uses Apple's sparse kernel format, "
                               "not supported on h13 yet", where=where(op))
    if kh > 3:
        raise UnsupportedError(f"{desc}: kernel > 3 not supported on h13 yet", where=where(op))
    depthwise = groups == cin == cout and groups > 1
    cin_g, cout_g = (cin, cout) if depthwise else (cin // groups, cout // groups)
    if cout_g % weights.CHUNKS and not depthwise:
        raise UnsupportedError(f"{desc}: output channels per group must be a multiple of 16 on h13",
                               where=where(op))
    if depthwise and cout % weights.CHUNKS:
        raise UnsupportedError(f"{desc}: depthwise channels must be a multiple of 16 on h13",
                               where=where(op))
    kernel = kh
    lanes = 1 if depthwise else weights.ocg_lanes(cout_g, max(hin, win))
    data, size = weights.pack_dense(weight, bias, lanes=lanes,
                                    groups=1 if depthwise else groups)
    base = ctx.add_constants(data)

    spec = TaskSpec(op.name, "ne")
    S.dims(spec, cin_g, hin, win, cout_g, hout, wout)
    S.conv_cfg(spec, kernel=kernel, pad=pads[0], ocg=lanes.bit_length() - 1)
    spec.set("common.ConvCfg", Px=pads[2], Py=pads[0])
    S.group_cfg(spec, groups=1 if depthwise else groups, unicast=depthwise)
    spec.set("common.TileCfg", TileHeight=hout)
    conv_cfg_sh(spec, hout=hout, kernel=kernel, dense=groups == 1)
    plane_in, plane_out = x.plane, y.plane
    S.dram_source(spec, x, group=(cin if depthwise else cin_g) * plane_in)
    S.dram_dest(spec, y, group=(cout if depthwise else cout_g) * plane_out)
    ch = l2_channel_stride(win)
    if groups > 1 and not depthwise:
        row = l2.UNIT * l2.conv_row_stride(cin_g * ch // l2.UNIT)
    else:
        row = l2.UNIT * l2.ne_row_stride(cin_g * ch // l2.UNIT, ch // l2.UNIT)
    l2.source(spec, base=0, channels=cin_g, width=win, row=row)
    spec.set("l2.SourceCfg", **l2.SOURCE_STREAM)
    l2.result(spec, base=hin * row)
    spec.set("ne.MACCfg", **CONV, BiasMode=int(bias is not None), NonlinearMode=int(relu))
    S.kernel_fetch(spec, [(base + i * size, size) for i in range(weights.CHUNKS)])
    return spec
