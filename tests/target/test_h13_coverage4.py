"""H13 coverage: layer_norm (no gamma/beta) of [1, C, H, W] tensors with H x W > 1 over axes
[1, 2, 3], [2, 3] and [1], and over the last axis with rows of 16 values
(coreml2hwx/target/h13/layer_norm_spatial.py).

Its register rules come from upstream Apple oracles (`norm_layer_norm_ax1_2_3_*`,
`norm_layer_norm_ax2_3_*`, `norm_layer_norm_ax1_1x*`, `norm_layer_norm_ax3_1x128x16x16`;
joshuaswarren/mil-hwx-compiler
research/oracles/h13 at 9cb58d571cd7), which are not part of ../shared.  Committed ground truth
here is therefore:
* numpy, for what the programs compute, run in the simulator (validated on Apple's programs,
  tests/sim).  Our programs at the oracle shapes are Apple's bytes, so these runs also test what
  the simulator reads into the words only these cases hold (coreml2hwx/sim: Common 0x30 = 3 /
  7 / 0x503, the statistics broadcast along the rows / depth of the task's view; PE.Cfg 0x2010,
  a reduction of squares with eps): layer_norm comes out only with those readings;
* a few words of the upstream oracles, quoted below with their source;
* Apple's refusal of the affine form (upstream `norm_layer_norm_ax1_2_3_1x64x8x8_affine`:
  error `callback_status=1`, no program).
"""

from __future__ import annotations

import numpy as np
import pytest

from coreml2hwx.errors import SimulationError, UnsupportedError
from coreml2hwx.frontend import parse_mil_text
from coreml2hwx.sim import run_program
from coreml2hwx.target.h13 import lower
from tests.target.test_h13_coverage import _mil, layer_norm
from tests.target.test_h13_coverage2 import _words


def numpy_layer_norm(x: np.ndarray, axes, eps=1e-5) -> np.ndarray:
    x = x.astype(np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)


def compile_ln(shape, axes):
    return lower(parse_mil_text(layer_norm(shape, axes), None))


def sample(shape, seed=3) -> np.ndarray:
    return (2 * np.random.default_rng(seed).standard_normal(shape) + 0.5).astype(np.float16)


def run_traced(program, x):
    """(output or None, {task: traced result}, index of the task the simulator stopped at)."""
    traces = {}
    try:
        out = run_program(program, {"x": x}, trace=lambda i, r: traces.setdefault(
            i, np.asarray(r, np.float32)))["y"]
        return np.asarray(out, np.float32), traces, None
    except SimulationError as err:
        return None, traces, int(err.where.split()[-1])


# -- what the programs compute ---------------------------------------------------------------------
# One-row forms: [1, 1, 1, W] over [1, 2, 3] and [1, C, 1, W] over [2, 3]; the simulator holds
# evidence for every word (at oracle shapes `..._ax1_2_3_1x1x1x{64,512}` and between them).
ROW_CASES = [((1, 1, 1, 64), (1, 2, 3)), ((1, 1, 1, 128), (1, 2, 3)), ((1, 1, 1, 512), (1, 2, 3)),
             ((1, 1, 1, 10), (1, 2, 3)),
             ((1, 1, 1, 64), (-3, -2, -1)), ((1, 8, 1, 64), (2, 3)), ((1, 3, 1, 10), (2, 3)),
             ((1, 8, 1, 64), (-2, -1))]


@pytest.mark.parametrize("shape,axes", ROW_CASES, ids=lambda v: "x".join(map(str, v)))
def test_one_row_forms_compute_numpys_layer_norm(shape, axes):
    """Ground truth: numpy.  fp16 output: a few ulps of values up to ~4."""
    got, _, stopped = run_traced(compile_ln(shape, axes), x := sample(shape))
    assert stopped is None
    np.testing.assert_allclose(got, numpy_layer_norm(x, axes), atol=4e-3, rtol=2e-3)


# the oracle shapes (Apple's bytes) and shapes between them (6x3x5, 5x3x7)
SPATIAL_STATS = [((1, 64, 8, 8), (1, 2, 3)), ((1, 32, 4, 4), (1, 2, 3)),
                 ((1, 128, 16, 16), (1, 2, 3)), ((1, 8, 1, 64), (1, 2, 3)),
                 ((1, 6, 3, 5), (1, 2, 3)), ((1, 32, 4, 4), (2, 3)), ((1, 64, 8, 8), (2, 3)),
                 ((1, 128, 16, 16), (2, 3)), ((1, 5, 3, 7), (2, 3))]


@pytest.mark.parametrize("shape,axes", SPATIAL_STATS, ids=lambda v: "x".join(map(str, v)))
def test_spatial_forms_compute_the_mean_then_layer_norm(shape, axes):
    """Ground truth: numpy.  Task 0 is the mean over the axes (one value, or one per channel
    along W), task 1 the factor 1 / sqrt(var + eps) (it reads the mean broadcast along the rows /
    depth of its view, Common 0x30 = 3, 7 or 0x503), task 2 the output."""
    got, traces, stopped = run_traced(compile_ln(shape, axes), x := sample(shape))
    assert stopped is None
    xf = x.astype(np.float64)
    mean = xf.mean(axis=axes)
    np.testing.assert_allclose(traces[0].ravel()[:mean.size], mean.ravel(), atol=2e-3, rtol=2e-3)
    factor = 1 / np.sqrt(xf.var(axis=axes) + 1e-5)
    np.testing.assert_allclose(traces[1].ravel()[:factor.size], factor.ravel(), rtol=4e-3)
    np.testing.assert_allclose(got, numpy_layer_norm(x, axes), atol=4e-3, rtol=2e-3)


CHANNEL_SHAPES = [(1, 32, 4, 4), (1, 64, 8, 8), (1, 128, 16, 16), (1, 16, 2, 8), (1, 96, 4, 16),
                  (1, 24, 3, 5)]


@pytest.mark.parametrize("shape", CHANNEL_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_channel_form_centres_x_on_each_pixels_mean(shape):
    """Ground truth: numpy.  Over C at every pixel: task 1 is the mean of each pixel's C values,
    task 2 x minus that mean, task 3 the same values pixel-major, task 4 each pixel's factor
    1 / sqrt(mean of squares + eps) (PE.Cfg 0x2010), task 5 the output."""
    got, traces, stopped = run_traced(compile_ln(shape, (1,)), x := sample(shape))
    assert stopped is None
    xf = x.astype(np.float64)
    mean = xf.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(traces[1].reshape(mean.shape), mean, atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(traces[2].reshape(shape), xf - mean, atol=4e-3, rtol=2e-3)
    np.testing.assert_allclose(traces[3].reshape(shape), xf - mean, atol=4e-3, rtol=2e-3)
    factor = 1 / np.sqrt(xf.var(axis=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(traces[4].reshape(factor.shape), factor, rtol=4e-3)
    np.testing.assert_allclose(got, numpy_layer_norm(x, (1,)), atol=4e-3, rtol=2e-3)


@pytest.mark.parametrize("shape", [(1, 128, 16, 16), (1, 8, 4, 16), (1, 5, 3, 12)],
                         ids=lambda s: "x".join(map(str, s)))
def test_two_line_rows_form_centres_each_row(shape):
    """Ground truth: numpy.  Over W with rows of 9 to 16 values: task 1 is the mean of each row,
    task 2 x minus it, task 4 the output (task 3, the factor, is PE.Cfg 0x2010 as in
    `norm_rows`)."""
    got, traces, stopped = run_traced(compile_ln(shape, (3,)), x := sample(shape))
    assert stopped is None
    xf = x.astype(np.float64)
    mean = xf.mean(axis=3, keepdims=True)
    np.testing.assert_allclose(np.moveaxis(traces[1].reshape(shape[2], shape[1]), 0, 1),
                               mean[0, :, :, 0], atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(traces[2].reshape(shape), xf - mean, atol=4e-3, rtol=2e-3)
    np.testing.assert_allclose(got, numpy_layer_norm(x, (3,)), atol=4e-3, rtol=2e-3)


@pytest.mark.parametrize("shape,axes", [((1, 64, 8, 8), (1, 2, 3)), ((1, 8, 1, 64), (1, 2, 3)),
                                        ((1, 64, 8, 8), (2, 3)), ((1, 64, 8, 8), (1,)),
                                        ((1, 32, 4, 4), (1,)), ((1, 128, 16, 16), (3,))],
                         ids=lambda v: "x".join(map(str, v)))
def test_small_variance_shows_eps_added_to_the_mean_square(shape, axes):
    """Ground truth: numpy.  Values of spread 0.005 (variance ~2.5e-5, comparable to eps = 1e-5):
    the output is layer_norm only when eps is added to the mean of the squares (not omitted, not
    added before the 1 / N scale) - both factor passes, PE.Cfg 0x92010 and 0x2010."""
    x = (0.005 * np.random.default_rng(11).standard_normal(shape)).astype(np.float16)
    want = numpy_layer_norm(x, axes)
    assert np.abs(numpy_layer_norm(x, axes, eps=0) - want).max() > 0.1  # eps matters here
    got, _, stopped = run_traced(compile_ln(shape, axes), x)
    assert stopped is None
    np.testing.assert_allclose(got, want, atol=4e-3, rtol=2e-3)


# -- Apple's words ---------------------------------------------------------------------------------
# Ground truth: upstream oracles (joshuaswarren/mil-hwx-compiler research/oracles/h13/ at
# 9cb58d571cd7, Apple's ane-compile-hwx on the MIL of `layer_norm(shape, axes)`, eps 1e-5; not in
# ../shared): per task, words that carry the view, the layout and the arithmetic.
APPLE_WORDS = {
    ("norm_layer_norm_ax1_2_3_1x64x8x8", (1, 64, 8, 8), (1, 2, 3)): [
        {"0x00000": 0x00400008, "0x00004": 0x8, "0x0002c": 0x54, "0x04810": 0x80,
         "0x04818": 0x80, "0x0880c": 0x39800000, "0x1380c": 0x200, "0x13814": 0x40},
        {"0x00030": 0x7, "0x0002c": 0x44, "0x04824": 0x80, "0x08800": 0x00092010,
         "0x08808": 0x3C0000A8},
        {"0x00030": 0x80, "0x04810": 0x420, "0x04834": 0x2140, "0x13800": 0x00033B01}],
    ("norm_layer_norm_ax1_2_3_1x8x1x64", (1, 8, 1, 64), (1, 2, 3)): [
        {"0x00000": 0x00080040, "0x00028": 0x8, "0x0002c": 0x36, "0x0480c": 0x80},
        {"0x00030": 0x3, "0x0002c": 0x35},
        {"0x04810": 0x400, "0x04834": 0x440}],
    ("norm_layer_norm_ax1_2_3_1x1x1x64", (1, 1, 1, 64), (1, 2, 3)): [
        {"0x13800": 0x00033881}, {"0x00030": 0x1}, {"0x00030": 0x80, "0x04834": 0xC0}],
    ("norm_layer_norm_ax2_3_1x128x16x16", (1, 128, 16, 16), (2, 3)): [
        {"0x00030": 0x400, "0x04808": 0x200, "0x04810": 0x1020, "0x0483c": 0x100,
         "0x0880c": 0x3B800000},
        {"0x00030": 0x503, "0x0481c": 0x200, "0x04834": 0x100},
        {"0x00030": 0x200, "0x04834": 0x10400}],
    ("norm_layer_norm_ax1_1x64x8x8", (1, 64, 8, 8), (1,)): [
        {"0x00034": 0x101C4401, "0x04808": 0x4280, "0x04834": 0x80, "0x04838": 0x80,
         "0x0483c": 0x420},
        {"0x00000": 0x00010040, "0x00024": 0x00010008, "0x00030": 0x400, "0x04844": 0x10},
        {"0x0002c": 0x44, "0x00030": 0x80, "0x0483c": 0x420},
        {"0x04804": 0x108, "0x04834": 0x2180},
        {"0x08800": 0x2010, "0x04808": 0x2180},
        {"0x08800": 0x00080004, "0x04834": 0x2180}],
    ("norm_layer_norm_ax1_1x32x4x4", (1, 32, 4, 4), (1,)): [
        {"0x00034": 0x101B3301, "0x04808": 0xCC0, "0x0483c": 0x110},
        {"0x00000": 0x00010020, "0x0002c": 0x5}, {"0x0483c": 0x210},
        {"0x00034": 0x101C4401, "0x04834": 0x880}, {"0x0880c": 0x3D000000},
        {"0x0002c": 0x24}],
    ("norm_layer_norm_ax1_1x128x16x16", (1, 128, 16, 16), (1,)): [
        {"0x00034": 0x10233301, "0x04808": 0x10500, "0x04834": 0x200, "0x0483c": 0x1000},
        {"0x00000": 0x00040020, "0x00024": 0x00010010, "0x00028": 0x4, "0x04810": 0x40},
        {"0x0483c": 0x1030}, {"0x04804": 0x00400100, "0x04834": 0x10500},
        {"0x0880c": 0x3C000000}, {"0x04834": 0x10500}],
    ("norm_layer_norm_ax3_1x128x16x16", (1, 128, 16, 16), (3,)): [
        {"0x00034": 0x00230001, "0x04808": 0x10200, "0x04810": 0x1030, "0x04834": 0,
         "0x0483c": 0x1020},
        {"0x04808": 0, "0x04834": 0x20400, "0x0483c": 0x8000, "0x0880c": 0x3D800000},
        {"0x00030": 0x10, "0x04808": 0, "0x0481c": 0x20400, "0x04834": 0x10200},
        {"0x04808": 0x10200, "0x04834": 0, "0x08800": 0x2010},
        {"0x04808": 0x10200, "0x0481c": 0, "0x04834": 0x20400, "0x08800": 0x00080004}],
}


@pytest.mark.parametrize("case", list(APPLE_WORDS), ids=lambda c: c[0])
def test_programs_hold_apples_words(case):
    _, shape, axes = case
    program = compile_ln(shape, axes)
    assert len(program.tasks) == len(APPLE_WORDS[case])
    for task, apple in zip(program.tasks, APPLE_WORDS[case]):
        words = _words(task)
        assert {a: words.get(a) for a in apple} == apple


# -- refusals --------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,axes,rule", [
    ((1, 64, 8, 8), (1, 2), "only axes \\[1\\], \\[1, 2, 3\\], \\[2, 3\\]"),
    ((1, 64, 8, 8), (2,), "only axes"),
    ((1, 64, 8, 8), (1, 3), "only axes"),
    ((2, 64, 8, 8), (1, 2, 3), "only batch 1"),
    ((1, 32, 4, 32), (1,), "only up to 16 observed"),
    ((1, 100, 4, 16), (1,), "not a multiple of the 32 values"),
    ((1, 512, 64, 64), (1, 2, 3), "does not fit in L2"),
    ((1, 512, 64, 64), (2, 3), "does not fit in L2"),
    ((1, 8, 4, 32), (3,), "only 2 to 16 observed"),
    ((1, 2048, 64, 16), (3,), "does not fit in L2"),
], ids=["ax12", "ax2", "ax13", "batch2", "ax1_w32", "ax1_c100", "big123", "big23", "ax3_w32",
        "big3"])
def test_shapes_outside_the_rules_are_refused_by_name(shape, axes, rule):
    with pytest.raises(UnsupportedError, match=rule) as err:
        compile_ln(shape, axes)
    assert "layer_norm" in str(err.value) and "x".join(map(str, shape)) in str(err.value)
    assert err.value.where == "y"


def test_affine_form_is_refused_as_apple_refuses_it():
    """Ground truth: upstream `norm_layer_norm_ax1_2_3_1x64x8x8_affine` (Apple refused it:
    error callback_status=1, no program)."""
    ones = ", ".join(["fp16(0x1p+0)"] * 64 * 8 * 8)
    zeros = ", ".join(["fp16(0x0p+0)"] * 64 * 8 * 8)
    kind = "tensor<fp16, [64, 8, 8]>"
    mil = _mil((1, 64, 8, 8), [
        'tensor<int32, [3]> axes = const()[name = string("axes"), '
        'val = tensor<int32, [3]>([1, 2, 3])];',
        f'{kind} gamma = const()[name = string("gamma"), val = {kind}([{ones}])];',
        f'{kind} beta = const()[name = string("beta"), val = {kind}([{zeros}])];',
        'OUT y = layer_norm(x = x, axes = axes, beta = beta, gamma = gamma, '
        'epsilon = fp32(0.00001))[name = string("y")];'], (1, 64, 8, 8))
    with pytest.raises(UnsupportedError, match="gamma/beta"):
        lower(parse_mil_text(mil, None))


# -- determinism -----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,axes", [((1, 64, 8, 8), (1, 2, 3)), ((1, 64, 8, 8), (2, 3)),
                                        ((1, 128, 16, 16), (1,)), ((1, 1, 1, 64), (1, 2, 3)),
                                        ((1, 128, 16, 16), (3,))],
                         ids=["ax123", "ax23", "ax1", "one_channel", "ax3_w16"])
def test_compiles_deterministically_and_negative_axes_alike(shape, axes):
    from coreml2hwx.hwx.writer import write_hwx

    first, second = compile_ln(shape, axes), compile_ln(shape, axes)
    assert write_hwx(first) == write_hwx(second)
    negative = tuple(a - 4 for a in axes)
    assert compile_ln(shape, negative) == first
