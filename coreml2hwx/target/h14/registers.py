"""H14 (M2) header words and register writes of each task, translated from our H13 program.

Apple's H14 programs have the task structure, L2 layout, strides and weights of the H13 programs
for the same MIL (h14-register-census.md §1); what differs is the encoding, which this module
rebuilds from the H13 register state of every task:

* header: census §2 (TID, ExeCycles, LogEvents - 0x400, DebugLogEvents without bit 1, a word that
  is 1 iff the result stays in L2, TSR | TDE << 1 | ENE << 16); the task-size field is left 0.
* Common: ConvCfg split into OCGSize (0x1C) and the kernel/stride/pad word (0x20, 6-bit Kw/Kh),
  every later register one word up (census §4.1).  L2, PE and NE keep their H13 offsets.
* TileDMA / KernelDMA: 64-bit Lo/Hi buffer addresses, re-encoded DMA config words, coefficient
  bases and sizes as on H13; a LUT comes through its own channel (census §4.7).
* Only registers off their default are written; the defaults are the values the paired H13 task
  holds where H14 leaves a register out (census §4 "H13 values ... where H14 omits it").

Every rule is stated on the H13 register state (field names of `maps.h13`); the oracle cases only
serve as evidence.  The BAR slot of every address register comes from the H13 header's
RBase/WBase/KBase fields; the record packer turns it into the record tag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from coreml2hwx.errors import UnsupportedError
from coreml2hwx.program import Program
from coreml2hwx.target.maps import h13 as map13
from coreml2hwx.target.maps import h14 as map14

H13 = map13.REGISTERS
LUT_BYTES = 128  # one bare table per LUT task (census §1: H14 LUT sections are 128 bytes each)


@dataclass
class TaskPlan:
    """One H14 task before record packing.

    `header`: the 8 (or 9) header words, task-size field of word 0 left 0.
    `writes`: byte address -> value of every register the task writes.
    `slots`: for the registers holding a buffer address, address -> BAR slot.
    """

    header: list[int]
    writes: dict[int, int] = field(default_factory=dict)
    slots: dict[int, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# The H13 task, read by field name
# ----------------------------------------------------------------------------------------------

class Task13:
    """One H13 task: its full register state and header, with the facts the rules ask about."""

    def __init__(self, index: int, header: list[int], state: dict[int, int]):
        self.index = index
        self.header = header
        self.state = state

    def __call__(self, path: str):
        return H13.get(self.state, path, 0)

    def word(self, path: str) -> int:
        """The whole register named by `block.Register` (0 where never written)."""
        block_name, register = path.split(".")
        block = H13.block(block_name)
        return self.state.get(block.base + block.register(register).offset, 0)

    def head(self, name: str) -> int:
        return map13.HEADER.get(self.header, name)

    @property
    def tid(self) -> int:
        return self.head("TID")

    @property
    def src1(self) -> bool:
        return bool(self("tile_dma_src.DMAConfig.En"))

    @property
    def src2(self) -> bool:
        # The second source's own En bit stays 0 on H13; the header's RBE1 enables it (§2.7.5).
        return bool(self.head("RBE1"))

    @property
    def dst(self) -> bool:
        return bool(self("tile_dma_dst.DMAConfig.En"))

    @property
    def lut(self) -> bool:
        return self.ne and self("ne.MACCfg.NonlinearMode") == 2

    @property
    def ne(self) -> bool:
        return self.head("ENE") > 0

    @property
    def kernel(self) -> bool:
        return bool(self("kernel_dma_src.MasterConfig.MasterEnable"))

    @property
    def weights(self) -> bool:
        return self.kernel and not self.lut

    @property
    def runtime_weights(self) -> bool:
        # KernelCfg bit 16: the kernel is a runtime surface (census §4.4, env_mm_r2rr).
        return bool(self("ne.KernelCfg.Bit16"))

    @property
    def rows_in(self) -> int:
        return self("common.InDim.Hin")

    @property
    def rows_out(self) -> int:
        return self("common.OutDim.Hout")


def h13_tasks(program13: Program) -> list[Task13]:
    if program13.target != "h13":
        raise UnsupportedError(f"h14 re-encoding takes an h13 program, got {program13.target}",
                               where=program13.name)
    return [Task13(i, list(task.header), dict(state))
            for i, (task, state) in enumerate(program13.states())]


# ----------------------------------------------------------------------------------------------
# Header (census §2)
# ----------------------------------------------------------------------------------------------

def header(t: Task13) -> list[int]:
    words = map14.HEADER.encode({
        "TID": t.tid,
        "ExeCycles": t.head("ExeCycles"),
        "LogEvents": t.head("LogEvents") - 0x400,  # 38/38
        "Exceptions": t.head("Exceptions"),
        "DebugLogEvents": t.head("DebugLogEvents") & ~2,  # 30/30
        "DebugExceptions": t.head("DebugExceptions"),
        "LiveOuts": int(not t.dst),  # 1 iff the result stays in L2 (30/30)
        "TSR": 1, "TDE": t.head("TDE"), "ENE": engines(t),  # TSR set in 38/38
    })
    if map14.HEADER.extension and map14.HEADER.extension.present(words):
        words.append(0)
    return words


# ----------------------------------------------------------------------------------------------
# Register rules: (H14 address, value) pairs, each written only when the rule says so
# ----------------------------------------------------------------------------------------------

Writes = dict[int, int]


def _put(out: Writes, address: int, value: int, default: int | None = None) -> None:
    """Write `value` unless it is the register's default (H14 leaves defaults out)."""
    if value != default:
        out[address] = value & 0xFFFFFFFF


def common(t: Task13, out: Writes) -> None:
    c = map14.BLOCK_BASES["common"]
    _put(out, c + 0x00, t.word("common.InDim"))
    _put(out, c + 0x0C, t.word("common.Cin"))
    # Left out once, at 16 (env_mm_r2rr); written at 64 in a runtime-weight matmul too (census
    # §4.1, env_mm_r3rr task 2), so the rule is a default value, not the kind of task [H].
    _put(out, c + 0x10, t.word("common.Cout"), default=0x10)
    _put(out, c + 0x14, t.word("common.OutDim"))
    # InDepth, ChCfg, OutDepth and ConvCfg3d are never written (census §4.1).
    if t.ne:  # PE tasks leave the output-channel group out (census §4.1, 23/23 NE tasks)
        _put(out, c + 0x1C, t("common.ConvCfg.OCGSize"))
    _put(out, c + 0x20, conv_cfg(t), default=conv_cfg_default())
    _put(out, c + 0x28, t.word("common.GroupConvCfg"), default=0x10001)
    _put(out, c + 0x2C, t.word("common.TileCfg"))
    _put(out, c + 0x30, t.word("common.Unk2C"), default=0)
    _put(out, c + 0x34, t.word("common.Unk30"), default=0)
    _put(out, c + 0x38, cfg_word(t), default=0x1)
    _put(out, c + 0x3C, t.word("common.TaskInfo"))
    _put(out, c + 0x40, t.word("common.DPE"), default=0)


CFG13 = H13.field("common.Cfg.ActiveNE")[0]
ALL_NE = 4  # ActiveNE field value of a task spread over all 16 neural engines


def cfg_word(t: Task13) -> int:
    """Common.Cfg.  Two H14 changes the data shows (census §4.1):
    * bit 29 with a runtime kernel (0x20200001 where H13 has 0x200001; env_mm_r2rr, r3rr);
    * a LUT task H13 spreads over 8 NEs (ActiveNE 3: its table is copied once per NE) runs on all
      16 on H14, where one table serves every NE, also with bit 29 (real_div and x+gelu(x)
      task 0: 0x10180001 -> 0x30222201 / 0x30200001; their Sh* fields are not derived)."""
    cfg = t.word("common.Cfg")
    active = t("common.Cfg.ActiveNE")
    if t.runtime_weights:
        cfg |= 1 << 29
    if t.lut and active < ALL_NE:
        cfg = H13.encode({"common.Cfg.ActiveNE": ALL_NE}, {CFG13: cfg})[CFG13] | 1 << 29
    return cfg


def engines(t: Task13) -> int:
    """Header ENE: ActiveNE + 1 of the H14 Cfg on NE tasks, H13's value otherwise."""
    ene = t.head("ENE")
    if ene and t.lut:
        return H13.get({CFG13: cfg_word(t)}, "common.Cfg.ActiveNE") + 1
    return ene


_CONV_MOVED = ("Sx", "Sy", "Px", "Py", "Ox", "Oy")


def conv_cfg(t: Task13) -> int:
    """H13 ConvCfg without OCGSize, Kw/Kh re-packed to 6 bits (census §4.1, 3/3)."""
    values = {name: t(f"common.ConvCfg.{name}") for name in ("Kw", "Kh") + _CONV_MOVED}
    return map14.REGISTERS.encode({f"common.ConvCfg.{k}": v for k, v in values.items()})[0x20]


def conv_cfg_default() -> int:
    """A 1x1 stride-1 unpadded kernel, Ox = Oy = 1: what H14 leaves out."""
    one = dict(Kw=1, Kh=1, Sx=1, Sy=1, Px=0, Py=0, Ox=1, Oy=1)
    return map14.REGISTERS.encode({f"common.ConvCfg.{k}": v for k, v in one.items()})[0x20]


def l2(t: Task13, out: Writes) -> None:
    base, b13 = map14.BLOCK_BASES["l2"], map13.BLOCK_BASES["l2"]

    def word(offset):
        return t.state.get(b13 + offset, 0)

    def copy(offset, default=None):
        _put(out, base + offset, word(offset), default)

    copy(0x00, default=0)   # L2Cfg
    copy(0x04)              # SourceCfg
    copy(0x08, default=0)   # SourceBase
    reads_source = t("l2.SourceCfg.SourceType") != 0
    if reads_source or t("common.Cin.Cin") > 1:  # not in layer_norm task 1 (Cin 1, no source)
        copy(0x0C)          # SourceChannelStride
    if reads_source:        # row, depth and group strides only when the source is read
        for offset in (0x10, 0x14, 0x18):
            copy(offset)
    if t("l2.SourceCfg.Bit24"):  # second source by DMA: all its L2 staging words
        for offset in (0x1C, 0x20, 0x24, 0x28, 0x2C):
            copy(offset)
    else:                   # second source already in L2
        copy(0x1C, default=0)
        strided(out, base + 0x20, word(0x20), word(0x24), word(0x28))
    copy(0x30)              # ResultCfg
    copy(0x34, default=0)   # ResultBase
    strided(out, base + 0x38, word(0x38), word(0x3C), word(0x40))


def strided(out: Writes, address: int, channel: int, row: int, depth: int) -> None:
    """An L2 channel/row stride pair is written only where it differs from the depth stride that
    follows them (15/16 result and second-source triples, census §4.2; the miss is layer_norm
    task 0's row stride); the depth stride itself never is."""
    if channel != depth:
        out[address] = channel
    if row != depth:
        out[address + 4] = row


def pe(t: Task13, out: Writes) -> None:
    base = map14.BLOCK_BASES["pe"]
    _put(out, base + 0x00, t.word("pe.Cfg"), default=0)
    # Scale 1.0 / bias 0 and the all-zero words of NE tasks are both defaults.
    for offset, name, one in ((0x04, "BiasScale", 0x3C000000), (0x08, "PreScale", 0x3C000000),
                              (0x0C, "FinalScale", 0x3F800000)):
        value = t.word(f"pe.{name}")
        if value not in (0, one):
            out[base + offset] = value


def ne(t: Task13, out: Writes) -> None:
    base = map14.BLOCK_BASES["ne"]
    kernel_cfg = t.word("ne.KernelCfg")
    if t.lut:
        kernel_cfg |= 1 << 16  # census §4.4: LUT tasks 0x10082 where H13 has 0x82
    if t.ne and kernel_cfg not in (0x80, 0x82):
        out[base + 0x00] = kernel_cfg
    _put(out, base + 0x04, t.word("ne.MACCfg"), default=0x100000)
    _put(out, base + 0x08, t.word("ne.MatrixVectorBias"), default=0)
    _put(out, base + 0x0C, t.word("ne.AccBias"), default=0)
    _put(out, base + 0x10, t.word("ne.PostScale"), default=0)


def dma_config(h13_config: int, tid: int) -> int:
    """An H13 TileDMA source config -> the H14 word: En, the cache hint's top three bits moved
    down two, DataSetId 0x0E, the task index in bits 23:16 (0x10E21 in task 1; census §4.5)."""
    hint = (h13_config >> 7) & 0x7
    return (h13_config & 1) | hint << 5 | 0xE << 8 | tid << 16


def config_ext(h13_config: int) -> int:
    """Bits 17:10 of the H13 config (CacheHintReuse / NoReuse): 0xCE, 0xEE (census §4.5)."""
    return (h13_config >> 10) & 0xFF


def tile_dma_src(t: Task13, out: Writes, slots: dict[int, int]) -> None:
    base = map14.BLOCK_BASES["tile_dma_src"]
    cfg1, cfg2 = t.word("tile_dma_src.DMAConfig"), t.word("tile_dma_src.Src2DMAConfig")
    sources = []
    if t.src1:
        sources.append((0x00, cfg1, 0x10, "", t.head("RBase0")))
    if t.src2:
        sources.append((0x04, cfg2, 0x28, "Src2", t.head("RBase1")))
    for cfg_at, cfg, addr_at, prefix, slot in sources:
        out[base + cfg_at] = dma_config(cfg, t.tid)
        out[base + 0x08 + cfg_at] = config_ext(cfg)
        out[base + addr_at] = t.word(f"tile_dma_src.{prefix}BaseAddr")
        out[base + addr_at + 4] = 0
        slots[base + addr_at] = slot
        row = "RowStride" if not prefix else "Src2RowStride"
        plane = "PlaneStride" if not prefix else "Src2PlaneStride"
        depth = "DepthStride" if not prefix else "Src2DepthStride"
        dma_strides(out, base + addr_at + 8, t.rows_in, t("common.Cin.Cin"),
                    *(t.word(f"tile_dma_src.{name}") for name in (row, plane, depth)))
    if t.src1:
        out[base + 0x50] = t.word("tile_dma_src.Fmt")
    if t.src2:
        # H14 prints the second source's format as the first's (0x01002031 for H13 0x2030).
        out[base + 0x54] = t.word("tile_dma_src.Src2Fmt") | 0x01000001


def dma_strides(out: Writes, address: int, rows: int, channels: int, row: int, plane: int,
                depth: int) -> None:
    """A TileDMA row (plane) stride is written only when there is more than one row (channel) and
    it differs from the next outer stride (census §4.5/4.6: reduce_sum's output rows, the matmul
    outputs' planes); depth and group strides never are."""
    if rows > 1 and row != plane:
        out[address] = row
    if channels > 1 and plane != depth:
        out[address + 4] = plane


def tile_dma_dst(t: Task13, out: Writes, slots: dict[int, int]) -> None:
    if not t.dst:
        return
    base = map14.BLOCK_BASES["tile_dma_dst"]
    out[base + 0x00] = 0x01000E31 | t.tid << 16  # census §4.6: 0x01010E31 in task 1
    out[base + 0x08] = t.word("tile_dma_dst.BaseAddr")
    out[base + 0x0C] = 0
    slots[base + 0x08] = t.head("WBase")
    dma_strides(out, base + 0x10, t.rows_out, t("common.Cout.Cout"),
                *(t.word(f"tile_dma_dst.{name}") for name in ("RowStride", "PlaneStride",
                                                               "DepthStride")))
    out[base + 0x20] = t.word("tile_dma_dst.Fmt")


def kernel_dma(t: Task13, out: Writes, slots: dict[int, int], lut_offset: int | None,
               surfaces: dict[int, int]) -> None:
    base = map14.BLOCK_BASES["kernel_dma_src"]
    # MasterConfig (census §4.7): bit 7 whenever the result leaves by DMA (0x80 alone in PE tasks,
    # absent in every L2-result task); with a kernel fetch also 0x240, H13's sparse bit 5 and the
    # task index + 1 in bits 23:16 (0x102C0 task 0, 0x202C0 / 0x20240 task 1, 0x302C0 task 2).
    master = 0x80 if t.dst else 0
    if t.kernel:
        sparse = t("kernel_dma_src.MasterConfig.KernelSparseFmt") << 5
        master |= 0x240 | sparse | (t.tid + 1) << 16
    _put(out, base + 0x00, master, default=0)
    if not t.kernel:
        return
    # Coefficient channels: En only when weights come through them; the task index in 23:16.
    channel = (0xE00 if t.runtime_weights else 0) | 0x20 | t.tid << 16
    enabled = channel | int(t.weights)
    for i in range(16):
        _put(out, base + 0x18 + 4 * i, enabled, default=0x20)
    if t.lut:
        for offset in (0xD8, 0xDC, 0xE0):
            _put(out, base + offset, channel, default=0x20)
        out[base + 0xE4] = channel | 1
        for offset in (0xF4, 0x100):
            out[base + offset] = lut_offset
            slots[base + offset] = t.head("KBase0")
        out[base + 0x104] = 0
        out[base + 0x114] = LUT_BYTES
        return
    if t.runtime_weights:
        # The kernel surface's bytes: 0x10000 for env_mm_r2rr's 16x2048 x, 0x2000 for r3rr's
        # 64x64 (census §4.7 0x1914).
        out[base + 0x14] = surface_bytes(t, surfaces)
    # Channel 0's base becomes the 64-bit kernel address (Lo/Hi, tagged with the KBase0 slot);
    # channels 1-15 keep their H13 bases, all 16 their sizes (census §4.7).
    out[base + 0x08] = t.word("kernel_dma_src.CoeffBaseAddr[0]")
    out[base + 0x0C] = 0
    slots[base + 0x08] = t.head("KBase0")
    for i in range(16):
        if i:
            out[base + 0x58 + 4 * i] = t.word(f"kernel_dma_src.CoeffBaseAddr[{i}]")
        out[base + 0x98 + 4 * i] = t.word(f"kernel_dma_src.CoeffBfrSize[{i}]")


def surface_bytes(t: Task13, surfaces: dict[int, int]) -> int:
    slot = t.head("KBase0")
    if slot not in surfaces:
        raise UnsupportedError(f"task {t.index}: no tensor with a size is bound to kernel BAR "
                               f"slot {slot}", where="KernelDMA")
    return surfaces[slot]


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------

def h14_tasks(program13: Program) -> list[TaskPlan]:
    """The H14 header, register writes and address slots of every task of `program13`."""
    tasks = h13_tasks(program13)
    offsets = lut_offsets(tasks)
    surfaces = {x.slot: x.total_bytes for x in program13.tensors
                if x.slot is not None and x.total_bytes is not None}
    plans = []
    for t in tasks:
        writes, slots = {}, {}
        for rule in (common, l2, pe, ne):
            rule(t, writes)
        tile_dma_src(t, writes, slots)
        tile_dma_dst(t, writes, slots)
        kernel_dma(t, writes, slots, offsets.get(t.index), surfaces)
        plans.append(TaskPlan(header(t), dict(sorted(writes.items())), slots))
    return plans


def lut_offsets(tasks: list[Task13]) -> dict[int, int]:
    """Task index -> byte offset of its table in the H14 constant section (tables back to back
    in task order: pow's two tables at 0 and 0x80, census §1 and binary_pow task 2)."""
    luts = [t.index for t in tasks if t.lut]
    if luts and any(t.weights for t in tasks):
        raise UnsupportedError("no H14 evidence for a program with both LUTs and weights "
                               "(where would the tables go in the constant section?)",
                               where=f"task {luts[0]}")
    return {index: LUT_BYTES * k for k, index in enumerate(luts)}


def h14_constants(program13: Program) -> bytes:
    """The H14 constant section: H13's, except that a LUT program stores each bare 128-byte table
    once (H13 repeats it for each of 2^ActiveNE coefficient channels; census §1)."""
    tasks = h13_tasks(program13)
    luts = [t for t in tasks if t.lut]
    if not luts:
        return bytes(program13.constants)
    lut_offsets(tasks)  # refuses a program that also has weights
    tables = []
    for t in luts:
        start = t.word("kernel_dma_src.CoeffBaseAddr[0]")  # the table's first copy
        table = bytes(program13.constants[start:start + LUT_BYTES])
        if len(table) != LUT_BYTES:
            raise UnsupportedError(f"task {t.index}: LUT at {start:#x} lies past the constant "
                                   f"section ({len(program13.constants)} bytes)",
                                   where=program13.name)
        tables.append(table)
    return b"".join(tables)
