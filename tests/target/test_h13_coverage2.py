"""H13 coverage: softmax over the last axis of a [1, C, H, W] tensor with H > 1 (softmax_rows.py),
layer_norm over the last axis of a [1, C, 1, W] tensor (norm.layer_norm_last_axis).

Their register rules come from upstream Apple oracles (`norm_softmax_an1_1x{32x4x4,64x8x8,
128x16x16}`, `norm_layer_norm_ax3_1x8x1x64`, cited in softmax_rows.py / norm.py), which are not
part of ../shared.  Committed ground truth here is therefore:
* numpy, for what the programs compute, run in the simulator (itself validated on Apple's
  programs, tests/sim) - at the oracle shapes and at shapes no oracle shows (odd C, H, W, the
  transformer block's attention 1x4x16x16);
* Apple's visible `norm_softmax_an1_1x1x1x64`, for the exp2 table the new form fetches;
* a few layout words of the upstream layer_norm oracle, quoted with their source below (the
  simulator accepts its Common 0x30 = 0x501 on that evidence, coreml2hwx/sim/evidence.py).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.frontend import parse_mil_text
from coreml2hwx.sim import run_program
from coreml2hwx.target.h13 import lower
from tests.conftest import load_json, oracle_files
from tests.target.test_h13_coverage import layer_norm, softmax

ROW_SHAPES = [(1, 32, 4, 4), (1, 64, 8, 8), (1, 128, 16, 16), (1, 4, 16, 16), (1, 8, 5, 12),
              (1, 2, 3, 9), (1, 1, 64, 16), (1, 300, 8, 16)]


def numpy_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("shape", ROW_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_row_softmax_computes_numpys(shape):
    """Ground truth: numpy.  Inputs spread over +-10 so that the max subtraction matters."""
    program = lower(parse_mil_text(softmax(shape, -1), None))
    x = (3 * np.random.default_rng(11).standard_normal(shape)).astype(np.float16)
    got = np.asarray(run_program(program, {"x": x})["y"], np.float32)
    want = numpy_softmax(x.astype(np.float32))
    # fp16 exp2 table and reciprocal: a few fp16 ulps of values in [0, 1]
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=0)
    np.testing.assert_allclose(got.sum(axis=-1), 1.0, atol=shape[3] * 1e-3)


def test_row_softmax_fetches_apples_exp2_table():
    """Ground truth: the constant section of Apple's visible `norm_softmax_an1_1x1x1x64`."""
    oracle = next(load_json(p) for p in oracle_files("h13")
                  if p.stem == "norm_softmax_an1_1x1x1x64")
    section = oracle["constant_section"]
    program = lower(parse_mil_text(softmax((1, 64, 8, 8), -1), None))
    table = program.constants[:section["size"]]
    assert hashlib.sha256(table).hexdigest() == section["sha256"]
    assert not any(program.constants[section["size"]:])


@pytest.mark.parametrize("shape", [(1, 8, 4, 1), (1, 8, 4, 32), (1, 16, 8, 64)],
                         ids=["w1", "w32", "w64"])
def test_row_softmax_refuses_unobserved_widths(shape):
    with pytest.raises(UnsupportedError, match="only 2 to 16 observed"):
        lower(parse_mil_text(softmax(shape, -1), None))


def test_row_softmax_refuses_what_one_l2_tile_cannot_hold():
    with pytest.raises(UnsupportedError, match="does not fit in L2"):
        lower(parse_mil_text(softmax((1, 512, 64, 16), -1), None))


def test_other_axes_of_spatial_tensors_stay_refused():
    with pytest.raises(UnsupportedError, match="only the last axis"):
        lower(parse_mil_text(softmax((1, 32, 4, 4), 2), None))


def test_axis_3_and_minus_1_compile_alike_and_deterministically():
    a = lower(parse_mil_text(softmax((1, 4, 16, 16), 3), None))
    b = lower(parse_mil_text(softmax((1, 4, 16, 16), -1), None))
    assert a == b
    assert len(a.tasks) == 6


# -- layer_norm over W of a [1, C, 1, W] tensor (norm.layer_norm_last_axis) -----------------------
# Ground truth for the layout words: upstream oracle norm_layer_norm_ax3_1x8x1x64
# (joshuaswarren/mil-hwx-compiler research/oracles/h13/ at 9cb58d571cd7, Apple's compiler on the
# MIL of `layer_norm((1, 8, 1, 64), (3,))`; not in ../shared).  These are its words that carry the
# layout and the arithmetic (Common 0x30 / Cfg, L2 bases and strides, PE); our program holds them,
# so the simulator running it runs Apple's words, and numpy is the judge of what they compute.
APPLE_LN_W_WORDS = [
    {"0x00030": 0x400, "0x00034": 0x51, "0x04804": 0x00500171, "0x04808": 0x40, "0x0480c": 0x80,
     "0x04834": 0, "0x0483c": 0x20, "0x0880c": 0x3C800000},
    {"0x00030": 0x501, "0x00034": 0x61, "0x04808": 0, "0x0481c": 0x40, "0x04834": 0x20,
     "0x08800": 0x00092010, "0x08808": 0x3C0000A8, "0x0880c": 0x3C800000},
    {"0x00030": 0x200, "0x00034": 0x41, "0x04808": 0x40, "0x0481c": 0, "0x04830": 0x14A,
     "0x04834": 0x440, "0x08800": 0x000C0000},
]


def _words(task) -> dict:
    from coreml2hwx.report.jsonview import task_to_json
    from coreml2hwx.target import generation

    blocks = task_to_json(task, generation("h13"))["blocks"].values()
    return {a: int(v, 16) for b in blocks for a, v in b["words"].items()}


def numpy_layer_norm(x: np.ndarray, eps=1e-5) -> np.ndarray:
    x = x.astype(np.float64)
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)


def test_last_axis_layer_norm_holds_apples_layout_words():
    program = lower(parse_mil_text(layer_norm((1, 8, 1, 64), (3,)), None))
    assert len(program.tasks) == len(APPLE_LN_W_WORDS)
    for task, apple in zip(program.tasks, APPLE_LN_W_WORDS):
        words = _words(task)
        assert {a: words.get(a) for a in apple} == apple


@pytest.mark.parametrize("shape", [(1, 8, 1, 64), (1, 1, 1, 64), (1, 1, 1, 512), (1, 3, 1, 10),
                                   (1, 8, 1, 2)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("axis", [3, -1])
def test_last_axis_layer_norm_computes_numpys(shape, axis):
    """Ground truth: numpy.  fp16 output: allow a few ulps of values up to ~4."""
    program = lower(parse_mil_text(layer_norm(shape, (axis,)), None))
    x = (2 * np.random.default_rng(5).standard_normal(shape) + 0.5).astype(np.float16)
    got = np.asarray(run_program(program, {"x": x})["y"], np.float32)
    np.testing.assert_allclose(got, numpy_layer_norm(x), atol=4e-3, rtol=2e-3)


@pytest.mark.parametrize("shape", [(1, 16, 1, 64), (1, 8, 1, 1024)], ids=["c16", "w1024"])
def test_last_axis_layer_norm_refuses_unobserved_sizes(shape):
    with pytest.raises(UnsupportedError, match="over W: only C <= 8"):
        lower(parse_mil_text(layer_norm(shape, (3,)), None))


# -- layer_norm over W of a [1, C, H, W] tensor with H > 1 (norm_rows.py) --------------------------
# Ground truth: upstream oracle norm_layer_norm_ax3_1x64x8x8 (same repository and commit, Apple's
# compiler on `layer_norm((1, 64, 8, 8), (3,))`; not in ../shared): the words that carry each
# task's layout and arithmetic.  Task 3 is the PE reduction rsqrt(FinalScale * sum(a^2) + eps)
# (PE.Cfg 0x2010, sim/pe.py, pinned by the upstream spatial layer_norm programs), so the
# simulator runs the whole program (numeric test below).
APPLE_LN_ROWS_WORDS = [
    {"0x00034": 0x00230001, "0x04808": 0x4200, "0x04810": 0x430, "0x04834": 0x2100,
     "0x0483c": 0x420},
    {"0x00024": 0x00010008, "0x00034": 0x51, "0x04808": 0x2100, "0x04818": 0x420,
     "0x04834": 0x4200, "0x0483c": 0x2000, "0x0880c": 0x3E000000},
    {"0x00030": 0x10, "0x00034": 0x31, "0x0481c": 0x4200, "0x04834": 0, "0x08800": 0x000C0000,
     "0x0c800": 0x5080},
    {"0x00024": 0x00010008, "0x00034": 0x51, "0x04808": 0, "0x04834": 0x2100,
     "0x08800": 0x00002010, "0x08808": 0x3C0000A8, "0x0880c": 0x3E000000},
    {"0x00030": 0x10, "0x00034": 0x31, "0x0481c": 0x2100, "0x04834": 0x4100,
     "0x08800": 0x00080004, "0x17800": 0x040000C1},
]


def test_spatial_last_axis_layer_norm_holds_apples_layout_words():
    program = lower(parse_mil_text(layer_norm((1, 64, 8, 8), (3,)), None))
    assert len(program.tasks) == len(APPLE_LN_ROWS_WORDS)
    for task, apple in zip(program.tasks, APPLE_LN_ROWS_WORDS):
        words = _words(task)
        assert {a: words.get(a) for a in apple} == apple


@pytest.mark.parametrize("shape", [(1, 64, 8, 8), (1, 8, 4, 8), (1, 3, 5, 6)],
                         ids=lambda s: "x".join(map(str, s)))
def test_spatial_last_axis_layer_norm_computes_numpys(shape):
    """Ground truth: numpy.  fp16 output: allow a few ulps of values up to ~4."""
    program = lower(parse_mil_text(layer_norm(shape, (3,)), None))
    x = (2 * np.random.default_rng(6).standard_normal(shape) + 0.5).astype(np.float16)
    got = np.asarray(run_program(program, {"x": x})["y"], np.float32)
    np.testing.assert_allclose(got, numpy_layer_norm(x), atol=4e-3, rtol=2e-3)


# W = 16 is observed since (upstream norm_layer_norm_ax3_1x128x16x16, layer_norm_spatial.rows)
@pytest.mark.parametrize("shape", [(1, 8, 4, 32), (1, 1, 16, 64)], ids=["w32", "w64"])
def test_spatial_last_axis_layer_norm_refuses_unobserved_widths(shape):
    with pytest.raises(UnsupportedError, match="only 2 to 16 observed"):
        lower(parse_mil_text(layer_norm(shape, (3,)), None))
