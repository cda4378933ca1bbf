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
        if case["error"] or case["parameters"].get("stride", 1) == 2:
            continue
        out.append(case)
    return out


@pytest.mark.parametrize("case", _compiled(), ids=case_id)
def test_simulated_program_computes_the_mil(case):
    g = graph(case)
    program = lower(g)
    inputs = random_inputs(g, seed=7)
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
