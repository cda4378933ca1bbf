"""The values each H13 register field may take in a simulated program, and the evidence for them.

Every field of every task (header words and every register the state holds, including the bits no
source names) must match a rule here before the task runs; a field no rule covers, or a value
outside its rule, stops the run naming the task, the field and the value.  Nothing is guessed.

Kinds of rule:
* `PARAM` - a number the simulator reads (a dimension, stride, address, scale): any value.
* `NO_EFFECT` - a field that steers scheduling, caching or bookkeeping and does not change any
  value the program computes (cache hints, event masks, task ids, tile height ...): any value.
  "No effect" is itself checked: every Apple program in ../shared runs with these ignored and
  reproduces its source's math (tests/sim).
* a set of values - the ones seen in Apple's programs (`eiln` = the 36 eiln/ane H13 streams,
  `tg` = tinygrad's Apple-compiled .hwx files, `oracle` = ../shared/oracles/h13).  The simulator
  implements each of them; the engines check value combinations they do not know.

Paths are `block.Register.Field` of `coreml2hwx.target.maps.h13` (`header.Field` for the task
header); patterns use fnmatch wildcards, and the first matching rule wins.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from functools import lru_cache

PARAM = "parameter"
NO_EFFECT = "no effect on values"

E = "eiln"
T = "tg"
O = "oracle"
ALL = "eiln, tg, oracle"

# (pattern, allowed: PARAM | NO_EFFECT | frozenset, evidence)
RULES: list[tuple[str, object, str]] = [
    # -- single bits the map names after their position; then the bits no source names -----------
    # Cfg bit 28: the NE keeps its result in L2 channel-dense (pixel stride = ResultChannelStride):
    # oracle matmul_*#0/#1, real_div#0, env_chain_residual_*#0, reduce_mean_axes_1#0 [H].
    ("common.Cfg.Bit28", frozenset({False, True}), O),
    ("ne.MACCfg.Bit20", NO_EFFECT, "set on every new-compiler task; allbilly saw LUT precision "
                                   "change without it"),
    ("l2.SourceCfg.Bit24", NO_EFFECT, "= RBE1 (census 98/98)"),
    ("ne.KernelCfg.Bit1[24]", NO_EFFECT, "set on PE tasks that stage data in L2"),
    ("ne.KernelCfg.Bit16", frozenset({False, True}),
     "runtime x runtime matmul (weights from KBase0 = a surface)"),
    ("common.Cfg.Bits1_0", NO_EFFECT, "which sources TileDMA fetches (census 98/98)"),
    ("common.Cfg.Bits6_4", frozenset({0, 2, 3, 4, 5, 6}), "PE task type: 0 NE, 2 unary, 3 binary, "
                                                          "4 bias/scale rows, 5 reduce, 6 "
                                                          "layer_norm variance"),
    ("tile_dma_dst.DMAConfig.Bits25_10", frozenset({0, 0x100, 0x3100}), "eiln ceil/atan; unknown"),
    # L2Cfg bit 4: a relu on one operand on its way into the PE (upstream
    # env_chain_residual_relu_1x768x1x1 / _1x64x8x8: y = x + relu(x) as one PE add of x and x).
    ("l2.L2Cfg.Bit4", frozenset({False, True}), "upstream env_chain_residual_relu_*"),
    ("*.Bit[0-9]*", frozenset({0, False}), "0 in every Apple task"),
    ("*.Bits[0-9]*", frozenset({0}), "0 in every Apple task"),
    # -- header (ane-facts §2.2) ------------------------------------------------------------------
    ("header.TID", NO_EFFECT, "task id"),
    ("header.NID", NO_EFFECT, "network id"),
    ("header.LNID", NO_EFFECT, "not-first-task flag"),
    ("header.EON", NO_EFFECT, "end of network; the stream decoder follows the chain"),
    ("header.ExeCycles", NO_EFFECT, "compiler's cycle estimate"),
    ("header.NextSize", NO_EFFECT, "chaining; used by the stream decoder"),
    ("header.NextPointer", NO_EFFECT, "chaining; used by the stream decoder"),
    ("header.LogEvents", NO_EFFECT, "event mask"),
    ("header.Exceptions", NO_EFFECT, "exception mask"),
    ("header.DebugLogEvents", NO_EFFECT, "event mask"),
    ("header.DebugExceptions", NO_EFFECT, "exception mask"),
    ("header.NextPriority", frozenset({0}), ALL),
    ("header.DisallowAbort", frozenset({False, True}), "oracle; scheduling"),
    ("header.TDSkip", frozenset({False}), ALL),
    ("header.KPC", frozenset({False}), ALL),
    ("header.SPL", NO_EFFECT, "scheduling flag (census: set on the first task)"),
    ("header.TSR", NO_EFFECT, "scheduling flag (census: = DstLoc)"),
    ("header.TSE", NO_EFFECT, "scheduling flag (census: = DstLoc)"),
    ("header.SPC", NO_EFFECT, "scheduling flag"),
    ("header.DPC", NO_EFFECT, "scheduling flag"),
    # TDE is set exactly on the tasks whose kernel DMA reads a buffer an earlier task of the same
    # program wrote (KBase0 = the scratch slot 3): upstream rrmm_r2rr_m{32,64}_k64_n64_tx0_ty0#1,
    # rrmm_r2rr_m32_k64_n64_tx0_ty1#2 (joshuaswarren/mil-hwx-compiler research/oracles/h13) and
    # ../shared/oracles/h14/env_mm_r3rr_m64_k64_n64_tx0_ty1_b1#2; never where the kernels are an
    # input (rrmm_r2rr_m16_*, env_mm_r2rr_m16_*) or constants.  Those programs compute x @ w with
    # TDE ignored (tests/target/test_h13_matmul2.py, tests/sim/test_sim_h14.py): an ordering
    # flag for the simulator, which runs tasks in order.  machine.py allows it only there.
    ("header.TDE", NO_EFFECT, "set on kernels read from a tensor written earlier (upstream rrmm)"),
    # The one extension word (a raw `Value`, present when header[9] & 3 = 3, ane-facts §2.3):
    # 0 in every task that has it (the TDE tasks above), which compute x @ w.
    ("header.Value", frozenset({0}), "extension word: upstream rrmm_r2rr_m{32,64}, H14 r3rr"),
    ("header.SrcLoc", NO_EFFECT, "mirrors TileDMASrc.DMAConfig.En (census 98/98)"),
    ("header.DstLoc", NO_EFFECT, "mirrors TileDMADst.DMAConfig.En (census 98/98)"),
    ("header.TQDis", frozenset({False}), ALL),
    ("header.RBase0", PARAM, "BAR slot of source 1"),
    ("header.RBase1", PARAM, "BAR slot of source 2"),
    ("header.WBase", PARAM, "BAR slot of the result"),
    ("header.KBase0", PARAM, "BAR slot of the coefficients"),
    ("header.RBE0", PARAM, "source 1 slot bound"),
    ("header.RBE1", PARAM, "source 2 fetched from DRAM (census: = Src2 DMAConfig 0x33880)"),
    ("header.WBE", PARAM, "result slot bound"),
    ("header.KBE0", PARAM, "coefficients fetched"),
    ("header.TBase", frozenset({0}), ALL),
    ("header.TBE", NO_EFFECT, "set on every task but the last (census 98/98); meaning unknown"),
    ("header.ENE", frozenset({0, 1, 2, 3, 4, 5}), "NE engines used, = ActiveNE + 1 (census)"),
    ("header.KBase[123]", frozenset({0}), ALL),
    ("header.KBE[123]", frozenset({False}), ALL),

    # -- common (ane-facts §2.7.1; census §6.1) ---------------------------------------------------
    ("common.InDim.Win", PARAM, "input width"),
    ("common.InDim.Hin", PARAM, "input height"),
    ("common.OutDim.Wout", PARAM, "output width"),
    ("common.OutDim.Hout", PARAM, "output height"),
    ("common.InDepth.Depth", PARAM, "input depth (16 in reduce_probe_sum)"),
    ("common.OutDepth.Depth", PARAM, "= InDepth in every task"),
    ("common.Cin.Cin", PARAM, "input channels"),
    ("common.Cout.Cout", PARAM, "output channels"),
    ("common.ChCfg.InFmt", frozenset({2}), "fp16, the only format in any H13 sample (§2.8)"),
    ("common.ChCfg.OutFmt", frozenset({2}), "fp16 (§2.8)"),
    ("common.ChCfg.Src2InFmt", frozenset({0, 2}), "2 = a second fp16 operand (census 98/98)"),
    ("common.ConvCfg.Kw", frozenset({1, 3}), "kernel width; oracle conv probes"),
    ("common.ConvCfg.Kh", frozenset({1, 3}), "kernel height; oracle conv probes"),
    ("common.ConvCfg.Sx", frozenset({1, 2}), "stride; oracle conv probes"),
    ("common.ConvCfg.Sy", frozenset({1, 2}), "stride; oracle conv probes"),
    ("common.ConvCfg.Px", frozenset({0, 1}), "left pad; oracle conv probes"),
    ("common.ConvCfg.Py", frozenset({0, 1}), "top pad; oracle conv probes"),
    ("common.ConvCfg.Ox", frozenset({1}), ALL),
    ("common.ConvCfg.Oy", frozenset({1}), ALL),
    ("common.ConvCfg.OCGSize", NO_EFFECT, "output channels per weight plane (log2); the kernel "
                                          "layout is read from the coefficient DMA registers"),
    ("common.ConvCfg3d.Kd", frozenset({1}), ALL),
    ("common.ConvCfg3d.Sz", frozenset({1}), ALL),
    ("common.ConvCfg3d.Pz", frozenset({0}), ALL),
    ("common.ConvCfg3d.Oz", frozenset({1}), ALL),
    ("common.GroupConvCfg.NumGroups", PARAM, "groups (conv groups, batch, reduction rows)"),
    ("common.GroupConvCfg.UnicastEn", frozenset({False, True}), ALL),
    ("common.GroupConvCfg.ElemMultMode", frozenset({False, True}), "oracle binary_pow#2"),
    ("common.GroupConvCfg.UnicastCin", PARAM, "input channels combined per output channel"),
    ("common.TileCfg.TileHeight", NO_EFFECT, "rows per tile; results do not depend on tiling"),
    ("common.Unk2C.*", NO_EFFECT, "log2 width / tile height of PE tasks (census [H])"),
    # Which PE operands broadcast, and how the second is laid out in L2 [H]: bit 0/1 source 1
    # along W/H, bit 4/5/7 source 2 along W/H/C, bit 9 source 2 channel-dense, bit 10 result
    # channels written along W.  Values: eiln softmax (0x10, 0x1), oracle env_bcast_* (0x20,
    # 0x30), layer_norm (0x2, 0x80), blob/real_div/chain (0x200), reduce_mean_axes_1 (0x400).
    # Upstream oracle norm_softmax_an1_1x8x1x64 (joshuaswarren/mil-hwx-compiler
    # research/oracles/h13/, Apple's compiler on [1, 8, 1, 64] softmax over W): task 0 (max over W)
    # and task 3 (1/sum over W) write with 0x400 into L2 and keep it there (ResultType 0); task 1
    # reads the max back with 0x210 (source 2 channel-dense, broadcast along W) and task 4 reads
    # 1/sum with 0x101: bit 0 (source 1 along W) and bit 8, source 1 channel-dense - the source-1
    # twin of bit 9 [H], the only reading that puts task 3's result (ResultBase 0) under task 4's
    # source 1 (SourceBase 0).  Our encoder emits these words; the program computes softmax
    # (tests/sim/test_sim_sparse.py).  Upstream oracle norm_layer_norm_ax3_1x8x1x64 (same
    # repository, Apple's compiler on [1, 8, 1, 64] layer_norm over W) task 1 (the 1/sqrt(var +
    # eps) factor) uses 0x501: the three bits above together - source 1 (the mean vector task 0
    # wrote with 0x400) channel-dense and broadcast along W, the factor written along W.
    # Upstream (same repository and commit 9cb58d571cd7; our programs for these shapes are
    # byte-identical to Apple's, tests/target/test_h13_coverage3.py / 4.py run them):
    # * 0x480 (bit 7 + bit 10): norm_softmax_a1_1x{64,128,512,1024,2048,4096}x1x1#1, x - max
    #   with the one max broadcast along the C channels, written as one vector along W;
    # * 0x8, bit 3 = source 1 broadcast along C (the source-1 twin of bit 7): task 4 of every
    #   norm_softmax_a1_* (#3 of _1x1x1x64) multiplies the C exp values of a pixel by the one
    #   1 / sum task 3 wrote per pixel - only that broadcast makes the program softmax;
    # * 0x503 (0x501 + bit 1): norm_layer_norm_ax2_3_1x{32x4x4,64x8x8,128x16x16}#1, the C means
    #   along W broadcast along both W and the H rows of each channel;
    # * 0x3 / 0x7, bit 2 = source 1 broadcast along depth: norm_layer_norm_ax1_2_3_1x8x1x64#1
    #   (3: depth 1, so bits 0/1 keep their W/H meaning) and _1x{32x4x4,64x8x8,128x16x16}#1
    #   (7: depth H > 1), the factor task seeing x as H planes (depth) of C rows of W values,
    #   its source 1 the one mean task 0 wrote (L2 holds nothing beside it: the mean must reach
    #   every depth, row and column for the program to be layer_norm).
    ("common.Unk30.Value", frozenset({0, 0x1, 0x2, 0x3, 0x7, 0x8, 0x10, 0x20, 0x30, 0x80, 0x101,
                                      0x200, 0x210, 0x400, 0x480, 0x501, 0x503}), ALL),
    ("common.Cfg.SmallSourceMode", NO_EFFECT, "scheduling (allbilly: no effect on output)"),
    ("common.Cfg.Sh*", NO_EFFECT, "scheduling (allbilly: no effect on output)"),
    ("common.Cfg.ActiveNE", frozenset({0, 1, 2, 3, 4}), "= ENE - 1 (census 98/98)"),
    ("common.Cfg.ContextSwitch*", frozenset({False}), ALL),
    ("common.Cfg.AccDoubleBufEn", NO_EFFECT, "accumulator double buffering"),
    ("common.TaskInfo.*", NO_EFFECT, "task id, queue and network id"),
    ("common.DPE.Category", frozenset({0, 1, 2}), "eiln inv/rsqrt, oracle rsqrt (1), pow#2 (2); "
                                                 "no effect found"),

    # -- L2 (§2.7.2) ------------------------------------------------------------------------------
    ("l2.L2Cfg.InputReLU", frozenset({False}), ALL),
    ("l2.L2Cfg.PaddingMode", frozenset({0, 1}), "1 in max reductions (census); no padding there"),
    ("l2.SourceCfg.*", NO_EFFECT, "L2 staging types; the data path follows the DMA enables"),
    ("l2.ResultCfg.ResultType", frozenset({0, 1, 2, 3}), ALL),
    ("l2.ResultCfg.*", NO_EFFECT, "L2 staging types"),
    ("l2.SourceBase.Addr", PARAM, "L2 address of source 1"),
    ("l2.Source*Stride.Stride", PARAM, "L2 strides of source 1"),
    ("l2.Src1*Stride.Value", PARAM, "L2 strides of source 1"),
    ("l2.Src2*.Value", PARAM, "L2 address and strides of source 2"),
    ("l2.ResultBase.Addr", PARAM, "L2 address of the result"),
    ("l2.ConvResult*Stride.Stride", PARAM, "L2 strides of the result"),
    ("l2.Result*Stride.Value", PARAM, "L2 strides of the result"),

    # -- PE (§2.7.3, census §6.3) -----------------------------------------------------------------
    ("pe.Cfg.PoolMode", frozenset({0, 2}), "2 = max reduction (eiln softmax, oracle)"),
    ("pe.Cfg.OpMode", frozenset({0, 1, 2, 3, 4}), "add mul max min; 4 = squared difference "
                                                  "(layer_norm#1)"),
    ("pe.Cfg.ReluEn", frozenset({False, True}), "oracle chain_add_relu"),
    ("pe.Cfg.Cond", frozenset({0, 1}), "1 = abs (eiln abs, oracle unary_abs)"),
    ("pe.Cfg.NLMode", frozenset({0, 1, 2}), "1 = reciprocal (softmax), 2 = rsqrt (layer_norm)"),
    ("pe.Cfg.FirstSrc", frozenset({0, 1}), "layer_norm#1"),
    ("pe.Cfg.SecSrc", frozenset({0, 2, 3}), "2 = second operand, 3 = subtracted"),
    ("pe.BiasScale.*", PARAM, "fp16 bias and scale"),
    ("pe.PreScale.PreScale", PARAM, "fp16 scale of source 1"),
    ("pe.PreScale.Low16", PARAM, "fp16 epsilon of layer_norm#1 (0xA8 = 1e-5)"),
    ("pe.FinalScale.FinalScale", PARAM, "fp32 scale of a reduction (1/N for mean)"),

    # -- NE (§2.7.4) ------------------------------------------------------------------------------
    ("ne.KernelCfg.KernelFmt", frozenset({0, 2}), "2 = fp16 weights"),
    ("ne.KernelCfg.PalettizedEn", frozenset({False}), ALL),
    ("ne.KernelCfg.PalettizedBits", NO_EFFECT, "0 or 8 with palettization off"),
    ("ne.KernelCfg.SparseFmt", frozenset({False, True}), "stride-2 zero-skipping weights (oracle)"),
    ("ne.KernelCfg.GroupKernelReuse", frozenset({False}), ALL),
    ("ne.MACCfg.OpMode", frozenset({0, 2, 3, 4}), "0 MAC, 2 channel product, 3 channel max, "
                                                  "4 bypass"),
    ("ne.MACCfg.KernelMode", frozenset({False, True}), "1 = no weights"),
    ("ne.MACCfg.BiasMode", frozenset({False, True}), "conv bias row"),
    ("ne.MACCfg.MatrixBiasEn", frozenset({False}), ALL),
    ("ne.MACCfg.BinaryPoint", NO_EFFECT, "fixed-point binary point; fp16 data (§2.7.4)"),
    ("ne.MACCfg.PostScaleMode", frozenset({False}), ALL),
    ("ne.MACCfg.NonlinearMode", frozenset({0, 1, 2}), "none, ReLU, LUT"),
    ("ne.MatrixVectorBias.MatrixVectorBias", frozenset({0.0}), ALL),
    ("ne.AccBias.AccBias", PARAM, "fp16 bits added to the accumulator (rsqrt epsilon 0x11)"),
    ("ne.AccBias.AccBiasShift", frozenset({0}), ALL),
    ("ne.PostScale.PostScale", PARAM, "fp16 scale before the nonlinearity (exp: log2 e)"),
    ("ne.PostScale.PostRightShift", frozenset({0}), ALL),

    # -- TileDMASrc (§2.7.5) ----------------------------------------------------------------------
    ("tile_dma_src.*DMAConfig.En", PARAM, "source 1 fetch (source 2: header RBE1)"),
    ("tile_dma_src.*DMAConfig.*", NO_EFFECT, "cache hints and dependency mode"),
    ("tile_dma_src.*BaseAddr.Addr", PARAM, "byte offset in the BAR slot"),
    ("tile_dma_src.*Stride.*", PARAM, "DRAM strides"),
    ("tile_dma_src.Fmt.*", NO_EFFECT, "checked as a whole word when a source is fetched"),
    ("tile_dma_src.Src2Fmt.*", NO_EFFECT, "checked as a whole word when a source is fetched"),
    ("tile_dma_src.Unk40.Value", frozenset({0, 0x100}), ALL),
    ("tile_dma_src.PixelOffset*.Offset", frozenset({0}), ALL),
    ("tile_dma_src.Unk*.Value", frozenset({0}), ALL),

    # -- TileDMADst (§2.7.6) ----------------------------------------------------------------------
    ("tile_dma_dst.DMAConfig.En", PARAM, "result written to DRAM"),
    ("tile_dma_dst.DMAConfig.CrH", NO_EFFECT, "cache hint"),
    ("tile_dma_dst.DMAConfig.CacheHint", NO_EFFECT, "cache hint"),
    ("tile_dma_dst.DMAConfig.L2BfrMode", NO_EFFECT, "L2 buffering"),
    ("tile_dma_dst.DMAConfig.BypassEOW", frozenset({False}), ALL),
    ("tile_dma_dst.BaseAddr.Addr", PARAM, "byte offset in the BAR slot"),
    ("tile_dma_dst.*Stride.*Stride", PARAM, "DRAM strides"),
    ("tile_dma_dst.Fmt.*", NO_EFFECT, "checked as a whole word when the result is written"),

    # -- KernelDMASrc (§2.7.7) --------------------------------------------------------------------
    ("kernel_dma_src.MasterConfig.*", NO_EFFECT, "master enable / sparse flag; KBE0 decides"),
    ("kernel_dma_src.CoeffDMAConfig*.En", PARAM, "coefficient channel enabled"),
    ("kernel_dma_src.CoeffDMAConfig*.PrefetchParticipateEn", frozenset({False}), ALL),
    ("kernel_dma_src.CoeffDMAConfig*.*", NO_EFFECT, "cache hints"),
    ("kernel_dma_src.CoeffBaseAddr*.Addr", PARAM, "offset in the kernel section"),
    ("kernel_dma_src.CoeffBfrSize*.MemBfrSize", PARAM, "bytes fetched"),
    ("kernel_dma_src.AuxDMAConfig*.Value", frozenset({0, 0x80}), ALL),
    ("kernel_dma_src.AuxBase*.Value", frozenset({0}), ALL),
    ("kernel_dma_src.AuxSize*.Value", frozenset({0, 0x40}), ALL),

    ("kernel_dma_src.Unk04.Value", frozenset({0}), ALL),
]


@lru_cache(maxsize=4096)
def rule_for(path: str):
    """(allowed, evidence) of the first rule matching `path`, or None."""
    for pattern, allowed, evidence in RULES:
        if fnmatchcase(path, pattern):
            return allowed, evidence
    return None


def violation(path: str, value) -> str | None:
    """Why `value` of field `path` is not backed by evidence, or None when it is."""
    found = rule_for(path)
    if found is None:
        return f"{path} = {_show(value)}: no evidence for what this field does"
    allowed, evidence = found
    if allowed in (PARAM, NO_EFFECT) or value in allowed:
        return None
    seen = ", ".join(_show(v) for v in sorted(allowed, key=float))
    return f"{path} = {_show(value)}: never seen in Apple's programs (seen: {seen}; {evidence})"


def _show(value) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return hex(value) if value > 9 else str(value)
    return repr(value)
