"""H14 (A15, M2): register map and task header, derived from H13 wherever Apple's data allows.

Evidence: the 27 H14 oracles (h14-register-census.md, each H14 task compared with the H13 task of
the same case) and ane-facts §3.1.  Addresses are bytes: a record's 15-bit word address times 4
(the oracle block `0x00500` is written by word address 0x140).

* Common = H13 Common with ConvCfg split in two (0x1C OCGSize alone; 0x20 the kernel/stride/pad
  fields with 6-bit Kw/Kh) and every later register moved up one word (census §4.1, 30/30 pairs).
* L2, PE and NE = the H13 blocks at new bases with the same offsets (census §4.2-4.4).
* TileDMA and KernelDMA are re-encoded; where a register holds the same words as an H13 one
  (strides, Fmt, coefficient bases and sizes) it is that H13 register moved, else raw.
"""

from functools import lru_cache

from coreml2hwx.target.maps import h13
from coreml2hwx.target.regmap import (Block, Evidence, Extension, HeaderMap, RegisterMap,
                                      header_word, raw, reg)

PAIRED = Evidence("B", "same words as the paired H13 task; h14-register-census §4")
MOVED = Evidence("H", "same words as the paired H13 register at this offset; "
                     "h14-register-census §4")
NAMED = Evidence("C", "name from fdt-h14 via ane-facts §3.1; never written in the oracles")
SEEN = Evidence("A-obs", "written by Apple's H14 compiler; h14-register-census §4")
TAGGED = ("the record writing it carries a BAR-slot tag (bits 30:21 = 0x100 + 4 x slot): a "
          "buffer address (census §3)")


def _common(c13: Block) -> Block:
    """H13 Common -> H14 Common (census §4.1 [obs]; fact sheet §3.1)."""
    conv = c13.register("ConvCfg")
    split = (
        conv.only("OCGSize").refit(PAIRED, OCGSize=(2, 0)).renamed("OCGCfg").graded(PAIRED,
                                                                                  "0, 2 or 4"),
        conv.without("OCGSize").refit(Evidence("B", "jsw-h14td; census §4.1 (3/3 re-packed)"),
                                      Kw=(5, 0), Kh=(11, 6)).at(conv.offset + 4)
        .graded(PAIRED, "3x3 pad 1: 0x5042A0C3"),
    )
    before = [r.graded(PAIRED) for r in c13.registers if r.offset < conv.offset]
    after = [r.at(r.offset + 4).graded(PAIRED) for r in c13.registers if r.offset > conv.offset]
    spare = [raw(f"Spare{i}", 0x44 + 4 * i, NAMED) for i in range(2)]
    return Block("common", 0x0000, 19, (*before, *split, *after, *spare),
                 "Cfg gains bit 29 in LUT and runtime-matmul tasks (census §4.1)")


COMMON = _common(h13.COMMON)
L2 = h13.L2.rebased(0x0500, MOVED, size_words=25)
PE = h13.PE.rebased(0x0900, PAIRED, size_words=5, extra=(raw("Quant", 0x10, NAMED),))
NE = h13.NE.rebased(0x0D00, PAIRED, note="KernelCfg 0x10082 (bit 16) in LUT and matmul tasks, "
                                         "where H13 has 0x82 (census §4.4)")


def _moved(block: Block, name: str, offset: int, ev: Evidence, new_name: str | None = None):
    r = block.register(name).at(offset).graded(ev)
    return r.renamed(new_name) if new_name else r


_SRC = h13.TILE_DMA_SRC
TILE_DMA_SRC = Block("tile_dma_src", 0x1100, 53, (
    reg("Src1DMAConfig", 0x00, SEEN, "0xE21; 0x10E21 in later tasks of a chain",
        DataSetId=(15, 8)),  # "always 0x0E" (ane-facts §3.1, name [C])
    reg("Src2DMAConfig", 0x04, SEEN, "0xE20", DataSetId=(15, 8)),
    raw("Src1ConfigExt", 0x08, SEEN, "0xCE (0xEE once)"),
    raw("Src2ConfigExt", 0x0C, SEEN, "0xCE"),
    raw("Src1BaseAddrLo", 0x10, SEEN, TAGGED),
    raw("Src1BaseAddrHi", 0x14, SEEN),
    _moved(_SRC, "RowStride", 0x18, MOVED, "Src1RowStride"),
    _moved(_SRC, "PlaneStride", 0x1C, MOVED, "Src1PlaneStride"),
    _moved(_SRC, "DepthStride", 0x20, NAMED, "Src1DepthStride"),
    _moved(_SRC, "GroupStride", 0x24, NAMED, "Src1GroupStride"),
    raw("Src2BaseAddrLo", 0x28, SEEN, TAGGED),
    raw("Src2BaseAddrHi", 0x2C, SEEN),
    _moved(_SRC, "Src2RowStride", 0x30, MOVED),
    _moved(_SRC, "Src2PlaneStride", 0x34, MOVED),
    _moved(_SRC, "Src2DepthStride", 0x38, NAMED),
    _moved(_SRC, "Src2GroupStride", 0x3C, NAMED),
    _moved(_SRC, "Fmt", 0x50, PAIRED, "Src1Fmt"),
    # Same layout as Src1Fmt; H14 writes 0x01002031 where H13 writes 0x2030 (census §4.5).
    _moved(_SRC, "Src2Fmt", 0x54, MOVED),
), "pixel offsets, compression, crop and wrap registers follow (ane-facts §3.1 [C]); "
   "their offsets are unknown")

_DST = h13.TILE_DMA_DST
TILE_DMA_DST = Block("tile_dma_dst", 0x1500, 10, (
    raw("DMAConfig", 0x00, SEEN, "0x01000E31 (0x01010E31 / 0x01020E31 later in a chain)"),
    raw("Reserved04", 0x04, NAMED),
    raw("BaseAddrLo", 0x08, SEEN, TAGGED),
    raw("BaseAddrHi", 0x0C, SEEN),
    _moved(_DST, "RowStride", 0x10, MOVED),
    _moved(_DST, "PlaneStride", 0x14, MOVED),
    _moved(_DST, "DepthStride", 0x18, NAMED),
    _moved(_DST, "GroupStride", 0x1C, NAMED),
    _moved(_DST, "Fmt", 0x20, PAIRED),
    raw("Unk24", 0x24, SEEN, "0xDEAD filler: written (once or twice, its own record) only so that "
        "a task never ends on a 64-byte boundary of the stream (records.fillers)"),
))

_KDMA = h13.KERNEL_DMA_SRC
LUT = Evidence("H", "LUT tasks fetch their table through these words, not the coefficient "
                    "channels (census §4.7)")
KERNEL_DMA_SRC = Block("kernel_dma_src", 0x1900, 70, (
    # 0x80 in PE tasks, 0x102C0 with weights or a LUT, bit 5 with sparse weights as on H13.
    _moved(_KDMA, "MasterConfig", 0x00, MOVED),
    raw("AlignedCoeffSizePerCh", 0x04, NAMED),
    raw("Unk08", 0x08, SEEN, TAGGED + "; 0 in weight tasks"),
    raw("Unk0C", 0x0C, SEEN, "0 in weight tasks"),
    raw("Unk14", 0x14, SEEN, "0x2000 / 0x10000 in runtime x runtime matmuls"),
    *[raw(f"CoeffDMAConfig[{i}]", 0x18 + 4 * i, Evidence("H", "position of H13's 16 channel "
                                                              "configs; new encoding (0x21, 0xE21, "
                                                              "0x10021; census §4.7)"))
      for i in range(16)],
    *[_moved(_KDMA, f"CoeffBaseAddr[{i}]", 0x58 + 4 * i, PAIRED) for i in range(16)],
    *[_moved(_KDMA, f"CoeffBfrSize[{i}]", 0x98 + 4 * i, PAIRED) for i in range(16)],
    *[raw(f"Unk{o:02X}", o, SEEN, "0x10020 / 0x20020 in pow") for o in (0xD8, 0xDC, 0xE0)],
    raw("LutDMAConfig", 0xE4, LUT, "0x21 (0x10021 / 0x20021 with a second or third table)"),
    raw("LutBaseAddr0", 0xF4, LUT, TAGGED + "; table offset"),
    raw("LutBaseAddr1", 0x100, LUT, TAGGED + "; table offset"),
    raw("Unk104", 0x104, SEEN, "0 in every LUT task"),
    raw("LutBfrSize", 0x114, LUT, "0x80 = one 128-byte table"),
))

ORDER = (COMMON, L2, PE, NE, TILE_DMA_SRC, TILE_DMA_DST, KERNEL_DMA_SRC)
REGISTERS = RegisterMap("h14", ORDER)
BLOCK_BASES = {b.name: b.base for b in ORDER}
WORD_BASES = {b.name: b.base // 4 for b in ORDER}  # as the record headers address them
BLOCK_WORDS = {b.name: b.size_words for b in ORDER}


def _header(hdr13: HeaderMap) -> HeaderMap:
    """8 words: TID | size, then H13's words 1-5 (ExeCycles without NextSize), LiveOuts, control."""
    ev = Evidence("B", "jsw-h14td via ane-facts §3.1; h14-register-census §2 (38/38)")
    same = [hdr13.words[i].graded(ev).at(4 * i) for i in range(1, 6)]
    same[0] = same[0].only("ExeCycles")
    return HeaderMap("h14", (
        header_word(0, ev, "no NextPointer: tasks are laid out back to back, 16-byte aligned",
                    TID=(15, 0), TaskSize=(26, 16)),  # exact word count, not minus one
        *same,
        header_word(6, ev, "1 iff the result stays in L2 for the next task (census [H])",
                    LiveOuts=(31, 0)),
        header_word(7, ev, "ENE 5 on NE tasks; the BAR slots moved into the record tags",
                    TSR=0, TDE=1, ENE=(18, 16)),
    ), Extension(7, 3, (raw("Extension[0]", 32, ev, "0 in the one oracle task that has it"),),
                 "B", "h14-register-census §2 (1 task)"))


HEADER_WORDS = 8
HEADER = _header(h13.HEADER)


# The value a register holds in an H14 task that leaves it out (H14 writes only registers off
# these; they do not carry over from the previous task), for the registers H14 writes with the
# same words as H13 (paths name the H13 / H14 register alike).  Evidence: census §4, per register
# "H13 values in paired first/single tasks where H14 omits it"; Cin / Cout 16 left out in
# env_mm_r2rr and upstream binary_add_1x16x1x1 / binary_real_div_1x16x1x1; InDepth / OutDepth 1
# in every H13 task and written at 8 (upstream layer_norm_1x64x8x8).  The encoder
# (target/h14/registers.py) leaves a register out when it equals its value here, the simulator
# (sim/h14.py) puts the value back: one table for both directions.
RESET = {
    "common.InDepth": 1, "common.Cin": 0x10, "common.Cout": 0x10, "common.OutDepth": 1,
    "common.GroupConvCfg": 0x10001, "common.Unk2C": 0, "common.Unk30": 0, "common.Cfg": 0x1,
    "common.DPE": 0,
    "pe.Cfg": 0,
    "ne.MACCfg": 0x100000, "ne.MatrixVectorBias": 0, "ne.AccBias": 0, "ne.PostScale": 0,
}
# ConvCfg, re-packed on H14 (6-bit Kw/Kh at 0x20), is left out for a 1x1 stride-1 unpadded kernel
# (census §4.1: the 19 tasks leaving it out have ConvCfg 0x5000A041 on their H13 twin).
CONV_CFG_RESET = {"Kw": 1, "Kh": 1, "Sx": 1, "Sy": 1, "Px": 0, "Py": 0, "Ox": 1, "Oy": 1}
# OCGSize (0x1C) left out of an NE task is 3: upstream env_conv_k3_c128_n128_s16_st2_g1_bias1,
# conv_probe_k1_c512_n512_s16_st2_g4_bias0_same and conv_known_k1_c64_n128_s16_st1_g1_bias0_same
# (H13 OCGSize 3) leave it out, and the NE tasks that write it write 0, 2, 4 and 5 only.  PE
# tasks never write it (0 on every H13 twin).
NE_OCG_SIZE_RESET = 3


@lru_cache(maxsize=1)
def reset_words() -> dict[int, int]:
    """Address -> word of every register an H14 task holds at its reset value when it leaves it
    out (RESET, and ConvCfg); one shared dict - copy it before changing it."""
    out = {}
    for path, value in RESET.items():
        block_name, name = path.split(".")
        block = REGISTERS.block(block_name)
        out[block.base + block.register(name).offset] = value
    conv = {f"common.ConvCfg.{k}": v for k, v in CONV_CFG_RESET.items()}
    out.update(REGISTERS.encode(conv))
    return out
