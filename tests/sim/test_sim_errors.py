"""The simulator stops, naming the task, the register and the value, instead of guessing.

Ground truth: Apple's eiln relu / sigmoid streams and tinygrad's relu.hwx (../shared/artifacts),
each changed in one place; the evidence table is checked against the H13 register map.
"""

from __future__ import annotations

import copy
import re
from fnmatch import fnmatchcase

import numpy as np
import pytest

from coreml2hwx.errors import SimulationError
from coreml2hwx.hwx import load_program
from coreml2hwx.program import Program, Record
from coreml2hwx.sim import run_program
from coreml2hwx.sim.evidence import RULES, rule_for
from coreml2hwx.target.maps.h13 import REGISTERS
from tests.conftest import shared_files
from tests.sim.support import EILN_SHAPE, eiln_program

RELU_HWX = "artifacts/tinygrad_tinygrad/extra/accel/ane/ops/relu.hwx"


def relu_program() -> Program:
    (path,) = shared_files(RELU_HWX)
    return load_program(path)


def relu_inputs(program):
    return {t.name: np.ones(t.shape, np.float16) for t in program.inputs}


def with_register(program: Program, task: int, path: str, value) -> Program:
    """A copy of `program` whose task `task` writes `value` into field `path`."""
    changed = copy.deepcopy(program)
    address, _ = REGISTERS.field(path)
    words = REGISTERS.encode({path: value}, changed.tasks[task].writes())
    for record in changed.tasks[task].records:
        for i, a in enumerate(record.addresses()):
            if a == address:
                record.values[i] = words[address]
                return changed
    raise AssertionError(f"task {task} does not write {path}")


@pytest.mark.parametrize("path,value,message", [
    ("ne.MACCfg.NonlinearMode", 3, r"task 0: ne\.MACCfg\.NonlinearMode = 3: never seen"),
    ("ne.MACCfg.OpMode", 5, r"task 0: ne\.MACCfg\.OpMode = 5: never seen"),
    ("common.ChCfg.InFmt", 1, r"task 0: common\.ChCfg\.InFmt = 1: never seen"),
    ("common.ConvCfg.Kw", 5, r"task 0: common\.ConvCfg\.Kw = 5: never seen"),
    ("pe.Cfg.Bits31_20", 0x800, r"task 0: pe\.Cfg\.Bits31_20 = 0x800: never seen"),
    ("tile_dma_src.PixelOffset[0].Offset", 4,
     r"task 0: tile_dma_src\.PixelOffset\[0\]\.Offset = 4: never seen"),
])
def test_unseen_field_values_stop_the_run(path, value, message):
    program = with_register(relu_program(), 0, path, value)
    with pytest.raises(SimulationError, match=message):
        run_program(program, relu_inputs(program))


def test_unseen_header_value_stops_the_run():
    program = copy.deepcopy(relu_program())
    program.tasks[0].header[6] |= 1 << 9  # TDSkip
    with pytest.raises(SimulationError, match=r"task 0: header\.TDSkip = 1: never seen"):
        run_program(program, relu_inputs(program))


def test_a_register_outside_every_block_stops_the_run():
    program = copy.deepcopy(relu_program())
    program.tasks[0].records.append(Record(0x30000, [5]))
    with pytest.raises(SimulationError, match=r"task 0: register 0x30000 = 5: no evidence"):
        run_program(program, relu_inputs(program))


def test_combinations_never_seen_stop_the_run():
    """Each field alone is seen, but a PE task type with an NE task is not."""
    program = with_register(relu_program(), 0, "common.Cfg.Bits6_4", 3)
    with pytest.raises(SimulationError, match=r"task 0: an NE task .* also configures the PE"):
        run_program(program, relu_inputs(program))


def test_reading_l2_nobody_wrote_stops_the_run():
    """sigmoid's second task reads the first task's result from L2; alone it has nothing."""
    program = copy.deepcopy(eiln_program("sigmoid"))
    program.tasks = program.tasks[1:]
    with pytest.raises(SimulationError, match=r"task 0: source 1: reads L2 0x0\.\..*no earlier "
                                              r"task left a tensor"):
        run_program(program, {"src0": np.zeros(EILN_SHAPE, np.float16)})


def test_reading_past_a_buffer_stops_the_run():
    program = copy.deepcopy(relu_program())
    program.inputs[0].size = program.inputs[0].total_bytes = 64
    program.inputs[0].shape = (1, 1, 1, 32)
    with pytest.raises(SimulationError, match=r"task 0: source 1: reads bytes 0x0\.\.0x9a of BAR "
                                              r"slot 5, which holds 0x40 bytes"):
        run_program(program, {"image": np.ones((1, 1, 1, 32), np.float16)})


def test_reading_an_unbound_slot_stops_the_run():
    program = copy.deepcopy(relu_program())
    program.inputs[0].slot = 7
    with pytest.raises(SimulationError, match=r"task 0: source 1: BAR slot 5 holds no tensor"):
        run_program(program, relu_inputs(program))


@pytest.mark.parametrize("inputs,message", [
    ({"image": np.ones((1, 1, 1, 78), np.float16)},
     r"input 'image' has shape \[1, 1, 1, 78\], the program declares \[1, 1, 1, 77\]"),
    ({"image": np.ones((1, 1, 1, 77), np.int32)}, r"input 'image' has dtype int32"),
    ({}, r"input 'image' \[1, 1, 1, 77\] is missing"),
    ({"image": np.ones((1, 1, 1, 77)), "other": np.ones(3)},
     r"input 'other' is not an input of the program"),
])
def test_bad_inputs_are_one_clear_error(inputs, message):
    with pytest.raises(SimulationError, match=message):
        run_program(relu_program(), inputs)


def test_an_input_may_drop_unit_dimensions():
    program = relu_program()
    x = np.linspace(-1, 1, 77).astype(np.float16)
    (y,) = run_program(program, {"image": x}).values()
    assert np.array_equal(y.ravel(), np.maximum(x, 0))


def test_other_generations_are_refused():
    program = copy.deepcopy(relu_program())
    program.target = "h15"
    with pytest.raises(SimulationError, match="runs h13, h14 programs; this one targets h15"):
        run_program(program, relu_inputs(program))


def test_same_input_gives_byte_identical_output():
    program = eiln_program("softmax")
    x = np.random.default_rng(5).standard_normal(EILN_SHAPE).astype(np.float16)
    first = run_program(program, {"src0": x})["dst0"]
    second = run_program(program, {"src0": x})["dst0"]
    assert first.tobytes() == second.tobytes()


def test_trace_gives_each_tasks_result():
    program = eiln_program("sigmoid")
    seen = []
    x = np.zeros(EILN_SHAPE, np.float16)
    run_program(program, {"src0": x}, trace=lambda i, r: seen.append((i, r.shape, float(r.max()))))
    # task 0: sigmoid - 0.5 (0 at x = 0, the odd table's first knot); task 1: + 0.5 (PE Bias)
    assert seen == [(0, (1, 1, 1, 2560, 1600), 0.0), (1, (1, 1, 1, 2560, 1600), 0.5)]


# -- the evidence table itself -------------------------------------------------------------------

def _map_paths():
    for block in REGISTERS.blocks:
        for register in block.registers:
            for f in register.layout:
                yield f"{block.name}.{register.name}.{f.name}"


def test_every_field_of_the_map_has_a_rule():
    missing = [p for p in _map_paths() if rule_for(p) is None]
    assert not missing


def test_every_rule_names_fields_that_exist():
    paths = list(_map_paths())
    header = [f"header.{f.name}" for r in relu_header_registers() for f in r.layout]
    dead = [pattern for pattern, _, _ in RULES
            if not any(fnmatchcase(p, pattern) for p in paths + header)]
    assert not dead


def relu_header_registers():
    from coreml2hwx.target.maps.h13 import HEADER
    return HEADER.words + HEADER.extension.registers  # the extension word has a rule too


def test_messages_name_the_evidence():
    program = with_register(relu_program(), 0, "ne.MACCfg.NonlinearMode", 3)
    with pytest.raises(SimulationError) as err:
        run_program(program, relu_inputs(program))
    assert re.search(r"\(seen: 0, 1, 2; none, ReLU, LUT\)", str(err.value))


def test_nan_into_a_lookup_table_stops_with_one_line(shared):
    """No Apple program shows what a table does with NaN: the run stops instead of guessing."""
    import numpy as np

    from coreml2hwx.errors import SimulationError
    from coreml2hwx.hwx import load_program
    from coreml2hwx.sim import run_program

    program = load_program(shared / "artifacts/tinygrad_tinygrad/extra/accel/ane/ops/sigmoid.hwx")
    x = np.full(program.inputs[0].shape, np.nan, np.float16)
    with pytest.raises(SimulationError, match="NaN"):
        run_program(program, {program.inputs[0].name: x})
