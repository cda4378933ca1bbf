"""H11 (A12): task header and register fields from antgroup-skyward/ANETools.  Grade C throughout.

Source: `anetools` (ANEDisassembler/ANETD.c, the "v5" TD tables it prints with), summarised in
ane-facts §2.14: 7 header words (+1 DTID word when word 4 bit 24 is set), then records in a fixed
order - eight 5-word kernel-DMA records (one per coefficient channel), Common (13 words),
TileDMASrc (11), L2 (11), NE (7), TileDMADst (7); no PE block.  anetools identifies blocks by
record position and never by address, so no block here has a known base: `lookup` finds nothing
and offsets are word positions inside the block's records.  Fields that match H13's printer
layout are H13's registers; the ones anetools places elsewhere are re-fitted.
"""

from coreml2hwx.target.maps import h13
from coreml2hwx.target.regmap import (Block, Evidence, Extension, HeaderMap, Register, RegisterMap,
                                      header_word, raw, reg)

AT = Evidence("C", "anetools ANETD.c via ane-facts §2.14")


def _from_h13(block: Block, name: str, offset: int, **ranges) -> Register:
    """An H13 printer register at H11's position, without H13's A-obs extras, with anetools' bit
    ranges where they differ."""
    r = block.register(name)
    kept = [f.name for f in r.fields if f.grade == "A"]
    return r.only(*kept).refit(AT, **ranges).at(offset).graded(AT)


def _spares(start: int):
    return [raw(f"Spare{i}", start + 4 * i, AT) for i in range(2)]


C13, L13, N13, S13, D13 = h13.COMMON, h13.L2, h13.NE, h13.TILE_DMA_SRC, h13.TILE_DMA_DST

COMMON = Block("common", None, 13, (
    _from_h13(C13, "InDim", 0x00),
    _from_h13(C13, "ChCfg", 0x04),
    _from_h13(C13, "Cin", 0x08),
    _from_h13(C13, "Cout", 0x0C),
    _from_h13(C13, "OutDim", 0x10),
    _from_h13(C13, "ConvCfg", 0x14, Kh=(10, 6), OCGSize=(14, 12), Sx=(17, 16), Sy=(19, 18),
              Px=(23, 20), Py=(27, 24)),
    _from_h13(C13, "GroupConvCfg", 0x18),
    _from_h13(C13, "TileCfg", 0x1C),
    _from_h13(C13, "Cfg", 0x20, ActiveNE=(20, 19)),
    _from_h13(C13, "TaskInfo", 0x24, TaskQ=(18, 16)),
    _from_h13(C13, "DPE", 0x28),
    *_spares(0x2C),
))

_DMA = dict(CrH=(4, 4), CacheHint=(15, 12))
TILE_DMA_SRC = Block("tile_dma_src", None, 11, (
    _from_h13(S13, "DMAConfig", 0x00, **_DMA, CacheHintReuse=(19, 16), CacheHintNoReuse=(23, 20),
              DependencyMode=(25, 24)),
    _from_h13(S13, "BaseAddr", 0x04),
    _from_h13(S13, "RowStride", 0x08, Stride=(29, 6)),
    _from_h13(S13, "PlaneStride", 0x0C, PlaneStride=(29, 6)),
    _from_h13(S13, "Fmt", 0x10),
    *[_from_h13(S13, f"PixelOffset[{i}]", 0x14 + 4 * i) for i in range(4)],
    *_spares(0x24),
))

_L2_CFG = dict(AliasConvSrc=4, AliasConvRslt=5, DMAFmt=(7, 6), DMAInterleave=(11, 8),
               DMACmpVec=(15, 12), DMAOffsetCh=(18, 16))
L2 = Block("l2", None, 11, (
    reg("L2Cfg", 0x00, AT, InputReLU=0, PaddingMode=2),
    reg("SourceCfg", 0x04, AT, SourceType=(1, 0), Dependent=2, **_L2_CFG),
    reg("SourceBase", 0x08, AT, Sox=(3, 0), Addr=(20, 4)),
    reg("SourceChannelStride", 0x0C, AT, Stride=(15, 4)),
    reg("SourceRowStride", 0x10, AT, Stride=(19, 4)),
    reg("ResultCfg", 0x14, AT, ResultType=(1, 0), L2BfrMode=3, **_L2_CFG),
    reg("ResultBase", 0x18, AT, Addr=(20, 4)),
    reg("ConvResultChannelStride", 0x1C, AT, Stride=(15, 4)),
    reg("ConvResultRowStride", 0x20, AT, Stride=(19, 4)),
    *_spares(0x24),
), "anetools calls these TileSource*/ConvResult*; H13's names are used")

NE = Block("ne", None, 7, (
    *[_from_h13(N13, n, 4 * i) for i, n in
      enumerate(("KernelCfg", "MACCfg", "MatrixVectorBias", "AccBias", "PostScale"))],
    *_spares(0x14),
))

TILE_DMA_DST = Block("tile_dma_dst", None, 7, (
    _from_h13(D13, "DMAConfig", 0x00, **_DMA),
    _from_h13(D13, "BaseAddr", 0x04),
    _from_h13(D13, "RowStride", 0x08, RowStride=(29, 6)),
    _from_h13(D13, "PlaneStride", 0x0C, PlaneStride=(29, 6)),
    _from_h13(D13, "Fmt", 0x10),
    *_spares(0x14),
))

KERNEL_DMA_SRC = Block("kernel_dma_src", None, 40, tuple(r for i in range(8) for r in (
    _from_h13(h13.KERNEL_DMA_SRC, f"CoeffDMAConfig[{i}]", 20 * i, **_DMA),
    _from_h13(h13.KERNEL_DMA_SRC, f"CoeffBaseAddr[{i}]", 20 * i + 4),
    _from_h13(h13.KERNEL_DMA_SRC, f"CoeffBfrSize[{i}]", 20 * i + 8, MemBfrSize=(16, 6)),
    raw(f"Spare0[{i}]", 20 * i + 12, AT),
    raw(f"Spare1[{i}]", 20 * i + 16, AT),
)), "eight separate 5-word records, one per channel")

RECORD_ORDER = (KERNEL_DMA_SRC, COMMON, TILE_DMA_SRC, L2, NE, TILE_DMA_DST)
REGISTERS = RegisterMap("h11", RECORD_ORDER, "no block addresses are known")
BLOCK_WORDS = {b.name: b.size_words for b in RECORD_ORDER}


def _word(index: int, h13_index: int, *names: str, **ranges):
    r = h13.HEADER.words[h13_index].only(*names).refit(AT, **ranges)
    return r.renamed(f"Header[{index}]").at(4 * index).graded(AT)


HEADER_WORDS = 7
HEADER = HeaderMap("h11", (
    _word(0, 0, "TID", "NID", "LNID", "EON"),
    _word(1, 1, "ExeCycles", "NextSize", NextSize=(23, 16)),
    header_word(2, AT, LogEvents=(15, 0), Exceptions=(31, 16)),
    header_word(3, AT, DebugLogEvents=(15, 0), DebugExceptions=(31, 16)),
    _word(4, 6, "SPL", "TSR", "SPC", "DPC", "TSE", "NextPriority", "TDE", "SrcLoc", "DstLoc",
          "TQDis"),
    _word(5, 7, "NextPointer"),
    header_word(6, AT, KBase=(2, 0), KBE=3, RBase=(6, 4), RBE=7, WBase=(10, 8), WBE=11,
                TBase=(14, 12), TBE=15, ENE=(23, 16)),
), Extension(4, 1 << 24, (raw("Extension[0]", 28, AT, "DTID[15:0]"),), "C", AT.source))
