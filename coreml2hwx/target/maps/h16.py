"""H16 (A17 Pro, M4): register map and task header.  Every fact here is grade C.

Source: ane-facts §3.3, which summarises freedomtan's maps (fdt-h16, built by decompiling
`ZinAneTd<17u>`); bit ranges the fact sheet only names are taken from fdt-h16 itself.  No Apple
data checks any of it.  Blocks live in the "modern" address space (Common 0x0000, L2 0x4100, ...);
fdt-h16's block table gives their sizes.  Where fdt's maps disagree between versions (most of
TileDMA, L2, CacheDMA) the words are left raw.
"""

from coreml2hwx.target.maps import h14
from coreml2hwx.target.regmap import (Block, Evidence, HeaderMap, RegisterMap, header_word, raw,
                                      reg, spec)

FDT = Evidence("C", "fdt-h16 via ane-facts §3.3")
CONV = Evidence("C", "fdt-h16: ConvCfg as on H14 (Kw/Kh/Sx/Sy/Ox/Oy possibly stored minus one)")


def _dims():
    names = ("InWidth Win", "InHeight Hin", "InChannels Cin", "InDepth Din", "OutWidth Wout",
             "OutHeight Hout", "OutChannels Cout", "OutDepth Dout", "NumGroups NumGroups")
    return [reg(r, 0x04 + 4 * i, FDT, **{f: (16, 0)}) for i, (r, f) in
            enumerate(n.split() for n in names)]


COMMON = Block("common", 0x0000, 23, (
    reg("ChannelCfg", 0x00, FDT, InFmt=(1, 0), Src2InFmt=(3, 2), OutFmt=(5, 4)),
    *_dims(),  # separate (unpacked) dimensions, 17 bits each
    h14.COMMON.register("ConvCfg").at(0x28).graded(CONV),
    reg("ConvCfg3d", 0x2C, FDT, Kd=(4, 0), Sz=(7, 6), Pz=(11, 8), Oz=(14, 13)),
    reg("UnicastCfg", 0x30, FDT, UnicastEn=14, UnicastCin=(31, 16)),
    reg("TileHeight", 0x34, FDT, TileHeight=(16, 0)),
    reg("TileOverlap", 0x38, FDT, Overlap=(20, 16), PadTop=(25, 21), PadBottom=(30, 26)),
    reg("MacCfg", 0x3C, FDT, TaskType=(7, 4), ActiveNE=(21, 19), ReluType=(27, 24)),
    reg("NECfg", 0x40, FDT, "OCGSize 1 = 16, 2 = 32, 4 = 64 channels", OCGSize=(2, 0),
        FatTileEnable=3, WUStackLog2=(5, 4)),
    reg("PatchCfg", 0x44, FDT, PatchWidth=(3, 0), PatchHeight=(8, 4)),
    reg("PECfg", 0x48, FDT, Src1Broadcast=(3, 0), Src2Broadcast=(7, 4), Src1Transpose=8,
        Src2Transpose=9, OutputTranspose=10, IdxTranspose=14, IdxBroadcast=15,
        PEPrimarySource=(18, 16), ActiveNE=(21, 19)),
    raw("NID", 0x4C, FDT),
    raw("DPE", 0x50, FDT),
    raw("Reserved0", 0x54, FDT),
    raw("Reserved1", 0x58, FDT),
))

PE_REGS = (
    reg("Config", 0x00, FDT,
        PoolMode=spec(1, 0, values={0: "none", 1: "avg", 2: "max", 3: "min"}),
        Operation=spec(4, 2, values={0: "add", 1: "mul", 2: "max", 3: "min"}),
        Condition=spec(9, 6, values={0: "none", 1: "abs", 2: "eq", 3: "gt", 4: "ge", 5: "le",
                                     6: "lt", 7: "ne"}),
        NLMode=(13, 12), Src1Sel=16, Src2Sel=(19, 18)),
    # 19-bit floats per the fact sheet; the packing inside the word is not known.
    *[raw(n, 0x04 + 4 * i, FDT) for i, n in
      enumerate(("Bias", "Scale", "FinalScaleEpsilon", "PreScale", "FinalScale"))],
    *[raw(f"LUT{i + 1}", 0x18 + 4 * i, FDT, "piecewise-linear parameters") for i in range(8)],
    raw("Quant", 0x38, FDT, "input offsets, output zero point"),
)
PE = Block("pe", 0x4500, 15, PE_REGS)

NE_REGS = (
    reg("KernelCfg", 0x00, FDT, KernelFmt=(1, 0), PalettizedEn=2, PalBits=(7, 4), SparseEn=8,
        Reuse=10, SparseBinary=15, Align=16, BlockSize=(23, 21), AsymQuantEn=24),
    reg("MacCfg", 0x04, FDT,
        OpMode=spec(2, 0, values={0: "conv", 1: "elementwise", 2: "rcas", 3: "elementwise_sqrt",
                                  4: "bypass", 5: "transposed_conv"}),
        KMode=3, BiasEn=4, PassEn=5, MVBiasEn=6, BinPoint=(13, 8), PostEn=14, NLMode=(17, 16),
        MaxPoolEn=19, ArgSel=(23, 20), DoubleInt8En=26),
    *[raw(n, 0x08 + 4 * i, FDT) for i, n in
      enumerate(("MatrixVectorBias", "NEBias", "PostScale", "RcasConfig", "RoundModeCfg"))],
    *[raw(f"SRSeed{i}", 0x1C + 4 * i, FDT) for i in range(4)],
    raw("QuantZeroPoint", 0x2C, FDT),
)
NE = Block("ne", 0x4900, 12, NE_REGS)

_CH = dict(Enable=0, CacheHint=(7, 4), DataSetId=(15, 8), UserTag=(23, 16))
KDMA_REGS = (
    reg("MasterConfig", 0x00, FDT, GroupKernelReuse=4, KernelSparseFmt=5, MasterEnable=6),
    reg("AlignedCoeffSizePerCh", 0x04, FDT, Size=(27, 0)),
    reg("Prefetch", 0x08, FDT, EarlyTermEn=0, StopOnError=1, PrefetchRate=(31, 16)),
    *[raw(f"Reserved{i}", 0x0C + 4 * i, FDT) for i in range(3)],
    reg("KernelGroupStride", 0x18, FDT, Stride=(31, 6)),
    reg("KernelOCGStride", 0x1C, FDT, Stride=(31, 6)),
    *[reg(f"CoeffDMAConfig[{i}]", 0x20 + 4 * i, FDT, **_CH) for i in range(16)],
    *[reg(f"CoeffBaseAddr[{i}]", 0x60 + 4 * i, FDT, Addr=(31, 6)) for i in range(16)],
    *[reg(f"CoeffBfrSize[{i}]", 0xA0 + 4 * i, FDT, Size=(31, 6)) for i in range(16)],
    *[r for i, ch in enumerate(("Bias", "PostScale", "Palette", "NLut")) for r in (
        reg(f"{ch}DMAConfig", 0xE0 + 16 * i, FDT, **_CH),
        reg(f"{ch}BaseAddr", 0xE4 + 16 * i, FDT, Addr=(31, 6)),
        raw(f"{ch}Reserved0", 0xE8 + 16 * i, FDT),
        raw(f"{ch}Reserved1", 0xEC + 16 * i, FDT))],
)
KERNEL_DMA_SRC = Block("kernel_dma_src", 0x5500, 72, KDMA_REGS)

# The TileDMA address and stride registers sit at H14's offsets inside the block: fdt-h16's table
# and the compiler's own H17 constants (ANE_TILE_DMA_SRC_ROW_STRIDE_OFFSET = 0x4D18, ...,
# ANE_TILE_DMA_DST_ROW_STRIDE_OFFSET = 0x5110, quoted in fdt-h17) agree.
TRAITS = Evidence("C", "fdt-h16 table; ZinHWTraits<19u> offsets quoted in fdt-h17")
_SRC_KEPT = ("Src1BaseAddrLo", "Src1BaseAddrHi", "Src1RowStride", "Src1PlaneStride",
             "Src1DepthStride", "Src1GroupStride", "Src2BaseAddrLo", "Src2BaseAddrHi",
             "Src2RowStride", "Src2PlaneStride", "Src2DepthStride", "Src2GroupStride")
_DST_KEPT = ("RowStride", "PlaneStride", "DepthStride", "GroupStride")


def tile_dma(block, base, size_words, kept):
    regs = [block.register(n).graded(TRAITS) for n in kept]
    return Block(block.name, base, size_words, regs, "other words: layouts disagree between "
                                                     "fdt versions; listed raw")


RAW_NOTE = "fdt's versions disagree on this block's layout; words listed raw"
L2 = Block("l2", 0x4100, 41, (), RAW_NOTE)
TILE_DMA_SRC = tile_dma(h14.TILE_DMA_SRC, 0x4D00, 81, _SRC_KEPT)
TILE_DMA_DST = tile_dma(h14.TILE_DMA_DST, 0x5100, 21, _DST_KEPT)
CACHE_DMA = Block("cache_dma", 0x5900, 12, (), "new on H16 (prefetch / telemetry)")

ORDER = (COMMON, L2, PE, NE, TILE_DMA_SRC, TILE_DMA_DST, KERNEL_DMA_SRC, CACHE_DMA)
REGISTERS = RegisterMap("h16", ORDER)
BLOCK_BASES = {b.name: b.base for b in ORDER}
WORD_BASES = {b.name: b.base // 4 for b in ORDER}
BLOCK_WORDS = {b.name: b.size_words for b in ORDER}


def header_from_h14(generation: str, ev: Evidence) -> HeaderMap:
    """H14's eight words plus a DTID word (fdt-guide / fdt-py: 9 words, DTID last).  fdt-h16 lists
    ten object words (an extra flags word before the control word); the H14 DTID prediction
    failed, so treat the ninth word as unverified."""
    words = [w.graded(ev) for w in h14.HEADER.words]
    return HeaderMap(generation, (*words, header_word(8, ev, DTID=(15, 0))))


HEADER_WORDS = 9
HEADER = header_from_h14("h16", Evidence("C", "fdt-guide / fdt-py via ane-facts §3.3"))
