"""Our H13 programs, run in the simulator, compute the MIL math.

Ground truth: the IR reference evaluator (numpy, fp32) on the oracle cases' MIL; the simulator's
semantics come from Apple's programs (coreml2hwx.sim), not from our encoder.  Tolerances: the
hardware stores fp16 (relative error ~ 2^-11 per rounding); lookup-table activations are 33-point
piecewise-linear fits (silu is off by up to 0.6 % of its output range here, lut-rules.md §4).
"""

from __future__ import annotations

import numpy as np
import pytest

from coreml2hwx.ir import evaluate, random_inputs
from coreml2hwx.ir.layout import ane_shape
from coreml2hwx.sim import run_program
from coreml2hwx.target.h13 import lower
from tests.target.h13_oracles import CASES, case_id, graph

TABLE_OPS = {"sigmoid", "tanh", "gelu", "silu", "sqrt", "rsqrt", "exp", "softmax", "pow",
             "real_div", "leaky_relu", "maximum", "minimum", "layer_norm"}
POSITIVE = {"sqrt", "rsqrt", "pow", "real_div", "log"}  # defined (or well conditioned) for x > 0


def _compiled():
    out = []
    for case in CASES:
        if case["error"]:
            continue
        out.append(case)
    return out


def assert_program_computes_the_graph(g, seed):
    """Our program for `g`, run in the simulator, equals the reference evaluator (tables within
    1e-2, arithmetic within 1.5e-3 of the output scale)."""
    program = lower(g)
    inputs = random_inputs(g, seed=seed)
    ops = {op.type for op in g.ops}
    if ops & POSITIVE:
        inputs = {k: np.abs(v) + 0.25 for k, v in inputs.items()}
    want = evaluate(g, inputs)
    got = run_program(program, {k: np.asarray(v).reshape(ane_shape(v.shape)) for k, v in inputs.items()})
    tolerance = 1e-2 if ops & TABLE_OPS else 1.5e-3
    for name, value in want.items():
        expect = np.asarray(value, np.float32).reshape(-1)
        actual = got[name].astype(np.float32).reshape(-1)
        scale = max(float(np.max(np.abs(expect))), 1e-3)
        assert np.max(np.abs(actual - expect)) <= tolerance * scale, name


@pytest.mark.parametrize("case", _compiled(), ids=case_id)
def test_simulated_program_computes_the_mil(case):
    assert_program_computes_the_graph(graph(case), seed=7)


def _mil(args: str, body: list[str], out: str) -> str:
    lines = "".join(f"    {line}\n" for line in body)
    return ("program(1.3)\n[buildInfo = dict<string, string>({})]\n{\n"
            f"  func main<ios18>({args}) {{\n{lines}  }} -> ({out});\n}}\n")


_T = "tensor<fp16, [1, 64, 8, 8]>"
_W = ('tensor<fp16, [256, 256]> w = const()[name = string("w"), val = tensor<fp16, [256, 256]>'
      '(BLOBFILE(path = string("@model_path/weights.bin"), offset = uint64(64)))];')
# Forms whose rules come from upstream Apple oracles outside ../shared (binary_real_div_1x64x8x8,
# binary_pow_1x64x8x8, env_chain_residual_gelu_1x64x8x8, matmul_m64_k256_n256_ty1,
# reduce_probe_sum_ax3_1x64x8x8): the simulator checks that the programs compute the MIL.
# (softmax over [1, C, 1, W] with C > 1 is left out: the simulator does not yet accept a kept
# L2 result with Common 0x30 = 0x400, which upstream norm_softmax_an1_1x8x1x64 has.)
EXTRA = [
    {"case": "real_div_1x64x8x8", "mil": _mil(f"{_T} x, {_T} z", [
        f'{_T} y = real_div(x = x, y = z)[name = string("y")];'], "y")},
    {"case": "pow_1x64x8x8", "mil": _mil(f"{_T} x, {_T} z", [
        f'{_T} y = pow(x = x, y = z)[name = string("y")];'], "y")},
    {"case": "residual_gelu_1x64x8x8", "mil": _mil(f"{_T} x", [
        f'{_T} f = gelu(x = x, mode = string("EXACT"))[name = string("f")];',
        f'{_T} y = add(x = x, y = f)[name = string("y")];'], "y")},
    {"case": "matmul_m64_k256_n256_ty1", "mil": _mil("tensor<fp16, [64, 256]> x", [
        'bool f = const()[name = string("f"), val = bool(false)];',
        'bool ty = const()[name = string("ty"), val = bool(true)];', _W,
        'tensor<fp16, [64, 256]> y = matmul(transpose_x = f, transpose_y = ty, x = x, y = w)'
        '[name = string("y")];'], "y"),
     "weights": {"payload_bytes": 131072, "shape": [256, 256], "storage": "BLOBFILE",
                 "value": "fp16(0x1p-1)"}},
    {"case": "reduce_sum_ax3_1x64x8x8", "mil": _mil(f"{_T} x", [
        'tensor<int32, [1]> axes = const()[name = string("axes"), val = tensor<int32, [1]>([3])];',
        'tensor<fp16, [1, 64, 8, 1]> y = reduce_sum(x = x, axes = axes, keep_dims = bool(true))'
        '[name = string("y")];'], "y")},
]
# Sum / mean over C of one row (upstream reduce_probe_{sum,mean}_ax1_1x{8x1x64,64x1x64}: the
# matmul-style transposed copy kept in L2, then a PE reduction of each pixel's C values).
for _op, _c, _w in (("reduce_sum", 8, 64), ("reduce_mean", 64, 64), ("reduce_sum", 8, 128)):
    EXTRA.append({"case": f"{_op}_ax1_1x{_c}x1x{_w}", "mil": _mil(
        f"tensor<fp16, [1, {_c}, 1, {_w}]> x", [
            'tensor<int32, [1]> axes = const()[name = string("axes"), val = tensor<int32, [1]>([1])];',
            f'tensor<fp16, [1, 1, 1, {_w}]> y = {_op}(x = x, axes = axes, keep_dims = bool(true))'
            '[name = string("y")];'], "y")})
# ... and after another op (its intermediate takes the scratch slot the one-row form names, so the
# transposing form is used)
_X = "tensor<fp16, [1, 8, 1, 64]>"
EXTRA.append({"case": "relu_reduce_sum_ax1_1x8x1x64", "mil": _mil(f"{_X} x", [
    f'{_X} r = relu(x = x)[name = string("r")];',
    'tensor<int32, [1]> axes = const()[name = string("axes"), val = tensor<int32, [1]>([1])];',
    'tensor<fp16, [1, 1, 1, 64]> y = reduce_sum(x = r, axes = axes, keep_dims = bool(true))'
    '[name = string("y")];'], "y")})
# Rows wider than 128 elements on fewer than 16 channels (upstream binary_{pow,real_div}_1x3x224x224:
# 4 NEs, 3 LUT channels, the source staged in 0x100-byte channels).
_R = "tensor<fp16, [1, 3, 224, 224]>"
for _op in ("pow", "real_div"):
    EXTRA.append({"case": f"{_op}_1x3x224x224", "mil": _mil(f"{_R} x, {_R} z", [
        f'{_R} y = {_op}(x = x, y = z)[name = string("y")];'], "y")})


@pytest.mark.parametrize("case", EXTRA, ids=case_id)
def test_simulated_extra_forms_compute_the_mil(case):
    assert_program_computes_the_graph(graph({"weights": {"storage": "none"}, **case}), seed=11)
