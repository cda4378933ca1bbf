"""Apple's register programs from ../shared/oracles/h13, run in the simulator, against their MIL.

Ground truth: each oracle is the program Apple's compiler (macOS 26.6.2) produced for the MIL text
it records.  The constant section is rebuilt (oracles/README.md weights rule; lut-rules.md tables;
the weight layout of coreml2hwx/sim/kernel.py) and used only when its sha256 equals Apple's, so the
simulator runs exactly Apple's bytes.  The MIL math is computed here with numpy / torch.

Tolerances (each case names one):
* EXACT - one rounding to fp16 of the float32 result (element-wise PE/NE passes, copies,
  clamps, two-line tables): bit-exact.
* ulps - reductions (fp32 sums in another order: one ulp) and fp16 intermediates.
* CONV - fp32 accumulation rounded once: half an ulp + K * 2^-24 * sum |w x|.
* tables - the 33-point table's interpolation error (h^2/8 max|f''|, h = grid step; fitted tables
  h^2/12 max|f''|, lut-rules §4) plus fp16 roundings, stated per function below.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
import torch

from coreml2hwx.sim import run_program
from tests.conftest import load_json, oracle_files
from tests.sim.support import (compiled_tensor, matches_apple, mil_inputs, oracle,
                               oracle_program, pack_conv, pack_depthwise, table_section)
from tests.sim.tolerance import assert_close, assert_exact, fp16


def f64(a):
    return np.asarray(a, np.float64)


def f32(a):
    return np.asarray(a, np.float32)


# -- constant sections ---------------------------------------------------------------------------

def zeros(case):
    return bytes(case["constant_section"]["size"])


def tables(*names):
    return lambda case: table_section(case, *names)


def blob_rows(case):
    """A per-channel constant: its C values (bias row), then C ones (scale row)."""
    (shape,) = case["weights"].get("shapes", [case["weights"].get("shape")])
    z = compiled_tensor(case, (int(np.prod(shape)),))
    return np.concatenate([z, np.ones_like(z)]).tobytes()


def blob(case):
    (shape,) = case["weights"].get("shapes", [case["weights"].get("shape")])
    return compiled_tensor(case, (int(np.prod(shape)),)).tobytes()


def scalar_div_rows(case):
    """x / 0.5 as (x + 0) * 2: a zero bias row and a row of 1/0.5 (the oracle's fp16 words)."""
    c = case["parameters"]["shape"][1]
    rows = np.concatenate([np.zeros(c), np.full(c, 2.0)]).astype(np.float16).tobytes()
    return rows + bytes(case["constant_section"]["size"] - len(rows))


def _kernel_regs(case):
    td = next(td for td in case["task_descriptors"]
              if "0x1f848" in td["blocks"].get("0x1f800", {}).get("words", {}))
    return {int(a, 16): int(v, 16) for b in td["blocks"].values() for a, v in b["words"].items()}


def conv_weights(case):
    p = case["parameters"]
    groups = p.get("groups", 1)
    cout, cin, k = p["output_channels"], p["input_channels"], p["kernel"]
    w = compiled_tensor(case, (cout, cin // groups, k, k))
    b = compiled_tensor(case, (cout,)) if p["bias"] else None
    return w, b


def conv_section(case):
    w, b = conv_weights(case)
    p = case["parameters"]
    if p.get("groups", 1) == p["output_channels"] == p["input_channels"]:
        return pack_depthwise(w, b)
    regs = _kernel_regs(case)
    lanes = 1 << (regs[0x1C] >> 10 & 7)  # ConvCfg.OCGSize
    sparse = bool(regs[0xC800] >> 8 & 1)  # KernelCfg.SparseFmt
    return pack_conv(w, b, lanes, p.get("groups", 1), sparse)


def matmul_weights(case):
    p = case["parameters"]
    return compiled_tensor(case, (p["columns"], p["reduction"]))  # ty=1: w is [N, K]


def matmul_section(case):
    return pack_conv(matmul_weights(case)[:, :, None, None], None, 16)


# -- references (MIL math) -----------------------------------------------------------------------

def _mil_float(case, name, default=None):
    found = re.search(rf"{name} = fp(?:16|32)\(([^)]+)\)", case["mil"])
    if not found:
        return default
    text = found.group(1)
    return float.fromhex(text) if "0x" in text else float(text)


def erf(x):
    return np.vectorize(math.erf, otypes=[float])(x)


def gelu(x):
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def gelu_sigmoid(x):
    return x / (1 + np.exp(-1.702 * x))


def silu(x):
    return x / (1 + np.exp(-x))


def reduce_ref(case, x):
    p = case["parameters"]
    fn = {"reduce_sum": np.sum, "reduce_mean": np.mean, "reduce_max": np.max}[p["operation"]]
    return fn(f64(x), axis=tuple(p["axes"]), keepdims=True)


def conv_ref(case, x):
    w, b = conv_weights(case)
    p = case["parameters"]
    stride, k = p.get("stride", 1), p["kernel"]
    xt = torch.tensor(f64(x))
    if p.get("pad_type", "same") == "same":
        h = x.shape[2]
        total = max((-(-h // stride) - 1) * stride + k - h, 0)
        xt = torch.nn.functional.pad(xt, (total // 2, total - total // 2) * 2)
    args = dict(stride=stride, groups=p.get("groups", 1))
    y = torch.nn.functional.conv2d(xt, torch.tensor(f64(w)), None if b is None else
                                   torch.tensor(f64(b)), **args).numpy()
    mag = torch.nn.functional.conv2d(xt.abs(), torch.tensor(np.abs(f64(w))), **args).numpy()
    if p.get("relu"):
        y = np.maximum(y, 0)
    return y, w[0].size * mag


def _last2(a):
    return f64(a).reshape(a.shape[-2:])


def matmul_ref(case, *inputs):
    p = case["parameters"]
    tx, ty = p.get("transpose_x", False), p.get("transpose_y", False)
    x = _last2(inputs[0])
    x = x.T if tx else x
    if len(inputs) == 2:  # runtime weights
        w = _last2(inputs[1])
        w = w.T if ty else w
    else:
        w = f64(matmul_weights(case)).T
    return x @ w, x.shape[1] * (np.abs(x) @ np.abs(w))


# -- the cases -----------------------------------------------------------------------------------

@dataclass
class Case:
    consts: Callable
    ref: Callable  # (case, *inputs as fp16 arrays) -> reference; "conv": (reference, K sum|w x|)
    check: str = "exact"  # exact | close | conv
    tol: dict = field(default_factory=dict)
    inputs: Callable | None = None  # (rng, shapes) -> list of fp16 arrays
    why: str = ""


def positive(rng, shapes):  # 0.5 .. 2
    return [fp16(np.exp2(rng.uniform(-1, 1, s))) for s in shapes]


def pow_inputs(rng, shapes):
    return [fp16(np.exp2(rng.uniform(-1, 1, shapes[0]))), fp16(rng.uniform(-2, 2, shapes[1]))]


def away_from_zero(rng, shapes):
    x = rng.standard_normal(shapes[0])
    z = rng.uniform(0.5, 2, shapes[1]) * rng.choice([-1, 1], shapes[1])
    return [fp16(x), fp16(z)]


def wide(rng, shapes):
    return [fp16(rng.standard_normal(s) * 2.5) for s in shapes]


EXACT_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "maximum": np.maximum,
                "minimum": np.minimum}


def binary(op):
    return lambda case, a, b: EXACT_BINARY[op](f32(a), f32(b))


TANH_TOL = dict(atol=2.5e-3, ulps=0.5)  # step 1/8 on [0, 4], |f''| <= 0.77 -> 1.5e-3, + rounding
SIGMOID_TOL = dict(atol=4e-3, ulps=0.5)  # step 1/2 on [-8, 8], |f''| <= 0.097 -> 3.0e-3
GELU_TOL = dict(atol=8e-3, ulps=0.5)  # fitted, step 1/4, |f''| <= 0.8 -> 6.2e-3 (h^2/8)
# Fitted, step 1/2: Apple's knots sit up to 0.0148 from silu (at x = +-0.5; the L2 fit of
# lut-rules §4), and the interpolation between them is closer: 1.6e-2 with rounding.
SILU_TOL = dict(atol=1.6e-2, ulps=0.5)
LN_TOL = dict(atol=2e-3, rtol=2e-3)  # fp16 mean and 1/std (2^-11 rel each) + one rounding
SOFTMAX_TOL = dict(atol=1e-6, rtol=5e-3)  # exp2 table and fp16(log2 e) (see test_sim_eiln)

CASES: dict[str, Case] = {
    **{f"binary_{op}_{shape}": Case(zeros, binary(op)) for op, shape in [
        ("add", "1x1x1x1"), ("add", "1x3x224x224"), ("add", "1x64x8x8"), ("maximum", "1x64x1x1"),
        ("minimum", "1x1024x1x1"), ("mul", "1x128x16x16"), ("sub", "1x4096x1x1")]},
    # pow = exp2(z log2 x): log2 table (1.8e-4) + the fp16 log2 in L2 (2^-12 for |log2 x| < 1),
    # the NE product, the exp2 table (rel 6e-5) and 2 roundings: |z log2 x| < 2 -> rtol 4e-3
    "binary_pow_1x64x1x1": Case(tables("log2", "exp2"), lambda c, x, z: f64(x) ** f64(z), "close",
                                dict(rtol=4e-3), pow_inputs),
    # x * fp16(1/z): reciprocal table rel 2.4e-4 + 3 roundings (2^-11 each)
    "binary_real_div_1x64x1x1": Case(tables("reciprocal"), lambda c, x, z: f64(x) / f64(z),
                                     "close", dict(rtol=2.5e-3), away_from_zero),
    "binary_add_c64_constant_scalar": Case(zeros, lambda c, x: f32(x) + np.float32(0.5)),
    "binary_maximum_c512_constant_scalar": Case(tables("maximum_0.5"),
                                                lambda c, x: np.maximum(f32(x), 0.5)),
    "binary_real_div_c64_constant_scalar": Case(scalar_div_rows, lambda c, x: f32(x) / 0.5),
    "binary_add_c512_constant_blob": Case(blob_rows, lambda c, x: f32(x) + f32(
        compiled_tensor(c, (1, 512, 1, 1)))),
    "binary_minimum_c64_constant_blob": Case(blob, lambda c, x: np.minimum(f32(x), f32(
        compiled_tensor(c, (1, 64, 1, 1))))),
    "chain_add_relu_c512": Case(zeros, lambda c, x, y: np.maximum(f32(x) + f32(y), 0)),
    "unary_relu_c64": Case(zeros, lambda c, x: np.maximum(f32(x), 0)),
    "unary_abs_c4096": Case(zeros, lambda c, x: np.abs(f32(x))),
    "unary_leaky_relu_c512": Case(tables("leaky_relu_0.125"), lambda c, x: np.where(
        x > 0, f32(x), np.float32(_mil_float(c, "alpha")) * f32(x))),
    "unary_tanh_c512": Case(tables("tanh"), lambda c, x: np.tanh(f64(x)), "close", TANH_TOL, wide),
    "unary_sigmoid_c64": Case(tables("sigmoid"), lambda c, x: 1 / (1 + np.exp(-f64(x))), "close",
                              SIGMOID_TOL, wide),
    "unary_gelu_c64": Case(tables("gelu"), lambda c, x: gelu(f64(x)), "close", GELU_TOL, wide),
    "unary_silu_c512": Case(tables("silu"), lambda c, x: silu(f64(x)), "close", SILU_TOL, wide),
    # sqrt table step 1/16 on [0.5, 2]: rel 2.5e-4 + knots and output rounding
    "unary_sqrt_c512": Case(tables("sqrt"), lambda c, x: np.sqrt(f64(x)), "close",
                            dict(rtol=1.5e-3), positive),
    # rsqrt table: rel 1.5e-3 + rounding; AccBias 0x11 = fp16 1.0e-6 is the MIL epsilon
    "unary_rsqrt_c64": Case(tables("rsqrt"), lambda c, x: 1 / np.sqrt(
        f64(x) + _mil_float(c, "epsilon")), "close", dict(rtol=2.5e-3), positive),
    "env_act_gelu_1x768x1x1_tanh_approximation": Case(  # Apple uses the EXACT table on H13
        tables("gelu"), lambda c, x: gelu_tanh(f64(x)), "close", dict(atol=9e-3, ulps=0.5), wide),
    "env_act_gelu_1x768x1x1_sigmoid_approximation": Case(
        tables("gelu_sigmoid"), lambda c, x: gelu_sigmoid(f64(x)), "close",
        dict(atol=8e-3, ulps=0.5), wide),  # fitted, step 1/4, |f''| <= 0.85 -> 6.6e-3
    "env_act_silu_1x256x32x32": Case(tables("silu"), lambda c, x: silu(f64(x)), "close", SILU_TOL,
                                     wide),
    "env_chain_residual_gelu_1x768x1x1": Case(  # gelu's error, + the fp16 gelu in L2 + add
        tables("gelu"), lambda c, x: f64(x) + gelu(f64(x)), "close", dict(atol=8e-3, ulps=1),
        wide),
    "env_chain_residual_silu_1x768x1x1": Case(
        tables("silu"), lambda c, x: f64(x) + silu(f64(x)), "close", dict(atol=1.6e-2, ulps=1),
        wide),
    **{name: Case(zeros, lambda c, x, z, op=op: op(f32(x), f32(z))) for name, op in [
        ("env_bcast_add_1x64x8x8_runtime_1x64x1x1", np.add),
        ("env_bcast_add_1x96x1x1_runtime_1x96x1x1", np.add),
        ("env_bcast_add_2x1024x1x1_runtime_2x1024x1x1", np.add),
        ("env_bcast_add_2x64x8x8_runtime_2x64x8x8", np.add),
        ("env_bcast_add_8x512x1x1_runtime_8x512x1x1", np.add),
        ("env_bcast_mul_1x3072x1x1_runtime_1x3072x1x1", np.multiply)]},
    "env_bcast_mul_1x64x16x16_scalar": Case(zeros, lambda c, x: f32(x) * np.float32(0.5)),
    "env_bcast_mul_1x768x16x16_scalar": Case(zeros, lambda c, x: f32(x) * np.float32(0.5)),
    "env_bcast_add_1x375x1024_blob_1x1x1024": Case(blob, lambda c, x: f32(x) + f32(
        compiled_tensor(c, (1, 1, 1, 1024)))),
    # fp32 sums rounded once; another summation order can move the rounding by one ulp
    **{name: Case(zeros, reduce_ref, "close", dict(ulps=1)) for name in [
        "reduce_max_axes_1", "reduce_mean_axes_1", "reduce_mean_axes_2_3",
        "reduce_probe_max_ax2_3_1x64x8x8_flat", "reduce_probe_mean_ax3_1x8x1x64",
        "reduce_probe_sum_ax1_2_3_1x128x16x16", "reduce_sum_axes_2_3"]},
    **{name: Case(zeros, lambda c, x: _layer_norm(c, x), "close", LN_TOL) for name in [
        "layer_norm_1x512x1x1", "norm_layer_norm_ax1_2_3_1x64x1x1"]},
    "norm_softmax_an1_1x1x1x64": Case(tables("exp2"), lambda c, x: _softmax(x), "close",
                                      SOFTMAX_TOL),
    **{name: Case(conv_section, conv_ref, "conv") for name in [
        "conv_k1_c64_n64_s8_bias0_relu", "conv_k3_c64_n64_s8_bias0",
        "conv_known_k1_c64_n128_s16_st1_g1_bias0_same",
        "conv_probe_k1_c64_n64_s8_st1_g1_bias0_same",
        "conv_probe_k3_c128_n128_s16_st1_g128_bias1_same",
        "env_conv_k1_c256_n256_s8_st1_g1_bias1", "env_conv_k1_c64_n64_s16_st1_g1_bias0",
        "env_conv_k1_c64_n64_s16_st1_g1_bias1", "env_conv_k1_c64_n64_s16_st1_g4_bias0",
        "env_conv_k1_c64_n64_s16_st2_g1_bias0", "env_conv_k1_c768_n768_s1_st1_g1_bias1",
        "env_conv_k3_c64_n64_s16_st1_g1_bias0", "env_conv_k3_c64_n64_s16_st1_g64_bias0"]},
    **{name: Case(matmul_section, matmul_ref, "conv") for name in [
        "matmul_m1_k256_n256_ty1", "matmul_m1_k512_n512_ty1", "matmul_m8_k512_n1024_ty1",
        "env_mm_r2rb_m1_k2048_n2048_tx0_ty1", "env_mm_r2rb_m1_k2048_n2048_tx1_ty1",
        "env_mm_r3rb_m1_k2048_n2048_tx0_ty1_b1"]},
    **{name: Case(zeros, matmul_ref, "conv") for name in [
        "env_mm_r2rr_m16_k2048_n2048_tx0_ty0", "rrmm_r2rr_m16_k64_n64_tx0_ty0"]},
}

# Compiled oracles this file cannot run, and why (each would need bytes only Apple has).
NOT_RUNNABLE: dict = {}

# Stride-2 convolutions (zero-skipping weights) run in tests/sim/test_sim_sparse.py.
RUN_IN_TEST_SIM_SPARSE = {
    "conv_probe_k1_c128_n256_s16_st2_g1_bias0_valid",
    "conv_probe_k1_c512_n512_s16_st2_g4_bias0_same",
    "env_conv_k3_c128_n128_s16_st2_g1_bias1", "env_conv_k3_c64_n64_s16_st2_g1_bias0",
    "env_conv_k3_c64_n64_s16_st2_g4_bias1"}


def _layer_norm(case, x):
    x = f64(x)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    var = ((x - mean) ** 2).mean(axis=(1, 2, 3), keepdims=True)
    return (x - mean) / np.sqrt(var + _mil_float(case, "epsilon"))


def _softmax(x):
    x = f64(x)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _run(name: str):
    return run_case(name, CASES[name], oracle(name))


def run_case(name: str, spec, case: dict):
    """Run an oracle's own program (constants rebuilt, checked against Apple's hash) on seeded
    inputs: (spec, case, inputs in the MIL's order, output)."""
    section = spec.consts(case)
    assert matches_apple(case, section), "the rebuilt constant section does not hash like Apple's"
    program = oracle_program(case, section)
    assert program.target == case["target"]
    rng = np.random.default_rng(sum(map(ord, name)))
    tensors = {t.name: t for t in program.inputs}
    order = [n for n, _ in mil_inputs(case["mil"])]  # the references take the MIL's order
    shapes = [tensors[n].shape for n in order]
    arrays = spec.inputs(rng, shapes) if spec.inputs else [fp16(rng.standard_normal(s))
                                                           for s in shapes]
    (out,) = run_program(program, dict(zip(order, arrays))).values()
    return spec, case, arrays, out


@pytest.mark.parametrize("name", sorted(CASES))
def test_oracle_program_computes_its_mil(name):
    check_against_mil(name, *_run(name))


def check_against_mil(name, spec, case, arrays, out):
    """The program's output `out` against its case's MIL math, at the case's stated tolerance."""
    result = spec.ref(case, *arrays)
    if spec.check == "exact":
        assert_exact(out, np.broadcast_to(result, out.shape), name)
    elif spec.check == "conv":  # half an ulp + fp32 accumulation: K * 2^-24 * sum |w x|
        ref, bound = result
        assert_close(out, ref.reshape(out.shape), ulps=0.5, atol=2.0 ** -24 * bound.reshape(
            out.shape), what=name)
    else:
        assert_close(out, np.reshape(result, out.shape), what=name, **spec.tol)


def test_every_compiled_h13_oracle_is_accounted_for():
    compiled = {p.stem for p in oracle_files("h13") if load_json(p)["task_descriptors"]}
    assert compiled == set(CASES) | set(NOT_RUNNABLE) | RUN_IN_TEST_SIM_SPARSE
    assert not set(CASES) & (set(NOT_RUNNABLE) | RUN_IN_TEST_SIM_SPARSE)
