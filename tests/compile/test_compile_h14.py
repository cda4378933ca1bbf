"""Compiling for H14 (M2) through the whole tool: `coreml2hwx MODEL --target h14`.

Ground truth: Apple's H14 programs for the same MIL (../shared/oracles/h14).  The .hwx the CLI
writes is read back and compared with Apple's program field by field (bench/parity.py), so the
frontend, placement, the H14 re-encoding and the container all take part.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from coreml2hwx.cli import main
from coreml2hwx.hwx import load_program
from tests.conftest import load_json
from tests.sim.tolerance import assert_close
from tests.target.h13_oracles import parity

CASES = ["conv_k3_c64_n64_s8_bias0", "unary_sigmoid_c64", "env_bcast_mul_1x768x16x16_scalar"]


def _model(shared, tmp_path, case_name):
    case = load_json(shared / f"oracles/h14/{case_name}.json")
    model = tmp_path / f"{case_name}.mil"
    model.write_text(case["mil"])
    data = parity.oracle_weight_tensor(case["weights"])
    if data is not None:
        (tmp_path / "weights.bin").write_bytes(parity.well_formed_weights(data))
    return case, model


@pytest.mark.parametrize("case_name", CASES)
def test_cli_h14_hwx_equals_apples_program(shared, tmp_path, case_name):
    case, model = _model(shared, tmp_path, case_name)
    out = tmp_path / "out"
    assert main([str(model), "-o", str(out), "--target", "h14"]) == 0
    program = load_program(out / "model.hwx")
    assert program.target == "h14"
    assert parity.compare_program(program, case) == []
    assert program.descriptor["text_words"] == int(case["program_descriptor"]["text_words"])


def test_h14_compile_is_deterministic(shared, tmp_path):
    _, model = _model(shared, tmp_path, "conv_k3_c64_n64_s8_bias0")
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert main([str(model), "-o", str(out), "--target", "h14"]) == 0
    assert (outs[0] / "model.hwx").read_bytes() == (outs[1] / "model.hwx").read_bytes()


def test_run_executes_the_h14_output_folder(shared, tmp_path):
    """unary_sigmoid_c64 compiles to Apple's own H14 program (test above), so running our file runs
    Apple's program; the simulator's H14 path is validated on Apple's programs (tests/sim)."""
    _, model = _model(shared, tmp_path, "unary_sigmoid_c64")
    out = tmp_path / "out"
    assert main([str(model), "-o", str(out), "--target", "h14"]) == 0
    x = np.linspace(-6, 6, 64, dtype=np.float32).reshape(1, 64, 1, 1)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(out), "--input", f"x={tmp_path / 'x.npy'}",
                 "--output-dir", str(tmp_path / "y")]) == 0
    (result,) = list((tmp_path / "y").glob("*.npy"))
    want = 1 / (1 + np.exp(-x.astype(np.float64)))
    # Apple's sigmoid table: step 1/2 on [-8, 8], |f''| <= 0.097 -> 3.0e-3 interpolation error,
    # plus output rounding (SIGMOID_TOL in tests/sim/test_sim_oracles.py)
    assert_close(np.load(result), want, atol=4e-3, ulps=0.5, what="h14 sigmoid")


def test_report_counts_the_programs_compile_writes(tmp_path, capsys):
    """On H14 a program may not mix lookup tables and weights (no Apple program shows where the
    tables would go), so compile cuts such segments; `report` must say the same."""
    from coreml2hwx.commands.compile import EXAMPLE

    out = tmp_path / "out"
    assert main([str(EXAMPLE), "-o", str(out), "--target", "h14"]) == 0
    written = len(list(out.glob("segment*.hwx")))
    manifest_segments = len(json.loads((out / "manifest.json").read_text())["segments"])
    capsys.readouterr()
    assert main(["report", str(EXAMPLE), "--target", "h14"]) == 0
    text = capsys.readouterr().out
    assert f", {manifest_segments} segment(s)" in text.splitlines()[0]
    assert written > 5 and "cut into several programs" in text and "LUTs and weights" in text


def test_bundled_model_compiled_for_h14_runs_like_its_source(tmp_path):
    """The whole bundled MobileNetV2 for H14, run in the simulator (whose H14 path is checked on
    Apple's H14 programs, tests/sim/test_sim_h14.py), against the model's own math (`reference`,
    the numpy evaluator of the source model) on the same deterministic inputs."""
    from coreml2hwx.commands.compile import EXAMPLE

    out = tmp_path / "out"
    assert main([str(EXAMPLE), "-o", str(out), "--target", "h14"]) == 0
    assert main(["run", str(out), "--output-dir", str(tmp_path / "sim")]) == 0
    assert main(["reference", str(EXAMPLE), "--output-dir", str(tmp_path / "ref")]) == 0
    (got,) = [np.load(p).astype(np.float64).ravel() for p in (tmp_path / "sim").glob("*.npy")]
    (want,) = [np.load(p).astype(np.float64).ravel() for p in (tmp_path / "ref").glob("*.npy")]
    assert got @ want / np.linalg.norm(got) / np.linalg.norm(want) > 0.999
