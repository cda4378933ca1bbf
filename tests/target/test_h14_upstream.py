"""H14 words of forms whose Apple twins are not in ../shared.

Ground truth: upstream oracles (joshuaswarren/mil-hwx-compiler research/oracles/h14/<case>.json,
Apple's ane-compile-hwx for h14; transcribed outside the repository): for each case its MIL and,
per task, the Apple register words and header words that the rules of `target.h14.registers`
named in the comment derive.  Each case is compiled through our frontend, the H13 lowering and
the H14 re-encoding; only the listed words are compared.
"""

from __future__ import annotations

import pytest

from coreml2hwx.target.h13 import lower
from coreml2hwx.target.h14.registers import h14_tasks
from tests.target.h13_oracles import graph

HEAD = "program(1.3)\n[buildInfo = dict<string, string>({})]\n{\n"
NO_WEIGHTS = {"storage": "none"}


def _t(shape) -> str:
    return f"tensor<fp16, [{', '.join(map(str, shape))}]>"


def softmax_mil(shape) -> str:
    t = _t(shape)
    return (HEAD + f"  func main<ios18>({t} x) {{\n"
            '    int32 axis = const()[name = string("axis"), val = int32(1)];\n'
            f'    {t} y = softmax(x = x, axis = axis)[name = string("y")];\n  }} -> (y);\n}}\n')


def axes_mil(op, shape, out_shape, axis, extra="") -> str:
    return (HEAD + f"  func main<ios18>({_t(shape)} x) {{\n"
            '    tensor<int32, [1]> axes = const()[name = string("axes"), '
            f"val = tensor<int32, [1]>([{axis}])];\n"
            f'    {_t(out_shape)} y = {op}(x = x, axes = axes{extra})[name = string("y")];\n'
            "  } -> (y);\n}\n")


def matmul_mil(m, k, n) -> str:
    return (HEAD + f"  func main<ios18>({_t([m, k])} x) {{\n"
            '    bool f = const()[name = string("f"), val = bool(false)];\n'
            '    bool ty = const()[name = string("ty"), val = bool(true)];\n'
            f'    {_t([n, k])} w = const()[name = string("w"), val = {_t([n, k])}(BLOBFILE(path = '
            'string("@model_path/weights.bin"), offset = uint64(64)))];\n'
            f"    {_t([m, n])} product = matmul(transpose_x = f, transpose_y = ty, x = x, y = w)"
            '[name = string("product")];\n  } -> (product);\n}\n')


def runtime_matmul_mil(m, k, n) -> str:
    x, w, y = _t([1, m, k]), _t([1, k, n]), _t([1, m, n])
    return (HEAD + f"  func main<ios18>({x} x, {w} w) {{\n"
            '    bool tx = const()[name = string("tx"), val = bool(false)];\n'
            '    bool ty = const()[name = string("ty"), val = bool(false)];\n'
            f"    {y} product = matmul(transpose_x = tx, transpose_y = ty, x = x, y = w)"
            '[name = string("product")];\n  } -> (product);\n}\n')


LN = ", epsilon = fp32(0.00001)"
HEADER_WORDS = {"exe": 1, "debug": 4, "live": 6}  # ExeCycles, DebugLogEvents, LiveOuts
# case -> (MIL, weights, {task: {address: Apple's word}} with "exe" / "debug" / "live" for
# header words 1 / 4 / 6;
# None: Apple leaves the register out)
CASES = {
    # `vector_read`, `channel_sum_of_vector`, `exe_cycles`, LiveOuts grace
    "h14norm_softmax_a1_1x1024x1x1": (softmax_mil([1, 1024, 1, 1]), NO_WEIGHTS, {
        2: {0x504: 0x108, "exe": 0, "live": 1}, 3: {0x504: 0x104, 0x38: 0x5, "debug": 0xFFD800}}),
    "h14norm_softmax_a1_1x2048x1x1": (softmax_mil([1, 2048, 1, 1]), NO_WEIGHTS, {
        2: {0x504: 0x108, "exe": 1, "live": 1}, 3: {0x504: 0x104, "exe": 1, "live": 1}}),
    "h14norm_softmax_a1_1x4096x1x1": (softmax_mil([1, 4096, 1, 1]), NO_WEIGHTS, {
        1: {"exe": 2, "live": 7}, 2: {0x504: 0x108, "exe": 3, "live": 3},
        3: {0x504: 0x104, "exe": 2, "live": 3}}),
    # `lut_channel_sum` SmallSourceMode and DebugLogEvents bit 13 over one row of 64 pixels
    "h14norm_softmax_a1_1x8x1x64": (softmax_mil([1, 8, 1, 64]), NO_WEIGHTS, {
        3: {0x38: 0x5, "debug": 0xFFF800}}),
    # `transposing_copy` (UnicastCin, OCGSize, Cfg) and the matvec SmallSourceMode
    "matmul_m64_k256_n256_ty1": (matmul_mil(64, 256, 256), {
        "payload_bytes": 131072, "shape": [256, 256], "storage": "BLOBFILE",
        "value": "fp16(0x1p-1)"}, {
        0: {0x1C: 2, 0x28: 0x44001, 0x38: 0x30220201}, 1: {0x1C: 4, 0x38: 0x10200005}}),
    "matmul_m64_k1024_n256_ty1": (matmul_mil(64, 1024, 256), {
        "payload_bytes": 524288, "shape": [256, 1024], "storage": "BLOBFILE",
        "value": "fp16(0x1p-1)"}, {
        0: {0x1C: 2, 0x28: 0x44001, 0x38: 0x30220201}, 1: {0x38: 0x10200005}}),
    "h14norm_reduce_mean_ax1_1x64x1x64": (
        axes_mil("reduce_mean", [1, 64, 1, 64], [1, 1, 1, 64], 1, ", keep_dims = bool(true)"),
        NO_WEIGHTS, {0: {0x1C: 2, 0x28: 0x44001, 0x38: 0x30221201}}),
    # `conv_alias_free`, SmallSourceMode of a runtime product
    "env_mm_r3rr_m64_k64_n64_tx0_ty0_b1": (runtime_matmul_mil(64, 64, 64), NO_WEIGHTS, {
        0: {0x504: 0x500172, 0x530: 0x50047A},
        1: {0x504: 0x100142, 0x530: 0x40014A, 0x38: 0x20200005}}),
    # spread shifts kept, KernelCfg without DisallowAbort, reduction strides in L2
    "h14norm_layer_norm_ax1_1x64x8x8": (
        axes_mil("layer_norm", [1, 64, 8, 8], [1, 64, 8, 8], 1, LN), NO_WEIGHTS, {
            0: {0x38: 0x30244401, 0xD00: None}, 1: {0x538: None, 0x544: 0x10},
            3: {0x38: 0x30244401, 0xD00: None}, 4: {0x538: None, 0x544: 0x10}}),
    "h14norm_layer_norm_ax3_1x64x8x8": (
        axes_mil("layer_norm", [1, 64, 8, 8], [1, 64, 8, 8], 3, LN), NO_WEIGHTS, {
            1: {0x538: 0x10, 0x53C: None, 0x544: 0x400},
            3: {0x538: 0x10, 0x53C: None, 0x544: 0x400}}),
    # `dma_strides` of a one-channel source
    "h14norm_reduce_sum_ax1_1x512x1x1_flat": (
        axes_mil("reduce_sum", [1, 512, 1, 1], [1, 1, 1], 1, ", keep_dims = bool(false)"),
        NO_WEIGHTS, {0: {0x1118: 0x40, 0x111C: None, 0x1510: None}}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_h14_words_equal_apples(name):
    mil, weights, expected = CASES[name]
    plans = h14_tasks(lower(graph({"case": name, "mil": mil, "weights": weights})))
    got, want = {}, {}
    for index, words in expected.items():
        plan = plans[index]
        for key, value in words.items():
            if key in HEADER_WORDS:
                got[(index, key)] = plan.header[HEADER_WORDS[key]]
            else:
                got[(index, hex(key))] = plan.writes.get(key)
            want[(index, key if isinstance(key, str) else hex(key))] = value
    assert got == want
