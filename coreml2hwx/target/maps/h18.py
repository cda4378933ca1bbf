"""H18 (A19): H17's map with the largest block sizes of ane-facts §3.3.  Grade C throughout.

The fact sheet gives H18's L2 as 43 words and ranges for the other blocks (TileDMASrc 81-83,
TileDMADst 21-27, KernelDMASrc 72-83, CacheDMA 12-14) whose upper ends H16 and H17 do not use; they
are taken as H18's.  ChannelCfg's format fields widen to 3 bits (fdt-regs.h) at positions no
source gives, so that register is raw here.  No Apple data checks any of it.
"""

from coreml2hwx.target.maps import h16, h17
from coreml2hwx.target.regmap import Block, Evidence, RegisterMap, raw

FDT = Evidence("C", "ane-facts §3.3 (fdt maps, fdt-regs.h)")

COMMON = Block("common", 0x0000, 23, (
    raw("ChannelCfg", 0x00, FDT, "InFmt / Src2InFmt / OutFmt, 3 bits each; positions unknown"),
    *[r for r in h17.COMMON.registers if r.name != "ChannelCfg"],
))
L2 = h17.L2.rebased(0x4100, size_words=43)
PE = h17.PE
NE = h17.NE
TILE_DMA_SRC = h17.TILE_DMA_SRC.rebased(0x4D00, size_words=83)
TILE_DMA_DST = h17.TILE_DMA_DST.rebased(0x5100, size_words=27)
KERNEL_DMA_SRC = h16.KERNEL_DMA_SRC.rebased(0x5500, size_words=83)
CACHE_DMA = h17.CACHE_DMA

ORDER = (COMMON, L2, PE, NE, TILE_DMA_SRC, TILE_DMA_DST, KERNEL_DMA_SRC, CACHE_DMA)
REGISTERS = RegisterMap("h18", ORDER)
BLOCK_BASES = {b.name: b.base for b in ORDER}
WORD_BASES = {b.name: b.base // 4 for b in ORDER}
BLOCK_WORDS = {b.name: b.size_words for b in ORDER}

HEADER_WORDS = 9
HEADER = h16.header_from_h14("h18", Evidence("C", "as H16: fdt-guide / fdt-py via ane-facts §3.3"))
