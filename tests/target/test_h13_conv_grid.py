"""H13 convolutions at grid points the visible oracles lack: grouped stride 1 with wider groups,
valid padding at stride 2, S = 8 / 32 (coreml2hwx/target/h13/conv.py, l2.py, cost.py).

Ground truth:
* words of upstream Apple oracles (joshuaswarren/mil-hwx-compiler research/oracles/h13 at
  17fb8430282b, `conv_probe_k{K}_c{Cin}_n{Cout}_s{S}_st{St}_g{G}_bias{B}_{pad}`), which are not
  part of ../shared; the few words the new rules set are quoted below with their case;
* torch, for what the programs compute, run in the simulator.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from coreml2hwx.ir import Graph
from coreml2hwx.report.jsonview import task_to_json
from coreml2hwx.sim import run_program
from coreml2hwx.target import generation
from coreml2hwx.target.h13 import lower
from tests.target.h13_oracles import graph


def probe_mil(cin, cout, side, kernel, stride, groups, bias, pad) -> str:
    """The MIL text of an upstream `conv_probe_*` case (every constant reads weights.bin @64)."""
    out = (side - kernel) // stride + 1 if pad == "valid" else -(-side // stride)
    blob = 'BLOBFILE(path = string("@model_path/weights.bin"), offset = uint64(64))'
    w = f"tensor<fp16, [{cout}, {cin // groups}, {kernel}, {kernel}]>"
    lines = [
        f'string pt = const()[name = string("pt"), val = string("{pad}")];',
        f'tensor<int32, [2]> st = const()[name = string("st"), val = tensor<int32, [2]>'
        f'([{stride}, {stride}])];',
        'tensor<int32, [4]> pd = const()[name = string("pd"), val = tensor<int32, [4]>'
        '([0, 0, 0, 0])];',
        'tensor<int32, [2]> dl = const()[name = string("dl"), val = tensor<int32, [2]>([1, 1])];',
        f'int32 gp = const()[name = string("gp"), val = int32({groups})];',
        f'{w} w = const()[name = string("w"), val = {w}({blob})];']
    if bias:
        lines.append(f'tensor<fp16, [{cout}]> b = const()[name = string("b"), '
                     f'val = tensor<fp16, [{cout}]>({blob})];')
    args = ("bias = b, " if bias else "") + ("dilations = dl, groups = gp, pad = pd, "
                                             "pad_type = pt, strides = st, weight = w, x = x")
    lines.append(f'tensor<fp16, [1, {cout}, {out}, {out}]> y = conv({args})[name = string("y")];')
    body = "\n".join("    " + line for line in lines)
    return ("program(1.3)\n[buildInfo = dict<string, string>({})]\n{\n"
            f"  func main<ios18>(tensor<fp16, [1, {cin}, {side}, {side}]> x) {{\n{body}\n"
            "  } -> (y);\n}\n")


def lower_probe(cin, cout, side, kernel, stride, groups, bias, pad):
    """Our program for the case, its weights rebuilt by the oracle README rule (bench/parity.py)."""
    shapes = [[cout, cin // groups, kernel, kernel]] + ([[cout]] if bias else [])
    payload = 2 * cout * (cin // groups) * kernel * kernel
    case = {"mil": probe_mil(cin, cout, side, kernel, stride, groups, bias, pad),
            "weights": {"storage": "BLOBFILE", "payload_bytes": payload, "shapes": shapes,
                        "value": "fp16(0x1p-1)"}}
    return lower(graph(case))


def compile_probe(*params):
    (task,) = lower_probe(*params).tasks
    view = task_to_json(task, generation("h13"))
    words = {int(a, 16): int(v, 16) for b in view["blocks"].values() for a, v in b["words"].items()}
    return words, [int(v, 16) for v in view["header_words"]]


SOURCE_ROW, RESULT_BASE, CFG = 0x4810, 0x4834, 0x34

# (cin, cout, side, kernel, stride, groups, bias, pad), {word: Apple's value}, ExeCycles or None
APPLE = [
    # grouped stride 1: the source row also clears one channel's units in the 64-unit period
    ((128, 128, 16, 3, 1, 4, True, "same"), {SOURCE_ROW: 0x430, RESULT_BASE: 0x4300}, 9),
    ((256, 256, 16, 1, 1, 4, True, "same"), {SOURCE_ROW: 0x830, RESULT_BASE: 0x8300}, 0x10),
    ((512, 512, 16, 1, 1, 4, False, "same"), {SOURCE_ROW: 0x1030, RESULT_BASE: 0x10300}, 0x22),
    # stride 2: a quarter of a channel's units (2 of 8 at W = 64: 512 -> 515; 1 of 4 at W = 32)
    ((64, 64, 64, 1, 2, 1, False, "same"), {SOURCE_ROW: 0x2030, RESULT_BASE: 0x80c00}, 0x13),
    ((256, 256, 32, 1, 2, 1, True, "valid"), {SOURCE_ROW: 0x4020, RESULT_BASE: 0x80400}, 0x1b),
    # valid stride 2: one tile stages every input row (8 and 32, not 7 and 31)
    ((64, 64, 8, 3, 2, 1, True, "valid"), {SOURCE_ROW: 0x420, RESULT_BASE: 0x2100}, 3),
    # ... and a stride-2 3x3 kernel at Hout 15 keeps ShMax alone; its kernel costs >= 1.8694/line
    ((64, 64, 32, 3, 2, 1, False, "valid"),
     {SOURCE_ROW: 0x1020, RESULT_BASE: 0x20400, CFG: 0x00230001}, 8),
    # stride 1 dense, for contrast: ShPref = ShMin = ShMax
    ((64, 64, 32, 3, 1, 1, True, "valid"),
     {SOURCE_ROW: 0x1050, RESULT_BASE: 0x20a00, CFG: 0x00222201}, 9),
]


@pytest.mark.parametrize("params,apple,cycles", APPLE,
                         ids=["k{3}_c{0}_n{1}_s{2}_st{4}_g{5}_bias{6:d}_{7}".format(*p)
                              for p, _, _ in APPLE])
def test_words_are_apples(params, apple, cycles):
    words, header = compile_probe(*params)
    assert {a: words[a] for a in apple} == apple
    assert header[1] == cycles  # ExeCycles


def test_biased_depthwise_stride_two_at_height_8_is_apples():
    """Upstream conv_probe_k1_c256_n256_s16_st2_g256_bias1_same: 4 slot columns although biased
    (constant section 3072 bytes, sha256 below; ExeCycles 0xb)."""
    params = (256, 256, 16, 1, 2, 256, True, "same")
    program = lower_probe(*params)
    assert len(program.constants) == 3072
    assert hashlib.sha256(program.constants).hexdigest() == \
        "d91b6feb85a7b716a7b8a0d7dca35fc037ccc5cbda791acb0fe585da30c8617b"
    assert compile_probe(*params)[1][1] == 0xb


# -- what the programs compute: simulator against torch ----------------------------------------

SHAPES = [  # cin, cout, side, kernel, stride, groups, bias
    (128, 128, 16, 3, 1, 4, True),
    (64, 64, 8, 3, 2, 1, True),
    (64, 64, 16, 3, 2, 1, False),
    (64, 64, 16, 3, 2, 64, True),   # biased depthwise stride 2 at Hout 8: 4 slot columns
    (16, 32, 64, 1, 2, 1, False),   # stride 2 over 128-byte channels
]


@pytest.mark.parametrize("cin,cout,side,kernel,stride,groups,bias", SHAPES)
def test_valid_and_grouped_convs_compute_the_conv(cin, cout, side, kernel, stride, groups, bias):
    rng = np.random.default_rng(5)
    g = Graph("t")
    g.add_input("x", (1, cin, side, side), "float16")
    w = rng.standard_normal((cout, cin // groups, kernel, kernel)).astype(np.float16)
    b = rng.standard_normal(cout).astype(np.float16) if bias else None
    g.add_op("conv", ["x"], ["y"], {"weight": w, "bias": b, "strides": (stride, stride),
                                   "dilations": (1, 1), "pads": (0, 0, 0, 0), "groups": groups})
    g.set_outputs(["y"])
    x = rng.standard_normal((1, cin, side, side)).astype(np.float16)
    (out,) = run_program(lower(g), {"x": x}).values()
    xt, wt = torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64)
    bt = None if b is None else torch.tensor(b, dtype=torch.float64)
    ref = torch.nn.functional.conv2d(xt, wt, bt, stride=stride, groups=groups).numpy()
    mag = torch.nn.functional.conv2d(xt.abs(), wt.abs(), stride=stride, groups=groups).numpy()
    got = np.asarray(out, np.float64).reshape(ref.shape)
    limit = np.abs(ref) * 2.0 ** -11 + w[0].size * 2.0 ** -24 * mag + 2.0 ** -24
    assert np.all(np.abs(got - ref) <= limit)
