"""H17 (A18, M5): H16's map with the block sizes and extra words of fdt-h17.  Grade C throughout.

Source: ane-facts §3.3 (block ranges: L2 41/42/43 words for H16/H17/H18, PE 15-16, NE 12-13,
TileDMADst 21-27, KernelDMASrc 72-83, CacheDMA 12-14) and fdt-h17 for which end of each range
belongs to H17.  No Apple data checks any of it.
"""

from coreml2hwx.target.maps import h16
from coreml2hwx.target.regmap import Evidence, RegisterMap, raw

FDT = Evidence("C", "fdt-h17 via ane-facts §3.3")

COMMON = h16.COMMON
L2 = h16.L2.rebased(0x4100, size_words=42)
PE = h16.PE.rebased(0x4500, size_words=16, extra=(raw("ExtraCfg", 0x3C, FDT),))
NE = h16.NE.rebased(0x4900, size_words=13, extra=(raw("ExtraCfg", 0x30, FDT),))
TILE_DMA_SRC = h16.TILE_DMA_SRC
TILE_DMA_DST = h16.TILE_DMA_DST.rebased(0x5100, size_words=23)
KERNEL_DMA_SRC = h16.KERNEL_DMA_SRC.rebased(0x5500, size_words=81,
                                            extra=(raw("KernelDmaUserTag", 0x140, FDT),))
CACHE_DMA = h16.CACHE_DMA.rebased(0x5900, size_words=14)

ORDER = (COMMON, L2, PE, NE, TILE_DMA_SRC, TILE_DMA_DST, KERNEL_DMA_SRC, CACHE_DMA)
REGISTERS = RegisterMap("h17", ORDER)
BLOCK_BASES = {b.name: b.base for b in ORDER}
WORD_BASES = {b.name: b.base // 4 for b in ORDER}
BLOCK_WORDS = {b.name: b.size_words for b in ORDER}

HEADER_WORDS = 9
HEADER = h16.header_from_h14("h17", Evidence("C", "as H16: fdt-guide / fdt-py via ane-facts §3.3"))
