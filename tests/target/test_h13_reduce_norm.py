"""H13 reductions, softmax and layer_norm.

Ground truth: Apple's programs in ../shared/oracles/h13 (reduction, normalization).
"""

from __future__ import annotations

import pytest

from tests.target.h13_oracles import case_id, cases_of, differences


@pytest.mark.parametrize("case", cases_of("reduction", "normalization"), ids=case_id)
def test_program_equals_apples(case):
    assert differences(case) == []
