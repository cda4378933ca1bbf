"""Writing H14 (M2) programs: the task stream and the kind-4 program descriptor.

Ground truth: the H14 oracles (../shared/oracles/h14), Apple's compiler output for small MIL
programs.  No Apple H14 .hwx file is in ../shared, so the container around the stream follows our
H13 layout [H]; what the oracles do fix is checked here: Apple's own tasks, written by us and read
back, keep every header word and record; the descriptor's text length, task count and the fixed
trailing words equal Apple's; the constant section starts where Apple's does relative to the text.
"""

from __future__ import annotations

import pytest

from coreml2hwx.hwx import program_from_bytes, write_hwx
from coreml2hwx.report.jsonview import program_from_json
from coreml2hwx.target import generation
from tests.conftest import load_json, oracle_files

CASES = [p for p in oracle_files("h14") if load_json(p)["task_descriptors"]]
FIXED_TRAILING = (4, 8, 10, 11, 13, 22, 24, 26, 27, 28)  # words 26/26 programs agree on (+[28])


def _h(value):
    return int(value, 16) if isinstance(value, str) else value


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_apple_h14_tasks_write_and_read_back_with_apples_descriptor_fields(path):
    case = load_json(path)
    program = program_from_json(case, generation("h14"))
    program.constants = bytes(case["constant_section"]["size"])
    back = program_from_bytes(write_hwx(program))
    assert back.target == "h14"
    assert [(t.header, t.records) for t in back.tasks] == \
        [(t.header, t.records) for t in program.tasks]
    want, got = case["program_descriptor"], back.descriptor
    assert got["kind"] == 4 and got["task_count"] == want["task_count"]
    assert got["text_words"] == _h(want["text_words"])
    assert (got["constant_address"] - got["text_address"]
            == _h(want["constant_address"]) - _h(want["text_address"]))
    theirs = [_h(w) for w in want["trailing_words"]]
    for i in FIXED_TRAILING:
        assert got["trailing_words"][i] == theirs[i], f"trailing word {i}"
