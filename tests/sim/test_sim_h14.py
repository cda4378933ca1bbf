"""Apple's H14 (M2) register programs from ../shared/oracles/h14, run in the simulator, against
their MIL.

Ground truth: each oracle is the program Apple's compiler (macOS 26.6.2) produced for the MIL text
it records, for target h14.  The simulator runs it through `coreml2hwx.sim.h14` (each task's
header and register writes translated into the H13 task the simulator executes).  The constant
section is rebuilt by the H13 rules (test_sim_oracles.CASES: weights rule, lut-rules tables, the
weight layout of sim/kernel.py) with one H14 difference - a LUT program stores each table once,
128 bytes (h14 census §1) - and is used only when its sha256 equals Apple's.  The MIL math and
the tolerances are those of the H13 twin in test_sim_oracles.py; the four cases without an H13
twin use the tolerance of the same op there, named below.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from coreml2hwx.errors import SimulationError
from coreml2hwx.program import Program, Record
from coreml2hwx.report.jsonview import task_from_json
from coreml2hwx.sim import run_program
from coreml2hwx.sim.evidence import NO_EFFECT, rule_for
from coreml2hwx.sim.fields import header_fields, register_fields
from coreml2hwx.sim.h14 import to_h13
from coreml2hwx.target import generation
from coreml2hwx.target.h13.sparse import pack_sparse
from coreml2hwx.target.maps.h13 import HEADER as H13
from coreml2hwx.target.maps.h13 import REGISTERS as R13
from tests.conftest import load_json, oracle_files, shared_files
from tests.sim import test_sim_oracles as h13
from tests.sim.support import (bare_tables, compiled_tensor, matches_apple, oracle, oracle_program,
                               pack_conv, pack_depthwise)
from tests.sim.test_sim_sparse import compiled_weights, conv_reference


def h14_oracle(name: str) -> dict:
    return oracle(name, "h14")


# -- constant sections (H13 rules, H14 register addresses) ---------------------------------------

def tables(*names):
    return lambda case: bare_tables(case, *names)


def _words(case):
    td = next(td for td in case["task_descriptors"] if "0x01900" in td["blocks"])
    return {int(a, 16): int(v, 16) for b in td["blocks"].values() for a, v in b["words"].items()}


def conv_section(case):
    """H13's conv_section with the H14 places of OCGSize (Common 0x1C, alone) and KernelCfg
    (NE 0xD00; SparseFmt bit 8)."""
    w, b = h13.conv_weights(case)
    p = case["parameters"]
    words = _words(case)
    lanes = 1 << (words.get(0x1C, 0) & 7)
    if words.get(0xD00, 0x82) >> 8 & 1:  # stride-2 zero-skipping weights (test_sim_sparse)
        data, _ = pack_sparse(*compiled_weights(case), lanes=lanes, groups=p.get("groups", 1))
        return data
    if p.get("groups", 1) == p["output_channels"] == p["input_channels"]:
        return pack_depthwise(w, b)
    return pack_conv(w, b, lanes, p.get("groups", 1))


def scale_rows(case):
    """A per-channel factor: C zeros (bias row), then its C values (scale row) - the mul twin of
    H13's blob_rows (a + row0) * row1."""
    z = compiled_tensor(case, (int(np.prod(case["weights"]["shape"])),))
    return np.concatenate([np.zeros_like(z), z]).tobytes()


def sparse_conv_ref(case, x):
    return conv_reference(case, x)


def twin(name: str, consts=None, ref=None) -> h13.Case:
    """The H13 twin's reference, check and inputs (test_sim_oracles.CASES)."""
    case = h13.CASES[name]
    return replace(case, consts=consts or case.consts, ref=ref or case.ref)


CASES: dict[str, h13.Case] = {
    **{name: twin(name) for name in (
        "binary_add_1x64x8x8", "binary_add_c64_constant_scalar",
        "binary_minimum_c64_constant_blob", "binary_mul_1x128x16x16",
        "env_bcast_add_1x64x8x8_runtime_1x64x1x1", "env_bcast_mul_1x768x16x16_scalar",
        "env_mm_r2rb_m1_k2048_n2048_tx1_ty1", "env_mm_r2rr_m16_k2048_n2048_tx0_ty0",
        "layer_norm_1x512x1x1", "reduce_max_axes_1", "reduce_sum_axes_2_3", "unary_relu_c64")},
    **{name: twin(name, conv_section) for name in (
        "conv_k3_c64_n64_s8_bias0", "conv_probe_k1_c64_n64_s8_st1_g1_bias0_same",
        "env_conv_k3_c64_n64_s16_st1_g64_bias0")},
    # stride 2: test_sim_sparse's reference (the H13 twin runs there)
    "env_conv_k3_c64_n64_s16_st2_g1_bias0": h13.Case(conv_section, sparse_conv_ref, "conv"),
    "binary_pow_1x64x1x1": twin("binary_pow_1x64x1x1", tables("log2", "exp2")),
    "binary_real_div_1x64x1x1": twin("binary_real_div_1x64x1x1", tables("reciprocal")),
    "env_act_gelu_1x768x1x1_sigmoid_approximation": twin(
        "env_act_gelu_1x768x1x1_sigmoid_approximation", tables("gelu_sigmoid")),
    "env_act_silu_1x256x32x32": twin("env_act_silu_1x256x32x32", tables("silu")),
    "env_chain_residual_gelu_1x768x1x1": twin("env_chain_residual_gelu_1x768x1x1",
                                              tables("gelu")),
    "unary_sigmoid_c64": twin("unary_sigmoid_c64", tables("sigmoid")),
    # No H13 twin: the H13 case of the same op and its tolerance.
    "unary_gelu_c512": replace(h13.CASES["unary_gelu_c64"], consts=tables("gelu")),
    "binary_mul_c512_constant_blob": h13.Case(scale_rows, lambda c, x: h13.f32(x) * h13.f32(
        compiled_tensor(c, (1, 512, 1, 1)))),  # as binary_add_c512_constant_blob: exact
    "matmul_m1_k256_n512_ty1": h13.Case(h13.matmul_section, h13.matmul_ref, "conv"),
    "env_mm_r3rr_m64_k64_n64_tx0_ty1_b1": h13.Case(h13.zeros, h13.matmul_ref, "conv"),
}

# Compiled H14 oracles that do not run, and why: (reason, the SimulationError it raises, or None
# when the constant section cannot be rebuilt).  test_not_runnable_cases_stop_for_their_reason
# keeps each reason true.
NOT_RUNNABLE: dict[str, tuple[str, str | None]] = {
    "env_conv_k3_c64_n64_s16_st2_g1_bias0": (
        "constant section: H14 packs these stride-2 zero-skipping weights differently from H13 "
        "(same size, chunk sizes and non-zero byte count; the first 128 bytes hold 68 non-zero "
        "bytes, H13's 69); no variant of the H13 packing tried (slot lead 0-16, count - 1, kept "
        "tail, slot-axis orders, lane and output-channel orders, kernel rotations and flips, "
        "stride-phase orders, subnormals flushed) hashes like Apple's", None),
}


def _run(name: str):
    return h13.run_case(name, CASES[name], h14_oracle(name))


@pytest.mark.parametrize("name", sorted(set(CASES) - set(NOT_RUNNABLE)))
def test_h14_oracle_program_computes_its_mil(name):
    h13.check_against_mil(name, *_run(name))


@pytest.mark.parametrize("name", sorted(NOT_RUNNABLE))
def test_not_runnable_cases_stop_for_their_reason(name):
    why, error = NOT_RUNNABLE[name]
    if error is None:
        case = h14_oracle(name)
        assert not matches_apple(case, CASES[name].consts(case))
        return
    with pytest.raises(SimulationError, match=error):
        _run(name)


def test_every_compiled_h14_oracle_is_accounted_for():
    compiled = {p.stem for p in oracle_files("h14") if load_json(p)["task_descriptors"]}
    assert len(compiled) == 26
    assert compiled == set(CASES)
    assert set(NOT_RUNNABLE) <= set(CASES)


# -- the translation against Apple's H13 twins ----------------------------------------------------
#
# Ground truth: for the 22 cases compiled for both targets, Apple's H13 program is the program the
# translation should rebuild.  On every field the simulator acts on (evidence.py rules other than
# NO_EFFECT) the translated state must equal the H13 twin's, except where one of the reasons
# below explains the difference.

TWINS = sorted(name for name in CASES if shared_files(f"oracles/h13/{name}.json"))

# Apple's own H14 values that differ from its H13 ones (h14 census §4 "Differs from H13").
APPLE_DIFFERS = {
    ("binary_real_div_1x64x1x1", 0, "l2.SourceRowStride.Stride"): "0x450 vs 0x400, one row",
    ("reduce_max_axes_1", 0, "l2.SourceRowStride.Stride"): "0x420 vs 0x430",
    ("reduce_max_axes_1", 0, "l2.ResultBase.Addr"): "0x2100 vs 0x2180; the result leaves by DMA",
}


def _program(case, target):
    gen = generation(target)
    return Program(target, [task_from_json(td, gen) for td in case["task_descriptors"]])


def _get(state, path):
    return R13.get(state, path)


def _result_steps(state, ne_task):
    """(channel, row) steps of the result strides (machine.Task.result)."""
    cout, hout, wout = (_get(state, p) for p in ("common.Cout.Cout", "common.OutDim.Hout",
                                                 "common.OutDim.Wout"))
    along_w = _get(state, "common.Unk30.Value") >> 10 & 1
    if ne_task and _get(state, "common.Cfg.Bit28"):
        return wout, hout
    if not ne_task and _get(state, "common.Cfg.Bits6_4") in (5, 6):  # reductions: one row
        return (1 if along_w else cout), 1
    return (wout if along_w else cout), hout


def _steps(state, header, path) -> int:
    """How many elements the twin's task steps with the stride field `path` (0: not used)."""
    h = lambda name: H13.get(header, name)  # noqa: E731
    ne_task = h("ENE") > 0
    flags = _get(state, "common.Unk30.Value")
    cin, hin = _get(state, "common.Cin.Cin"), _get(state, "common.InDim.Hin")
    depth = _get(state, "common.InDepth.Depth")
    groups = _get(state, "common.GroupConvCfg.NumGroups")
    channels, rows = _result_steps(state, ne_task)
    two = _get(state, "common.ChCfg.Src2InFmt") != 0
    fetch1 = _get(state, "tile_dma_src.DMAConfig.En") and h("RBE0")
    win = _get(state, "common.InDim.Win")
    rows_pe = not ne_task and _get(state, "common.Cfg.Bits6_4") == 4  # PE rows: 2 rows of b
    # machine.Task.source1/2: Unk30 bits 0/1/4/5/7 broadcast, bits 8/9 read channel-dense (the
    # channel stride steps pixels)
    src2_w = 1 if flags & 0x10 or rows_pe else win
    src2_plane = src2_w if flags & 0x200 else (1 if flags & 0x80 else cin)
    src1_plane = (1 if flags & 0x1 else win) if flags & 0x100 else cin
    table = {
        "tile_dma_src.Src2": (h("RBE1"), cin, hin),
        "tile_dma_src.": (fetch1, cin, hin),
        "tile_dma_dst.": (_get(state, "tile_dma_dst.DMAConfig.En"), channels, rows),
        "l2.Src2": (two, src2_plane, 2 if rows_pe else 1 if flags & 0x20 else hin),
        "l2.Source": (True, src1_plane, 1 if flags & 2 else hin),
        "l2.Src1": (True, src1_plane, hin),
        "l2.ConvResult": (True, channels, rows),
        "l2.Result": (True, channels, rows),
    }
    prefix = next(p for p in table if path.startswith(p))
    used, plane, row = table[prefix]
    name = path.split(".")[1]
    count = (depth if "Depth" in name else groups if "Group" in name else
             row if "Row" in name else plane)
    return count if used else 0


def _explained(name, index, path, twin_state, twin_header, ours) -> str | None:
    lut = (H13.get(twin_header, "ENE") > 0
           and _get(twin_state, "ne.MACCfg.NonlinearMode") == 2)
    if (name, index, path) in APPLE_DIFFERS:
        return "Apple's H14 value differs from its H13 one"
    if "Stride" in path and _steps(twin_state, twin_header, path) <= 1:
        return "a stride of a dimension the task does not step"
    if path.startswith("kernel_dma_src.Coeff"):
        channel = int(path.split("[")[1].split("]")[0])
        if lut and channel > 0:
            return "H13's copy of the table for another NE (census §1: H14 stores it once)"
        if lut and path == "kernel_dma_src.CoeffBaseAddr[0].Addr":
            return "the table's offset: H14 tables sit back to back (census §1)"
        if not _get(twin_state, f"kernel_dma_src.CoeffDMAConfig[{channel}].En"):
            return "a coefficient channel the task does not enable"
    if path in ("common.Cfg.ActiveNE", "header.ENE") and lut and ours == \
            {"common.Cfg.ActiveNE": 4, "header.ENE": 5}[path]:
        return "a LUT task H13 spreads over 8 NEs runs on 16 on H14 (census §4.1)"
    if path == "header.DisallowAbort":
        return "a scheduling flag H14 headers do not carry"
    return None


def _acting_fields(fields):
    for path, value in fields:
        found = rule_for(path)
        if found is None or found[0] != NO_EFFECT:
            yield path, value


@pytest.mark.parametrize("name", TWINS)
def test_translation_rebuilds_the_h13_twin(name):
    twin = list(_program(oracle(name), "h13").states())
    ours = list(to_h13(_program(h14_oracle(name), "h14")).states())
    assert len(twin) == len(ours)
    unexplained = []
    for i, ((t13, s13), (t14, s14)) in enumerate(zip(twin, ours)):
        h13_words, our_words = t13.header + t13.extension, t14.header + t14.extension
        pairs = [(path, value, dict(register_fields(R13, a, s14[a])).get(path))
                 for a in sorted(s13)
                 for path, value in _acting_fields(register_fields(R13, a, s13[a]))]
        ours_header = dict(header_fields(H13, tuple(our_words)))
        pairs += [(path, value, ours_header.get(path))
                  for path, value in _acting_fields(header_fields(H13, tuple(h13_words)))]
        for path, value, mine in pairs:
            if value != mine and not _explained(name, i, path, s13, h13_words, mine):
                unexplained.append(f"task {i} {path}: H13 twin {value}, translated {mine}")
    assert not unexplained, "\n".join(unexplained)


# -- what the translation refuses ----------------------------------------------------------------

def _relu_program():
    case = h14_oracle("unary_relu_c64")
    return oracle_program(case, h13.zeros(case))


def _written(program, address: int, value: int, tag: int = 0):
    program.tasks[0].records.append(Record(address, [value], tag=tag))
    return program


def _untagged(program, address: int):
    for record in program.tasks[0].records:
        if record.address == address:
            record.tag = 0
    return program


@pytest.mark.parametrize("mutate, message", [
    (lambda p: _written(p, 0x910, 1), r"task 0: H14 -> H13: pe\.Quant = 0x1: no H13 counterpart"),
    (lambda p: _untagged(p, 0x1110),
     r"task 0: .*Src1BaseAddrLo = 0x0 is written by a record with no tag"),
    (lambda p: _written(p, 0x1114, 1, tag=0x110), r"Src1BaseAddrHi = 0x1: an offset past 4 GiB"),
    (lambda p: _written(p, 0x1100, 0x1F21), r"Src1DMAConfig = 0x1f21: DataSetId 0x1f"),
    (lambda p: _written(p, 0x1500, 0x01000E31 | 1 << 27), r"tile_dma_dst\.DMAConfig = 0x9000e31"),
    (lambda p: _written(p, 0x38, 0x20000001), r"common\.Cfg = 0x20000001: bit 29"),
    (lambda p: _written(p, 0x1524, 0xBEEF), r"tile_dma_dst\.Unk24 = 0xbeef"),
])
def test_a_word_without_a_translation_rule_stops_the_run(mutate, message):
    program = mutate(_relu_program())
    with pytest.raises(SimulationError, match=message):
        run_program(program, {"x": np.zeros((1, 64, 1, 1), np.float16)})


def test_registers_do_not_carry_over_between_h14_tasks():
    """binary_minimum#1 (a PE task) leaves out NE.MACCfg, which task 0 set to 0x101C0C; Apple's
    H13 twin holds 0x100000 there - the reset value, not task 0's."""
    program = to_h13(_program(h14_oracle("binary_minimum_c64_constant_blob"), "h14"))
    twin = list(_program(oracle("binary_minimum_c64_constant_blob"), "h13").states())
    (_, first), (_, second) = program.states()
    macc = R13.field("ne.MACCfg.OpMode")[0]
    assert first[macc] == 0x101C0C and second[macc] == twin[1][1][macc] == 0x100000
