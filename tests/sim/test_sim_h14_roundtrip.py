"""Our H14 programs compute what our H13 programs compute.

For every visible H13 oracle case (MIL from ../shared/oracles/h13) that our H13 lowering compiles
(exactly Apple's H13 program: tests/target) and the H14 re-encoding accepts, the H14 program -
registers left out at their reset values (`maps.h14.RESET`, which the encoder and the simulator's
H14 translation share) - runs in the simulator and gives the H13 program's output bytes.  This
checks that nothing the encoder leaves out or re-encodes is lost on the way back; the H14
translation itself is validated on Apple's H14 programs (test_sim_h14.py).

Inputs: standard normal x 2, or the domain the H13 simulator test gives the case
(test_sim_oracles.CASES: pow's base is positive - MIL's pow of a negative base is NaN, and what
the NE's tables make of NaN no Apple program shows).
"""

from __future__ import annotations

import numpy as np
import pytest

from coreml2hwx.errors import Coreml2hwxError
from coreml2hwx.frontend import parse_mil_text
from coreml2hwx.sim import run_program
from coreml2hwx.target.h13 import lower
from coreml2hwx.target.h14 import from_h13
from tests.sim.support import mil_inputs
from tests.sim.test_sim_oracles import CASES as SIM_CASES
from tests.target.h13_oracles import CASES, compile_case

# Where our encoder and the simulator's H14 translation still disagree; strict, so a fix must
# take them off.  The six cases once here were settled by Apple's upstream H14 programs of the
# same MIL (registers.py and sim/h14.py cite them).
NOT_YET: dict[str, str] = {}


def _feed(case, program) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    spec = SIM_CASES.get(case["case"])
    if spec is not None and spec.inputs is not None:
        names = [name for name, _ in mil_inputs(case["mil"])]  # the order spec.inputs takes
        shapes = {t.name: t.shape for t in program.inputs}
        return dict(zip(names, spec.inputs(rng, [shapes[n] for n in names])))
    return {t.name: (rng.standard_normal(t.shape) * 2).astype(np.float16)
            for t in program.inputs}


def _cases():
    out = []
    for c in CASES:
        if c["error"]:
            continue
        reason = NOT_YET.get(c["case"])
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        out.append(pytest.param(c, marks=marks, id=c["case"]))
    return out


def test_cin_cout_16_left_out_and_put_back(tmp_path):
    """Cin = Cout = 16 are left out of H14 tasks (RESET); the simulator must put them back."""
    text = ("program(1.3)\n[buildInfo = dict<string, string>({})]\n{\n"
            "  func main<ios18>(tensor<fp16, [1, 16, 8, 8]> x, tensor<fp16, [1, 16, 8, 8]> z) {\n"
            "    tensor<fp16, [1, 16, 8, 8]> y = add(x = x, y = z)[name = string(\"y\")];\n"
            "  } -> (y);\n}\n")
    p13 = lower(parse_mil_text(text, tmp_path))
    p14 = from_h13(p13)
    assert all(0x0C not in t.writes() and 0x10 not in t.writes() for t in p14.tasks)
    rng = np.random.default_rng(0)
    feed = {n: rng.standard_normal((1, 16, 8, 8)).astype(np.float16) for n in ("x", "z")}
    assert run_program(p14, feed)["y"].tobytes() == run_program(p13, feed)["y"].tobytes()


@pytest.mark.parametrize("case", _cases())
def test_h14_program_gives_the_h13_programs_bytes(case):
    try:
        p13 = compile_case(case)
        p14 = from_h13(p13)
    except Coreml2hwxError as err:
        pytest.skip(f"not compiled for both targets: {err}")  # counted, never as a pass
    feed = _feed(case, p13)
    try:
        want = run_program(p13, feed)
    except Coreml2hwxError as err:
        pytest.skip(f"the simulator does not run the H13 program: {err}")
    got = run_program(p14, feed)
    assert {k: v.tobytes() for k, v in got.items()} == {k: v.tobytes() for k, v in want.items()}


@pytest.mark.parametrize("cin,cout,kernel", [(16, 8, 1), (3, 3, 3), (64, 1000 % 16 + 16, 1)])
def test_fewer_than_16_outputs_per_task_round_trip(cin, cout, kernel):
    """Convs whose outputs do not fill the 16 coefficient channels enable one channel per output
    on H13 (tinygrad conv.hwx: 3 outputs on channels 0-2); H14 must enable the same ones."""
    rng = np.random.default_rng(cin + cout)
    pad = (kernel - 1) // 2
    text = ("program(1.3)\n[buildInfo = dict<string, string>({})]\n{\n"
            f"  func main<ios18>(tensor<fp16, [1, {cin}, 8, 8]> x) {{\n"
            f"    tensor<fp16, [{cout}, {cin}, {kernel}, {kernel}]> w = const()[name = string(\"w\"), "
            f"val = tensor<fp16, [{cout}, {cin}, {kernel}, {kernel}]>({_literal(rng, cout * cin * kernel * kernel)})];\n"
            f"    tensor<fp16, [1, {cout}, 8, 8]> y = conv(x = x, weight = w, strides = [1, 1], "
            f"pad_type = \"custom\", pad = [{pad}, {pad}, {pad}, {pad}], dilations = [1, 1], "
            f"groups = 1)[name = string(\"y\")];\n"
            "  } -> (y);\n}\n")
    p13 = lower(parse_mil_text(text, None))
    p14 = from_h13(p13)
    feed = {"x": rng.standard_normal((1, cin, 8, 8)).astype(np.float16)}
    assert run_program(p14, feed)["y"].tobytes() == run_program(p13, feed)["y"].tobytes()


def _literal(rng, count: int) -> str:
    values = (rng.standard_normal(count) * 0.2).astype(np.float16)
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"
