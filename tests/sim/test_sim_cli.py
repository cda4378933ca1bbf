"""`coreml2hwx run` on Apple's files: outputs, traces, and one-line errors with exit codes.

Ground truth: eiln's add stream (a raw anec payload) and tinygrad's relu.hwx (../shared/artifacts);
the expected values are numpy's (a + b rounded once to fp16, max(x, 0)).
"""

from __future__ import annotations

import numpy as np
import pytest

from coreml2hwx.cli import main
from tests.conftest import shared_files

EILN = "artifacts/eiln_ane/f182ece390b4/anec/kernels"
RELU = "artifacts/tinygrad_tinygrad/extra/accel/ane/ops/relu.hwx"
SUM = "artifacts/tinygrad_tinygrad/extra/accel/ane/ops/sum.hwx"
SHAPE = "1x1x2560x1600"
ADD_IO = [f"input:a:5:{SHAPE}", f"input:b:6:{SHAPE}", f"output:y:4:{SHAPE}"]


def artifact(pattern):
    (path,) = shared_files(pattern)
    return str(path)


def save(tmp_path, name, array):
    path = tmp_path / f"{name}.npy"
    np.save(path, array)
    return f"{name}={path}"


def run_cli(capsys, *argv):
    code = main(["run", *map(str, argv)])
    return code, capsys.readouterr().err


def test_raw_stream_with_io_shapes_and_trace(tmp_path, capsys):
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((1, 1, 2560, 1600)).astype(np.float16) for _ in range(2))
    code, err = run_cli(capsys, artifact(f"{EILN}/binary/add.bin"), "--raw", "--target", "h13",
                        "--io-shapes", *ADD_IO, "--input", save(tmp_path, "a", a),
                        "--input", save(tmp_path, "b", b), "--output-dir", tmp_path / "out",
                        "--trace", tmp_path / "trace")
    assert (code, err) == (0, "")
    y = np.load(tmp_path / "out" / "y.npy")
    assert y.dtype == np.float16
    assert np.array_equal(y, (a.astype(np.float32) + b.astype(np.float32)).astype(np.float16))
    assert sorted(p.name for p in (tmp_path / "trace").iterdir()) == ["task000.npy"]


def test_hwx_with_given_input(tmp_path, capsys):
    x = np.linspace(-2, 2, 77, dtype=np.float16).reshape(1, 1, 1, 77)
    code, err = run_cli(capsys, artifact(RELU),
                        "--input", save(tmp_path, "image", x), "-o", tmp_path)
    assert (code, err) == (0, "")
    assert np.array_equal(np.load(tmp_path / "probs.npy"), np.maximum(x, 0))


def test_runs_are_byte_identical(tmp_path, capsys):
    relu = artifact("artifacts/tinygrad_tinygrad/extra/accel/ane/ops/sigmoid.hwx")
    for out in ("one", "two"):  # inputs not given are seeded random: the same both times
        assert run_cli(capsys, relu, "-o", tmp_path / out) == (0, "")
    assert (tmp_path / "one" / "probs.npy").read_bytes() == \
        (tmp_path / "two" / "probs.npy").read_bytes()


def _one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_truncated_hwx_is_one_line(tmp_path, capsys):
    data = open(artifact(RELU), "rb").read()
    cut = tmp_path / "cut.hwx"
    cut.write_bytes(data[:3000])
    code, err = run_cli(capsys, cut, "-o", tmp_path / "out")
    assert code == 1
    assert _one_line(err).startswith(f"coreml2hwx: error: {cut}: offset 0x")


def test_truncated_raw_stream_is_one_line(tmp_path, capsys):
    data = open(artifact(f"{EILN}/activation/softmax.bin"), "rb").read()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[:0x400])  # the chain's second task starts at 0x300
    code, err = run_cli(capsys, cut, "--raw", "--io-shapes", f"input:x:5:{SHAPE}",
                        f"output:y:4:{SHAPE}", "-o", tmp_path / "out")
    assert code == 1
    assert "offset 0x" in _one_line(err)


def test_wrong_input_shape_is_one_line(tmp_path, capsys):
    code, err = run_cli(capsys, artifact(RELU),
                        "--input", save(tmp_path, "image", np.ones((2, 77), np.float16)),
                        "-o", tmp_path)
    assert code == 1
    assert "input 'image' has shape [2, 77], the program declares [1, 1, 1, 77]" in _one_line(err)


def test_unknown_register_value_is_one_line(tmp_path, capsys):
    code, err = run_cli(capsys, artifact(f"{EILN}/unary/ceil.bin"), "--raw", "--io-shapes",
                        f"input:x:5:{SHAPE}", f"output:y:4:{SHAPE}", "-o", tmp_path)
    assert code == 1
    assert "task 0: lookup table mode (slot 42) = 0x63" in _one_line(err)


@pytest.mark.parametrize("extra,message", [
    (["--raw"], "a raw task stream needs --io-shapes"),
    (["--raw", "--io-shapes", "in:x:5:1x1"], "expected ROLE:NAME:SLOT:NxCxHxW"),
    (["--input", "nope=x.npy"], "--input 'nope': the program's inputs are image"),
    (["--input", "image=/nonexistent.npy"], "/nonexistent.npy: no such file"),
    (["--io-shapes", f"input:x:5:{SHAPE}"], "add --raw"),
])
def test_usage_errors_exit_2(tmp_path, capsys, extra, message):
    code, err = run_cli(capsys, artifact(RELU),
                        "-o", tmp_path, *extra)
    assert code == 2
    assert message in _one_line(err)


def test_anec_container(tmp_path, capsys):
    """The Asahi driver's container of Apple's sum.hwx (converted as anecc does): the BAR slots and
    shapes come from its header; its inputs are named src0, src1."""
    from coreml2hwx.hwx import hwx_to_anec, read_hwx

    anec = tmp_path / "sum.anec"
    anec.write_bytes(hwx_to_anec(read_hwx(open(artifact(SUM), "rb").read())))
    a = np.linspace(-3, 3, 64, dtype=np.float16).reshape(1, 64, 1, 1)
    code, err = run_cli(capsys, anec, "--input", save(tmp_path, "src0", a), "--input",
                        save(tmp_path, "src1", a[:, ::-1]), "-o", tmp_path)
    assert (code, err) == (0, "")
    want = (a.astype(np.float32) + a[:, ::-1].astype(np.float32)).astype(np.float16)
    assert np.array_equal(np.load(tmp_path / "dst0.npy"), want)


def test_a_run_that_stops_names_the_program_file_of_the_folder(shared, tmp_path, capsys):
    """A compiled folder whose program stops at run time (a NaN reaching a lookup table: no Apple
    program shows what the table does with it) names the .hwx that stopped, exit != 0."""
    import json

    case = json.loads((shared / "oracles/h13/unary_sigmoid_c64.json").read_text())
    model = tmp_path / "sigmoid.mil"
    model.write_text(case["mil"])
    out = tmp_path / "out"
    assert main([str(model), "-o", str(out)]) == 0
    x = np.zeros((1, 64, 1, 1), np.float32)
    x[0, 3] = np.nan
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(out), "--input", f"x={tmp_path / 'x.npy'}",
                 "--output-dir", str(tmp_path / "y")]) != 0
    err = capsys.readouterr().err
    assert "model.hwx" in err and "NaN" in err and len(err.strip().splitlines()) == 1
