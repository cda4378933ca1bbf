"""H13 activations on the NE (bypass + ReLU / lookup table), residual x + f(x) chains.

Ground truth: Apple's programs in ../shared/oracles/h13 (unary, env_activation, env_chain); the
tables themselves are checked in test_h13_lut.py.
"""

from __future__ import annotations

import pytest

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.target.h13 import activation
from tests.target.h13_oracles import case_id, cases_of, compile_case, differences

FAMILIES = ("unary", "env_activation", "env_chain")


@pytest.mark.parametrize("case", [c for c in cases_of(*FAMILIES) if not c["error"]], ids=case_id)
def test_program_equals_apples(case):
    assert differences(case) == []


@pytest.mark.parametrize("case", [c for c in cases_of(*FAMILIES) if c["error"]], ids=case_id)
def test_refuses_what_apple_refuses(case):
    with pytest.raises(UnsupportedError, match="refuses"):
        compile_case(case)


# ShMax of NE tasks without weights, Apple's values: 1x1 -> 0 (unary_*), 8x8 and 16x16 -> 3,
# 32x32 -> 2 (env_act_*), one 2-row staging of 64 values -> 1 (binary_real_div_c64_constant_scalar).
@pytest.mark.parametrize("h, w, sh", [(1, 1, 0), (8, 8, 3), (16, 16, 3), (32, 32, 2), (2, 64, 1),
                                      (2, 512, 0)])
def test_sh_max(h, w, sh):
    assert activation.sh_max(h, w) == sh
