"""H13 (A14, M1): register map and task header, as data.

Field positions graded A come from Apple's own register printer (`ZinIrRegBitPrintOutDebug<7u>`),
probed bit by bit into tinygrad's `aneregs.json`; A-obs registers are ones Apple writes whose role
the Apple-compiled programs show (h13-register-census.md §6, which wins over ane-facts.md where they
disagree).  Byte addresses; offsets are relative to the block base.

Block layout (ane-facts §2.1 [A]): the old compiler writes the seven blocks in full in this record
order, 157 words per task; the new one drops CoeffBaseAddr/CoeffBfrSize when no kernel is fetched.
"""

from coreml2hwx.target.regmap import (Block, Evidence, Extension, HeaderMap, RegisterMap,
                                      header_word, raw, reg, spec)

PRINTER = Evidence("A", "tg-aneregs.json (Apple's H13 register printer, bit probe); ane-facts §2.7")
SEEN = Evidence("A-obs", "Apple-compiled H13 tasks; h13-register-census §6")
CENSUS_H = Evidence("H", "h13-register-census §6 (hypothesis over the oracles)")
FDT = Evidence("C", "fdt-h13 / fdt-tex via ane-facts §2.7.3")
AUX = Evidence("H", "ane-facts §2.7.7: four (config, base, size) triples like H14/H16's extra DMA "
                    "channels; 0x80 / 0 / 0x40 in every oracle task")

FP16 = {2: "fp16"}  # ChCfg / KernelCfg code of fp16, the only format in any H13 sample (§2.8)


# -- Common (§2.7.1) ---------------------------------------------------------------------------
COMMON = Block("common", 0x00000, 16, (
    reg("InDim", 0x00, PRINTER, Win=(14, 0), Hin=(30, 16)),
    reg("InDepth", 0x04, SEEN, "1, or 16 when rows are viewed as depth (reduce_probe_sum)",
        Depth=(31, 0)),
    reg("ChCfg", 0x08, PRINTER, InFmt=spec(1, 0, values=FP16),
        Src2InFmt=spec(3, 2, values=FP16, ev=SEEN), OutFmt=spec(5, 4, values=FP16)),
    reg("Cin", 0x0C, PRINTER, Cin=(16, 0)),
    reg("Cout", 0x10, PRINTER, Cout=(16, 0)),
    reg("OutDim", 0x14, PRINTER, Wout=(14, 0), Hout=(30, 16)),
    reg("OutDepth", 0x18, SEEN, "= InDepth in every oracle task", Depth=(31, 0)),
    reg("ConvCfg", 0x1C, PRINTER, "Ox = Oy = 1 always; Px/Py are the left/top pad",
        Kw=(4, 0), Kh=(9, 5), OCGSize=(12, 10), Sx=(14, 13), Sy=(16, 15), Px=(21, 17),
        Py=(26, 22), Ox=(29, 28), Oy=(31, 30)),
    reg("ConvCfg3d", 0x20, SEEN, "0x2041 in every task; field names from the H17 3-D layout [H]",
        Kd=spec(4, 0, ev=CENSUS_H), Sz=spec(7, 6, ev=CENSUS_H), Pz=spec(11, 8, ev=CENSUS_H),
        Oz=spec(14, 13, ev=CENSUS_H)),
    reg("GroupConvCfg", 0x24, PRINTER, NumGroups=(12, 0), UnicastEn=14, ElemMultMode=15,
        UnicastCin=(31, 16)),
    reg("TileCfg", 0x28, PRINTER, TileHeight=(14, 0)),
    # Not TileOverlap: the nibbles follow the PE task's width and tile height (census 41/41, 35/41).
    reg("Unk2C", 0x2C, SEEN, "0 on NE tasks",
        Log2Width=spec(3, 0, ev=CENSUS_H), Log2TileHeight=spec(7, 4, ev=CENSUS_H)),
    raw("Unk30", 0x30, SEEN, "PE second-operand broadcast word? 0x10 along W, 0x20 along H, 0x30 "
                             "both, 0x200 per-channel operand in L2 (census [H]); 0 on NE tasks"),
    reg("Cfg", 0x34, PRINTER, "Bits1_0 = 3 iff a second source comes by DMA, else 1; Bits6_4 = PE "
                              "task type (0 NE, 2 unary, 3 binary, 4 bias/scale operand, 5 reduce)",
        Bits1_0=spec(1, 0, ev=SEEN), SmallSourceMode=2, Bits6_4=spec(6, 4, ev=SEEN),
        ShPref=(10, 8), ShMin=(14, 12), ShMax=(18, 16), ActiveNE=(21, 19), ContextSwitchIn=22,
        ContextSwitchOut=24, AccDoubleBufEn=26, Bit28=spec(28, ev=SEEN)),
    reg("TaskInfo", 0x38, PRINTER, "NID = 1 on NE tasks", TaskID=(15, 0), TaskQ=(19, 16),
        NID=(27, 20)),
    reg("DPE", 0x3C, PRINTER, Category=(3, 0)),
))

# -- L2 (§2.7.2): addresses and strides keep bits 20:4 (16-byte units, 2 MiB) -----------------
_L2_CFG = dict(AliasConvSrc=4, AliasConvRslt=5, DMAFmt=(7, 6), DMAInterleave=(11, 8),
               DMACmpVec=(15, 12), DMAOffsetCh=(18, 16), AliasPlanarSrc=20, AliasPlanarRslt=22)
L2 = Block("l2", 0x04800, 18, (
    reg("L2Cfg", 0x00, PRINTER, "PaddingMode 1 in max reductions", InputReLU=0, PaddingMode=(3, 2),
        Bit4=spec(4, ev=SEEN)),  # 1: x + relu(x) in one PE add (upstream env_chain_residual_relu_*)
    reg("SourceCfg", 0x04, PRINTER, SourceType=(1, 0), Dependent=(3, 2), **_L2_CFG,
        Bit24=spec(24, ev=SEEN)),  # = header RBE1: the second source comes by DMA (census 98/98)
    reg("SourceBase", 0x08, PRINTER, Addr=(20, 4)),
    reg("SourceChannelStride", 0x0C, PRINTER, Stride=(20, 4)),
    reg("SourceRowStride", 0x10, PRINTER, Stride=(20, 4)),
    raw("Src1DepthStride", 0x14, SEEN, "bytes; = Cin x SourceChannelStride (census 98/98)"),
    raw("Src1GroupStride", 0x18, SEEN, "bytes"),
    raw("Src2Base", 0x1C, CENSUS_H, "bytes; where the second source is staged"),
    raw("Src2ChannelStride", 0x20, CENSUS_H, "bytes"),
    raw("Src2RowStride", 0x24, CENSUS_H, "bytes"),
    raw("Src2DepthStride", 0x28, CENSUS_H, "bytes"),
    raw("Src2GroupStride", 0x2C, CENSUS_H, "bytes"),
    reg("ResultCfg", 0x30, PRINTER, ResultType=(1, 0), L2BfrMode=3, **_L2_CFG),
    reg("ResultBase", 0x34, PRINTER, Addr=(20, 4)),
    reg("ConvResultChannelStride", 0x38, PRINTER, Stride=(20, 4)),
    reg("ConvResultRowStride", 0x3C, PRINTER, Stride=(20, 4)),
    raw("ResultDepthStride", 0x40, SEEN, "bytes"),
    raw("ResultGroupStride", 0x44, SEEN, "bytes"),
))

# -- PE (§2.7.3): the printer does not know this block -----------------------------------------
PE = Block("pe", 0x08800, 4, (
    # add 0x80000, mul 0x80004, max 0x80008, min 0x8000C, sub 0xC0000, add+relu 0x80020, abs 0x40,
    # max-reduce 0x2, softmax 1/sum 0x1000 (census §6.3).
    reg("Cfg", 0x00, SEEN, "per element: Scale * OP(PreScale * src1, src2) + Bias [H]",
        PoolMode=spec(1, 0, ev=FDT),
        OpMode=spec(4, 2, values={0: "add", 1: "mul", 2: "max", 3: "min"}),
        ReluEn=5, Cond=spec(8, 6, ev=FDT), NLMode=spec(13, 12, ev=FDT),
        FirstSrc=spec(17, 16, ev=FDT), SecSrc=(19, 18)),
    reg("BiasScale", 0x04, SEEN, Bias=spec(15, 0, "fp16"), Scale=spec(31, 16, "fp16")),
    # fdt-h13 puts PreScale in [15:0]; Apple's sub (PreScale -1 = 0xBC000000) puts it in [31:16].
    reg("PreScale", 0x08, SEEN, "low half 0xA8 in layer_norm task 1, else 0",
        Low16=(15, 0), PreScale=spec(31, 16, "fp16")),
    reg("FinalScale", 0x0C, SEEN, "1/N in mean reductions", FinalScale=spec(31, 0, "fp32")),
))

# -- NE (§2.7.4) -------------------------------------------------------------------------------
NE = Block("ne", 0x0C800, 5, (
    reg("KernelCfg", 0x00, PRINTER, "0x82 on NE tasks, 0x80 on PE tasks",
        KernelFmt=spec(1, 0, values=FP16), PalettizedEn=2, PalettizedBits=(7, 4), SparseFmt=8,
        GroupKernelReuse=10, Bit12=spec(12, ev=SEEN), Bit14=spec(14, ev=SEEN),
        Bit16=spec(16, ev=SEEN)),  # bit 16: runtime x runtime matmuls (weights from a surface)
    # The printer decodes the real sigmoid word 0x0012000C as OpMode 4, KernelMode 1, which only
    # this layout gives (fdt-h13's OpMode[3:0] reading is wrong, ane-facts §5.5).
    reg("MACCfg", 0x04, PRINTER, "bit 20 set in every task (census 98/98)",
        OpMode=spec(2, 0, values={0: "conv", 4: "bypass"}), KernelMode=3, BiasMode=4,
        MatrixBiasEn=6, BinaryPoint=(12, 8), PostScaleMode=14,
        NonlinearMode=spec(17, 16, values={0: "none", 1: "relu", 2: "lut"}),
        Bit20=spec(20, ev=SEEN)),
    reg("MatrixVectorBias", 0x08, PRINTER, MatrixVectorBias=spec(15, 0, "fp16")),
    reg("AccBias", 0x0C, PRINTER, AccBias=(15, 0), AccBiasShift=(20, 16)),
    # exp = exp2 LUT with PostScale log2(e): the scale applies before the nonlinearity (§2.7.4).
    reg("PostScale", 0x10, PRINTER, PostScale=spec(15, 0, "fp16"), PostRightShift=(20, 16)),
))

# -- TileDMASrc (§2.7.5): DRAM addresses and strides keep bits 31:6 (64-byte units) -------------
_DMA_SRC_CFG = dict(En=0, CrH=(5, 4), CacheHint=(9, 6), CacheHintReuse=(13, 10),
                    CacheHintNoReuse=(17, 14), DependencyMode=(19, 18))
_FMT = dict(FmtMode=(1, 0), Truncate=(5, 4), Shift=8, MemFmt=(13, 12), OffsetCh=(18, 16),
            Interleave=(27, 24), CmpVec=(31, 28))
TILE_DMA_SRC = Block("tile_dma_src", 0x13800, 28, (
    reg("DMAConfig", 0x00, PRINTER, "0x33881 for a DRAM fetch", **_DMA_SRC_CFG),
    # Bit 0 stays 0 even when source 2 is fetched (0x33880); the header's RBE1 enables it.
    reg("Src2DMAConfig", 0x04, SEEN, **_DMA_SRC_CFG),
    reg("BaseAddr", 0x08, PRINTER, Addr=(31, 6)),
    reg("RowStride", 0x0C, PRINTER, Stride=(31, 6)),
    reg("PlaneStride", 0x10, PRINTER, PlaneStride=(31, 6)),  # the printer's own field name
    reg("DepthStride", 0x14, PRINTER, Stride=(31, 6)),
    reg("GroupStride", 0x18, PRINTER, Stride=(31, 6)),
    reg("Src2BaseAddr", 0x1C, SEEN, Addr=(31, 6)),
    *[reg(f"Src2{n}Stride", 0x20 + 4 * i, SEEN, Stride=(31, 6))
      for i, n in enumerate(("Row", "Plane", "Depth", "Group"))],
    raw("Unk30", 0x30, SEEN, "0 in every task"),
    raw("Unk34", 0x34, SEEN, "0 in every task"),
    reg("Fmt", 0x38, PRINTER, "fp16 from DRAM: 0x01002031", **_FMT),
    reg("Src2Fmt", 0x3C, SEEN, "0x2030 with a second DMA source", **_FMT),
    raw("Unk40", 0x40, SEEN, "0x100 in every new-compiler task"),
    *[raw(f"Unk{o:02X}", o, SEEN, "0 in every task") for o in (0x44, 0x48, 0x4C)],
    *[reg(f"PixelOffset[{i}]", 0x50 + 4 * i, PRINTER, Offset=(15, 0)) for i in range(4)],
    *[raw(f"Unk{o:02X}", o, SEEN, "0 in every task") for o in (0x60, 0x64, 0x68, 0x6C)],
))

# -- TileDMADst (§2.7.6) -----------------------------------------------------------------------
TILE_DMA_DST = Block("tile_dma_dst", 0x17800, 7, (
    reg("DMAConfig", 0x00, PRINTER, "0x040000C1 writes the output, 0xC0 keeps the result in L2",
        En=0, CrH=(5, 4), CacheHint=(9, 6), L2BfrMode=26, BypassEOW=27),
    reg("BaseAddr", 0x04, PRINTER, Addr=(31, 6)),
    # The printer names these fields after their registers.
    *[reg(f"{n}Stride", 0x08 + 4 * i, PRINTER, **{f"{n}Stride": (31, 6)})
      for i, n in enumerate(("Row", "Plane", "Depth", "Group"))],
    reg("Fmt", 0x18, PRINTER, "0x01302031 for every written output", **_FMT,
        ZeroPadLast=20, ZeroPadFirst=21, CmpVecFill=22),
))

# -- KernelDMASrc (§2.7.7): 16 coefficient channels fetch weights / LUTs from BAR KBase0 --------
KERNEL_DMA_SRC = Block("kernel_dma_src", 0x1F800, 62, (
    reg("MasterConfig", 0x00, SEEN, "0x40 when coefficients are fetched (KBE0), 0x60 for the "
                                    "sparse stride-2 weights; names from fdt-h16",
        KernelSparseFmt=5, MasterEnable=6),
    raw("Unk04", 0x04, SEEN, "0 in every task"),
    *[reg(f"CoeffDMAConfig[{i}]", 0x08 + 4 * i, PRINTER, En=0, CrH=(5, 4), CacheHint=(9, 6),
          PrefetchParticipateEn=28) for i in range(16)],
    *[reg(f"CoeffBaseAddr[{i}]", 0x48 + 4 * i, PRINTER, "byte offset in the kernel section",
          Addr=(31, 6)) for i in range(16)],
    *[reg(f"CoeffBfrSize[{i}]", 0x88 + 4 * i, PRINTER, MemBfrSize=(31, 6)) for i in range(16)],
    *[raw(f"AuxDMAConfig[{i}]", 0xC8 + 4 * i, AUX) for i in range(4)],
    *[raw(f"AuxBase[{i}]", 0xD8 + 4 * i, AUX) for i in range(4)],
    *[raw(f"AuxSize[{i}]", 0xE8 + 4 * i, AUX) for i in range(4)],
))

# The fixed 157-word task writes the blocks in this order (ane-facts §2.1 [A]).
RECORD_ORDER = (KERNEL_DMA_SRC, COMMON, TILE_DMA_SRC, L2, PE, NE, TILE_DMA_DST)
REGISTERS = RegisterMap("h13", RECORD_ORDER)
BLOCK_BASES = {b.name: b.base for b in RECORD_ORDER}
BLOCK_WORDS = {b.name: b.size_words for b in RECORD_ORDER}

# -- Task header (§2.2, all printer fields [A]) -------------------------------------------------
HDR = Evidence("A", "tg-aneregs.json header fields; ane-facts §2.2")
HEADER_WORDS = 10
HEADER = HeaderMap("h13", (
    header_word(0, HDR, "TID = task index; LNID on every task but the first; EON on the last",
                TID=(15, 0), NID=(23, 16), LNID=24, EON=25),
    header_word(1, HDR, "NextSize = next task's words - 1", ExeCycles=(15, 0), NextSize=(24, 16)),
    header_word(2, HDR, LogEvents=(23, 0)),
    header_word(3, HDR, Exceptions=(23, 0)),
    header_word(4, HDR, DebugLogEvents=(23, 0)),
    header_word(5, HDR, DebugExceptions=(23, 0)),
    header_word(6, HDR, DisallowAbort=8, TDSkip=9, KPC=10, SPL=11, TSR=12, SPC=13, DPC=14, TSE=15,
                NextPriority=(21, 16), TDE=24, SrcLoc=28, DstLoc=29, TQDis=31),
    header_word(7, HDR, "byte offset of the next task in the stream, 0 on the last",
                NextPointer=(31, 0)),
    # BAR slots: which of the 32 base-address registers each DMA adds its offsets to (§2.6).
    header_word(8, HDR, "ENE = Common.Cfg.ActiveNE + 1 on NE tasks, 0 on PE tasks",
                RBase0=(4, 0), RBE0=5, RBase1=(10, 6), RBE1=11, WBase=(16, 12), WBE=17,
                TBase=(22, 18), TBE=23, ENE=(26, 24)),
    header_word(9, HDR, KBase0=(4, 0), KBE0=5, KBase1=(10, 6), KBE1=11, KBase2=(16, 12), KBE2=17,
                KBase3=(22, 18), KBE3=23),
), Extension(9, 3, (raw("Extension[0]", 40, Evidence("B", "jsw-td; ane-facts §2.3"),
                        "0x0, 0x7 or 0x8 (jsw); in no oracle"),), "B", "jsw-td; ane-facts §2.3"))
