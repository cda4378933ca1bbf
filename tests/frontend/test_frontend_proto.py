"""The frontend uses coremltools' protobuf modules without importing coremltools, and shares them
with a full coremltools imported in the same process, in either order.

Ground truth: a model converted by coremltools in the same fresh interpreter.
"""

import os
import subprocess
import sys
import textwrap

from coreml2hwx.shared import REPO_ROOT

CONVERT = """
import warnings
warnings.filterwarnings("ignore")
import numpy as np, torch, coremltools as ct
net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
model = ct.convert(torch.jit.trace(net, torch.zeros(1, 3, 8, 8)), convert_to=KIND,
                   inputs=[ct.TensorType(name="x", shape=(1, 3, 8, 8))],
                   compute_precision=None if KIND == "neuralnetwork" else ct.precision.FLOAT32)
model.save(PATH)
x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
want = net(torch.from_numpy(x)).detach().numpy()
"""

CHECK = """
from coreml2hwx.frontend import load
from coreml2hwx.ir import evaluate
graph = load(PATH)
got = evaluate(graph, {"x": x})[graph.output_names[0]]
assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
import coremltools
assert coremltools.proto is sys.modules["coremltools.proto"]
assert isinstance(coremltools.utils.load_spec(PATH), coremltools.proto.Model_pb2.Model)
print("ok")
"""


def _run(code, tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            cwd=REPO_ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_frontend_first_then_coremltools(tmp_path):
    path = tmp_path / "m.mlmodel"
    code = f"""
import sys
from coreml2hwx.frontend.proto import model_pb2
spec_type = model_pb2().Model
assert "coremltools" not in sys.modules and "torch" not in sys.modules
KIND, PATH = "neuralnetwork", {str(path)!r}
{CONVERT}
assert type(model.get_spec()) is spec_type   # coremltools uses the very classes we loaded
{CHECK}
"""
    assert _run(code, tmp_path).strip().endswith("ok")


def test_coremltools_first_then_frontend(tmp_path):
    path = tmp_path / "m.mlpackage"
    code = f"""
import sys
KIND, PATH = "mlprogram", {str(path)!r}
{CONVERT}
{CHECK}
"""
    assert _run(code, tmp_path).strip().endswith("ok")


def test_loading_a_model_imports_neither_coremltools_nor_torch(zoo, tmp_path):
    path = zoo.path("mobilenet_v3_block", "mlpackage")
    code = f"""
import sys
from coreml2hwx.frontend import load
graph = load({str(path)!r})
assert graph.ops
heavy = sorted(m for m in ("coremltools", "torch") if m in sys.modules)
assert not heavy, heavy
print("ok")
"""
    assert _run(code, tmp_path).strip().endswith("ok")
