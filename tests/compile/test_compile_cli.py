"""The compile command's contract: outputs, manifest, determinism, --strict, no partial files.

Models: oracle MIL programs (../shared/oracles: Apple compiled them, so they are inputs the
hardware takes) and the bundled example model.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from coreml2hwx.cli import main
from coreml2hwx.commands.compile import EXAMPLE
from coreml2hwx.hwx import load_program
from tests.conftest import load_json


def mil_file(shared, tmp_path, case):
    path = tmp_path / f"{case}.mil"
    path.write_text(load_json(shared / f"oracles/h13/{case}.json")["mil"])
    return path


def test_single_op_model_compiles_to_model_hwx(shared, tmp_path, capsys):
    model = mil_file(shared, tmp_path, "binary_add_1x64x8x8")
    out = tmp_path / "out"
    assert main([str(model), "debug", "-o", str(out), "--format", "both"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "model.hwx") in printed and "debug information" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["device"] for s in manifest["segments"]] == ["ane"]
    assert [t["name"] for t in manifest["inputs"]] == ["x", "z"]
    program = load_program(out / "model.hwx")
    assert [t.name for t in program.inputs] == ["x", "z"] and program.outputs[0].name == "y"
    anec = load_program(out / "model.anec")  # same registers; only header slots move (below)
    assert [t.records for t in anec.tasks] == [t.records for t in program.tasks]
    for name in ("ir_before.txt", "ir_after.txt", "ir_after.dot", "placement.txt", "compile.log",
                 "segment0.listing.txt"):
        assert (out / "debug" / name).stat().st_size > 0
    # `inspect --diff` against Apple's own program for the same MIL: no register differs
    assert main(["inspect", "--diff", str(shared / "oracles/h13/binary_add_1x64x8x8.json"),
                 str(out / "model.hwx")]) == 0


def test_same_input_gives_identical_bytes(tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert main([str(EXAMPLE), "debug", "-o", str(out)]) == 0
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    assert len(files) > 3
    for rel in files:
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel


def test_strict_names_every_host_layer_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "coreml2hwx", str(EXAMPLE), "--strict", "-o",
                             str(out)], capture_output=True, text=True, timeout=300)
    if result.returncode == 0:  # every layer placed on the ANE: strict has nothing to refuse
        assert (out / "manifest.json").is_file()
        return
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot run on the h13 ANE" in lines[0] and str(EXAMPLE) in lines[0]
    assert not out.exists()


def test_bad_model_leaves_no_partial_output(tmp_path):
    bad = tmp_path / "broken.mlmodel"
    bad.write_bytes(b"\x08\x04\x12\xff\xff not a protobuf")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "coreml2hwx", str(bad), "-o", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and str(bad) in result.stderr
    assert not out.exists()


def test_report_lists_every_layer(tmp_path, capsys):
    page = tmp_path / "report.html"
    assert main(["report", str(EXAMPLE), "--html", str(page)]) == 0
    text = capsys.readouterr().out
    assert "layers," in text and "estimated ANE time" in text
    assert "<table>" in page.read_text()


MIXED_MIL = """program(1.3)
[buildInfo = dict<string, string>({})]
{
  func main<ios18>(tensor<fp16, [1, 64, 8, 8]> x, tensor<fp16, [1, 64, 8, 8]> z) {
    tensor<fp16, [1, 64, 8, 8]> a = add(x = x, y = z)[name = string("a")];
    tensor<fp16, [1, 64, 8, 8]> s = sin(x = a)[name = string("s")];
    tensor<fp16, [1, 64, 8, 8]> y = mul(x = s, y = z)[name = string("y")];
  } -> (y);
}
"""


def test_run_output_dir_matches_reference_across_host_and_ane(tmp_path):
    """add (ANE) -> sin (no H13 rule: host) -> mul (ANE).  `run OUTPUT_DIR` must chain the three
    segments and equal the fp16 reference evaluator exactly: add and mul round once to fp16 on
    the ANE (bit-exact against eiln's add/mul, tests/sim), sin runs in the same evaluator."""
    import numpy as np

    model = tmp_path / "mixed.mil"
    model.write_text(MIXED_MIL)
    out = tmp_path / "out"
    assert main([str(model), "-o", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["device"] for s in manifest["segments"]] == ["ane", "host", "ane"]
    assert manifest["segments"][1]["ops"] == ["s"]
    assert main(["run", str(out), "-o", str(tmp_path / "ran")]) == 0
    assert main(["reference", str(model), "--fp16", "--output-dir", str(tmp_path / "ref")]) == 0
    ran, ref = np.load(tmp_path / "ran/y.npy"), np.load(tmp_path / "ref/y.npy")
    assert ran.shape == ref.shape == (1, 64, 8, 8)
    np.testing.assert_array_equal(ran.astype(np.float16), ref.astype(np.float16))


def test_anec_binds_buffers_as_the_asahi_driver_does(shared, tmp_path):
    """The new-compiler slot plan (inputs 4 and 6, output 5: oracle binary_sub) differs from the
    driver's (outputs from 4, inputs after: anecc / libane, ane-facts §4.1).  The .anec must move
    the tasks to the driver's slots: run with inputs bound as src0, src1 it computes x - z."""
    import numpy as np

    from coreml2hwx.sim import run_program

    model = mil_file(shared, tmp_path, "binary_sub_1x4096x1x1")
    out = tmp_path / "out"
    assert main([str(model), "-o", str(out), "--format", "both"]) == 0
    hwx_program, anec_program = load_program(out / "model.hwx"), load_program(out / "model.anec")
    assert [(t.role, t.slot) for t in anec_program.tensors] == [("output", 4), ("input", 5),
                                                                ("input", 6)]
    rng = np.random.default_rng(1)
    x, z = (rng.standard_normal((1, 4096, 1, 1)).astype(np.float16) for _ in range(2))
    names = [t.name for t in hwx_program.inputs]
    expected = run_program(hwx_program, dict(zip(names, (x, z))))
    got = run_program(anec_program, {"src0": x, "src1": z})
    np.testing.assert_array_equal(got["dst0"], expected[hwx_program.outputs[0].name])
    np.testing.assert_array_equal(got["dst0"], (x.astype(np.float32) - z).astype(np.float16))


def test_outputs_get_the_usual_file_mode(shared, tmp_path):
    import os

    out = tmp_path / "out"
    assert main([str(mil_file(shared, tmp_path, "binary_add_1x64x8x8")), "-o", str(out)]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "model.hwx").stat().st_mode & 0o777 == 0o666 & ~umask


def test_recompiling_into_a_folder_leaves_no_stale_programs(shared, tmp_path):
    out = tmp_path / "out"
    assert main([str(EXAMPLE), "debug", "-o", str(out)]) == 0
    assert list(out.glob("segment*.hwx"))  # a program per ANE segment (the host runs the rest)
    keep = out / "notes.txt"
    keep.write_text("the user's own file")
    assert main([str(mil_file(shared, tmp_path, "binary_add_1x64x8x8")), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.hwx", "notes.txt"]
