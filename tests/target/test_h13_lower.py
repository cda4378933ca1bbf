"""lower(): refusals name the op, its shape and the rule; output is deterministic.

Ground truth for the refusals: Apple's own refusals in ../shared/oracles/h13 (error set) and the
census' statement of what the rules cover; graphs here are built with the IR API.
"""

from __future__ import annotations

import numpy as np
import pytest

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.ir import Graph
from coreml2hwx.target import generation
from coreml2hwx.target.h13 import lower
from tests.target.h13_oracles import CASES, compile_case


def _conv_graph(kernel, stride, groups=1, channels=64):
    g = Graph("t")
    g.add_input("x", (1, channels, 16, 16), "float16")
    w = np.full((channels, channels // groups, kernel, kernel), 0.5, np.float16)
    pad = (kernel - 1) // 2
    g.add_op("conv", ["x"], ["y"], {"weight": w, "bias": None, "strides": (stride, stride),
                                   "dilations": (1, 1), "pads": (pad, pad, pad, pad),
                                   "groups": groups})
    g.set_outputs(["y"])
    return g


def test_large_kernel_is_refused_with_op_shape_and_rule():
    with pytest.raises(UnsupportedError) as err:
        lower(_conv_graph(5, 1))
    assert "conv 5x5" in str(err.value) and "kernel > 3" in str(err.value)


def test_unknown_op_names_op_and_shape():
    g = Graph("t")
    g.add_input("x", (1, 8, 4, 4), "float16")
    g.add_op("floor", ["x"], ["y"])
    g.set_outputs(["y"])
    with pytest.raises(UnsupportedError, match=r"floor 1x8x4x4: no h13 lowering rule"):
        lower(g)


@pytest.mark.parametrize("name", ["env_conv_k3_c64_n64_s16_st1_g1_bias0", "binary_pow_1x64x1x1",
                                  "norm_softmax_an1_1x1x1x64"])
def test_same_input_same_bytes(name):
    (case,) = [c for c in CASES if c["case"] == name]
    gen = generation("h13")
    first, second = compile_case(case), compile_case(case)
    assert gen.encode_stream(first.tasks) == gen.encode_stream(second.tasks)
    assert first.constants == second.constants
