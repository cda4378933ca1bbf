"""H13 matmul: constant-weight matvec (2 tasks), transpose_x matvec (1 task), runtime x runtime.

Ground truth: Apple's programs in ../shared/oracles/h13 (matmul, env_matmul, rrmm_matmul).
"""

from __future__ import annotations

import pytest

from coreml2hwx.errors import UnsupportedError
from tests.target.h13_oracles import case_id, cases_of, compile_case, differences

FAMILIES = ("matmul", "env_matmul", "rrmm_matmul")


@pytest.mark.parametrize("case", [c for c in cases_of(*FAMILIES) if not c["error"]], ids=case_id)
def test_program_equals_apples(case):
    assert differences(case) == []


@pytest.mark.parametrize("case", [c for c in cases_of(*FAMILIES) if c["error"]], ids=case_id)
def test_refuses_what_apple_refuses(case):
    with pytest.raises(UnsupportedError, match="refuses"):
        compile_case(case)
