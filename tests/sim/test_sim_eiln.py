"""eiln's 36 Apple-compiled H13 task streams, run in the simulator against numpy.

Ground truth: the streams are Apple's compiler output for PyTorch ops on one 1 x 1 x 2560 x 1600
fp16 tensor (../shared/artifacts/eiln_ane, PROVENANCE.md); the math of each op is numpy's.

Tolerances:
* EXACT - one PE or NE pass with no table: bit-exact against numpy computing in float32 and
  rounding once to fp16 (round half to even), the hardware's single rounding.
* Two passes with an fp16 intermediate (cube): 1.5 fp16 ulps.
* Apple's own constants: leaky_relu's slope is fp16(0.01) = 0.0099945, rrelu's
  fp16((1/8 + 1/3) / 2) - the reference uses PyTorch's exact slope, hence rtol 1e-3.
* Lookup-table functions (ane-facts §2.11): a 33-point piecewise-linear table, so the error vs the
  true function is the interpolation error h^2/8 max|f''| (h = grid step) plus fp16 rounding of
  the knots, of intermediates that pass through memory, and of the output.  Each case states its
  bound.  For tables on a plain grid the simulator must also equal numpy's own interpolation of the
  table's 33 knots (np.interp, independent of the simulator) to within one fp16 ulp.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from coreml2hwx.errors import SimulationError
from coreml2hwx.sim import run_program
from tests.sim.support import EILN_SHAPE, eiln_kernel, eiln_program, eiln_rows
from tests.sim.tolerance import assert_close, assert_exact, fp16, ulp16

LN2 = math.log(2)


def _inputs(name, count, low=None, scale=1.0, seed=0):
    """count fp16 inputs (slot order 5, 6); `low` keeps |x| >= low (positive when low > 0)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        x = rng.standard_normal(EILN_SHAPE) * scale
        if low is not None:
            x = np.abs(x) + low
        out.append(fp16(x))
    return out


def run(name, *arrays):
    program = eiln_program(name)
    inputs = sorted(program.inputs, key=lambda t: t.slot)
    (out,) = run_program(program, {t.name: a for t, a in zip(inputs, arrays)}).values()
    return out


def f32(*arrays):
    return [a.astype(np.float32) for a in arrays]


def f64(a):
    return a.astype(np.float64)


# -- exact single-rounding ops (PE binary / unary, NE bypass + ReLU, two-line tables) ------------

EXACT_BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,  # Apple: add with PreScale -1 on the swapped first operand
    "mul": lambda a, b: a * b,
    "max": np.maximum,
    "min": np.minimum,
    "ave": lambda a, b: (a + b) * np.float32(0.5),  # add with Scale 0.5
}
EXACT_UNARY = {
    "relu": lambda a: np.maximum(a, 0),
    "abs": np.abs,
    "square": lambda a: a * a,  # mul with both sources = the input
    "relu6": lambda a: np.clip(a, 0, 6),  # two-line table clamped by its bounds
    "hardtanh": lambda a: np.clip(a, -1, 1),
    "sign": np.sign,  # mode-0x60 table of zeros with above-line (0, 1), mirrored
}


@pytest.mark.parametrize("name", sorted(EXACT_BINARY))
def test_binary_ops_round_once(name):
    a, b = _inputs(name, 2, scale=4.0)
    assert_exact(run(name, a, b), EXACT_BINARY[name](*f32(a, b)), name)


@pytest.mark.parametrize("name", sorted(EXACT_UNARY))
def test_unary_ops_round_once(name):
    (a,) = _inputs(name, 1, scale=4.0)
    assert_exact(run(name, a), EXACT_UNARY[name](*f32(a)), name)


def test_cube_rounds_after_each_pass():
    """x*x goes to the intermediate buffer in fp16 (relative error <= 2^-11, at most one ulp of
    x^3), then times x and rounded again (half an ulp): 1.5 ulps."""
    (a,) = _inputs("cube", 1, scale=3.0)
    assert_close(run("cube", a), f64(a) ** 3, ulps=1.5, what="cube")


@pytest.mark.parametrize("name,slope", [("leakyrelu", 0.01), ("rrelu", (1 / 8 + 1 / 3) / 2)])
def test_two_line_tables_use_apples_fp16_slope(name, slope):
    (a,) = _inputs(name, 1, scale=4.0)
    ref = np.where(a > 0, f64(a), slope * f64(a))
    assert_close(run(name, a), ref, rtol=1e-3, ulps=0.5, what=name)


# -- lookup-table functions ----------------------------------------------------------------------

def _knot_pwl(table: bytes, x: np.ndarray, origin_steps: int, odd: bool) -> np.ndarray:
    """numpy's interpolation of a plain-grid table's 33 knots (slot 41: step 2^-s)."""
    slots = np.frombuffer(table[:128], np.float16).astype(np.float64)
    h = 2.0 ** -int(np.frombuffer(table[82:84], np.int16)[0])
    grid = (np.arange(33) + origin_steps) * h
    v = np.abs(x) if odd else x
    y = np.interp(v, grid, slots[4:37])
    return np.copysign(y, x) if odd else y


def _inside_grid(table: bytes, x, origin_steps, odd):
    h = 2.0 ** -int(np.frombuffer(table[82:84], np.int16)[0])
    v = np.abs(x) if odd else x
    return (v >= origin_steps * h) & (v <= (origin_steps + 32) * h)


# name -> (reference f(x) in float64, input scale, atol vs the true function, why)
TABLE_FUNCTIONS = {
    # sigmoid - 0.5 on [0, 8] step 1/4 (|f''| <= 0.097 -> 7.6e-4), + 0.5 by the PE (fp16 ulp of
    # the sum 4.9e-4 / 2): 1.5e-3
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), 3.0, 1.5e-3),
    # tanh on [0, 4] step 1/8 (|f''| <= 0.77 -> 1.5e-3) + output ulp / 2: 2.5e-3
    "tanh": (np.tanh, 2.0, 2.5e-3),
    # gelu: a fitted table on [-4, 4] step 1/4 (lut-rules §4; |f''| <= 0.8 -> 6.2e-3); reference
    # is the exact (erf) gelu: 8e-3
    "gelu": (lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))), 2.0, 8e-3),
    # selu = lambda a (e^x - 1) on [-8, 0] step 1/4 (|f''| <= 1.76 -> 1.4e-2): 1.5e-2
    "selu": (lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x)),
             2.0, 1.5e-2),
}
PLAIN_GRIDS = {"sigmoid": (0, True), "tanh": (0, True), "gelu": (-16, False), "selu": (-32, False)}


def _erf(x):
    return np.vectorize(math.erf, otypes=[float])(x)


@pytest.mark.parametrize("name", sorted(TABLE_FUNCTIONS))
def test_table_functions_follow_the_true_function(name):
    f, scale, atol = TABLE_FUNCTIONS[name]
    (a,) = _inputs(name, 1, scale=scale)
    sample = np.s_[..., :64, :]  # 102 400 elements keep the float64 reference quick
    assert_close(run(name, a)[sample], f(f64(a[sample])), atol=atol, ulps=0.5, what=name)


@pytest.mark.parametrize("name", sorted(PLAIN_GRIDS))
def test_table_evaluation_is_the_knots_interpolation(name):
    """Inside the grid the NE interpolates the 33 knots linearly (ane-facts §2.11): one fp16 ulp
    of the interpolated value.  sigmoid's table is sigmoid - 0.5, kept in L2 as fp16, and the PE
    adds 0.5 afterwards (decoded.txt, sigmoid TD1): there the ulp is the intermediate's."""
    origin, odd = PLAIN_GRIDS[name]
    table = eiln_kernel(name)[:128]
    (a,) = _inputs(name, 1, scale=3.0)
    x = f64(a)
    inside = _inside_grid(table, x, origin, odd)
    pwl = _knot_pwl(table, x, origin, odd)[inside]
    got = run(name, a)[inside]
    assert inside.mean() > 0.25
    if name == "sigmoid":
        want = fp16(f64(fp16(pwl)) + 0.5)
        assert_close(got, want, atol=ulp16(pwl), ulps=0.5, what=name)
    else:
        assert_close(got, fp16(pwl), ulps=1, what=name)


# name -> (reference, input kind, atol, rtol, why)
EXPONENT_TABLES = {
    # exp2 mantissa table k/32 (rel. interpolation 6e-5) + knots and output rounding (2 x 2^-11);
    # exp adds PostScale fp16(log2 e) = 1.44238 (rel. 2.2e-4 of the exponent): |x| <= 8 -> 3.3e-3
    "exp2": (np.exp2, "normal", 0, 1.5e-3),
    "exp": (np.exp, "normal", 0, 4.5e-3),
    # reciprocal table on [0.5, 1] step 1/64 (rel. 2.4e-4) + AccBias 1e-4 (0x68E) for |x| >= 0.25
    # (rel. 4e-4) + roundings: 2e-3
    "inv": (lambda x: 1 / x, "away", 0, 2e-3),
    # div: reciprocal into the fp16 intermediate, then the PE multiply: 2.5e-3
    "div": (None, "away", 0, 2.5e-3),
    # sqrt / rsqrt tables on [0.5, 2] step 1/16: rel. 2.5e-4 / 1.5e-3, + AccBias (rsqrt) + rounding
    "sqrt": (np.sqrt, "positive", 0, 2e-3),
    "rsqrt": (lambda x: 1 / np.sqrt(x), "positive", 0, 3e-3),
    # log2 table on [0.5, 1] step 1/64 (abs 1.8e-4 in log2) + the fp16 log2 result in L2 (ulp 2^-9
    # for |log2 x| < 4, half of it) + the PE scale: fp16(ln 2) = 0.69336 (rel 3e-4)
    "log2": (np.log2, "positive", 1.5e-3, 1e-3),
    "log": (np.log, "positive", 1.5e-3, 1e-3),
    "log10": (np.log10, "positive", 1.5e-3, 1.5e-3),
}


def _exp_inputs(name, kind):
    if kind == "positive":  # 0.25 .. 4 keeps log2 in [-2, 2]
        return [fp16(np.exp2(np.random.default_rng(1).uniform(-2, 2, EILN_SHAPE)))]
    if kind == "away":
        return _inputs(name, 2 if name == "div" else 1, low=0.25, seed=2)
    # |x| <= 8 keeps exp(x) inside fp16's range (65504)
    return [fp16(np.random.default_rng(3).uniform(-8, 8, EILN_SHAPE))]


@pytest.mark.parametrize("name", sorted(EXPONENT_TABLES))
def test_exponent_split_tables(name):
    """exp2 / reciprocal / log2 / sqrt / rsqrt tables split x into exponent and mantissa
    (lut.py [H]); Apple's programs computing the true functions is the check of that reading."""
    f, kind, atol, rtol = EXPONENT_TABLES[name]
    arrays = _exp_inputs(name, kind)
    if name == "div":  # a / b: b = slot 6 (decoded.txt: div TD0 takes 1/b of slot 6)
        a, b = arrays
        ref = f64(a) / f64(b)
    else:
        ref = f(f64(arrays[0]))
    assert_close(run(name, *arrays), ref, atol=atol, rtol=rtol, ulps=0.5, what=name)


# -- multi-task programs -------------------------------------------------------------------------

def _softmax(x, sign=1):
    z = sign * x
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_softmax_over_width():
    """5 tasks: max, (x - max) log2 e, exp2 table, 1/sum, multiply (ane-facts §5.3).  Errors: exp2
    table and PostScale as in test_exponent_split_tables (|x - max| < 10 -> 3.5e-3 rel), the fp16
    1/sum (2.4e-4), three fp16 roundings: 5e-3 relative, and 1e-7 for fp16 subnormals."""
    (a,) = _inputs("softmax", 1)
    assert_close(run("softmax", a), _softmax(f64(a)), atol=1e-7, rtol=5e-3, what="softmax")


def test_softmin_over_width():
    """softmax's five tasks after a PE negation (Scale -1); same tolerance."""
    (a,) = _inputs("softmin", 1)
    assert_close(run("softmin", a), _softmax(f64(a), -1), atol=1e-7, rtol=5e-3, what="softmin")


def test_logsoftmax_over_width():
    """softmax, then the log2 table and Scale fp16(ln 2) = 0.69336 (rel. 3.1e-4 of the result).
    Error of log(softmax): softmax's 3.5e-3 relative (see test_softmax_over_width) and the
    subnormal fp16 spacing of its smallest values (~2e-5 for inputs of std 0.5: 3e-3), the fp16
    log2 in L2 (ln 2 x 2^-8 = 2.7e-3 for |log2| < 16) and the output's half ulp (3.9e-3 for
    |y| < 16): atol 1.2e-2 + rtol 5e-4."""
    (a,) = _inputs("logsoftmax", 1, scale=0.5)
    z = f64(a) - f64(a).max(-1, keepdims=True)
    ref = z - np.log(np.exp(z).sum(-1, keepdims=True))
    assert_close(run("logsoftmax", a), ref, atol=1.2e-2, rtol=5e-4, what="logsoftmax")


def test_silu_is_sigmoid_times_x():
    """Old compiler: the sigmoid program into the intermediate, then a PE multiply with x.
    sigmoid tolerance 1.5e-3 times |x| <= 4 (4 sigma) plus the product's rounding."""
    (a,) = _inputs("silu", 1)
    x = f64(a)
    assert_close(run("silu", a), x / (1 + np.exp(-x)), atol=1.5e-3 * np.abs(x), ulps=1,
                 what="silu")


def test_norm_divides_each_row_by_its_l2_norm():
    """8 tasks: |x|, x*x, row sum, sqrt table, pass-through table, copy, reciprocal table, x *
    1/norm (ane-facts §2.11).  sqrt and reciprocal tables (2.5e-4 + 2.4e-4 rel) and five fp16
    roundings: rtol 4e-3."""
    (a,) = _inputs("norm", 1)
    x = f64(a)
    ref = x / np.sqrt((x * x).sum(-1, keepdims=True))
    assert_close(run("norm", a), ref, rtol=4e-3, ulps=1, what="norm")


def test_atan_adds_two_coarse_tables():
    """Two odd tables added by the PE: atan(x) on [0, 2] step 1/16 and atan(2k) - atan 2 on a grid
    of step 2 (slot 41 = -1).  The second interpolates atan between 2 and 4 linearly, which is off
    by up to 0.033 at x = 3: atol 0.035."""
    (a,) = _inputs("atan", 1, scale=3.0)
    assert_close(run("atan", a), np.arctan(f64(a)), atol=0.035, what="atan")


def _every_finite_fp16():
    """All 63 488 finite fp16 values, repeated to fill eiln's tensor."""
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    x = x[np.isfinite(x)]
    return np.resize(x, EILN_SHAPE)


def test_frac_is_x_minus_trunc_given_the_integer_magnitude():
    """eiln's frac takes two inputs (slot 5 = a, slot 6 = x): sign table on x, a * sign(x), then
    x - that (decoded.txt frac TD0-TD2) - the integer part is an input, mirrored by sign(x).  With
    a = trunc(|x|) the program is torch.frac (x - trunc(x)) on every finite fp16, exactly (one
    rounding of an exact difference).  x - floor(x) does not fit with that input: it differs on
    every negative non-integer (it would need a = |floor(x)|, which the sign mirroring does not
    suggest).  Ground truth: torch.frac."""
    x = _every_finite_fp16()
    a = fp16(np.trunc(np.abs(f64(x))))
    got = run("frac", a, x)
    want = torch.frac(torch.from_numpy(x)).numpy()
    assert_exact(got, want.astype(np.float32), "frac")
    floor_frac = fp16(f64(x) - np.floor(f64(x)))
    negative_fraction = (f64(x) < 0) & (np.trunc(f64(x)) != f64(x))
    assert (got != floor_frac)[negative_fraction].all()
    assert (got == floor_frac)[~negative_fraction].all()


def test_ceil_stops_at_its_unknown_table_mode():
    """ceil's tables use modes 0x63 / 0x64, whose evaluation no source explains (lut-rules §3
    copies them verbatim): the run stops naming the task and the value.  Only the composition of
    the two tables is pinned by torch.ceil; lut.py's docstring says why that does not pin either
    mode."""
    (a,) = _inputs("ceil", 1)
    with pytest.raises(SimulationError, match=r"task 0: lookup table mode \(slot 42\) = 0x63"):
        run("ceil", a)


def _strict_trunc(x):
    """The largest integer below x for x > 0, ceil(x) for x <= 0."""
    return np.where(x > 0, np.ceil(x) - 1, np.ceil(x))


def test_ceil_program_is_its_two_tables_composed_plus_x_positive(monkeypatch):
    """The data flow of Apple's 4 tasks (decoded.txt ceil TD0-TD3): x -> table 0x63 -> fp16 ->
    table 0x64 -> fp16, plus the step table [x > 0] on x, added by the PE.  Stand-ins for the two
    unknown modes - 0x63 passes x on, 0x64 is _strict_trunc - are only a probe of that flow, not
    a claim about either mode: with them the program is torch.ceil on every finite fp16 but the
    512 positive x in (2048, 4096) with an odd last mantissa bit, where no fp16 value b has
    fp16(b + 1) = x (x +- 1 are ties that round to even): there the result is x +- 2."""
    from coreml2hwx.sim import lut

    monkeypatch.setitem(lut.MODES, 0x63, "probe_pass")
    monkeypatch.setitem(lut.MODES, 0x64, "probe_trunc")
    monkeypatch.setattr(lut.Lut, "_probe_pass", lambda self, v: v, raising=False)
    monkeypatch.setattr(lut.Lut, "_probe_trunc", lambda self, v: _strict_trunc(v),
                        raising=False)
    x = _every_finite_fp16()
    got = f64(run("ceil", x))
    want = torch.ceil(torch.from_numpy(x)).numpy().astype(np.float64)
    odd = (f64(x) > 2048) & (f64(x) < 4096) & (x.view(np.uint16) & 1 == 1)
    assert np.unique(x[odd]).size == 512
    assert (got == want)[~odd].all()
    assert (np.abs(got - want)[odd] == 2).all()


def test_every_eiln_kernel_is_covered():
    covered = (set(EXACT_BINARY) | set(EXACT_UNARY) | set(TABLE_FUNCTIONS) | set(EXPONENT_TABLES)
               | {"cube", "leakyrelu", "rrelu", "softmax", "softmin", "logsoftmax", "silu", "norm",
                  "atan", "frac", "ceil"})
    assert set(eiln_rows()) == covered
