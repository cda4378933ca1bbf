"""H13 coverage beyond the visible oracle shapes: reduction over H, softmax over a last axis of
size 1, layer_norm over C > 512 channels.

Their register rules come from upstream Apple oracles (cited in reduce.py, softmax.py, norm.py),
which are not part of ../shared.  Committed ground truth here is therefore:
* numpy, for what the programs compute, run in the simulator (itself validated on Apple's
  programs, tests/sim) - the reduction over H, at shapes with H != W that no oracle shows;
* Apple's visible oracles, for the parts the new forms share with them (the exp2 table) and
  for the shapes that must keep their old form (`layer_norm_1x512x1x1`: tests/target
  test_h13_reduce_norm.py covers every visible normalization / reduction case).
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


def _mil(shape, body_lines, out_shape) -> str:
    kind = f"tensor<fp16, [{', '.join(map(str, shape))}]>"
    out = f"tensor<fp16, [{', '.join(map(str, out_shape))}]>"
    body = "\n".join("    " + line.replace("OUT", out) for line in body_lines)
    return ("program(1.3)\n[buildInfo = dict<string, string>({})]\n{\n"
            f"  func main<ios18>({kind} x) {{\n{body}\n  }} -> (y);\n}}\n")


def reduce_h(op: str, shape) -> str:
    out = (shape[0], shape[1], 1, shape[3])
    return _mil(shape, [
        'tensor<int32, [1]> axes = const()[name = string("axes"), val = tensor<int32, [1]>([2])];',
        f'OUT y = {op}(x = x, axes = axes, keep_dims = bool(true))[name = string("y")];'], out)


def softmax(shape, axis: int) -> str:
    return _mil(shape, [
        f'int32 axis = const()[name = string("axis"), val = int32({axis})];',
        'OUT y = softmax(x = x, axis = axis)[name = string("y")];'], shape)


def layer_norm(shape, axes) -> str:
    kind = f"tensor<int32, [{len(axes)}]>"
    return _mil(shape, [
        f'{kind} axes = const()[name = string("axes"), '
        f'val = {kind}([{", ".join(map(str, axes))}])];',
        'OUT y = layer_norm(x = x, axes = axes, epsilon = fp32(0.00001))[name = string("y")];'],
        shape)


NUMPY = {"reduce_sum": np.sum, "reduce_mean": np.mean, "reduce_max": np.max}


@pytest.mark.parametrize("op", sorted(NUMPY))
@pytest.mark.parametrize("shape", [(1, 64, 8, 8), (1, 32, 4, 4), (1, 16, 2, 8), (1, 8, 4, 2),
                                   (1, 24, 3, 5), (1, 128, 16, 16)])
def test_reduction_over_h_computes_numpys(op, shape):
    """Ground truth: numpy.  H != W shapes tell the transposed roles of H and W apart."""
    program = lower(parse_mil_text(reduce_h(op, shape), None))
    x = np.random.default_rng(7).standard_normal(shape).astype(np.float16)
    got = np.asarray(run_program(program, {"x": x})["y"], np.float32)
    want = NUMPY[op](x.astype(np.float32), axis=2, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=4e-3, atol=4e-3 * shape[2])


def test_reduction_over_h_refuses_what_l2_cannot_hold():
    with pytest.raises(UnsupportedError, match="2 MiB L2"):
        lower(parse_mil_text(reduce_h("reduce_sum", (1, 512, 64, 64)), None))


@pytest.mark.parametrize("channels", [64, 512])
def test_unit_axis_softmax_uses_apples_exp2_table(channels):
    """Ground truth: the constant section of Apple's visible `norm_softmax_an1_1x1x1x64` (one
    exp2 table); a softmax over a size-1 axis fetches that one table whatever C."""
    oracle = next(load_json(p) for p in oracle_files("h13")
                  if p.stem == "norm_softmax_an1_1x1x1x64")
    program = lower(parse_mil_text(softmax((1, channels, 1, 1), -1), None))
    section = oracle["constant_section"]
    assert len(program.constants) == section["size"]
    assert hashlib.sha256(program.constants).hexdigest() == section["sha256"]


def test_unit_axis_softmax_refuses_between_the_observed_layouts():
    with pytest.raises(UnsupportedError, match="128 < C < 256"):
        lower(parse_mil_text(softmax((1, 192, 1, 1), 3), None))


@pytest.mark.parametrize("mil", [softmax((1, 64, 1, 1), -1), softmax((1, 1024, 1, 1), 3),
                                 layer_norm((1, 2048, 1, 1), (1,)),
                                 layer_norm((1, 1024, 1, 1), (1, 2, 3)),
                                 reduce_h("reduce_max", (1, 16, 2, 8))],
                         ids=["softmax64", "softmax1024", "ln2048", "ln1024_123", "max_h"])
def test_new_forms_are_deterministic(mil):
    assert lower(parse_mil_text(mil, None)) == lower(parse_mil_text(mil, None))
