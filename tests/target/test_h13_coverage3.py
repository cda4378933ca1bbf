"""H13 coverage: softmax over the channels of a [1, C, H, W] tensor (softmax_channels.py).

Its register rules come from upstream Apple oracles (`norm_softmax_a1_*`: 1x{64..4096}x1x1,
1x32x4x4, 1x64x8x8, 1x128x16x16, 1x8x1x64, 1x8x1x128, 1x32x1x32, 1x64x1x128, 1x1x1x64;
joshuaswarren/mil-hwx-compiler research/oracles/h13 at 9cb58d571cd7), which are not part of
../shared.  Committed ground truth here is therefore:
* numpy, for what the programs compute, run in the simulator.  Our programs at the oracle shapes
  are Apple's bytes, so these runs also test what the simulator reads into the words only these
  cases hold (coreml2hwx/sim: Common 0x30 = 0x480 and 0x8, the NE sum over channels - MACCfg
  OpMode 0 without weights or unicast, Cin C -> Cout 1 - and a second DRAM operand broadcast
  along its one channel): softmax comes out only with those readings;
* Apple's visible `norm_softmax_an1_1x1x1x64` and `binary_real_div_1x64x1x1`, for the exp2 and
  reciprocal tables of the constant section;
* a few words of the upstream oracles `norm_softmax_a1_1x64x1x1` and `_1x64x8x8`, quoted below
  with their source.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from coreml2hwx.errors import SimulationError, UnsupportedError
from coreml2hwx.frontend import parse_mil_text
from coreml2hwx.sim import run_program
from coreml2hwx.target.h13 import lower
from tests.conftest import load_json, oracle_files
from tests.target.test_h13_coverage import softmax

# every form: vector (1x1), rows with H = W, rows with H = 1, one channel; at all 14 oracle
# shapes (Apple's bytes) and at shapes between them (C = 320, 32 channels of 8x8 and of 1x64)
CHANNEL_SHAPES = [(1, 64, 1, 1), (1, 128, 1, 1), (1, 512, 1, 1), (1, 1024, 1, 1),
                  (1, 2048, 1, 1), (1, 4096, 1, 1), (1, 320, 1, 1), (1, 32, 4, 4), (1, 64, 8, 8),
                  (1, 128, 16, 16), (1, 32, 8, 8), (1, 8, 1, 64), (1, 8, 1, 128), (1, 32, 1, 32),
                  (1, 64, 1, 128), (1, 32, 1, 64), (1, 1, 1, 64)]


def numpy_softmax_channels(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def compile_softmax(shape, axis=1):
    return lower(parse_mil_text(softmax(shape, axis), None))


@pytest.mark.parametrize("shape", CHANNEL_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_channel_softmax_computes_numpys(shape):
    """Ground truth: numpy.  Inputs spread over +-10 so that the max subtraction matters."""
    program = compile_softmax(shape)
    x = (3 * np.random.default_rng(5).standard_normal(shape)).astype(np.float16)
    got = np.asarray(run_program(program, {"x": x})["y"], np.float32)
    want = numpy_softmax_channels(x.astype(np.float32))
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=0)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=shape[1] * 1e-3)
    # Relative, on values above 1e-3 (at 4096 channels atol 2e-3 says little): the shift
    # (x - max) log2(e) rounded to fp16 (half an ulp at 16: 0.27 % after exp2), the exp2 and
    # reciprocal tables and three more fp16 roundings - 1 % in all.
    big = want > 1e-3
    np.testing.assert_allclose(got[big], want[big], rtol=1e-2)


ROW_SHAPES = [(1, 32, 4, 4), (1, 64, 8, 8), (1, 128, 16, 16), (1, 32, 8, 8), (1, 8, 1, 64),
              (1, 64, 1, 128), (1, 16, 1, 32)]


@pytest.mark.parametrize("shape", ROW_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_row_form_tasks_compute_numpys_steps(shape):
    """Ground truth: numpy.  The traced results of the row form's tasks must be the max over C,
    (x - max) log2(e), exp(x - max), 1 / sum over C of those (the NE channel sum through the
    reciprocal table) and the output."""
    program = compile_softmax(shape)
    x = (3 * np.random.default_rng(7).standard_normal(shape)).astype(np.float16)
    traces = {}
    got = np.asarray(run_program(program, {"x": x}, trace=lambda i, r: traces.setdefault(
        i, np.asarray(r, np.float32)))["y"], np.float32)
    xf = x.astype(np.float32)
    peak = xf.max(axis=1, keepdims=True)
    np.testing.assert_array_equal(traces[0].reshape(peak.shape), peak)
    log2e = np.float32(1.4426950408889634)
    np.testing.assert_allclose(traces[1].reshape(shape), (xf - peak) * log2e, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(traces[2].reshape(shape), np.exp(xf - peak), rtol=3e-3, atol=1e-3)
    total = np.exp(xf - peak).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(traces[3].reshape(total.shape), 1 / total, rtol=4e-3)
    np.testing.assert_allclose(got, numpy_softmax_channels(xf), atol=2e-3, rtol=0)


@pytest.mark.parametrize("address,value,rule", [
    (0x10, 2, "only the sum of 64 channels into one"),  # Common.Cout 2: what each sums is open
    (0x30, 0x88, "common.Unk30.Value = 0x88: never seen")],
    ids=["cout2", "unk30_0x88"])
def test_channel_sum_outside_apples_words_stops(address, value, rule):
    """The simulator stops, naming the task, rather than guess: task 3 (the NE channel sum) with
    two output channels, task 4 with a broadcast word no Apple program holds."""
    from coreml2hwx.program import Record

    program = compile_softmax((1, 64, 8, 8))
    index = 3 if address == 0x10 else 4
    program.tasks[index].records.append(Record(address, [value]))
    x = np.zeros((1, 64, 8, 8), np.float16)
    with pytest.raises(SimulationError, match=rule) as err:
        run_program(program, {"x": x})
    assert err.value.where == f"task {index}"


def _oracle(name: str) -> dict:
    return next(load_json(p) for p in oracle_files("h13") if p.stem == name)


@pytest.mark.parametrize("shape,exp_bytes", [((1, 64, 1, 1), 128), ((1, 64, 8, 8), 2048),
                                             ((1, 8, 1, 64), 1024), ((1, 1, 1, 64), 128)])
def test_channel_softmax_fetches_apples_exp2_and_reciprocal_tables(shape, exp_bytes):
    """Ground truth: the constant sections of Apple's visible `norm_softmax_an1_1x1x1x64` (the exp2
    table, 128 B) and `binary_real_div_1x64x1x1` (the reciprocal table, padded to 8 x 128 B).
    The exp2 table is padded to its kernel channels (1, 8 or 16), the reciprocal follows it."""
    exp2 = _oracle("norm_softmax_an1_1x1x1x64")["constant_section"]
    recip = _oracle("binary_real_div_1x64x1x1")["constant_section"]
    constants = compile_softmax(shape).constants
    assert len(constants) == exp_bytes + 128
    assert hashlib.sha256(constants[:128]).hexdigest() == exp2["sha256"]
    assert not any(constants[128:exp_bytes])
    padded = constants[exp_bytes:] + bytes(recip["size"] - 128)
    assert hashlib.sha256(padded).hexdigest() == recip["sha256"]


# Ground truth for these words: upstream oracle norm_softmax_a1_1x64x1x1 (joshuaswarren/
# mil-hwx-compiler research/oracles/h13/ at 9cb58d571cd7, Apple's compiler on the MIL of
# `softmax((1, 64, 1, 1), 1)`; not in ../shared): per task, the words that carry the engine, the
# arithmetic and the L2 layout.
APPLE_A1_64_WORDS = [
    {"0x00024": 0x00404001, "0x00034": 0x1, "0x04808": 0x490, "0x04810": 0x400,
     "0x04830": 0x00500170, "0x0c804": 0x00101C0B},
    {"0x00030": 0x480, "0x04804": 0x130, "0x04808": 0x490, "0x04834": 0x410, "0x04838": 0x80,
     "0x08800": 0x000C0000, "0x08804": 0x3DC50000},
    {"0x00034": 0x10200001, "0x04804": 0x00400140, "0x04808": 0x410, "0x04834": 0x10,
     "0x0483c": 0x400, "0x0c804": 0x00121C0C, "0x1f848": 0},
    {"0x00034": 0x00044405, "0x0003c": 0x1, "0x04808": 0x10, "0x04834": 0, "0x0c804": 0x00121C08,
     "0x1f848": 0x80, "0x1f84c": 0},
    {"0x00030": 0x8, "0x04808": 0, "0x0481c": 0x10, "0x04830": 0x14A, "0x04834": 0x410,
     "0x08800": 0x00080004},
]


def _words(task) -> dict:
    from coreml2hwx.report.jsonview import task_to_json
    from coreml2hwx.target import generation

    blocks = task_to_json(task, generation("h13"))["blocks"].values()
    return {a: int(v, 16) for b in blocks for a, v in b["words"].items()}


# Ground truth: upstream oracle norm_softmax_a1_1x64x8x8 (same source), the words of the row form's
# layout and shifts.
APPLE_A1_64X8X8_WORDS = [
    {"0x00034": 0x00044401, "0x04808": 0x2200, "0x04810": 0x420, "0x0483c": 0x20},
    {"0x0002c": 0x44, "0x00030": 0x80, "0x04834": 0x100, "0x04824": 0x20},
    {"0x00034": 0x00244401, "0x04804": 0x108, "0x1f888": 0x80, "0x1f8c4": 0x80},
    {"0x00034": 0x00044405, "0x04804": 0x104, "0x1f848": 0x800},
    {"0x0002c": 0x34, "0x00030": 0x8, "0x0481c": 0x100, "0x04834": 0x2200},
]


@pytest.mark.parametrize("shape,apple", [((1, 64, 1, 1), APPLE_A1_64_WORDS),
                                         ((1, 64, 8, 8), APPLE_A1_64X8X8_WORDS)],
                         ids=["1x64x1x1", "1x64x8x8"])
def test_channel_softmax_holds_apples_words(shape, apple):
    program = compile_softmax(shape)
    assert len(program.tasks) == len(apple)
    for task, want in zip(program.tasks, apple):
        words = _words(task)
        assert {a: words[a] for a in want} == want


@pytest.mark.parametrize("shape", [(1, 32, 1, 1), (1, 100, 1, 1), (1, 8192, 1, 1),
                                   (2, 64, 1, 1), (1, 64, 8, 4), (1, 64, 32, 32),
                                   (1, 48, 8, 8), (1, 8, 1, 16), (1, 8, 1, 256),
                                   (1, 1, 1, 512), (1, 1, 4, 4)],
                         ids=["c32", "c100", "c8192", "batch2", "h_ne_w", "32x32", "c48",
                              "w16", "w256", "c1_w512", "c1_4x4"])
def test_channel_softmax_refuses_unobserved_shapes(shape):
    with pytest.raises(UnsupportedError, match=r"over channels only \[1, C, 1, 1\]") as err:
        compile_softmax(shape)
    assert "x".join(map(str, shape)) in str(err.value)
    assert "y" in str(err.value)  # the op's name locates it


@pytest.mark.parametrize("shape", [(1, 256, 1, 1), (1, 64, 8, 8), (1, 8, 1, 128),
                                   (1, 1, 1, 64)], ids=lambda s: "x".join(map(str, s)))
def test_axis_1_and_minus_3_compile_alike_and_deterministically(shape):
    a = compile_softmax(shape, 1)
    b = compile_softmax(shape, -3)
    c = compile_softmax(shape, 1)
    assert a == b == c
    assert len(a.tasks) == (4 if shape[1] == 1 else 5)


def test_other_softmax_forms_are_unchanged_by_the_channel_rule():
    """The last axis of [1, C, 1, 1] keeps its own 5-task form (softmax.softmax_unit_axis): its
    exp reads the vector at 2 x round_up(2C, 16), not at the channel form's 16 C + 16."""
    unit = compile_softmax((1, 64, 1, 1), -1)
    assert _words(unit.tasks[2])["0x04808"] == 0x80
