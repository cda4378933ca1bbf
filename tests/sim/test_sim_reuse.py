"""A Simulator prepared once and run many times gives, every run, the bytes of a fresh run.

What it keeps between runs (decoded fields, the evidence check, weights and tables unpacked from
the constant section) must never carry one run's data into the next: a runtime x runtime matmul
takes its weights from an input surface, so they must be read anew each run.  Ground truth: the
fresh runs (`run_program`), whose results tests/sim/test_sim_oracles.py checks against each
oracle's MIL math; programs are Apple's (../shared/oracles/h13).
"""

from __future__ import annotations

import numpy as np
import pytest

from coreml2hwx.sim import Simulator, run_program
from tests.sim.support import mil_inputs, oracle, oracle_program
from tests.sim.test_sim_oracles import CASES


@pytest.mark.parametrize("name", ["rrmm_r2rr_m16_k64_n64_tx0_ty0", "unary_sigmoid_c64",
                                  "env_conv_k3_c64_n64_s16_st1_g1_bias0"])
def test_prepared_runs_equal_fresh_runs(name):
    case = oracle(name)
    program = oracle_program(case, CASES[name].consts(case))
    tensors = {t.name: t for t in program.inputs}
    rng = np.random.default_rng(5)
    feeds = [{n: rng.standard_normal(tensors[n].shape).astype(np.float16)
              for n, _ in mil_inputs(case["mil"])} for _ in range(3)]
    sim = Simulator(program)
    outputs = [sim(feed) for feed in feeds]
    for feed, got in zip(feeds, outputs):
        want = run_program(program, feed)
        assert {k: v.tobytes() for k, v in got.items()} == {k: v.tobytes() for k, v in want.items()}
    first, second = (next(iter(o.values())) for o in outputs[:2])
    assert first.tobytes() != second.tobytes()  # the inputs differ, so must the outputs
