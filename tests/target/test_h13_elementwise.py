"""H13 element-wise encoding: binary ops on two DRAM inputs, constants, broadcasts, fused add+relu.

Ground truth: Apple's compiled programs in ../shared/oracles/h13 (families binary_runtime,
binary_constant, env_broadcast, chain); every register word, header word, tensor descriptor and the
constant section must equal Apple's.
"""

from __future__ import annotations

import pytest

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.target.h13 import l2
from tests.target.h13_oracles import case_id, cases_of, compile_case, differences

FAMILIES = ("binary_runtime", "binary_constant", "env_broadcast", "chain")


@pytest.mark.parametrize("case", [c for c in cases_of(*FAMILIES) if not c["error"]
                                  and "conv" not in c["case"]], ids=case_id)
def test_program_equals_apples(case):
    assert differences(case) == []


@pytest.mark.parametrize("case", [c for c in cases_of(*FAMILIES) if c["error"]], ids=case_id)
def test_refuses_what_apple_refuses(case):
    with pytest.raises(UnsupportedError, match="inline"):
        compile_case(case)


# Row strides Apple chose for PE sources (units of 16 bytes), read off the oracles: C x W units of
# data -> row stride (census §6.2 0x4810; binary_add_1x1x1x1, binary_maximum_1x64x1x1,
# env_bcast_add_1x96x1x1_*, upstream env_bcast_add_1x200x1x1_*, binary_add_1x3x224x224, ...).
@pytest.mark.parametrize("units, row", [(1, 2), (64, 66), (96, 97), (200, 200), (84, 84),
                                        (256, 258), (1024, 1026), (3072, 3074), (4096, 4098)])
def test_pe_row_stride(units, row):
    assert l2.pe_row_stride(units) == row


# Src2Base of binary PE tasks (units): after source 1's rows -> where Apple put source 2.
@pytest.mark.parametrize("after, base", [(2, 4), (66, 68), (97, 97), (200, 200), (514, 516),
                                         (528, 528), (4128, 4128), (18816, 18820)])
def test_second_source_base(after, base):
    assert l2.second_source_base(after) == base
