"""Unary activations on the neural engine (NE): one "bypass" task per op.

The NE passes the input through (MACCfg OpMode 4 "bypass", KernelMode 1 = no weights) and applies
its post-processing: NonlinearMode 1 is ReLU, 2 a 33-point lookup table fetched by the kernel DMA
from the constant section (census §6.4; `unary_*`, `env_act_*`).  Every enabled coefficient channel
fetches the same 128-byte table, so the constant section is the table zero-padded to
128 B x channels (census §3.3: 2048 B for 16 channels).

rsqrt(x + eps) is the one table op that runs through the accumulator: OpMode 0 with
AccBias = fp16(eps) (`unary_rsqrt_c64`: AccBias 0x11 = fp16(1e-6)) and DPE.Category 1.
"""

from __future__ import annotations

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.target import lut
from coreml2hwx.target.h13 import l2, spec as S
from coreml2hwx.target.h13.context import where
from coreml2hwx.target.h13.layout import l2_channel_stride
from coreml2hwx.target.h13.spec import TaskSpec

NE_BYPASS = dict(OpMode=4, KernelMode=1)
RELU = 1
LUT = 2


def table_of(op) -> bytes:
    """The lookup table an activation op needs."""
    t, a = op.type, op.attrs
    if t == "gelu":
        return lut.table({"exact": "gelu", "tanh": "gelu_tanh", "sigmoid": "gelu_sigmoid"}[
            a.get("mode", "exact")])
    if t == "leaky_relu":
        return lut.leaky_relu(a["alpha"])
    if t in ("sigmoid", "tanh", "silu", "sqrt", "rsqrt"):
        return lut.table(t)
    if t == "exp":
        return lut.exp2()
    if t == "clip":  # relu6 / hardtanh: one two-line table (eiln relu6, hardtanh; lut-rules.md)
        return lut.clip(float(a["min"]), float(a["max"]))
    raise UnsupportedError(f"{t}: no lookup-table rule on h13 yet", where=where(op))


# Ops Apple's h13 compiler refuses (oracles with callback_status=1): refusing them too is parity.
REFUSED = {
    "clip": "Apple's h13 compiler refuses clip (oracle unary_clip_c64)",
    "log": "Apple's h13 compiler refuses log (upstream oracle unary_log_c64)",
}
ACTIVATIONS = {"relu", "sigmoid", "tanh", "silu", "gelu", "sqrt", "rsqrt", "leaky_relu", "exp",
               *REFUSED}
LOG2_E = 1.4426950408889634


def ne_common(spec: TaskSpec, *, active_ne: int, tile_height: int, width: int):
    spec.set("common.TileCfg", TileHeight=tile_height)
    spec.set("common.Cfg", ActiveNE=active_ne, ShMax=sh_max(tile_height, width))


def sh_max(height: int, width: int) -> int:
    """Common.Cfg ShMax of an NE task without weights: min(log2 H, log2(128 / W)) - 0 at 1x1,
    3 at 8x8 and 16x16, 2 at 32x32 (`unary_*`, `env_act_*`: 5 shapes)."""
    if l2.wide_row(width):
        # rows over 128 elements: 0 at H = 2 (binary_add_c512_constant_blob task 0), 2 at H = 224
        # (upstream binary_{pow,real_div}_1x3x224x224, every NE task); fitted to these two only
        return min(WIDE_ROW_SH_MAX, max(0, height.bit_length() - 2))
    return max(0, min(height.bit_length() - 1, (128 // width).bit_length() - 1))


WIDE_ROW_SH_MAX = 2


def ne_row(channels: int, height: int, width: int) -> int:
    """L2 row bytes of an NE task's source: unpadded when the task has one row, else
    `l2.ne_row_stride` (`unary_*` 1x1, `env_act_*` 8x8 ... 32x32)."""
    ch = min(l2_channel_stride(width), l2.NE_CHANNEL_CAP) // l2.UNIT
    if height == 1:
        return channels * ch * l2.UNIT
    return l2.UNIT * l2.ne_row_stride(channels * ch, ch)


def lut_fetch(ctx, spec: TaskSpec, table: bytes, channels: int):
    """Kernel DMA of a LUT: every channel fetches the same 128 bytes, padded to 128 B x channels."""
    base = ctx.add_constants(table + bytes(128 * channels - len(table)))
    S.kernel_fetch(spec, [(base, 0x80)] * channels)
    spec.lut_mode = lut.mode(table)


def refused(ctx, op) -> bool:
    """Apple refuses the op; for clip that is a MIL type check (fp32 bounds on fp16 x), which a
    whole-model compile does not make (`passes/mil_checks.py`)."""
    if op.type == "clip":
        return ctx.graph.metadata.get("apple_mil_checks", True)
    return op.type in REFUSED


def activation(ctx, op) -> TaskSpec:
    if refused(ctx, op):
        raise UnsupportedError(f"{op.type} {_dims(ctx.shape(op.inputs[0]))}: {REFUSED[op.type]}",
                               where=where(op))
    x, y = ctx.surface(op.inputs[0]), ctx.surface(op.outputs[0])
    if op.type == "relu":
        return ne_task(ctx, op, x, y, nonlinear=RELU)
    spec = lut_task(ctx, op, x, y, table_of(op))
    if op.type == "exp":  # exp(x) = exp2(log2(e) x): PostScale scales before the table
        spec.set("ne.PostScale", PostScale=LOG2_E)  # (`unary_exp_c64`: 0x3DC5)
    if op.type == "rsqrt":
        spec.set("ne.MACCfg", OpMode=0)
        spec.set("ne.AccBias", AccBias=lut._bits(op.attrs.get("epsilon", 0.0)))
        spec.set("common.DPE", Category=1)
    return spec


def lut_task(ctx, op, x, y, table: bytes) -> TaskSpec:
    spec = ne_task(ctx, op, x, y, nonlinear=LUT)
    lut_fetch(ctx, spec, table, 16)
    return spec


def ne_task(ctx, op, x, y, *, nonlinear: int) -> TaskSpec:
    """One NE bypass task streaming x from DRAM to y with a nonlinearity."""
    n, c, h, w = x.shape
    if n != 1:
        raise UnsupportedError(f"{op.type} {list(x.shape)}: a batch > 1 is not supported on h13 yet",
                               where=where(op))
    spec = TaskSpec(op.name, "ne")
    S.dims(spec, c, h, w, c, h, w)
    S.conv_cfg(spec)
    S.group_cfg(spec, unicast=True)
    row = ne_row(c, h, w)
    tile = l2.tile_height(h, lambda t: 2 * t * row)  # source rows, then as many result rows
    if tile is None:
        raise UnsupportedError(f"{op.type} {list(x.shape)}: one row does not fit the 2 MiB L2",
                               where=where(op))
    ne_common(spec, active_ne=4, tile_height=tile, width=w)
    S.dram_source(spec, x)
    S.dram_dest(spec, y)
    row = l2.source(spec, base=0, channels=c, width=w, row=row)
    spec.set("l2.SourceCfg", **l2.SOURCE_STREAM)
    l2.result(spec, base=tile * row)
    spec.set("ne.MACCfg", **NE_BYPASS, NonlinearMode=nonlinear)
    return spec


def _dims(shape) -> str:
    return "x".join(map(str, shape))


def concat(ctx, op) -> list[TaskSpec]:
    """Concatenation over channels: one NE bypass copy per input into its channel range of the
    output, addressed by TileDMADst.BaseAddr (tinygrad concat.hwx, Apple-compiled: 2 tasks,
    MACCfg 0x0010000C, the second writing at BaseAddr 0x100000 = 16384 channel planes of 64 B)."""
    shape = ctx.graph.tensors[op.outputs[0]].shape
    axis = op.attrs["axis"] % len(shape)
    y = ctx.surface(op.outputs[0])
    if len(shape) != 4 or axis != 1 or y.n != 1:
        raise UnsupportedError(f"concat {_dims(shape)} on axis {op.attrs['axis']}: only the "
                               "channels of a batch-1 4-D tensor are supported on h13",
                               where=where(op))
    specs, first = [], 0
    for name in op.inputs:
        if ctx.is_constant(name):
            raise UnsupportedError("concat of a constant is not supported on h13 yet",
                                   where=where(op))
        x = ctx.surface(name)
        spec = ne_task(ctx, op, x, y, nonlinear=0)
        if first:
            spec.set("tile_dma_dst.BaseAddr", Addr=(y.offset + first * y.plane) // 64)
        first += x.c
        specs.append(spec)
    return specs
