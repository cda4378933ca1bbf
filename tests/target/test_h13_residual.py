"""y = x + relu(x) as one PE add fetching x twice with L2Cfg bit 4 (upstream Apple programs
env_chain_residual_relu_1x768x1x1 / _1x64x8x8, cited in target/h13/binary.py; not in ../shared).

Ground truth here: numpy, for what the program computes in the simulator (exact: the PE adds in
fp32 and rounds once); the simulator accepts bit 4 only where those Apple programs pin it - a PE
add of two equal operands - and stops otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest

from coreml2hwx.errors import SimulationError
from coreml2hwx.frontend import parse_mil_text
from coreml2hwx.sim import run_program
from coreml2hwx.target.h13 import lower


def _program(shape):
    dims = ", ".join(map(str, shape))
    text = ("program(1.3)\n[buildInfo = dict<string, string>({})]\n{\n"
            f"  func main<ios18>(tensor<fp16, [{dims}]> x) {{\n"
            f"    tensor<fp16, [{dims}]> r = relu(x = x)[name = string(\"r\")];\n"
            f"    tensor<fp16, [{dims}]> y = add(x = x, y = r)[name = string(\"y\")];\n"
            "  } -> (y);\n}\n")
    return lower(parse_mil_text(text, None))


@pytest.mark.parametrize("shape", [(1, 768, 1, 1), (1, 64, 8, 8), (1, 3, 5, 7)])
def test_residual_relu_is_one_task_computing_x_plus_relu_x(shape):
    program = _program(shape)
    assert len(program.tasks) == 1
    x = (np.random.default_rng(1).standard_normal(shape) * 3).astype(np.float16)
    got = run_program(program, {"x": x})["y"]
    want = (x.astype(np.float32) + np.maximum(x.astype(np.float32), 0)).astype(np.float16)
    assert got.tobytes() == want.tobytes()


def test_bit_4_with_different_operands_stops():
    """Which operand passes the relu is not pinned: two different operands stop the run."""
    text = ("program(1.3)\n[buildInfo = dict<string, string>({})]\n{\n"
            "  func main<ios18>(tensor<fp16, [1, 64, 8, 8]> x, tensor<fp16, [1, 64, 8, 8]> z) {\n"
            "    tensor<fp16, [1, 64, 8, 8]> y = add(x = x, y = z)[name = string(\"y\")];\n"
            "  } -> (y);\n}\n")
    program = lower(parse_mil_text(text, None))
    task = program.tasks[0]
    for rec in task.records:  # set L2Cfg bit 4 (l2 block 0x4800, L2Cfg at offset 0)
        for i, address in enumerate(rec.addresses()):
            if address == 0x4800:
                rec.values[i] |= 1 << 4
    rng = np.random.default_rng(2)
    feed = {n: rng.standard_normal((1, 64, 8, 8)).astype(np.float16) for n in ("x", "z")}
    with pytest.raises(SimulationError, match="Bit4 with two different operands"):
        run_program(program, feed)
