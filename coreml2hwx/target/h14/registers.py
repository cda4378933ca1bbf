"""H14 (M2) header words and register writes of each task, translated from our H13 program.

Apple's H14 programs have the task structure, L2 layout, strides and weights of the H13 programs
for the same MIL (h14-register-census.md §1); what differs is the encoding, which this module
rebuilds from the H13 register state of every task, and a few placement choices:

* header: census §2 (TID, ExeCycles, LogEvents - 0x400, DebugLogEvents without bit 1 -
  `debug_log_events`, LiveOuts = the 64 KiB L2 regions still live after the task - `live_outs`,
  TSR | TDE << 1 | ENE << 16); the task-size field is left 0.
* Common: ConvCfg split into OCGSize (0x1C) and the kernel/stride/pad word (0x20, 6-bit Kw/Kh),
  every later register one word up (census §4.1).  L2, PE and NE keep their H13 offsets.
* TileDMA / KernelDMA: 64-bit Lo/Hi buffer addresses, re-encoded DMA config words, coefficient
  bases and sizes as on H13; a LUT comes through its own channel (census §4.7).
* Only registers off their default are written; the defaults are the values the paired H13 task
  holds where H14 leaves a register out (census §4 "H13 values ... where H14 omits it"); strides
  only where the dimension they step has more than one element (`dma_strides`, `strided`).
* Where H14 places work differently: a task H13 runs on 8 NEs runs on 16 (`spread`); an NE task
  without weights over several rows shifts by log2(128 / W) (`row_shift`) and may stage its rows
  by H14's rule (`narrow_rows`); the SmallSourceMode shifts of 1x1 kernels, LUTs and
  matrix-vector tasks (`small_source_shift`, `vector_conv`); a PE result kept in L2 loses its
  DMA format (`pe_result_in_l2`); a source broadcast along C is Dependent with no channel stride
  (`src1_channel_broadcast`); scratch surfaces get their own cache hints (`dst_hint`,
  `kernel_dma`); a vector H13 reads back through the scratch slot is a dependent L2 read
  (`vector_read`, `channel_sum_of_vector`, `exe_cycles`); the transposing copy of a matmul
  unicasts Cin / 16 channels per NE (`transposing_copy`); matrix-vector and runtime products are
  in SmallSourceMode by K (`matvec`); an NE task's partial L2 alias hints lose their conv
  aliases (`conv_alias_free`); KernelCfg has no DisallowAbort bit (`ne`).

Evidence beyond ../shared: upstream H14 oracles (joshuaswarren/mil-hwx-compiler
research/oracles/h14, same compiler build unless noted), cited by case name; the words read off
about 45 of them agree with this module's output except where a docstring says not.

Every rule is stated on the H13 register state (field names of `maps.h13`); the oracle cases only
serve as evidence.  The BAR slot of every address register comes from the H13 header's
RBase/WBase/KBase fields; the record packer turns it into the record tag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from coreml2hwx.errors import UnsupportedError
from coreml2hwx.program import Program
from coreml2hwx.target.h13 import l2 as l2_13
from coreml2hwx.target.maps import h13 as map13
from coreml2hwx.target.maps import h14 as map14
from coreml2hwx.target.maps.h14 import RESET

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
        self.previous: Task13 | None = None  # the task before it in the program

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

    @property
    def groups(self) -> int:
        return self("common.GroupConvCfg.NumGroups")

    @property
    def depth_in(self) -> int:
        return self("common.InDepth.Depth")

    @property
    def depth_out(self) -> int:
        return self("common.OutDepth.Depth")


def h13_tasks(program13: Program) -> list[Task13]:
    if program13.target != "h13":
        raise UnsupportedError(f"h14 re-encoding takes an h13 program, got {program13.target}",
                               where=program13.name)
    tasks = [Task13(i, list(task.header), dict(state))
             for i, (task, state) in enumerate(program13.states())]
    for before, task in zip(tasks, tasks[1:]):
        task.previous = before
    return tasks


# ----------------------------------------------------------------------------------------------
# Header (census §2)
# ----------------------------------------------------------------------------------------------

def header(t: Task13, live: int) -> list[int]:
    words = map14.HEADER.encode({
        "TID": t.tid,
        "ExeCycles": exe_cycles(t),
        "LogEvents": t.head("LogEvents") - 0x400,  # 38/38
        "Exceptions": t.head("Exceptions"),
        "DebugLogEvents": debug_log_events(t),
        "DebugExceptions": t.head("DebugExceptions"),
        "LiveOuts": live,
        "TSR": 1, "TDE": t.head("TDE"), "ENE": engines(t),  # TSR set in 38/38
    })
    if map14.HEADER.extension and map14.HEADER.extension.present(words):
        words.append(0)
    return words


VECTOR_READ_CYCLES = (3, 4096)  # ExeCycles of a `vector_read`: 3 per 4096 values, rounded down


def exe_cycles(t: Task13) -> int:
    """Header ExeCycles: H13's, but for a `vector_read`, which H13 prices at 0 (its read goes
    through the scratch declaration) and H14 at 3 C / 4096 rounded down over its C = Win values -
    a fit to upstream h14norm_softmax_a1_1x{1024,2048,4096}x1x1 task 2: 0, 1, 3."""
    if vector_read(t):
        per, values = VECTOR_READ_CYCLES
        return per * t("common.InDim.Win") // values
    return t.head("ExeCycles")


EXPONENT_LOG = 0x2000  # DebugLogEvents bit 13


def debug_log_events(t: Task13) -> int:
    """H13's DebugLogEvents without bit 1 (30/30).  H13 clears bit 13 in tasks whose LUT rescales
    its input's exponent (`h13.assemble`); H14 keeps the clear bit (real_div, pow, rsqrt upstream:
    0xFFD868 / 0xFFD800) except in a LUT task in SmallSourceMode over several rows (upstream
    h14norm_softmax_a1_1x64x8x8 task 3, the reciprocal of the channel sum over 8 rows: H13
    0xFFD800, H14 0xFFF800; so over the 64 pixels of one row of h14norm_softmax_a1_1x8x1x64 task
    3, SmallSourceMode by `lut_channel_sum`; the same task of the one-pixel
    h14norm_softmax_a1_1x1024x1x1 keeps 0xFFD800)."""
    debug = t.head("DebugLogEvents") & ~2
    small_source = H13.get({CFG13: cfg_word(t)}, "common.Cfg.SmallSourceMode")
    if t.lut and small_source and t.rows_out * t("common.OutDim.Wout") > 1:
        debug |= EXPONENT_LOG
    return debug


LIVE_REGION = 1 << 16  # bytes of L2 per LiveOuts bit


def live_outs(tasks: list[Task13]) -> dict[int, int]:
    """Header LiveOuts of every task: 0 when the result leaves by DMA, else one bit per 64 KiB
    region of L2 holding data of this or an earlier task that a task up to one after this data's
    last reader still needs (`l2_buffers`: results kept in L2, sources kept by their fetching
    task).  Upstream H14 oracles: binary_real_div_1x128x16x16 task 0 (result 0x10200 bytes): 3;
    binary_pow_1x128x16x16 tasks 0 and 1 (0x20300 bytes): 7 - not a count of 32 KiB (3, 5);
    h14norm_softmax_a1_1x128x16x16: 7, 7, 7, 3 - x, kept at 0x10400..0x20600 by task 0 and
    last read by task 1, still counts after task 2, no longer after task 3.  1 in every
    L2-result task of ../shared (30/30, all within 0x8000 bytes)."""
    buffers = l2_buffers(tasks)
    out = {}
    for t in tasks:
        if t.dst:
            out[t.index] = 0
            continue
        mask = 0
        for producer, last, start, end in buffers:
            # a `vector_read` waits for the vector its predecessor wrote: the predecessor's
            # sources are not kept past it (upstream h14norm_softmax_a1_1x{2048,4096}x1x1 task 2:
            # x, last read by task 1, no longer counts: LiveOuts 1 and 3 where x's regions
            # would give 3 and 7)
            grace = 0 if vector_read(t) else 1
            if producer <= t.index <= last + grace:
                first, final = start // LIVE_REGION, max(start, end - 1) // LIVE_REGION
                mask |= (1 << (final + 1)) - (1 << first)
        out[t.index] = mask or 1
    return out


def l2_buffers(tasks: list[Task13]) -> list[tuple[int, int, int, int]]:
    """(producer, last reader, start, end) of every L2 range a task leaves behind: its result when
    it stays in L2, its source when the task keeps what it fetched (SourceType 1).  The last
    reader is the last later task reading an overlapping range from L2 (the producer itself when
    none does)."""
    made = []
    for t in tasks:
        if not t.dst:
            made.append((t.index, result_range(t)))
        if t("l2.SourceCfg.SourceType") == KEPT_SOURCE:
            made.append((t.index, source_range(t)))
    reads = {t.index: l2_reads(t) for t in tasks}
    buffers = []
    for producer, (start, end) in made:
        last = max([k for k, ranges in reads.items() if k > producer
                    and any(a < end and start < b for a, b in ranges)], default=producer)
        buffers.append((producer, last, start, end))
    return buffers


KEPT_SOURCE = 1  # l2.SourceCfg.SourceType: fetched by DMA and kept in L2 for later tasks


def extent(base: int, steps: tuple[int, int], channel: int, row: int) -> tuple[int, int]:
    return base, base + max(steps[0] * channel, steps[1] * row, l2_13.UNIT)


def result_range(t: Task13) -> tuple[int, int]:
    return extent(t.word("l2.ResultBase"), result_steps(t), t.word("l2.ConvResultChannelStride"),
                  t.word("l2.ConvResultRowStride"))


def source_range(t: Task13) -> tuple[int, int]:
    channels = 1 if src1_channel_broadcast(t) else t("common.Cin.Cin")
    return extent(t.word("l2.SourceBase"), (channels, t.rows_in),
                  t.word("l2.SourceChannelStride"), t.word("l2.SourceRowStride"))


def l2_reads(t: Task13) -> list[tuple[int, int]]:
    """The L2 ranges a task reads without fetching them itself: its first source when it is
    already in L2 (SourceType 0), its second when it does not come by DMA."""
    ranges = []
    if t("l2.SourceCfg.SourceType") == 0 and t.word("l2.SourceRowStride"):
        ranges.append(source_range(t))
    channel, row = t.word("l2.Src2ChannelStride"), t.word("l2.Src2RowStride")
    if not t.src2 and (channel or row):
        ranges.append(extent(t.word("l2.Src2Base"), src2_steps(t), channel, row))
    return ranges


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
    # InDepth / OutDepth: written when not 1 (8 in upstream layer_norm_1x64x8x8 tasks 0 and 1).
    _put(out, c + 0x04, t.word("common.InDepth"), default=RESET["common.InDepth"])
    # Cin and Cout are left out at 16: Cout in env_mm_r2rr (and written at 64 in a runtime-weight
    # matmul too, env_mm_r3rr task 2, census §4.1), both in upstream binary_add_1x16x1x1 and
    # both tasks of binary_real_div_1x16x1x1 (a later build of Apple's compiler).
    _put(out, c + 0x0C, t.word("common.Cin"), default=RESET["common.Cin"])
    _put(out, c + 0x10, t.word("common.Cout"), default=RESET["common.Cout"])
    _put(out, c + 0x14, t.word("common.OutDim"))
    _put(out, c + 0x18, t.word("common.OutDepth"), default=RESET["common.OutDepth"])
    # ChCfg and ConvCfg3d are never written (census §4.1).
    if t.ne:  # PE tasks leave the output-channel group out (census §4.1, 23/23 NE tasks)
        _put(out, c + 0x1C, ocg_size(t), default=map14.NE_OCG_SIZE_RESET)
    _put(out, c + 0x20, conv_cfg(t), default=conv_cfg_default())
    _put(out, c + 0x28, group_cfg(t), default=RESET["common.GroupConvCfg"])
    _put(out, c + 0x2C, t.word("common.TileCfg"))
    _put(out, c + 0x30, t.word("common.Unk2C"), default=RESET["common.Unk2C"])
    _put(out, c + 0x34, t.word("common.Unk30"), default=RESET["common.Unk30"])
    _put(out, c + 0x38, cfg_word(t), default=RESET["common.Cfg"])
    _put(out, c + 0x3C, t.word("common.TaskInfo"))
    _put(out, c + 0x40, t.word("common.DPE"), default=RESET["common.DPE"])


CFG13 = H13.field("common.Cfg.ActiveNE")[0]
GROUP13 = H13.field("common.GroupConvCfg.UnicastCin")[0]
ALL_NE = 4  # ActiveNE field value of a task spread over all 16 neural engines
ENGINES = 16
# A task H13 spreads over 8 NEs gives each of H14's 16 at most 8 channels (UnicastCin).
EIGHT_NE = 3  # ActiveNE field value of a task on 8 neural engines
MAX_UNICAST = 8
MIN_SPREAD_UNICAST = 4  # spread seen from C = 64 (4 per NE) on; C = 16 stays on 8 NEs


def spread(t: Task13) -> int | None:
    """UnicastCin per NE when H14 runs on all 16 NEs a task that H13 runs on 8, else None.

    Upstream H14 oracles (joshuaswarren/mil-hwx-compiler research/oracles/h14): task 0 of
    binary_real_div_1xCx1x1 (a LUT task): C = 64 -> 4, C = 128, 256, 512, 4096 -> 8; task 0 of
    reduce_mean_axes_1 (1x64x8x8, no LUT) -> 4; here x + gelu(x) at C = 768 -> 8
    (env_chain_residual_gelu_1x768x1x1).  binary_real_div_1x16x1x1 (a later build of the same
    compiler) keeps H13's 8 NEs and UnicastCin 1; C = 32 is not seen."""
    if not (t.ne and t("common.Cfg.ActiveNE") == EIGHT_NE) and not transposing_copy(t):
        return None
    unicast = min(MAX_UNICAST, t("common.Cin.Cin") // ENGINES)
    return unicast if unicast >= MIN_SPREAD_UNICAST else None


def transposing_copy(t: Task13) -> bool:
    """The kernel-less NE copy that writes x's rows as channels (Cfg Bit28, matmul task 0), which
    H13 runs on 16 NEs with one unicast channel each.  H14 unicasts Cin / 16 channels per NE
    like a `spread` task: upstream matmul_m64_k{256,1024}_n256_ty1 task 0 (Cin 64): UnicastCin
    4, OCGSize 2, Cfg 0x10200001 -> 0x30220201; at Cin 1 and 8 (matmul_m1_k256_n512_ty1,
    matmul_m8_k512_n1024_ty1) H13's words stay."""
    return (t.ne and not t.kernel and bool(t("common.Cfg.Bit28"))
            and t("common.Cfg.ActiveNE") == ALL_NE and bool(t("common.GroupConvCfg.UnicastEn"))
            and t("common.GroupConvCfg.UnicastCin") == 1)


def narrow_rows(t: Task13) -> bool:
    """An NE task without weights over a source of several rows, with a row shift (ShMax > 0),
    whose H13 source row stride follows the NE rule (`h13.l2.ne_row_stride`: the smallest odd
    row past one channel's units in the 64-unit period) where H14's rule (`ne_row_units`: the
    same without "odd") gives another row.  H14 stages the rows by its rule (`source_row`) and
    gives the task H14's ShMax (`row_shift`).  All seen at 1x64x8x8 (one-unit channels):
    reduce_max_axes_1 (one NE), upstream reduce_mean_axes_1 task 0 (8 NEs) and upstream
    binary_real_div_1x64x8x8 task 0 (16 NEs, a LUT): ShMax 3 -> 4, row stride 0x430 -> 0x420.
    Where the two rules agree nothing changes, ShMax neither: env_act_silu_1x256x32x32 (16 NEs,
    four-unit channels: 1029 units both ways, ShMax 2), upstream binary_real_div_c64_constant_
    scalar task 0 (one NE, 2 rows of one 128-byte channel, ShMax 1: Cfg 0x10001 on both).  Tasks
    with weights keep H13's odd rows (conv_k3_c64_n64_s8, conv_probe_k1_c64_n64_s8_st1_g1_bias0_
    same: 0x430), and so does a task without a row shift (binary_mul_c512_constant_blob task 0:
    2 rows, ShMax 0)."""
    if not (t.ne and not t.weights and t.rows_in > 1 and t("common.Cfg.ShMax") > 0):
        return False
    channel = t.word("l2.SourceChannelStride") // l2_13.UNIT
    units = t("common.Cin.Cin") * channel
    row = t.word("l2.SourceRowStride") // l2_13.UNIT
    return row == l2_13.ne_row_stride(units, channel) != ne_row_units(units, channel)


def ne_row_units(units: int, channel_units: int) -> int:
    """H14's row stride (units) of a weightless NE task's source: `h13.l2.ne_row_stride` without
    its "odd" condition - the smallest row >= the data whose offset in the 64-unit period exceeds
    one channel's units (64 -> 66 at one unit, 1024 -> 1029 at four; `narrow_rows`); channels of
    128 bytes or more unpadded, as on H13."""
    if channel_units >= l2_13.WIDE_CHANNEL_UNITS:
        return units
    row = units
    while row % l2_13.BANK_PERIOD <= channel_units:
        row += 1
    return row


ROW_BYTES = 128  # an NE row shift covers at most 128 / W rows (`h13.activation.sh_max`)


def row_shift(t: Task13) -> int:
    """Common.Cfg ShMax.  H13 gives an NE task without weights min(log2 H, log2(128 / W))
    (`h13.activation.sh_max`); H14 drops the log2 H bound on a source of several rows:
    log2(128 / W).  At 8x8, 3 -> 4: reduce_max_axes_1, upstream reduce_mean_axes_1 task 0,
    binary_real_div_1x64x8x8 task 0, binary_pow_1x64x8x8 tasks 0, 1 and 2 (task 2 with ShPref =
    ShMin = 1: 0x231101 -> 0x241101).  Where the bound does not bind nothing changes: 3 at
    16x16 (upstream binary_pow_1x128x16x16, real_div_1x128x16x16), 2 at 32x32
    (env_act_silu_1x256x32x32), 1 over 2 rows of W = 64 (upstream
    binary_real_div_c64_constant_scalar task 0); H = 1 keeps 0 (unary_*)."""
    sh_max = t("common.Cfg.ShMax")
    width = t("common.InDim.Win")
    if not (t.ne and not t.weights and t.rows_in > 1 and sh_max > 0 and 0 < width <= ROW_BYTES):
        return sh_max
    by_width = (ROW_BYTES // width).bit_length() - 1
    by_rows = t.rows_in.bit_length() - 1
    if sh_max != min(by_rows, by_width):  # not the `sh_max` formula: a shift set otherwise
        return sh_max
    return by_width


def ocg_size(t: Task13) -> int:
    """OCGSize: H13's, or log2 UnicastCin in a spread task (2 at C = 64, 3 = left out at
    C >= 128; real_div, x + gelu(x), reduce_mean)."""
    unicast = spread(t)
    if unicast is None:
        return t("common.ConvCfg.OCGSize")
    return unicast.bit_length() - 1


def group_cfg(t: Task13) -> int:
    """GroupConvCfg: H13's, with the per-NE UnicastCin of a spread task (0x44001 at C = 64,
    0x84001 from C = 128 on)."""
    word = t.word("common.GroupConvCfg")
    unicast = spread(t)
    if unicast is None:
        return word
    return H13.encode({"common.GroupConvCfg.UnicastCin": unicast}, {GROUP13: word})[GROUP13]


def cfg_word(t: Task13) -> int:
    """Common.Cfg.  The H14 changes the data shows (census §4.1):
    * bit 29 with a runtime kernel (0x20200001 where H13 has 0x200001; env_mm_r2rr, r3rr);
    * a task H13 spreads over 8 NEs (ActiveNE 3; a LUT's table is copied once per NE) runs on
      all 16 on H14 (`spread`), where one table serves every NE, with bit 29 and ShPref = ShMin
      = log2(16 / UnicastCin), ShMax the larger of that and `narrow_rows`' ShMax, all three 0
      when C is not a power of two (real_div task 0: 0x10180001 -> 0x30222201 at C = 64,
      0x30211101 at C = 128 ... 4096 upstream; x + gelu(x) at C = 768: 0x30200001; upstream
      reduce_mean_axes_1 task 0: 0x101b0001 -> 0x30242201);
    * ShMax of NE tasks without weights over several rows: `row_shift` (reduce_max_axes_1:
      0x30001 -> 0x40001);
    * a matrix-vector task (Bit28 with SmallSourceMode: the vector is the small source, the
      matrix the kernel) keeps no Sh* fields: 0x10244405 -> 0x10200005 (matmul_m1_k256_n512_ty1
      task 1; upstream's census of 265 H14 tasks, 36 matvec shapes among them, never shows a
      0x102444xx Cfg, which H13 writes for every K <= 512 matvec);
    * a 1x1 convolution in SmallSourceMode over more than one row: `small_source_shift`;
    * a matrix-vector task is in SmallSourceMode iff K < 2048, whatever its L2 bytes (H13: the
      K x M source within 16 KiB): set at K = 256, 1024 with M = 64 (upstream matmul_m64_k256_
      n256_ty1, matmul_m64_k1024_n256_ty1 task 1: 0x10200001 -> 0x10200005), K = 256, 512 with
      M = 1, 8 as H13; clear at K = 2048 (env_mm_r2rb_m1_k2048_*, as H13).  Likewise a
      runtime x runtime product: set at K = 64 (env_mm_r3rr_m64_k64_n64_tx0_ty1_b1 task 2:
      0x200001 -> 0x20200005), clear at K = 2048 (env_mm_r2rr_m16_k2048_n2048_tx0_ty0);
    * a `lut_channel_sum` is in SmallSourceMode over at most 8 rows, as a convolution (H13:
      while a channel row is one 16-byte line, W <= 8): upstream h14norm_softmax_a1 task 3 set
      at 1x8x1x64 (H13 clear), 1x64x8x8 and 1x{1024,2048,4096}x1x1, clear at 1x128x16x16."""
    cfg = t.word("common.Cfg")
    if t.runtime_weights:
        cfg |= 1 << 29
    sh_max = row_shift(t)
    fields = {"common.Cfg.ShMax": sh_max}
    unicast = spread(t)
    if unicast is not None and t("common.Cfg.ShPref"):
        # shifts H13 already sets stay (upstream h14norm_layer_norm_ax1_1x64x8x8 tasks 0 and 3,
        # the channel mean over 8 rows: 0x101c4401 -> 0x30244401)
        fields = {"common.Cfg.ActiveNE": ALL_NE, "common.Cfg.ShMax": sh_max}
        cfg |= 1 << 29
    elif unicast is not None and transposing_copy(t):
        # ShPref = ShMax = log2(16 / UnicastCin); ShMin log2(128 / W) below 128-byte rows
        # (`ROW_BYTES`), else H13's 0 - a fit: 0x30220201 at Cin 64 over W = 256, 1024
        # (matmul_m64_k{256,1024}_n256_ty1), 0x30221201 over W = 64 (the w^T copy, task 1 of
        # env_mm_r3rr_m64_k64_n64_tx0_ty1_b1)
        shift = (ENGINES // unicast).bit_length() - 1
        width = t("common.InDim.Win")
        narrow = (ROW_BYTES // width).bit_length() - 1 if 0 < width < ROW_BYTES else 0
        fields = {"common.Cfg.ShPref": shift, "common.Cfg.ShMax": max(shift, sh_max),
                  "common.Cfg.ShMin": max(narrow, t("common.Cfg.ShMin"))}
        cfg |= 1 << 29
    elif unicast is not None:
        channels = t("common.Cin.Cin")
        shift = (ENGINES // unicast).bit_length() - 1 if channels & (channels - 1) == 0 else 0
        fields = {"common.Cfg.ActiveNE": ALL_NE, "common.Cfg.ShPref": shift,
                  "common.Cfg.ShMin": shift, "common.Cfg.ShMax": max(shift, sh_max) if shift else 0}
        cfg |= 1 << 29
    if matvec(t):
        fields["common.Cfg.SmallSourceMode"] = int(t("common.Cin.Cin") < MATVEC_LARGE_K)
    elif lut_channel_sum(t):
        fields["common.Cfg.SmallSourceMode"] = int(t.rows_out <= SMALL_SOURCE_ROWS)
    cfg = H13.encode(fields, {CFG13: cfg})[CFG13]
    if t("common.Cfg.SmallSourceMode") and t.kernel:
        shift = small_source_shift(t)
        if shift is not None:
            fields = {f"common.Cfg.{name}": shift for name in SHIFTS}
            cfg = H13.encode(fields, {CFG13: cfg})[CFG13]
    return cfg


MATVEC_LARGE_K = 2048
SMALL_SOURCE_ROWS = 8  # as a convolution's SmallSourceMode (Hout <= 8, `h13.conv.conv_cfg_sh`)


def lut_channel_sum(t: Task13) -> bool:
    """An NE sum over all channels (Cout 1) through a table: softmax's 1 / sum."""
    return t.lut and t("common.Cout.Cout") == 1 < t("common.Cin.Cin")


def matvec(t: Task13) -> bool:
    """A matrix-vector task: Bit28 with weights (the vector the source, the matrix the kernel),
    or a runtime x runtime product (its kernel a runtime surface)."""
    return (bool(t("common.Cfg.Bit28")) and t.weights) or (t.ne and t.runtime_weights)


def small_source_shift(t: Task13) -> int | None:
    """ShPref = ShMin = ShMax of a task in SmallSourceMode with a kernel fetch (weights or a LUT;
    H13: 4), where H14 differs.

    * matrix-vector (Bit28): 0 (`cfg_word`);
    * a 1x1 kernel over Hout > 1 rows: log2 Hout, 3 at Hout 8 (conv_probe_k1_c64_n64_s8_st1_g1_
      bias0_same; upstream conv_k1_c64_n64_s8_bias0_relu, env_conv_k1_c64_n64_s16_st2_g1_bias0,
      env_conv_k1_c256_n256_s8_st1_g1_bias1).  H13's 4 stays with a 3x3 kernel at Hout 8
      (conv_k3_c64_n64_s8_bias0, env_conv_k3_c64_n64_s16_st2_g1_bias0, upstream
      env_conv_k3_c128_n128_s16_st2_g1_bias1); a LUT alike (upstream h14norm_softmax_a1_1x64x8x8
      task 3, the reciprocal of the channel sum over 8 rows: 0x44405 -> 0x33305);
    * a 1x1 kernel over one row (`vector_conv`): 0 when each coefficient channel holds at most
      64 KiB, else H13's 4.  Hout 2 and 4 are not seen."""
    if t("common.Cfg.Bit28"):
        return 0
    if t("common.ConvCfg.Kh") == 1 and t.rows_out > 1:
        return t.rows_out.bit_length() - 1
    if vector_conv(t):
        return 0
    return None


SMALL_KERNEL_BYTES = 1 << 16


def vector_conv(t: Task13) -> bool:
    """A 1x1 kernel over a single pixel in SmallSourceMode: a LUT, or weights whose coefficient
    channels hold at most 64 KiB each.  H14 gives it no Sh* shifts (Cfg 0x244405 -> 0x200005)
    and an unpadded L2 source row (`source_row`; H13's odd NE row, e.g. 0x1030 for 256 channels
    -> 0x1000), the result following it.  Upstream H14 oracles, H13 twins as ours: conv_k1_c256_n512_s1_bias0
    (0x4000 bytes per channel), conv_k1_c512_n512_s1_bias0 (0x8000), conv_k1_c1024_n512_s1_bias0
    (0x10000).  Above 64 KiB H13's words stay: env_conv_k1_c768_n768_s1_st1_g1_bias1 (0x12000),
    conv_k1_c1024_n1024_s1_bias0 (0x20000).  (Cout <= 512 would split these five the same way;
    the kernel bytes are the more physical reading.)"""
    if not (t.kernel and t("common.Cfg.SmallSourceMode") and not t("common.Cfg.Bit28")):
        return False
    if not (t("common.ConvCfg.Kh") == 1 and t("common.ConvCfg.Kw") == 1):
        return False
    if t.rows_in != 1 or t.rows_out != 1 or t("common.InDim.Win") != 1:
        return False
    if t.lut:  # a 128-byte table (upstream h14norm_softmax_a1_1x1024x1x1 task 3: 0x44405 -> 0x5)
        return True
    sizes = [t.word(f"kernel_dma_src.CoeffBfrSize[{i}]") for i in range(16)]
    return max(sizes) <= SMALL_KERNEL_BYTES


SHIFTS = ("ShPref", "ShMin", "ShMax")


def engines(t: Task13) -> int:
    """Header ENE: ActiveNE + 1 of the H14 Cfg on NE tasks (5 for a spread task), 0 otherwise."""
    if not t.head("ENE"):
        return 0
    return H13.get({CFG13: cfg_word(t)}, "common.Cfg.ActiveNE") + 1


_CONV_MOVED = ("Sx", "Sy", "Px", "Py", "Ox", "Oy")


def conv_cfg(t: Task13) -> int:
    """H13 ConvCfg without OCGSize, Kw/Kh re-packed to 6 bits (census §4.1, 3/3)."""
    values = {name: t(f"common.ConvCfg.{name}") for name in ("Kw", "Kh") + _CONV_MOVED}
    return map14.REGISTERS.encode({f"common.ConvCfg.{k}": v for k, v in values.items()})[0x20]


def conv_cfg_default() -> int:
    """A 1x1 stride-1 unpadded kernel, Ox = Oy = 1: what H14 leaves out."""
    return map14.reset_words()[map14.BLOCK_BASES["common"] + 0x20]


def l2(t: Task13, out: Writes) -> None:
    base, b13 = map14.BLOCK_BASES["l2"], map13.BLOCK_BASES["l2"]

    def word(offset):
        return t.state.get(b13 + offset, 0)

    def copy(offset, default=None):
        _put(out, base + offset, word(offset), default)

    copy(0x00, default=0)   # L2Cfg
    _put(out, base + 0x04, source_cfg(t))
    copy(0x08, default=0)   # SourceBase
    reads_source = t("l2.SourceCfg.SourceType") != 0
    # not in layer_norm task 1 (Cin 1, no source), nor for a source broadcast along channels
    if (reads_source or t("common.Cin.Cin") > 1) and not src1_channel_broadcast(t):
        copy(0x0C)          # SourceChannelStride
    row = source_row(t)
    if reads_source:        # row, depth and group strides only when the source is read
        out[base + 0x10] = row
        for offset in (0x14, 0x18):
            copy(offset)
    else:
        # A source already in L2 over several rows keeps its row stride (upstream
        # binary_pow_1x128x16x16 task 2: 16 rows, 0x2030; not with one row: matmul, x + silu(x)
        # task 1; nor without a source: layer_norm task 1, Cin 1 over 512 rows), and a grouped
        # task its group stride (upstream reduce_mean_axes_1 task 1).
        if t.rows_in > 1 and t("common.Cin.Cin") > 1 and row:
            out[base + 0x10] = row
        if t.groups > 1:
            copy(0x18)
    if t("l2.SourceCfg.Bit24"):  # second source by DMA: all its L2 staging words
        for offset in (0x1C, 0x20, 0x24, 0x28, 0x2C):
            copy(offset)
    else:                   # second source already in L2
        copy(0x1C, default=0)
        strided(out, base + 0x20, word(0x20), word(0x24), word(0x28), word(0x2C),
                steps=src2_steps(t), depths=t.depth_in, groups=t.groups)
    if pe_result_in_l2(t):
        _put(out, base + 0x30, result_cfg(t), default=PE_RESULT_CFG_DEFAULT)
        copy(0x34, default=0)   # ResultBase
        if t("common.Cfg.Bits6_4") in PE_REDUCTIONS:
            # a reduction over groups keeps its group stride, and its channel stride where the
            # two differ (upstream h14norm_layer_norm_ax1_1x64x8x8 tasks 1 and 4, 8 groups of 8
            # channels: 0x10 = 0x10, group alone; h14norm_layer_norm_ax3_1x64x8x8 tasks 1 and 3,
            # 8 groups of 64: channel 0x10, group 0x400)
            if t.groups > 1:
                if t("common.Cout.Cout") > 1 and word(0x38) != word(0x44):
                    copy(0x38)
                copy(0x44)
            return
    else:
        out[base + 0x30] = conv_alias_free(t, t.word("l2.ResultCfg"), "l2.ResultCfg", streamed=True)
        _put(out, base + 0x34, result_base(t, row), default=0)
        if t("l2.ResultCfg.ResultType") == FLAT_RESULT:
            # A flat result (keep_dims = false along W) writes all four strides: upstream
            # h14norm_reduce_max_ax2_3_1x64x8x8_flat, 0x80 each, as H13's twin.
            for offset in (0x38, 0x3C, 0x40, 0x44):
                copy(offset, default=0)
            return
    strided(out, base + 0x38, word(0x38), word(0x3C), word(0x40), word(0x44),
            steps=result_steps(t), depths=t.depth_out, groups=t.groups)


def source_row(t: Task13) -> int:
    """L2 SourceRowStride: H13's; for `narrow_rows` tasks (H13's row follows the NE rule,
    `h13.l2.ne_row_stride`: odd, 67 units for 64) H14's (`ne_row_units`: 66); for a
    `vector_conv` the channels' bytes, unpadded."""
    row = t.word("l2.SourceRowStride")
    if vector_conv(t):
        return t("common.Cin.Cin") * t.word("l2.SourceChannelStride")
    if not narrow_rows(t):
        return row
    channel = t.word("l2.SourceChannelStride") // l2_13.UNIT
    return l2_13.UNIT * ne_row_units(t("common.Cin.Cin") * channel, channel)


def result_base(t: Task13, row: int) -> int:
    """L2 ResultBase: H13's; a result staged right after the source moves with its row stride
    (reduce_max_axes_1: 8 rows x 0x420 = 0x2100, H13 8 x 0x430 = 0x2180)."""
    base = t.word("l2.ResultBase")
    source = t.word("l2.SourceBase")
    old_row = t.word("l2.SourceRowStride")
    if row != old_row and base == source + t.rows_in * old_row:
        return source + t.rows_in * row
    return base


RESULT_CFG13 = H13.field("l2.ResultCfg.ResultType")[0]
FLAT_RESULT = 1  # l2.ResultCfg.ResultType of a [1, C] result written along W (`h13.reduce`)
PE_RESULT_CFG_DEFAULT = 0x100  # DMAInterleave 1 alone: left out (layer_norm task 1)


def pe_result_in_l2(t: Task13) -> bool:
    """A PE task whose result stays in L2 (ResultType 0): layer_norm tasks 0 and 1 (1x512x1x1 here,
    1x64x8x8 upstream), the only such tasks seen; NE tasks that keep their result (pow, matmul
    task 0) keep H13's words."""
    return not t.ne and t("l2.ResultCfg.ResultType") == 0


def result_cfg(t: Task13) -> int:
    """ResultCfg of `pe_result_in_l2` tasks: H13's without DMAFmt (0x500170 -> 0x500130; 0x140 ->
    0x100, which H14 leaves out).  A reduction's result has no ConvResult strides (layer_norm
    1x512x1x1 and upstream 1x64x8x8 tasks 0 and 1, not even the depth stride at depth 8);
    other results follow `strided` (channel 0x10, row 0x420 for the exp over 8 rows of
    upstream h14norm_softmax_a1_1x64x8x8 task 1)."""
    cfg = t.word("l2.ResultCfg")
    return H13.encode({"l2.ResultCfg.DMAFmt": 0}, {RESULT_CFG13: cfg})[RESULT_CFG13]


SOURCE_CFG13 = H13.field("l2.SourceCfg.SourceType")[0]


def source_cfg(t: Task13) -> int:
    """L2 SourceCfg.  A source H14 does not stream (SourceType 0) has no DMAFmt: H13's 0x160 of
    every matrix-vector task 1 is 0x120 (matmul_m1_k256_n512_ty1; 0x160 never occurs among the
    265 tasks of upstream's H14 census, 0x120 does); SourceType 2 keeps it (0x142, 0x172)."""
    cfg = t.word("l2.SourceCfg")
    if vector_read(t):
        return _source_cfg13(Dependent=2, DMAInterleave=1)
    if channel_sum_of_vector(t):
        return _source_cfg13(Dependent=1, DMAInterleave=1)
    if t("l2.SourceCfg.SourceType") == 0:
        cfg = H13.encode({"l2.SourceCfg.DMAFmt": 0}, {SOURCE_CFG13: cfg})[SOURCE_CFG13]
    cfg = conv_alias_free(t, cfg, "l2.SourceCfg", streamed=t("l2.SourceCfg.SourceType") != 0)
    if src1_channel_broadcast(t) and not t("l2.SourceCfg.Dependent"):
        cfg = H13.encode({"l2.SourceCfg.Dependent": 1}, {SOURCE_CFG13: cfg})[SOURCE_CFG13]
    return cfg


CONV_ALIASES = ("AliasConvSrc", "AliasConvRslt")
PLANAR_ALIASES = ("AliasPlanarSrc", "AliasPlanarRslt")


def conv_alias_free(t: Task13, cfg: int, register: str, *, streamed: bool) -> int:
    """An L2 Source/ResultCfg `cfg` of an NE task as H14 writes it: its conv aliases (bits 4, 5)
    only together with both planar aliases (bits 20, 22), for a source read by DMA and for
    every result.  Upstream env_mm_r3rr_m64_k64_n64_tx0_ty{0,1}_b1 task 1 (the runtime
    product's partial planar hints, `h13.matmul.ALIAS_HINTS`): SourceCfg 0x172 -> 0x142,
    0x100172 -> 0x100142, ResultCfg 0x400170 -> 0x400140, 0x40017a -> 0x40014a; the full set
    stays (0x500172, 0x500170, 0x50017a in 30-odd NE tasks), and so do PE tasks' (0x172 of
    the binary_*_constant_blob tasks 1) and an L2 source's (0x120: binary_pow_1x64x1x1 task 2)."""
    address = H13.field(f"{register}.SourceType" if "Source" in register
                        else f"{register}.ResultType")[0]
    if not (t.ne and streamed) or all(H13.get({address: cfg}, f"{register}.{name}", 0)
                                       for name in PLANAR_ALIASES):
        return cfg
    return H13.encode({f"{register}.{name}": 0 for name in CONV_ALIASES}, {address: cfg})[address]


def _source_cfg13(**fields) -> int:
    return H13.encode({f"l2.SourceCfg.{k}": v for k, v in fields.items()}, {})[SOURCE_CFG13]


def vector_read(t: Task13) -> bool:
    """An NE task reading back, as one-value channels, a vector the task before wrote along W:
    H13 reads it in DMA format through the planar alias (SourceCfg 0x00400140, with a declared
    scratch read), H14 as the dependent read of the row form (Dependent 2, DMAInterleave 1 =
    0x108; H13 writes 0x108 for the same exp over rows).  Upstream
    h14norm_softmax_a1_1x1024x1x1 task 2: 0x00400140 -> 0x108."""
    return (t.ne and t("l2.SourceCfg.SourceType") == 0 and t("l2.SourceCfg.DMAFmt") == 1
            and bool(t("l2.SourceCfg.AliasPlanarRslt")))


def channel_sum_of_vector(t: Task13) -> bool:
    """The NE sum over channels (Cout 1) through a table that follows a `vector_read`: H13 reads
    its source with AliasConvRslt and no dependency (0x120), H14 as the row form's sum (Dependent
    1 = 0x104).  Upstream h14norm_softmax_a1_1x1024x1x1 task 3: 0x120 -> 0x104; the row form
    (h14norm_softmax_a1_1x64x8x8 task 3) has 0x104 on both."""
    return (t.lut and t("l2.SourceCfg.SourceType") == 0 and not t("l2.SourceCfg.Dependent")
            and t("common.Cout.Cout") == 1 < t("common.Cin.Cin")
            and t.previous is not None and vector_read(t.previous))


SRC1_BCAST_C = 0x8  # Common.Unk30: the first source is one channel, read for every channel


def src1_channel_broadcast(t: Task13) -> bool:
    """A task reading its first source once for all channels (Unk30 bit 3: softmax's product
    with 1 / sum).  H14 marks the source Dependent 1 where H13 has 0 and leaves its channel
    stride out (upstream h14norm_softmax_a1_1x64x8x8 task 4: SourceCfg 0x120 -> 0x124, no
    0x50C; H13's twin 0x120 with channel stride 0x10)."""
    return bool(t("common.Unk30.Value") & SRC1_BCAST_C)


def strided(out: Writes, address: int, channel: int, row: int, depth: int, group: int, *,
            steps: tuple[int, int], depths: int, groups: int) -> None:
    """An L2 channel/row stride is written only where it is not 0 and the task steps it (its
    dimension has more than one element: `steps`); the depth stride only when there is more than
    one depth and it differs from the group stride (upstream layer_norm_1x64x8x8 task 1:
    Src2DepthStride 0x10 at depth 8).  Every result and second-source pair of the 27 paired
    tasks, and upstream binary_real_div_c64_constant_scalar: the 64 channels as 2 rows of one
    channel, ConvResultRowStride 0x80 (task 0) and Src2RowStride 0x80 (task 1) written though
    they equal the depth stride, the channel strides (0x80, one channel) left out.
    A grouped task writes every non-zero one of the three (upstream reduce_mean_axes_1 task 1,
    8 groups: result 0x10 / 0x80 / 0x10; upstream env_bcast_add_2x64x8x8_runtime_2x64x8x8: all
    three 0, none written)."""
    if groups > 1:
        for offset, stride in ((0, channel), (4, row), (8, depth)):
            if stride:
                out[address + offset] = stride
        return
    for offset, stride, count in ((0, channel, steps[0]), (4, row, steps[1])):
        if stride and count > 1:
            out[address + offset] = stride
    if depths > 1 and depth != group:
        out[address + 8] = depth


# Common.Unk30 flags (as `sim.machine` reads them; h13 census): the second source broadcast
# along W / H / C or channel-dense, the result's channels written along W.
SRC2_BCAST_W, SRC2_BCAST_H, SRC2_BCAST_C, SRC2_DENSE, CHANNELS_ALONG_W = (
    0x10, 0x20, 0x80, 0x200, 0x400)
PE_PAIRS, PE_REDUCTIONS = 4, (5, 6)  # PE Cfg.Bits6_4: (bias, scale) rows; reductions


def src2_steps(t: Task13) -> tuple[int, int]:
    """How many channels and rows the second source's L2 strides step: one along a broadcast
    axis; a channel-dense source steps pixels with its channel stride; a PE task taking a
    (bias, scale) pair per channel reads 2 rows of one pixel."""
    flags = t("common.Unk30.Value")
    channels = 1 if flags & SRC2_BCAST_C else t("common.Cin.Cin")
    width = 1 if flags & SRC2_BCAST_W else t("common.InDim.Win")
    rows = 1 if flags & SRC2_BCAST_H else t.rows_in
    if not t.ne and t("common.Cfg.Bits6_4") == PE_PAIRS:
        width, rows = 1, 2
    return (width if flags & SRC2_DENSE else channels), rows


def result_steps(t: Task13) -> tuple[int, int]:
    """How many channels and rows the result's L2 strides step: a channel-dense NE result
    (Cfg.Bit28) steps pixels with its channel stride, a PE reduction leaves one row, and its
    channels along W (Unk30 bit 10) one column."""
    channels, width = t("common.Cout.Cout"), t("common.OutDim.Wout")
    if t.ne and t("common.Cfg.Bit28"):
        return width, t.rows_out
    along_w = t("common.Unk30.Value") & CHANNELS_ALONG_W
    if not t.ne and t("common.Cfg.Bits6_4") in PE_REDUCTIONS:
        return (1 if along_w else channels), 1
    return (width if along_w else channels), t.rows_out


def pe(t: Task13, out: Writes) -> None:
    base = map14.BLOCK_BASES["pe"]
    _put(out, base + 0x00, t.word("pe.Cfg"), default=RESET["pe.Cfg"])
    # Scale 1.0 / bias 0 and the all-zero words of NE tasks are both defaults.
    for offset, name, one in ((0x04, "BiasScale", 0x3C000000), (0x08, "PreScale", 0x3C000000),
                              (0x0C, "FinalScale", 0x3F800000)):
        value = t.word(f"pe.{name}")
        if value not in (0, one):
            out[base + offset] = value


DISALLOW_ABORT = 1 << 12  # ne.KernelCfg.Bit12


def ne(t: Task13, out: Writes) -> None:
    base = map14.BLOCK_BASES["ne"]
    # Bit 12 (DisallowAbort) lives in the header alone on H14: upstream
    # h14norm_layer_norm_ax1_1x64x8x8 task 3, H13 0x1082, leaves the register at its 0x82.
    kernel_cfg = t.word("ne.KernelCfg") & ~DISALLOW_ABORT
    if t.lut:
        kernel_cfg |= 1 << 16  # census §4.4: LUT tasks 0x10082 where H13 has 0x82
    if t.ne and kernel_cfg not in (0x80, 0x82):
        out[base + 0x00] = kernel_cfg
    for offset, name in ((0x04, "MACCfg"), (0x08, "MatrixVectorBias"), (0x0C, "AccBias"),
                         (0x10, "PostScale")):
        _put(out, base + offset, t.word(f"ne.{name}"), default=RESET[f"ne.{name}"])


def dma_config(h13_config: int, tid: int) -> int:
    """An H13 TileDMA source config -> the H14 word: En, the cache hint's top three bits moved
    down two, DataSetId 0x0E, the task index in bits 23:16 (0x10E21 in task 1; census §4.5)."""
    hint = (h13_config >> 7) & 0x7
    return (h13_config & 1) | hint << 5 | 0xE << 8 | tid << 16


def dst_hint(h13_config: int) -> int:
    """Bits 9:7 of an H13 TileDMADst config: 1 in every task writing an output (0x040000C1), 7
    where env_mm_r3rr writes its scratch (0x040003C1)."""
    return (h13_config >> 7) & 0x7


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
        names = [f"{prefix}{name}" for name in ("RowStride", "PlaneStride", "DepthStride",
                                                 "GroupStride")]
        dma_strides(out, base + addr_at + 8, t.rows_in, t("common.Cin.Cin"), t.depth_in,
                    t.groups, *(t.word(f"tile_dma_src.{name}") for name in names), source=True)
    if t.src1:
        out[base + 0x50] = t.word("tile_dma_src.Fmt")
    if t.src2:
        # H14 prints the second source's format as the first's (0x01002031 for H13 0x2030).
        out[base + 0x54] = t.word("tile_dma_src.Src2Fmt") | 0x01000001


def dma_strides(out: Writes, address: int, rows: int, channels: int, depths: int, groups: int,
                row: int, plane: int, depth: int, group: int, *, source: bool = False) -> None:
    """A TileDMA row (plane, depth) stride is written only when there is more than one row
    (channel, depth) and it differs from the next outer stride (census §4.5/4.6: reduce_sum's
    output rows, the matmul outputs' planes; upstream layer_norm_1x64x8x8 task 0: depth stride
    0x40 at depth 8); the group stride when there is more than one group (upstream
    env_bcast_add_2x64x8x8_runtime_2x64x8x8: both sources and the result, 0x8000; upstream
    reduce_mean_axes_1 task 1: the result, 0x40).  A source over one channel has its row
    stride written even when equal to the plane stride, which steps nothing (`source`: upstream
    h14norm_reduce_sum_ax1_1x512x1x1_flat, 512 rows of one channel, row = plane = 0x40); a
    result does not (the one-row results of the reduce_sum cases, 0x40 = 0x40, left out)."""
    if rows > 1 and (row != plane or (source and channels == 1)):
        out[address] = row
    if channels > 1 and plane != depth:
        out[address + 4] = plane
    if depths > 1 and depth != group:
        out[address + 8] = depth
    if groups > 1:
        out[address + 12] = group


def tile_dma_dst(t: Task13, out: Writes, slots: dict[int, int]) -> None:
    if not t.dst:
        return
    base = map14.BLOCK_BASES["tile_dma_dst"]
    # Census §4.6: 0x01000E31, the task index in bits 23:16 (0x01010E31 in task 1); bit 24 is
    # H13's L2BfrMode (bit 26): clear in upstream reduce_mean_axes_1 task 1 (H13 0xC1 -> 0x10E31);
    # bits 7:5 H13's bits 9:7 as in the source config (`dma_config`): 1 -> 0x31, and 7 -> 0xF1
    # for env_mm_r3rr task 0, whose H13 config 0x040003C1 writes the scratch task 2 reads.
    cfg = t.word("tile_dma_dst.DMAConfig")
    buffered = t("tile_dma_dst.DMAConfig.L2BfrMode")
    out[base + 0x00] = 0x00000E11 | dst_hint(cfg) << 5 | buffered << 24 | t.tid << 16
    out[base + 0x08] = t.word("tile_dma_dst.BaseAddr")
    out[base + 0x0C] = 0
    slots[base + 0x08] = t.head("WBase")
    dma_strides(out, base + 0x10, t.rows_out, t("common.Cout.Cout"), t.depth_out, t.groups,
                *(t.word(f"tile_dma_dst.{name}") for name in ("RowStride", "PlaneStride",
                                                               "DepthStride", "GroupStride")))
    out[base + 0x20] = t.word("tile_dma_dst.Fmt")


def kernel_dma(t: Task13, out: Writes, slots: dict[int, int], lut_offset: int | None,
               surfaces: dict[int, int], scratch_slots: frozenset[int] = frozenset()) -> None:
    base = map14.BLOCK_BASES["kernel_dma_src"]
    # MasterConfig (census §4.7): bit 7 whenever the result leaves by DMA (0x80 alone in PE tasks,
    # absent in every L2-result task); with a kernel fetch also 0x240, H13's sparse bit 5 and the
    # task index + 1 in bits 23:16 (0x102C0 task 0, 0x202C0 / 0x20240 task 1, 0x302C0 task 2).
    # Not with a destination cache hint other than H13's usual 1 (env_mm_r3rr task 0: hint 7,
    # the scratch for task 2's kernel; no MasterConfig word).
    master = 0x80 if t.dst and dst_hint(t.word("tile_dma_dst.DMAConfig")) == 1 else 0
    if t.kernel:
        sparse = t("kernel_dma_src.MasterConfig.KernelSparseFmt") << 5
        master |= 0x240 | sparse | (t.tid + 1) << 16
    _put(out, base + 0x00, master, default=0)
    if not t.kernel:
        return
    # Coefficient channels: En on the channels H13 enables when weights come through them (all
    # 16 in every H14 oracle; fewer than 16 outputs enable one channel each on H13, tinygrad
    # conv.hwx); the task index in 23:16; bit 6 in place of bit 5 for a kernel an earlier task
    # wrote to its scratch surface (env_mm_r3rr task 2: 0x20E41; an input kernel: env_mm_r2rr
    # task 0, 0xE21).
    scratch = t.runtime_weights and t.head("KBase0") in scratch_slots
    channel = (0xE00 if t.runtime_weights else 0) | (0x40 if scratch else 0x20) | t.tid << 16
    for i in range(16):
        on = t.weights and t(f"kernel_dma_src.CoeffDMAConfig[{i}].En")
        _put(out, base + 0x18 + 4 * i, channel | int(bool(on)), default=0x20)
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
    # a scratch surface (an intermediate) has a size but no I/O descriptor (env_mm_r3rr: the
    # kernel of task 2 is the 0x2000-byte scratch task 1 writes, KernelDMA 0x1914 = 0x2000)
    surfaces = {x.slot: x.total_bytes if x.total_bytes is not None else x.size
                for x in program13.tensors if x.slot is not None
                and (x.total_bytes is not None or x.size is not None)}
    scratch = frozenset(x.slot for x in program13.tensors
                        if x.role == "intermediate" and x.slot is not None)
    live = live_outs(tasks)
    plans = []
    for t in tasks:
        writes, slots = {}, {}
        for rule in (common, l2, pe, ne):
            rule(t, writes)
        tile_dma_src(t, writes, slots)
        tile_dma_dst(t, writes, slots)
        kernel_dma(t, writes, slots, offsets.get(t.index), surfaces, scratch)
        plans.append(TaskPlan(header(t, live[t.index]), dict(sorted(writes.items())), slots))
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
