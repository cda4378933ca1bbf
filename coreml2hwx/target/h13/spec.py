"""A task being built: register fields by path, header fields by name, and what the task does.

Family modules (`elementwise`, `activation`, `conv`, ...) fill a `TaskSpec` through the block
helpers below; `finish()` then applies the rules that tie registers of different blocks together
(h13-register-census §1.1, each holding for every oracle task it applies to).  Every value is set
through a named field of the H13 register map (`coreml2hwx.target.maps.h13`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coreml2hwx.target.h13.layout import Surface
from coreml2hwx.target.h13.task import build_task

# TileDMA configuration words, by named field.  Each is the single value Apple writes for that
# role in every oracle task (census §6.5/6.6): a DRAM fetch, a disabled fetch, the second source.
SRC_FETCH = dict(En=1, CacheHint=2, CacheHintReuse=14, CacheHintNoReuse=12)  # 0x00033881
SRC_IDLE = dict(En=0, CacheHint=2, CacheHintReuse=2, CacheHintNoReuse=2)  # 0x00008880
SRC2_FETCH = dict(En=0, CacheHint=2, CacheHintReuse=14, CacheHintNoReuse=12)  # 0x00033880
# An input read by DMA in two tasks (layer_norm): kept in cache the first time, dropped the last.
SRC_FETCH_KEEP = dict(En=1, CacheHint=14, CacheHintReuse=14, CacheHintNoReuse=14)  # 0x0003BB81
SRC_FETCH_LAST = dict(En=1, CacheHint=12, CacheHintReuse=14, CacheHintNoReuse=12)  # 0x00033B01
DRAM_FMT = dict(FmtMode=1, Truncate=3, MemFmt=2, Interleave=1)  # fp16 in DRAM: 0x01002031
SRC2_FMT = dict(FmtMode=0, Truncate=3, MemFmt=2)  # 0x00002030 (census 13/13)
IDLE_FMT = dict(Interleave=1)  # 0x01000000
DST_WRITE = dict(En=1, CacheHint=3, L2BfrMode=1)  # 0x040000C1
# An intermediate written to the DRAM scratch slot: 0x040003C1 (CacheHint 15) in eiln's
# multi-task kernels (div TD0, softmax TD2 write itm slot 3; ane-facts §2.7.6, §5.3).
DST_INTERMEDIATE = dict(En=1, CacheHint=15, L2BfrMode=1)
DST_IDLE = dict(En=0, CacheHint=3)  # 0x000000C0
DST_FMT = dict(FmtMode=1, Truncate=3, MemFmt=2, ZeroPadLast=1, ZeroPadFirst=1, Interleave=1)


@dataclass
class TaskSpec:
    """One task under construction.  `fields`: register path -> value; `header`: name -> value."""

    name: str  # the IR op it comes from, for error messages
    engine: str  # "ne" or "pe"
    fields: dict = field(default_factory=dict)
    header: dict = field(default_factory=dict)
    src1: Surface | None = None  # DRAM sources / destination (None: the data stays in L2)
    src2: Surface | None = None
    dst: Surface | None = None
    l2_operand: bool = False  # a second operand read from L2 (staged by an earlier task)
    coefficients: int = 0  # enabled kernel-DMA channels (0: no kernel fetch)
    lut_mode: int | None = None  # mode byte of the LUT this task applies
    kernel_chunks: list = field(default_factory=list)  # (base, size) per coefficient channel
    kernel_slot: int = 1
    first_fetch_is_bypass: bool = False
    kept_source: bool = False  # the task leaves its DRAM source in L2 for a later task

    def set(self, register: str, **values):
        """Set fields of one register: `spec.set("common.InDim", Win=8, Hin=8)`."""
        for name, value in values.items():
            self.fields[f"{register}.{name}"] = value

    def get(self, register: str, name: str, default=0):
        return self.fields.get(f"{register}.{name}", default)

    @property
    def is_ne(self) -> bool:
        return self.engine == "ne"


# -- Common ---------------------------------------------------------------------------------------
def dims(spec: TaskSpec, cin, hin, win, cout, hout, wout, depth=1):
    spec.set("common.InDim", Win=win, Hin=hin)
    spec.set("common.OutDim", Wout=wout, Hout=hout)
    spec.set("common.Cin", Cin=cin)
    spec.set("common.Cout", Cout=cout)
    spec.set("common.InDepth", Depth=depth)
    spec.set("common.OutDepth", Depth=depth)  # = InDepth in every oracle task


def conv_cfg(spec: TaskSpec, kernel=1, stride=1, pad=0, ocg=0):
    spec.set("common.ConvCfg", Kw=kernel, Kh=kernel, OCGSize=ocg, Sx=stride, Sy=stride, Px=pad,
             Py=pad, Ox=1, Oy=1)
    spec.set("common.ConvCfg3d", Kd=1, Sz=1, Oz=1)  # 0x2041 in every oracle task


def group_cfg(spec: TaskSpec, groups=1, unicast=False, unicast_cin=1, elem_mult=False):
    spec.set("common.GroupConvCfg", NumGroups=groups, UnicastEn=int(unicast),
             ElemMultMode=int(elem_mult), UnicastCin=unicast_cin)


# -- DMA ------------------------------------------------------------------------------------------
def dram_source(spec: TaskSpec, surface: Surface, *, cache=SRC_FETCH, group=None, depth=None,
                row=None, plane=None):
    """Source 1 fetched from a DRAM surface; strides default to the surface's own."""
    spec.src1 = surface
    spec.set("tile_dma_src.DMAConfig", **cache)
    spec.set("tile_dma_src.RowStride", Stride=(row or surface.row) // 64)
    spec.set("tile_dma_src.PlaneStride", PlaneStride=(plane or surface.plane) // 64)
    spec.set("tile_dma_src.DepthStride", Stride=(depth or surface.batch) // 64)
    spec.set("tile_dma_src.GroupStride", Stride=(group or surface.batch) // 64)
    spec.set("tile_dma_src.Fmt", **DRAM_FMT)
    if surface.offset:
        spec.set("tile_dma_src.BaseAddr", Addr=surface.offset // 64)


def dram_source2(spec: TaskSpec, surface: Surface):
    spec.src2 = surface
    spec.set("tile_dma_src.Src2DMAConfig", **SRC2_FETCH)
    spec.set("tile_dma_src.Src2RowStride", Stride=surface.row // 64)
    spec.set("tile_dma_src.Src2PlaneStride", Stride=surface.plane // 64)
    spec.set("tile_dma_src.Src2DepthStride", Stride=surface.batch // 64)
    spec.set("tile_dma_src.Src2GroupStride", Stride=surface.batch // 64)
    spec.set("tile_dma_src.Src2Fmt", **SRC2_FMT)
    if surface.offset:
        spec.set("tile_dma_src.Src2BaseAddr", Addr=surface.offset // 64)


def dram_dest(spec: TaskSpec, surface: Surface, *, row=None, plane=None, depth=None, group=None):
    spec.dst = surface
    spec.set("tile_dma_dst.DMAConfig", **(DST_INTERMEDIATE if surface.scratch else DST_WRITE))
    spec.set("tile_dma_dst.RowStride", RowStride=(row or surface.row) // 64)
    spec.set("tile_dma_dst.PlaneStride", PlaneStride=(plane or surface.plane) // 64)
    spec.set("tile_dma_dst.DepthStride", DepthStride=(depth or surface.batch) // 64)
    spec.set("tile_dma_dst.GroupStride", GroupStride=(group or surface.batch) // 64)
    spec.set("tile_dma_dst.Fmt", **DST_FMT)
    if surface.offset:
        spec.set("tile_dma_dst.BaseAddr", Addr=surface.offset // 64)


# -- Kernel DMA -------------------------------------------------------------------------------------
def kernel_fetch(spec: TaskSpec, chunks, *, slot=1, sparse=False):
    """Coefficient channels 0..len(chunks)-1 fetch (base, size) byte ranges from BAR `slot`."""
    spec.coefficients = len(chunks)
    spec.kernel_chunks = list(chunks)
    spec.kernel_slot = slot
    spec.set("kernel_dma_src.MasterConfig", MasterEnable=1, KernelSparseFmt=int(sparse))


# -- finishing rules ---------------------------------------------------------------------------------
def finish(spec: TaskSpec):
    """Rules linking blocks, each holding in every oracle task it applies to (census §1.1)."""
    two_sources = spec.src2 is not None
    second_operand = two_sources or spec.l2_operand
    spec.set("common.ChCfg", InFmt=2, OutFmt=2, Src2InFmt=2 if second_operand else 0)
    spec.set("common.Cfg", Bits1_0=3 if two_sources else 1)
    spec.set("common.TaskInfo", NID=int(spec.is_ne))
    spec.set("ne.MACCfg", Bit20=1)  # set in every task (98/98)
    spec.set("ne.KernelCfg", PalettizedBits=8)  # 98/98
    if spec.is_ne:
        spec.set("ne.KernelCfg", KernelFmt=2)  # fp16 kernel, 57/57 NE tasks
        spec.set("ne.MACCfg", BinaryPoint=28)  # 57/57 NE tasks
        spec.fields.setdefault("ne.PostScale.PostScale", 1.0)  # 57/57 NE tasks (no exp here)
    _dma_idle_rules(spec)
    _kernel_rules(spec)
    spec.set("tile_dma_src.Unk40", Value=0x100)  # every new-compiler task (census §9)
    if spec.src1 is not None:
        spec.header.update(RBase0=spec.src1.slot, RBE0=1, SrcLoc=1)
    if spec.src2 is not None:
        spec.header.update(RBase1=spec.src2.slot, RBE1=1)
        spec.set("l2.SourceCfg", Bit24=1)  # = RBE1 (98/98)
    if spec.dst is not None:
        spec.header.update(WBase=spec.dst.slot, WBE=1, DstLoc=1, TSE=1, TSR=1)
    if spec.coefficients:
        spec.header.update(KBase0=spec.kernel_slot, KBE0=1)
    if spec.is_ne:
        spec.header["ENE"] = spec.get("common.Cfg", "ActiveNE") + 1


def _dma_idle_rules(spec: TaskSpec):
    if spec.src1 is None:
        spec.fields.setdefault("tile_dma_src.DMAConfig.En", 0)
        for name, value in SRC_IDLE.items():
            spec.fields.setdefault(f"tile_dma_src.DMAConfig.{name}", value)
        spec.set("tile_dma_src.Fmt", **IDLE_FMT)
    if spec.src2 is None:
        spec.set("tile_dma_src.Src2DMAConfig", **SRC_IDLE)
    if spec.dst is None:
        spec.set("tile_dma_dst.DMAConfig", **DST_IDLE)
        spec.set("tile_dma_dst.Fmt", **IDLE_FMT)


def _kernel_rules(spec: TaskSpec):
    """KDMA defaults the new compiler writes in every task (census §6.7, §9)."""
    for i in range(16):
        spec.set(f"kernel_dma_src.CoeffDMAConfig[{i}]", En=int(i < spec.coefficients), CacheHint=2)
    for i in range(4):
        spec.set(f"kernel_dma_src.AuxDMAConfig[{i}]", Value=0x80)
        spec.set(f"kernel_dma_src.AuxSize[{i}]", Value=0x40)
    if spec.coefficients:
        # Channels not enabled fetch nothing at 0 (upstream `norm_softmax_a1_1x*x1x1` task 3: its
        # one table at 0x80, CoeffBaseAddr[1..15] = 0).
        for i in range(16):
            base, size = spec.kernel_chunks[i] if i < spec.coefficients else (0, 0x40)
            spec.set(f"kernel_dma_src.CoeffBaseAddr[{i}]", Addr=base // 64)
            spec.set(f"kernel_dma_src.CoeffBfrSize[{i}]", MemBfrSize=size // 64)


def to_task(spec: TaskSpec):
    finish(spec)
    return build_task(spec.header, spec.fields)
