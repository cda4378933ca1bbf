"""H14 (M2) programs as the H13 programs the simulator runs: each task's header and register writes
re-encoded as the H13 task Apple's compiler makes for the same MIL.

Apple's H14 programs have the task structure, L2 layout, strides and weights of the H13 programs
for the same MIL; only the encoding differs (h14-register-census.md §1, every H14 task paired
with its H13 twin).  So an H14 task runs as an H13 task whose register state is rebuilt here:

* **same registers** - every H14 register the two maps (`target.maps.h13` / `h14`) give the same
  name is copied to its H13 address: Common before and after ConvCfg (moved one word), L2, PE
  and NE (rebased), the TileDMA strides and formats, the coefficient bases and sizes;
* **re-encoded words** - ConvCfg, Cfg bit 29, KernelCfg bit 16, the TileDMA / KernelDMA configs,
  64-bit buffer addresses and the LUT channel - by the rules below, each citing the census;
* **header** - the H13 BAR-slot fields (RBase0/RBE0, RBase1/RBE1, WBase/WBE, KBase0/KBE0) come
  from the record tags (bits 30:21 = 0x100 + 4 x slot on the record writing a buffer address,
  census §3, 57/57 equal to the H13 twin's slot), ENE and the event words from the H14 header;
* **registers a task leaves out** hold their reset values: the H13 twin's value where H14 omits a
  register (census §4 "H13 values ... where H14 omits it").  They do not carry over from the
  previous task.  Of the 37 same-named registers an earlier task of a paired chain writes and a
  later one leaves out, the H13 twin holds the reset value in 29 - binary_minimum#1 NE.MACCfg
  0x100000 and PostScale 0 after task 0's 0x101C0C / 0x3C00 (a PE task with an NE MACCfg),
  layer_norm#2 PE.FinalScale 1.0 after task 1's 1/512, GroupConvCfg 0x10001 after 0x14001 - and
  in the other 8 a value the task never uses (source strides of a dimension of one element,
  ResultCfg bits beside ResultType 0).  The TileDMASrc enable is not carried either (layer_norm#1
  fetches nothing after task 0's 0xEE1).  So each task is translated from its own writes, and
  every H13 register gets a value (tests/sim/test_sim_h14.py checks all 37 against the twins).

A written H14 word no rule covers, or a value a rule does not know, raises SimulationError
naming the task, the register and the value; a stride H14 leaves out that the task would step
(a dimension of more than one element) also does.  The translated state then passes the
simulator's own evidence checks (`evidence`) unchanged.
"""

from __future__ import annotations

from coreml2hwx.errors import SimulationError
from coreml2hwx.program import Program, Record, Task
from coreml2hwx.target.maps import h13 as map13
from coreml2hwx.target.maps import h14 as map14

R13, R14 = map13.REGISTERS, map14.REGISTERS

# H14 register names that differ from the H13 register of the same words (maps.h14 renames them).
RENAMED = {("tile_dma_src", f"Src1{name}"): name
           for name in ("RowStride", "PlaneStride", "DepthStride", "GroupStride", "Fmt")}
# Same-named registers whose H14 encoding differs: translated by the rules below, never copied.
RE_ENCODED = {("common", "ConvCfg"), ("common", "Cfg"), ("ne", "KernelCfg"),
              ("tile_dma_src", "Src2DMAConfig"), ("tile_dma_src", "Src2Fmt"),
              ("tile_dma_dst", "DMAConfig"), ("kernel_dma_src", "MasterConfig"),
              *(("kernel_dma_src", f"CoeffDMAConfig[{i}]") for i in range(16))}

ADDRESS_TAG = 0x100  # tag = 0x100 + 4 x slot (census §3)
FILLER = 0xDEAD  # TileDMADst 0x1524: a filler that keeps a task off a 64-byte line end (records)

# Reset values of the H13 registers an H14 task leaves out (h13 paths): the H13 twin's value where
# H14 omits the register, census §4 per register ("H13 values in paired first/single tasks where
# H14 omits it"); registers H14 never writes hold the one value every H13 task holds (h13-census).
DEFAULTS = {
    **map14.RESET,  # the registers H14 writes with H13's words: one table with the encoder
    "common.ConvCfg3d": 0x2041,  # never written on H14; 0x2041 in every H13 task
    **{f"l2.{name}": 0 for name in (  # §4.2: 0 where omitted (the strides: see STRIDES)
        "L2Cfg", "SourceBase", "SourceChannelStride", "SourceRowStride", "Src1DepthStride",
        "Src1GroupStride", "Src2Base", "Src2ChannelStride", "Src2RowStride", "Src2DepthStride",
        "Src2GroupStride", "ResultBase", "ConvResultChannelStride", "ConvResultRowStride",
        "ResultDepthStride", "ResultGroupStride")},
    # ResultCfg: written by 37 of 38 tasks; the one leaving it out (layer_norm#1, the result
    # stays in L2) has 0x140 on its H13 twin.
    "l2.ResultCfg": 0x140,
    # TileDMASrc: the idle configs (§4.5 0x1104: 0x8880 (20); En is the only field that acts).
    "tile_dma_src.DMAConfig": 0x8880, "tile_dma_src.Src2DMAConfig": 0x8880,
    "tile_dma_src.BaseAddr": 0, "tile_dma_src.Src2BaseAddr": 0,
    # DRAM strides: 0 where left out (§4.5 0x1130/0x1134: 0x0 (20); §4.6 0x1510/0x1514: 0x0 (6));
    # `TaskTranslation.strides` stops a task that would step one of them.
    **{f"tile_dma_{side}.{prefix}{name}Stride": 0
       for side, prefix in (("src", ""), ("src", "Src2"), ("dst", ""))
       for name in ("Row", "Plane", "Depth", "Group")},
    "tile_dma_src.Fmt": 0x01000000, "tile_dma_src.Src2Fmt": 0,  # pow#2 / §4.5 0x1154: 0x0 (20)
    "tile_dma_src.Unk40": 0x100,  # never written on H14; 0x100 in every new-compiler H13 task
    **{f"tile_dma_src.{name}": 0 for name in (
        "Unk30", "Unk34", "Unk44", "Unk48", "Unk4C", "Unk60", "Unk64", "Unk68", "Unk6C",
        *(f"PixelOffset[{i}]" for i in range(4)))},
    "tile_dma_dst.DMAConfig": 0xC0, "tile_dma_dst.Fmt": 0x01000000,  # §4.6: 0xc0 / 0x1000000 (6)
    "tile_dma_dst.BaseAddr": 0,
    "kernel_dma_src.MasterConfig": 0, "kernel_dma_src.Unk04": 0,  # §4.7 0x1900: 0x0 (4)
    **{f"kernel_dma_src.CoeffDMAConfig[{i}]": 0x80 for i in range(16)},  # §4.7: 0x80 (11)
    **{f"kernel_dma_src.CoeffBaseAddr[{i}]": 0 for i in range(16)},  # §4.7: 0x0 (5)
    **{f"kernel_dma_src.CoeffBfrSize[{i}]": 0x80 for i in range(16)},  # §4.7: 0x80
    # The H13 aux channels: 0x80 / 0 / 0x40 in every H13 oracle task (ane-facts §2.7.7).
    **{f"kernel_dma_src.AuxDMAConfig[{i}]": 0x80 for i in range(4)},
    **{f"kernel_dma_src.AuxBase[{i}]": 0 for i in range(4)},
    **{f"kernel_dma_src.AuxSize[{i}]": 0x40 for i in range(4)},
}
# PE and NE words whose reset value depends on the engine (§4.3: the H13 PE tasks hold 1.0 where
# H14 omits BiasScale/PreScale/FinalScale, NE tasks 0; §4.4: KernelCfg 0x82 on NE tasks, 0x80 on
# PE tasks).
PE_DEFAULTS = {"pe.BiasScale": 0x3C000000, "pe.PreScale": 0x3C000000,
               "pe.FinalScale": 0x3F800000, "ne.KernelCfg": 0x80}
NE_DEFAULTS = {"pe.BiasScale": 0, "pe.PreScale": 0, "pe.FinalScale": 0, "ne.KernelCfg": 0x82}
PE_REDUCTIONS = (5, 6)  # PE Cfg.Bits6_4 of the reductions (`sim.pe`)


def address13(path: str) -> int:
    block, _, name = path.partition(".")
    found = R13.block(block)
    return found.base + found.register(name).offset


def address14(path: str) -> int:
    block, _, name = path.partition(".")
    found = R14.block(block)
    return found.base + found.register(name).offset


def _same_registers() -> dict[int, int]:
    """H14 address -> H13 address of every register the maps give the same name."""
    out = {}
    for block in R14.blocks:
        b13 = R13.block(block.name)
        names13 = {r.name for r in b13.registers}
        for reg in block.registers:
            name = RENAMED.get((block.name, reg.name), reg.name)
            if name in names13 and (block.name, reg.name) not in RE_ENCODED:
                out[block.base + reg.offset] = b13.base + b13.register(name).offset
    return out


SAME = _same_registers()


class TaskTranslation:
    """One H14 task read as its H13 twin: `header` (10 H13 words) and `state` (every register)."""

    def __init__(self, index: int, task: Task, count: int):
        self.index, self.count = index, count
        self.writes = task.writes()
        self.header14 = list(task.header) + list(task.extension)
        self.tags = {r.address: r.tag for r in task.records if r.tag}
        self.used: set[int] = set()
        self.given: set[int] = set()  # H13 addresses set from an H14 word (not a reset value)
        self.state: dict[int, int] = {}
        self.ne = map14.HEADER.get(self.header14, "ENE") > 0
        for path, value in {**DEFAULTS, **(NE_DEFAULTS if self.ne else PE_DEFAULTS)}.items():
            self.state[address13(path)] = value

    # -- reading the H14 task ---------------------------------------------------------------------
    def fail(self, message: str) -> SimulationError:
        return SimulationError(f"H14 -> H13: {message}", where=f"task {self.index}")

    def word14(self, path: str) -> int | None:
        """The H14 word at `block.Register` (None when the task does not write it)."""
        address = address14(path)
        self.used.add(address)
        return self.writes.get(address)

    def field14(self, path: str, default=None):
        address, f = R14.field(path)
        self.used.add(address)
        if address not in self.writes:
            return default
        return f.value(f.bits(self.writes[address]))

    def put(self, path: str, value: int) -> None:
        address = address13(path)
        self.state[address] = value & 0xFFFFFFFF
        self.given.add(address)

    def get13(self, path: str):
        return R13.get(self.state, path)

    def slot(self, path: str) -> int | None:
        """The BAR slot of the record writing the buffer address `path` (None: not written)."""
        address = address14(path)
        if address not in self.writes:
            return None
        tag = self.tags.get(address)
        if tag is None or tag & ~0x7C != ADDRESS_TAG:
            shown = "no tag" if tag is None else f"tag {tag:#x}"
            raise self.fail(f"{path} = {self.writes[address]:#x} is written by a record with "
                            f"{shown}, not a BAR-slot tag 0x100 + 4 x slot (census §3)")
        return (tag - ADDRESS_TAG) >> 2

    def only_bits(self, path: str, value: int, allowed: int, why: str) -> None:
        if value & ~allowed:
            raise self.fail(f"{path} = {value:#x}: bits {value & ~allowed:#x} outside the known "
                            f"encoding ({why})")

    def low_half(self, lo: str, hi: str) -> int | None:
        """A 64-bit buffer offset written as Lo/Hi words: the Lo word (Hi must be 0)."""
        value, high = self.word14(lo), self.word14(hi)
        if high:
            raise self.fail(f"{hi} = {high:#x}: an offset past 4 GiB has no H13 encoding")
        return value

    # -- the translation --------------------------------------------------------------------------
    def run(self) -> "TaskTranslation":
        for a14, a13 in SAME.items():
            if a14 in self.writes:
                self.used.add(a14)
                self.state[a13] = self.writes[a14]
                self.given.add(a13)
        self.common()
        self.engines()
        self.tile_dma_src()
        self.tile_dma_dst()
        self.kernel_dma()
        self.leftovers()
        self.strides()
        self.header = self.h13_header()
        return self

    def common(self) -> None:
        # ConvCfg: OCGSize alone at 0x1C, the kernel/stride/pad fields at 0x20 with 6-bit Kw/Kh
        # (census §4.1, 3/3 pairs after re-packing); left out: a 1x1 stride-1 kernel, Ox = Oy = 1
        # (H13 0x5000A021, the 19 omitting tasks).  OCGSize left out is 0 in PE tasks (PE tasks
        # never write it; every H13 twin has 0) and 3 in NE tasks: upstream
        # conv_known_k1_c64_n128_s16_st1_g1_bias0_same, conv_probe_k1_c512_n512_s16_st2_g4_bias0_
        # same and env_conv_k3_c128_n128_s16_st2_g1_bias1 leave 0x1C out where H13 has OCGSize 3
        # (8-lane weight planes), and the NE tasks that write it write 0, 2 and 4 (census §4.1).
        ocg = self.word14("common.OCGCfg")
        if ocg is None:
            ocg = map14.NE_OCG_SIZE_RESET if self.ne else 0
        self.only_bits("common.OCGCfg", ocg, 0x7, "OCGSize alone")
        conv = {"OCGSize": ocg}
        for name, default in map14.CONV_CFG_RESET.items():
            conv[name] = self.field14(f"common.ConvCfg.{name}", default)
        word = self.word14("common.ConvCfg")
        if word is not None and word != R14.block("common").register("ConvCfg").encode(
                {k: v for k, v in conv.items() if k != "OCGSize"}):
            raise self.fail(f"common.ConvCfg = {word:#x}: bits outside Kw/Kh/Sx/Sy/Px/Py/Ox/Oy")
        for name in ("Kw", "Kh"):
            if conv[name] > 31:
                raise self.fail(f"common.ConvCfg.{name} = {conv[name]}: H13 holds 5 bits")
        self.put("common.ConvCfg", R13.block("common").register("ConvCfg").encode(conv))
        # Cfg: H13's word, plus bit 29 (census §4.1, every pair where it appears): in runtime x
        # runtime matmuls (env_mm_r2rr 0x20200001 vs 0x200001) and in the NE bypass tasks that
        # leave a channel-dense result (Bit28) in L2 (real_div#0 0x30222201, x+gelu(x)#0
        # 0x30200001 vs 0x10180001).  H13 has no such bit.
        cfg = self.word14("common.Cfg")
        if cfg is not None:
            if cfg >> 29 & 1:
                if not (self.runtime_kernel or self.dense_bypass):
                    raise self.fail(f"common.Cfg = {cfg:#x}: bit 29 outside a runtime-kernel or "
                                    "channel-dense bypass task (census §4.1)")
                cfg &= ~(1 << 29)
            self.put("common.Cfg", cfg)
        # ChCfg (never written on H14): fp16 in and out, and the second operand's format where
        # the PE takes one: Src2InFmt != 0 exactly when PE.Cfg.SecSrc != 0 in all 100 H13 oracle
        # tasks (h13 census: ChCfg 0x2A iff a second operand, 98/98).
        two = R13.get(self.state, "pe.Cfg.SecSrc") != 0
        self.put("common.ChCfg", 0x2A if two else 0x22)

    @property
    def lut(self) -> bool:
        """An NE task whose MACCfg.NonlinearMode is 2: a lookup table."""
        macc = self.writes.get(address14("ne.MACCfg"), DEFAULTS["ne.MACCfg"])
        return self.ne and R14.get({address14("ne.MACCfg"): macc}, "ne.MACCfg.NonlinearMode") == 2

    @property
    def runtime_kernel(self) -> bool:
        """The kernel comes from a tensor, not the constant section (slot 1)."""
        slot = self.slot("kernel_dma_src.Unk08")
        return slot is not None and slot != 1

    @property
    def dense_bypass(self) -> bool:
        """An NE bypass task (MACCfg.OpMode 4) writing its result channel-dense (Cfg.Bit28)."""
        macc = self.writes.get(address14("ne.MACCfg"), DEFAULTS["ne.MACCfg"])
        cfg = self.writes.get(address14("common.Cfg"), DEFAULTS["common.Cfg"])
        return (self.ne and R14.get({address14("ne.MACCfg"): macc}, "ne.MACCfg.OpMode") == 4
                and R14.get({address14("common.Cfg"): cfg}, "common.Cfg.Bit28"))

    def engines(self) -> None:
        # KernelCfg: H13's word, plus bit 16 in LUT tasks (census §4.4: 0x10082 where H13 has
        # 0x82, 7/7 LUT pairs); a runtime kernel has bit 16 on both (env_mm_r2rr 0x10082).
        kernel_cfg = self.word14("ne.KernelCfg")
        if kernel_cfg is not None:
            if self.lut:
                if not kernel_cfg >> 16 & 1:
                    raise self.fail(f"ne.KernelCfg = {kernel_cfg:#x}: a LUT task without bit 16")
                kernel_cfg &= ~(1 << 16)
            self.put("ne.KernelCfg", kernel_cfg)
        # GroupConvCfg of the same channel-dense bypass tasks: UnicastCin 4 / 8 on H14 where the
        # H13 twin has 1 (census §4.1: real_div#0 0x44001, x+gelu(x)#0 0x84001 vs 0x14001, 2/2);
        # an H13 bypass task combines no channels.
        if self.dense_bypass and self.get13("common.GroupConvCfg.UnicastEn"):
            address = address13("common.GroupConvCfg")
            self.put("common.GroupConvCfg", R13.encode(
                {"common.GroupConvCfg.UnicastCin": 1}, {address: self.state[address]})[address])

    def tile_dma_src(self) -> None:
        # Source configs (census §4.5): H14 0xE21 / 0xE20 + ext 0xCE are H13's 0x33881 / 0x33880:
        # En in bit 0, the cache hint's top three bits moved from 9:7 to 7:5, bits 17:10 in the
        # extension word; DataSetId 0x0E in 15:8 and the task index in 23:16 are new.
        for prefix, h13_name in (("Src1", "DMAConfig"), ("Src2", "Src2DMAConfig")):
            path = f"tile_dma_src.{prefix}DMAConfig"
            cfg, ext = self.word14(path), self.word14(f"tile_dma_src.{prefix}ConfigExt")
            if cfg is None:
                if ext is not None:
                    raise self.fail(f"tile_dma_src.{prefix}ConfigExt = {ext:#x} without a config")
                continue
            self.only_bits(path, cfg, 0xFFFFE1, "En, hint 7:5, DataSetId 15:8, task 23:16")
            if cfg >> 8 & 0xFF != 0x0E:
                raise self.fail(f"{path} = {cfg:#x}: DataSetId {cfg >> 8 & 0xFF:#x}, only 0x0E "
                                "is known (census §4.5)")
            self.only_bits(f"tile_dma_src.{prefix}ConfigExt", ext or 0, 0xFF, "bits 17:10")
            self.put(f"tile_dma_src.{h13_name}", cfg & 1 | (cfg >> 5 & 7) << 7 | (ext or 0) << 10)
        for prefix, h13_name in (("Src1", "BaseAddr"), ("Src2", "Src2BaseAddr")):
            offset = self.low_half(f"tile_dma_src.{prefix}BaseAddrLo",
                                   f"tile_dma_src.{prefix}BaseAddrHi")
            if offset is not None:
                self.put(f"tile_dma_src.{h13_name}", offset)
        # Src2Fmt: H14 writes the first source's word 0x01002031 where H13 has 0x2030 (census
        # §4.5 0x1154, 2/2 pairs).
        fmt = self.word14("tile_dma_src.Src2Fmt")
        if fmt is not None:
            if fmt != 0x01002031:
                raise self.fail(f"tile_dma_src.Src2Fmt = {fmt:#x}: only 0x01002031 is known")
            self.put("tile_dma_src.Src2Fmt", 0x2030)

    def tile_dma_dst(self) -> None:
        # DMAConfig (census §4.6): H14 0x01000E31 is H13's 0x040000C1: En in bit 0, the L2
        # buffering bit 24 (H13 bit 26), cache-hint bits 7:4; DataSetId 0x0E and the task index
        # (23:16) are new.  Left out: 0xC0, the result stays in L2 (6/6).
        cfg = self.word14("tile_dma_dst.DMAConfig")
        if cfg is not None:
            self.only_bits("tile_dma_dst.DMAConfig", cfg, 0x1FFFFF1, "En, hints, 0x0E, task")
            if cfg >> 8 & 0xFF != 0x0E:
                raise self.fail(f"tile_dma_dst.DMAConfig = {cfg:#x}: DataSetId is not 0x0E")
            self.put("tile_dma_dst.DMAConfig", cfg & 1 | 0xC0 | (cfg >> 24 & 1) << 26)
        offset = self.low_half("tile_dma_dst.BaseAddrLo", "tile_dma_dst.BaseAddrHi")
        if offset is not None:
            self.put("tile_dma_dst.BaseAddr", offset)
        filler = self.word14("tile_dma_dst.Unk24")
        if filler not in (None, FILLER):
            raise self.fail(f"tile_dma_dst.Unk24 = {filler:#x}: only the 0xDEAD filler is known")

    def kernel_dma(self) -> None:
        # MasterConfig (census §4.7): H13's bits 6 (coefficients fetched) and 5 (sparse weights)
        # stay; bit 7 (the result leaves by DMA), bit 9 and the task index + 1 in 23:16 are new.
        master = self.word14("kernel_dma_src.MasterConfig")
        if master is not None:
            self.only_bits("kernel_dma_src.MasterConfig", master, 0xFF02E0,
                           "0x80 / 0x102C0 / 0x102E0 / 0x20240 ...")
            self.put("kernel_dma_src.MasterConfig", master & 0x60)
        # Coefficient channels: En in bit 0 of the new configs (0x21, 0xE21, 0x10021, 0x20E41:
        # written only in weight tasks, census §4.7); H13's are 0x81 / 0x80.
        for i in range(16):
            cfg = self.word14(f"kernel_dma_src.CoeffDMAConfig[{i}]")
            if cfg is not None:
                self.only_bits(f"kernel_dma_src.CoeffDMAConfig[{i}]", cfg, 0xFFFFE1,
                               "En, hints, task index")
                self.put(f"kernel_dma_src.CoeffDMAConfig[{i}]", 0x80 | cfg & 1)
        # Channel 0's base is the 64-bit kernel address (Lo/Hi at 0x1908, tagged with the KBase0
        # slot); CoeffBaseAddr[0] itself is never written (census §4.7).
        kernel = self.low_half("kernel_dma_src.Unk08", "kernel_dma_src.Unk0C")
        if kernel is not None:
            self.put("kernel_dma_src.CoeffBaseAddr[0]", kernel)
        # The runtime kernel surface's byte size (0x1914: 0x2000 / 0x10000, only in runtime x
        # runtime matmuls); the channel sizes say what is fetched.
        self.word14("kernel_dma_src.Unk14")
        self.lut_channel()

    def lut_channel(self) -> None:
        # The LUT comes through its own channel (census §4.7: config 0x19E4 = 0x21, the table's
        # offset at 0x19F4 and 0x1A00/0x1A04, tagged slot 1, size 0x1A14 = 0x80) where H13 uses
        # coefficient channel 0 (CoeffBaseAddr[0], CoeffBfrSize[0] = 0x80): it becomes channel 0.
        cfg = self.word14("kernel_dma_src.LutDMAConfig")
        for name in ("UnkD8", "UnkDC", "UnkE0"):  # 0x10020 / 0x20020 in pow: configs, En clear
            word = self.word14(f"kernel_dma_src.{name}")
            if word is not None and word & 1:
                raise self.fail(f"kernel_dma_src.{name} = {word:#x}: an enabled extra channel")
        if cfg is None:
            return
        self.only_bits("kernel_dma_src.LutDMAConfig", cfg, 0xFFFF21, "0x21 / 0x10021 / 0x20021")
        bases = {self.word14("kernel_dma_src.LutBaseAddr0"),
                 self.low_half("kernel_dma_src.LutBaseAddr1", "kernel_dma_src.Unk104")}
        size = self.word14("kernel_dma_src.LutBfrSize")
        if len(bases) != 1 or None in bases or size is None:
            raise self.fail(f"LUT channel: table offsets {sorted(bases, key=str)} and size "
                            f"{size}: the census shows one offset twice and a size")
        if any(self.writes.get(address14(f"kernel_dma_src.CoeffDMAConfig[{i}]"), 0) & 1
               for i in range(16)):
            raise self.fail("a LUT and enabled coefficient channels in one task: never seen")
        self.put("kernel_dma_src.CoeffDMAConfig[0]", 0x80 | cfg & 1)
        self.put("kernel_dma_src.CoeffBaseAddr[0]", bases.pop())
        self.put("kernel_dma_src.CoeffBfrSize[0]", size)

    def leftovers(self) -> None:
        for address in sorted(set(self.writes) - self.used):
            found = R14.lookup(address)
            name = f"{found[0].name}.{found[1].name}" if found else f"register {address:#06x}"
            raise self.fail(f"{name} = {self.writes[address]:#x}: no H13 counterpart and no "
                            "translation rule")

    # -- strides H14 leaves out -------------------------------------------------------------------
    def strides(self) -> None:
        """A DRAM row (plane) stride is written only when the task has more than one row (channel)
        and it differs from the next outer stride (census §4.5/§4.6); depth and group strides
        never are.  So a missing row stride is the plane stride; any other missing stride the
        task would step has no value, and stops the run."""
        f = self.get13
        groups, depth = f("common.GroupConvCfg.NumGroups"), f("common.InDepth.Depth")
        ins = (f("common.Cin.Cin"), f("common.InDim.Hin"))
        outs = self.result_counts()
        src1 = f("tile_dma_src.DMAConfig.En") and \
            self.slot("tile_dma_src.Src1BaseAddrLo") is not None
        src2 = self.slot("tile_dma_src.Src2BaseAddrLo") is not None
        dst = f("tile_dma_dst.DMAConfig.En")
        if src1:
            self.dram("tile_dma_src.", ("RowStride", "PlaneStride", "DepthStride", "GroupStride"),
                      ins, depth, groups)
        if src2:
            self.dram("tile_dma_src.Src2", ("RowStride", "PlaneStride", "DepthStride",
                                            "GroupStride"), ins, depth, groups)
        if dst:
            self.dram("tile_dma_dst.", ("RowStride", "PlaneStride", "DepthStride", "GroupStride"),
                      outs, self.result_depth(), groups)
        # L2 strides left out hold H13's reset value 0, also where the twin has 0x10-0x800
        # (census §4.2) - in those tasks the dimension has one element.  A result leaving by DMA
        # has 0 there on H13 too (binary_add ...): no later task reads it from L2.
        l2 = list(zip(("SourceChannelStride", "SourceRowStride"), self.source_counts(1)))
        if f("common.ChCfg.Src2InFmt"):
            l2 += zip(("Src2ChannelStride", "Src2RowStride"), self.source_counts(2))
        if not dst:
            l2 += zip(("ConvResultChannelStride", "ConvResultRowStride"), outs)
        for name, count in l2:
            if address13(f"l2.{name}") not in self.given and count > 1:
                raise self.fail(f"l2.{name} is left out, yet the task steps it {count} times: "
                                "no rule gives its value")

    def source_counts(self, which: int) -> tuple[int, int]:
        """How many steps L2 source `which`'s channel and row strides take (`machine.Task.source1`
        / `source2`: Common.Unk30 broadcasts and channel-dense reads; PE rows read 2 rows)."""
        f = self.get13
        flags = f("common.Unk30.Value")
        bcast_w, bcast_h, bcast_c, dense = ((0x1, 0x2, 0x8, 0x100) if which == 1 else
                                            (0x10, 0x20, 0x80, 0x200))
        channels = 1 if flags & bcast_c else f("common.Cin.Cin")
        width = 1 if flags & bcast_w else f("common.InDim.Win")
        rows = 1 if flags & bcast_h else f("common.InDim.Hin")
        if which == 2 and not self.ne and f("common.Cfg.Bits6_4") == 4:
            width, rows = 1, 2  # a (bias, scale) pair per channel
        return (width if flags & dense else channels), rows  # dense: the stride steps pixels

    def result_counts(self) -> tuple[int, int]:
        """How many steps the result's channel and row strides take (`machine.Task.result`): a
        channel-dense NE result steps pixels with the channel stride, a PE reduction leaves one
        row, and one column when Unk30 bit 10 writes its channels along W."""
        f = self.get13
        channels, rows, width = (f("common.Cout.Cout"), f("common.OutDim.Hout"),
                                 f("common.OutDim.Wout"))
        if self.ne and f("common.Cfg.Bit28"):
            return width, rows
        along_w = f("common.Unk30.Value") >> 10 & 1
        if not self.ne and f("common.Cfg.Bits6_4") in PE_REDUCTIONS:
            return (1 if along_w else channels), 1
        return (width if along_w else channels), rows

    def result_depth(self) -> int:
        """How many depths the result's depth strides step: OutDepth, but one after a PE
        reduction, which sums or takes the max over depth, height and width (`sim.pe`;
        reduce_probe_sum_ax1_2_3_1x128x16x16: OutDepth 16, a 64-byte result)."""
        if not self.ne and self.get13("common.Cfg.Bits6_4") in PE_REDUCTIONS:
            return 1
        return self.get13("common.OutDepth.Depth")

    def dram(self, prefix: str, names, counts, depth: int, groups: int) -> None:
        row, plane, depth_stride, group = (f"{prefix}{n}" for n in names)
        channels, rows = counts
        have = {p: address13(p) in self.given for p in (row, plane, depth_stride, group)}
        if not have[row] and have[plane]:
            self.put(row, self.state[address13(plane)])
            have[row] = True
        for path, count in ((row, rows), (plane, channels), (depth_stride, depth),
                            (group, groups)):
            if not have[path] and count > 1:
                raise self.fail(f"{path} is left out, yet the task steps it {count} times: H14 "
                                "never writes it and no rule gives its value")

    # -- header -----------------------------------------------------------------------------------
    def h13_header(self) -> list[int]:
        h = lambda name: map14.HEADER.get(self.header14, name)  # noqa: E731
        src1 = self.slot("tile_dma_src.Src1BaseAddrLo")
        src2 = self.slot("tile_dma_src.Src2BaseAddrLo")
        dst = self.slot("tile_dma_dst.BaseAddrLo")
        kernels = {self.slot(p) for p in ("kernel_dma_src.Unk08", "kernel_dma_src.LutBaseAddr0",
                                          "kernel_dma_src.LutBaseAddr1")} - {None}
        if len(kernels) > 1:
            raise self.fail(f"kernel buffers in BAR slots {sorted(kernels)}: H13 has one KBase0")
        kernel = kernels.pop() if kernels else None
        stays = not self.get13("tile_dma_dst.DMAConfig.En")
        if bool(h("LiveOuts")) != stays:  # one bit per 64 KiB L2 region (target.h14 live_outs)
            raise self.fail(f"header LiveOuts = {h('LiveOuts')} with TileDMADst En = "
                            f"{int(not stays)}: LiveOuts is non-zero iff the result stays in L2 "
                            "(census §2, 30/30)")
        first, last = self.index == 0, self.index == self.count - 1
        fetch = bool(self.get13("tile_dma_src.DMAConfig.En"))
        words = map13.HEADER.encode({
            "TID": h("TID"), "LNID": not first, "EON": last,
            "ExeCycles": h("ExeCycles"),
            # census §2: LogEvents = H13's - 0x400, DebugLogEvents = H13's without bit 1
            "LogEvents": h("LogEvents") + 0x400, "Exceptions": h("Exceptions"),
            "DebugLogEvents": h("DebugLogEvents") | 2, "DebugExceptions": h("DebugExceptions"),
            # scheduling flags as the h13 census states them: SPL on the first task, TSR = TSE =
            # DstLoc, SrcLoc / DstLoc mirror the DMA enables, TBE on all but the last
            "SPL": first, "TSR": not stays, "TSE": not stays, "TDE": h("TDE"),
            "SrcLoc": fetch, "DstLoc": not stays, "TBE": not last,
            "RBase0": src1 or 0, "RBE0": src1 is not None,
            "RBase1": src2 or 0, "RBE1": src2 is not None,
            "WBase": dst or 0, "WBE": dst is not None,
            "KBase0": kernel or 0, "KBE0": kernel is not None,
            "ENE": h("ENE"),
        })
        for word in self.header14[map14.HEADER.size_words:]:
            if word:
                raise self.fail(f"header extension word = {word:#x}: only 0 is known (census §2)")
        return words + [0] * map13.HEADER.extension_words(words)


def translate_task(index: int, task: Task, count: int) -> tuple[list[int], dict[int, int]]:
    """H13 header words and full H13 register state of H14 task `index` of `count`."""
    t = TaskTranslation(index, task, count).run()
    return t.header, t.state


def to_h13(program: Program) -> Program:
    """The H13 program the simulator runs for an H14 `program`: every task's full register state
    as one record per register (so nothing depends on what an earlier task left), the same
    constants and tensors."""
    if program.target != "h14":
        raise SimulationError(f"to_h13 takes an h14 program, got {program.target}")
    tasks = []
    for index, task in enumerate(program.tasks):
        header, state = translate_task(index, task, len(program.tasks))
        for block in R13.blocks:  # nothing may come from an earlier task
            for reg in block.registers:
                if block.base + reg.offset not in state:
                    raise SimulationError(f"H14 -> H13: {block.name}.{reg.name} is neither "
                                          "written by the task nor has a reset value",
                                          where=f"task {index}")
        words = map13.HEADER.size_words
        tasks.append(Task(header=header[:words], extension=header[words:],
                          records=[Record(a, [v]) for a, v in sorted(state.items())],
                          offset=task.offset))
    return Program("h13", tasks, program.constants, list(program.tensors), program.name)
