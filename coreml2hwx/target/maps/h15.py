"""H15 (A16, M3): what the evidence allows, which is little.  Grade C throughout.

ane-facts §3.2: freedomtan's parser (fdt-py) routes cpusubtype 6 through the H14 code (8-word
header, dense/masked records) with H15-specific register tables; no oracle or Apple file exists
for H15.
So the header is H14's, Common is H14's (fdt-h15: "unchanged from H14"), and the other blocks are
raw words at the bases and sizes of fdt-h15's block table.  Caution: fdt-h15 uses the "modern"
bases (L2 0x4100, ...); for H14 fdt used the same kind of bases while real H14 streams use the old
ones (0x0500, ...), so these bases are unverified.
"""

from coreml2hwx.target.maps import h14
import dataclasses

from coreml2hwx.target.regmap import Block, Evidence, HeaderMap, RegisterMap

FDT = Evidence("C", "fdt-h15 / fdt-py via ane-facts §3.2")

COMMON = h14.COMMON.rebased(0x0000, FDT)
L2 = Block("l2", 0x4100, 30, ())
PE = Block("pe", 0x4500, 14, ())
NE = Block("ne", 0x4900, 11, ())
TILE_DMA_SRC = Block("tile_dma_src", 0x4D00, 69, ())
TILE_DMA_DST = Block("tile_dma_dst", 0x5100, 21, ())
KERNEL_DMA_SRC = Block("kernel_dma_src", 0x5500, 72, ())
CACHE_DMA = Block("cache_dma", 0x5900, 12, ())

ORDER = (COMMON, L2, PE, NE, TILE_DMA_SRC, TILE_DMA_DST, KERNEL_DMA_SRC, CACHE_DMA)
REGISTERS = RegisterMap("h15", ORDER)
BLOCK_BASES = {b.name: b.base for b in ORDER}
WORD_BASES = {b.name: b.base // 4 for b in ORDER}
BLOCK_WORDS = {b.name: b.size_words for b in ORDER}

HEADER_WORDS = 8
_EXT = h14.HEADER.extension
HEADER = HeaderMap("h15", tuple(w.graded(FDT) for w in h14.HEADER.words), dataclasses.replace(
    _EXT, registers=tuple(r.graded(FDT) for r in _EXT.registers), grade="C", source=FDT.source))
