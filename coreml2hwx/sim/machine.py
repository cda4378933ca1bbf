"""Running a Program: task by task from the register state, through DRAM, L2 and the engines.

Per task (ane-facts §2.15, refined by the census and checked by tests/sim):

1. every field of the header and of the register state must be backed by evidence (`evidence`);
2. source 1 comes from DRAM when TileDMASrc.DMAConfig.En and header RBE0 are both set (the
   matmul and eiln softmax tasks show either alone means "from L2"), else from L2 at SourceBase;
   a fetched source is also left in L2 at SourceBase, where later tasks read it (oracle softmax);
3. a second operand exists when Common.ChCfg.Src2InFmt is set (census 98/98); it comes from DRAM
   when header RBE1 is set (census: = Src2 DMAConfig 0x33880), else from L2 at Src2Base;
4. the NE runs when header ENE > 0, otherwise the PE (census: ENE = ActiveNE + 1 on NE tasks);
5. the result, rounded once to fp16, goes to L2 at ResultBase and, when TileDMADst.DMAConfig.En
   is set, to DRAM through BAR slot WBase (L channels a plane when TileDMADst.Fmt interleaves
   them, `Task.interleaved`).

Shapes: source (NumGroups, InDepth, Cin, Hin, Win); result (NumGroups, OutDepth, Cout, Hout,
Wout), or one value per group and channel for PE reductions.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from coreml2hwx.errors import SimulationError
from coreml2hwx.sim import ne, pe
from coreml2hwx.sim.evidence import violation
from coreml2hwx.sim.fields import TaskFields, header_fields, register_fields
from coreml2hwx.sim.l2 import L2, Placement
from coreml2hwx.sim.memory import KERNEL_SLOT

FP16_DRAM = 0x01002031  # TileDMASrc.Fmt of an fp16 DRAM source (every Apple task, §2.7.5)
FP16_DRAM_SRC2 = 0x2030  # Src2Fmt with a second DRAM source (census 98/98)
FP16_DST = (0x01302031, 0x01002031)  # TileDMADst.Fmt writing fp16 (ZeroPad first/last or not)
# TileDMADst.Fmt with Interleave (bits 27:24) = L > 1: L channels share a plane, halfword by
# halfword (`interleaved`).  Upstream Apple oracles (joshuaswarren/mil-hwx-compiler
# research/oracles/h13) rrmm_r2rr_m32_k64_n64_tx0_ty{0,1}#0 (L = 2), rrmm_r2rr_m64_k64_n64_tx0_ty0#0
# and ../shared/oracles/h14/env_mm_r3rr_m64_k64_n64_tx0_ty1_b1#0 (L = 4): the only formats seen.
INTERLEAVED_DST = {0x02302031: 2, 0x04302031: 4}
NE_OFF = (0, 0x00100000)  # NE.MACCfg of PE tasks: old compiler 0, new compiler bit 20 only

# Strides in the 5-D order group, depth, channel (plane), row; width is 2 bytes.
_DIMS = ("Group", "Depth", "Plane", "Row")
SRC1_DRAM_STRIDES = ("tile_dma_src.GroupStride.Stride", "tile_dma_src.DepthStride.Stride",
                     "tile_dma_src.PlaneStride.PlaneStride", "tile_dma_src.RowStride.Stride")
SRC2_DRAM_STRIDES = tuple(f"tile_dma_src.Src2{n}Stride.Stride" for n in _DIMS)
DST_DRAM_STRIDES = tuple(f"tile_dma_dst.{n}Stride.{n}Stride" for n in _DIMS)
SRC1_L2_STRIDES = ("l2.Src1GroupStride.Value", "l2.Src1DepthStride.Value",
                   "l2.SourceChannelStride.Stride", "l2.SourceRowStride.Stride")
SRC2_L2_STRIDES = ("l2.Src2GroupStride.Value", "l2.Src2DepthStride.Value",
                   "l2.Src2ChannelStride.Value", "l2.Src2RowStride.Value")
RESULT_L2_STRIDES = ("l2.ResultGroupStride.Value", "l2.ResultDepthStride.Value",
                     "l2.ConvResultChannelStride.Stride", "l2.ConvResultRowStride.Stride")

# Common.Unk30 bits [H] (census; evidence.py lists the values seen)
SRC1_BCAST_W, SRC1_BCAST_H = 1 << 0, 1 << 1
# upstream norm_layer_norm_ax1_2_3_1x64x8x8#1 (depth) and norm_softmax_a1_*#4 (C): evidence.py
SRC1_BCAST_D, SRC1_BCAST_C = 1 << 2, 1 << 3
SRC2_BCAST_W, SRC2_BCAST_H, SRC2_BCAST_C = 1 << 4, 1 << 5, 1 << 7
SRC2_CHANNEL_DENSE = 1 << 9
SRC1_CHANNEL_DENSE = 1 << 8  # upstream norm_softmax_an1_1x8x1x64#4 (evidence.py)
RESULT_CHANNELS_ALONG_W = 1 << 10


def check_evidence(f: TaskFields) -> None:
    """Every field of the header and of every register word must be backed by evidence."""
    why = _header_violation(f.maps.HEADER, tuple(f.header_words))
    for address, word in f.state.items():
        why = why or _word_violation(f.maps.REGISTERS, address, word)
        if why:
            break
    if why:
        raise f.fail(why)


def _first_violation(fields) -> str | None:
    for path, value in fields:
        why = violation(path, value)
        if why:
            return why
    return None


@lru_cache(maxsize=65536)
def _word_violation(registers, address: int, word: int) -> str | None:
    return _first_violation(register_fields(registers, address, word))


@lru_cache(maxsize=4096)
def _header_violation(header, words: tuple) -> str | None:
    return _first_violation(header_fields(header, words))


class Task:
    """One task's execution against the shared memory and L2."""

    def __init__(self, f: TaskFields, memory, l2: L2):
        self.f, self.memory, self.l2 = f, memory, l2
        self.groups = f.get("common.GroupConvCfg.NumGroups")
        self.depth = f.get("common.InDepth.Depth")
        self.in_shape = (self.groups, self.depth, f.get("common.Cin.Cin"),
                         f.get("common.InDim.Hin"), f.get("common.InDim.Win"))
        self.out_shape = (self.groups, f.get("common.OutDepth.Depth"), f.get("common.Cout.Cout"),
                          f.get("common.OutDim.Hout"), f.get("common.OutDim.Wout"))
        self.flags = f.get("common.Unk30.Value")
        self.kind = f.get("common.Cfg.Bits6_4")
        self.on_ne = f.header("ENE") > 0

    def run(self) -> np.ndarray:
        self._check_engine()
        two = self.f.get("common.ChCfg.Src2InFmt") != 0
        clamp = (ne.fp16_clamp(self.f, self.memory, self.in_shape, self.out_shape)
                 if self.on_ne and not two else None)
        if clamp is not None:  # relu6 and the like: exact on fp16 values, no fp32 round trip
            return self.result(clamp(self.source1(np.float16).astype(np.float16, copy=False)))
        a = self.source1()
        if self.on_ne:
            if two:
                raise self.f.fail("an NE task with a second operand: never seen")
            out = ne.run(self.f, self.memory, a, self.out_shape)
        else:
            p = pe.PeParams(self.f)
            if two != pe.needs_second(p.kind):
                raise self.f.fail(f"a type-{p.kind} PE task with{'' if two else 'out'} a second "
                                  "operand: never seen")
            b = self.source2() if two else None
            if self.f.get("l2.L2Cfg.Bit4"):
                b = self._relu_operand(p, a, b)
            out = pe.run(p, a, b)
        return self.result(out.astype(np.float16))

    def _check_engine(self):
        f = self.f
        mac = f.word("ne.MACCfg")
        if self.on_ne:
            if self.kind != 0 or any(f.word(f"pe.{r}") for r in ("Cfg", "BiasScale", "PreScale",
                                                               "FinalScale")):
                raise f.fail("an NE task (header ENE > 0) that also configures the PE: never seen")
            if self.flags:
                raise f.fail(f"common.Unk30.Value = {self.flags:#x} on an NE task: never seen")
        elif mac not in NE_OFF:
            raise f.fail(f"ne.MACCfg = {mac:#x} in a task whose header runs no NE (ENE = 0)")
        if f.header("TDE") and (not f.header("KBE0") or f.header("KBase0") == KERNEL_SLOT):
            # evidence.py: TDE seen only on kernels read from a tensor an earlier task wrote
            raise f.fail("header TDE = 1 on a task whose coefficients are not a tensor: never seen")

    # -- sources ---------------------------------------------------------------------------------
    def _strides(self, paths) -> tuple:
        return tuple(self.f.bytes(p) for p in paths)

    def source1(self, dtype=np.float32) -> np.ndarray:
        """Source 1 (from DRAM as `dtype`; from L2 as stored: fp16 values as float16/32)."""
        f = self.f
        place = Placement(f.bytes("l2.SourceBase.Addr"), self._strides(SRC1_L2_STRIDES),
                          channel_dense=bool(self.flags & SRC1_CHANNEL_DENSE))
        if f.get("tile_dma_src.DMAConfig.En") and f.header("RBE0"):
            if self.flags & (SRC1_BCAST_W | SRC1_BCAST_H | SRC1_BCAST_D | SRC1_BCAST_C
                             | SRC1_CHANNEL_DENSE):
                raise f.fail("a broadcast first operand fetched from DRAM: never seen")
            self._check_format("tile_dma_src.Fmt", (FP16_DRAM,))
            data = self.memory.read(f.header("RBase0"), f.bytes("tile_dma_src.BaseAddr.Addr"),
                                    self.in_shape, self._strides(SRC1_DRAM_STRIDES), "source 1",
                                    dtype)
            self.l2.put(place, data, f.where)
            return data
        want = list(self.in_shape)
        for bit, axis in ((SRC1_BCAST_W, 4), (SRC1_BCAST_H, 3), (SRC1_BCAST_D, 1),
                          (SRC1_BCAST_C, 2)):
            if self.flags & bit:
                want[axis] = 1
        data = self.l2.get(place, want, f"{f.where}: source 1")
        return np.broadcast_to(data, self.in_shape)

    def source2(self) -> np.ndarray:
        f = self.f
        rows = self.kind == 4
        g, d, c, h, w = self.in_shape
        shape = (g, d, c, 2, 1) if rows else self.in_shape
        place = Placement(f.bytes("l2.Src2Base.Value"), self._strides(SRC2_L2_STRIDES),
                          channel_dense=bool(self.flags & SRC2_CHANNEL_DENSE))
        if f.header("RBE1"):
            # A broadcast along C of one channel fetches it as it is (upstream
            # norm_softmax_a1_1x1x1x64#0: x - x, both from DRAM, Common 0x30 = 0x80).
            flags = self.flags & ~(SRC2_BCAST_C if c == 1 else 0)
            if rows or flags & (SRC2_BCAST_W | SRC2_BCAST_H | SRC2_BCAST_C | SRC2_CHANNEL_DENSE):
                raise f.fail("a second operand fetched from DRAM as rows or broadcast: never seen")
            self._check_format("tile_dma_src.Src2Fmt", (FP16_DRAM_SRC2,))
            data = self.memory.read(f.header("RBase1"), f.bytes("tile_dma_src.Src2BaseAddr.Addr"),
                                    shape, self._strides(SRC2_DRAM_STRIDES), "source 2",
                                    np.float32)
            self.l2.put(place, data, f.where)
            return data
        want = list(shape)
        for bit, axis in ((SRC2_BCAST_W, 4), (SRC2_BCAST_H, 3), (SRC2_BCAST_C, 2)):
            if self.flags & bit:
                if rows and axis != 2:
                    raise f.fail("rows broadcast along H or W: never seen")
                want[axis] = 1
        data = self.l2.get(place, want, f"{f.where}: source 2")
        return np.broadcast_to(data, shape)

    def _relu_operand(self, p, a, b):
        """L2Cfg bit 4: one operand passes a relu on its way into the PE.  Apple's programs
        (upstream env_chain_residual_relu_*) add x to x this way, so which operand it is cannot
        be told apart there: only equal operands of a PE add are accepted."""
        if b is None or p.kind != 3 or p.op != 0 or p.second != 2:
            raise self.f.fail("l2.L2Cfg.Bit4 outside a two-operand PE add: never seen")
        if not np.array_equal(a, b):
            raise self.f.fail("l2.L2Cfg.Bit4 with two different operands: which one passes the "
                              "relu is not pinned (Apple's programs add x to x)")
        return np.maximum(b, 0)

    def _check_format(self, path, allowed):
        word = self.f.word(path)
        if word not in allowed:
            known = ", ".join(hex(a) for a in allowed)
            raise self.f.fail(f"{path} = {word:#x}: only fp16 ({known}) is known")

    # -- result ----------------------------------------------------------------------------------
    def result(self, out: np.ndarray) -> np.ndarray:
        f = self.f
        result_type = f.get("l2.ResultCfg.ResultType")
        along_w = bool(self.flags & RESULT_CHANNELS_ALONG_W)
        if result_type == 1 and not along_w or along_w and result_type not in (0, 1):
            raise f.fail(f"l2.ResultCfg.ResultType = {result_type} with Common.Unk30 = "
                         f"{self.flags:#x}: never seen together")
        if along_w:
            out = np.ascontiguousarray(out.swapaxes(2, 4))
        dense = self.on_ne and bool(f.get("common.Cfg.Bit28"))
        place = Placement(f.bytes("l2.ResultBase.Addr"), self._strides(RESULT_L2_STRIDES),
                          channel_dense=dense)
        self.l2.put(place, out, f.where)
        if f.get("tile_dma_dst.DMAConfig.En"):
            if not f.header("WBE"):
                raise f.fail("TileDMADst writes with header WBE = 0: never seen")
            lanes = INTERLEAVED_DST.get(f.word("tile_dma_dst.Fmt"), 1)
            if lanes == 1:
                self._check_format("tile_dma_dst.Fmt", FP16_DST + tuple(INTERLEAVED_DST))
            strides = self._strides(DST_DRAM_STRIDES)
            # A channel-dense result leaves the same way: channels 2 bytes apart, pixels a
            # PlaneStride apart (oracle matmul_*#1: C=1024 x W=8 into an 8 x 1024 output).
            data = np.ascontiguousarray(out.swapaxes(2, 4)) if dense else out
            if lanes > 1:
                data = self.interleaved(data, lanes, dense)
            self.memory.write(f.header("WBase"), f.bytes("tile_dma_dst.BaseAddr.Addr"), data,
                              strides, "result")
        return out

    def interleaved(self, out: np.ndarray, lanes: int, dense: bool) -> np.ndarray:
        """The result as an interleaved DMA write lays it out: channels c = L p + l (p the plane,
        l the lane) share plane p, column w of channel c at halfword L w + l.  So plane p holds
        rows Lp .. Lp + L - 1 of x exactly as a dense L-lane weight plane holds its lanes (the
        kernel rule in `kernel`, pinned by Apple's constant sections): the only reading under
        which Apple's runtime x runtime programs (INTERLEAVED_DST), whose convolution fetches
        plane i as coefficient chunk i, compute x @ w - a lane-major plane (halfword K l + w) or
        lanes taken 16 channels apart (c = p + 16 l) give other products
        (tests/target/test_h13_matmul2.py).  Seen only on a PE copy of one row per channel with
        whole planes of lanes; anything else stops the run."""
        g, d, c, h, w = out.shape
        if dense or h != 1 or c % lanes:
            raise self.f.fail(f"tile_dma_dst.Fmt.Interleave = {lanes} on a result of {c} "
                              f"channels x {h} rows{' (channel-dense)' if dense else ''}: seen "
                              "only on one row of whole planes of lanes")
        planes = out.reshape(g, d, c // lanes, lanes, h, w)
        return np.ascontiguousarray(planes.transpose(0, 1, 2, 4, 5, 3)).reshape(
            g, d, c // lanes, h, w * lanes)


def run_task(f: TaskFields, memory, l2: L2) -> np.ndarray:
    if not f.checked:
        check_evidence(f)
        f.checked = True
    memory.where = f.where
    try:
        return Task(f, memory, l2).run()
    except SimulationError as err:
        if err.where is None:
            err.where = f.where
            err.args = (err.line(),)
        raise
