"""Classifier heads on the ANE: a `linear` after a global pool runs as a 1x1 conv (passes/linear_as_conv).

Ground truth: torch's output for the same seeded module and input (converted by coremltools, compiled,
run with `execute.run_compiled`: ANE programs in the simulator, host segments in the evaluator), and
for the pass alone numpy's mean and matrix product.  The accuracy budget is test_models.py's.
"""

from __future__ import annotations

import numpy as np
import pytest

from coreml2hwx.compiler import compile_model, write_outputs
from coreml2hwx.execute import run_compiled
from coreml2hwx.ir import evaluate
from coreml2hwx.ir.graph import Graph
from coreml2hwx.passes import run_pipeline
from tests.models.zoo import convert, example_inputs, run_torch, session_zoo

RELATIVE_BUDGET = 0.02
MIN_COSINE = 0.999
SHAPES = {"x": (1, 3, 8, 8)}


def head_module(kind: str, features=40, classes=37, bias=True):
    """conv 3x3 + relu, a global mean, then a linear whose sizes are not multiples of 16."""
    import torch
    from torch import nn

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, features, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(features, classes, bias=bias)

        def forward(self, x):
            x = torch.relu(self.conv(x))
            x = x.mean(dim=(2, 3)) if kind == "mean" else self.pool(x).flatten(1)
            return self.fc(x)

    torch.manual_seed(11)
    return Head().eval()


CASES = [("mean", True), ("mean", False), ("pool_flatten", True)]


@pytest.fixture(scope="module")
def compiled_head(tmp_path_factory):
    cache = {}

    def get(kind, bias, fmt):
        key = kind, bias, fmt
        if key not in cache:
            module = head_module(kind, bias=bias)
            folder = tmp_path_factory.mktemp(f"head_{kind}_{bias}_{fmt}")
            suffix = ".mlmodel" if fmt == "mlmodel" else ".mlpackage"
            path = convert(module, SHAPES, folder / f"head{suffix}", fmt)
            result = compile_model(path)
            write_outputs(result, folder / "out")
            cache[key] = module, result, folder / "out"
        return cache[key]

    return get


def assert_close(got, expected):
    got = np.asarray(got, np.float32).reshape(expected.shape)
    a, b = got.reshape(-1).astype(np.float64), expected.reshape(-1).astype(np.float64)
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) >= MIN_COSINE
    assert np.abs(got - expected).max() <= RELATIVE_BUDGET * np.abs(expected).max()


@pytest.mark.parametrize("fmt", ["mlmodel", "mlpackage"])
@pytest.mark.parametrize("kind,bias", CASES)
def test_head_runs_on_the_ane_and_matches_torch(compiled_head, kind, bias, fmt):
    module, result, out = compiled_head(kind, bias, fmt)
    fc = [op for op in result.graph.ops if op.type == "conv" and op.attrs["weight"].shape[0] == 37]
    assert len(fc) == 1 and result.placement[fc[0].name].device == "ane"
    assert not any(op.type == "linear" for op in result.graph.ops)
    after = result.graph.ops[result.graph.ops.index(fc[0]) + 1:]
    assert [op.type for op in after] == ["reshape"]  # the only host work left after the GEMM
    inputs = example_inputs(SHAPES)
    (expected,) = run_torch(module, inputs)
    (got,) = run_compiled(out, inputs).values()
    assert_close(got, expected)


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_zoo_classifier_runs_on_the_ane(tmp_path_factory, tmp_path, name):
    """MobileNetV2 (mean -> linear 1280 -> 1000) and ResNet-18 (pool, flatten, linear 512 -> 1000):
    the classifier is an ANE conv and the whole model still equals torch."""
    zoo = session_zoo(tmp_path_factory)
    result = compile_model(zoo.path(name, "mlpackage"))
    (fc,) = [op for op in result.graph.ops if op.source == "linear_0" and op.type == "conv"]
    assert result.placement[fc.name].device == "ane"
    assert result.graph.tensors[fc.outputs[0]].shape == (1, 1000, 1, 1)
    write_outputs(result, tmp_path)
    _, inputs = zoo.torch_model(name)
    (got,) = run_compiled(tmp_path, inputs).values()
    assert_close(got, zoo.expected(name)[0])


# -- the pass alone: where it applies, and that it keeps the graph's meaning (numpy reference) --

def mean_linear_graph(axes=(2, 3), extra_reader=False):
    rng = np.random.default_rng(3)
    g = Graph("head")
    g.add_input("x", (1, 24, 3, 5))
    g.add_op("reduce_mean", ["x"], ["m"], {"axes": axes, "keep_dims": False})
    w = rng.standard_normal((19, 24 if axes == (2, 3) else 24 * 3)).astype(np.float32)
    if axes != (2, 3):
        g.add_op("reshape", ["m"], ["m2"], {"shape": (1, 72)})
    g.add_op("linear", ["m2" if axes != (2, 3) else "m"], ["y"],
             {"weight": w, "bias": rng.standard_normal(19).astype(np.float32)})
    g.set_outputs(["y", "m"] if extra_reader else ["y"])
    return g


def test_pass_keeps_the_meaning_of_mean_then_linear():
    g = mean_linear_graph()
    w, b = g.ops[-1].attrs["weight"], g.ops[-1].attrs["bias"]
    x = np.random.default_rng(4).standard_normal((1, 24, 3, 5)).astype(np.float32)
    run_pipeline(g, ["linear_as_conv", "prune"])
    assert [op.type for op in g.ops] == ["reduce_mean", "conv", "reshape"]
    assert g.ops[0].attrs["keep_dims"] and g.tensors["m"].shape == (1, 24, 1, 1)
    assert g.tensors["y"].shape == (1, 19)
    expected = x.mean(axis=(2, 3)) @ w.T + b
    np.testing.assert_allclose(evaluate(g, {"x": x})["y"], expected, rtol=1e-5, atol=1e-5)


def test_pass_leaves_a_mean_other_ops_read_flat():
    g = mean_linear_graph(extra_reader=True)
    assert run_pipeline(g, ["linear_as_conv"]) == [("linear_as_conv", None)]
    assert [op.type for op in g.ops] == ["reduce_mean", "linear"]


def test_pass_leaves_a_vector_that_is_not_pooled_channels():
    """mean over W only, reshaped to [1, C*H]: its features are not channels of a 1x1 tensor."""
    g = mean_linear_graph(axes=(3,))
    assert run_pipeline(g, ["linear_as_conv"]) == [("linear_as_conv", None)]
    assert [op.type for op in g.ops] == ["reduce_mean", "reshape", "linear"]
