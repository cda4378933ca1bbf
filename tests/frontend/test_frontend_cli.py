"""`coreml2hwx reference`: one .npy per model output; deterministic random inputs when not given.

Ground truth: torch's output of the zoo model (tests/models/zoo.py) for the given inputs.
"""

import subprocess
import sys

import numpy as np

from coreml2hwx.cli import main
from coreml2hwx.shared import REPO_ROOT
from coreml2hwx.frontend import load
from coreml2hwx.ir import random_inputs
from tests.models.zoo import max_relative_error, run_torch


def test_reference_writes_outputs_for_given_inputs(zoo, tmp_path):
    path = zoo.path("ops", "mlpackage")
    module, inputs = zoo.torch_model("ops")
    args = ["reference", str(path), "--output-dir", str(tmp_path / "out")]
    for name, value in inputs.items():
        np.save(tmp_path / f"{name}.npy", value)
        args += ["--input", f"{name}={tmp_path / f'{name}.npy'}"]
    assert main(args) == 0
    graph = load(path)
    for info, want in zip(graph.outputs, zoo.expected("ops")):
        got = np.load(tmp_path / "out" / f"{info.name}.npy")
        assert max_relative_error(got, want) <= 1e-4


def test_reference_makes_missing_inputs_deterministically(zoo, tmp_path):
    path = zoo.path("ops", "mlmodel")
    module, inputs = zoo.torch_model("ops")
    np.save(tmp_path / "y.npy", inputs["y"])
    for run in ("a", "b"):
        assert main(["reference", str(path), "--input", f"y={tmp_path / 'y.npy'}",
                     "--output-dir", str(tmp_path / run)]) == 0
    graph = load(path)
    x = np.load(tmp_path / "a" / "inputs" / "x.npy")
    np.testing.assert_array_equal(x, random_inputs(graph, 0)["x"])  # the documented rule
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "inputs" / "y.npy"), inputs["y"])
    want = run_torch(module, {"x": x, "y": inputs["y"]})
    for info, expected in zip(graph.outputs, want):
        a = np.load(tmp_path / "a" / f"{info.name}.npy")
        assert a.tobytes() == np.load(tmp_path / "b" / f"{info.name}.npy").tobytes()
        assert max_relative_error(a, expected) <= 1e-4


def test_reference_fp16_and_seed(zoo, tmp_path):
    path = zoo.path("transformer_block", "mlpackage")
    assert main(["reference", str(path), "--output-dir", str(tmp_path / "s1"), "--seed", "1",
                 "--fp16"]) == 0
    (out,) = load(path).output_names
    value = np.load(tmp_path / "s1" / f"{out}.npy")
    assert value.dtype == np.float16
    x = np.load(tmp_path / "s1" / "inputs" / "x.npy")
    np.testing.assert_array_equal(x, np.random.default_rng(1).standard_normal((1, 16, 64))
                                  .astype(np.float32))


def test_reference_bad_arguments(zoo, tmp_path, capsys):
    path = zoo.path("activations", "mlmodel")
    assert main(["reference", str(path), "--input", "nope", "--output-dir", str(tmp_path)]) == 2
    assert "expected NAME=FILE.npy" in capsys.readouterr().err
    np.save(tmp_path / "v.npy", np.zeros(3, np.float32))
    assert main(["reference", str(path), "--input", f"q={tmp_path / 'v.npy'}",
                 "--output-dir", str(tmp_path)]) == 2
    assert "has no such input" in capsys.readouterr().err
    assert main(["reference", str(path), "--input", f"x={tmp_path / 'v.npy'}",
                 "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "input 'x' has shape [3], the model declares [1, 4, 6, 6]" in err


def test_reference_classifier_label(tmp_path):
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder
    import coremltools as ct

    b = NeuralNetworkBuilder([("x", datatypes.Array(3))], [("probs", None)], mode="classifier")
    b.add_softmax("sm", "x", "probs")
    b.set_class_labels(["low", "mid", "high"], predicted_feature_name="label", prediction_blob="probs")
    path = tmp_path / "c.mlmodel"
    ct.utils.save_spec(b.spec, str(path))
    np.save(tmp_path / "x.npy", np.array([0.1, 3.0, 0.2], np.float32))
    assert main(["reference", str(path), "--input", f"x={tmp_path / 'x.npy'}",
                 "--output-dir", str(tmp_path / "o")]) == 0
    assert str(np.load(tmp_path / "o" / "label.npy")) == "mid"
    probs = np.load(tmp_path / "o" / "probs.npy")
    assert probs.shape == (1, 3, 1, 1) and abs(float(probs.sum()) - 1) < 1e-6


def test_reference_legacy_output_keeps_declared_shape(shared, tmp_path):
    """tinygrad's real test.mlmodel (a legacy rank-5 model) declares a [64] output."""
    model = shared / "artifacts/tinygrad_tinygrad/extra/accel/ane/1_build/test.mlmodel"
    a = np.arange(64, dtype=np.float32)
    np.save(tmp_path / "a.npy", a)
    result = subprocess.run([sys.executable, "-m", "coreml2hwx", "reference", str(model),
                             "--input", f"image={tmp_path / 'a.npy'}",
                             "--input", f"image2={tmp_path / 'a.npy'}",
                             "--output-dir", str(tmp_path / "o")], capture_output=True, text=True,
                            cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "probs.npy"), 2 * a)
