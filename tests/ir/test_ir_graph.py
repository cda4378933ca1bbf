"""IR graph construction, shape inference, the evaluator's rules, dumps and the ANE 4-D view.

Ground truth: numpy (for the fp16 storage rule and the random-input rule, which are documented
contracts), Apple's tensor descriptors for the 4-D view (see also test_frontend_mil_text), and the
zoo models converted by coremltools for the dumps.
"""

import json
import shutil

import numpy as np
import pytest

from coreml2hwx.errors import ModelError, UnsupportedError, UsageError
from coreml2hwx.frontend import load
from coreml2hwx.ir import (OP_TYPES, Graph, ane_shape, dump_dot, dump_json, dump_text, evaluate,
                           random_inputs, render_svg)
from coreml2hwx.ir.kernels import KERNELS


def _affine_graph():
    g = Graph("tiny")
    g.add_input("x", (2, 3))
    g.add_constant("c", np.full((1, 3), 1 / 3, np.float32))
    g.add_op("add", ["x", "c"], ["y"], name="plus")
    g.add_op("relu", ["y"], ["z"], name="act")
    g.set_outputs(["z"])
    return g


def test_every_op_type_has_a_kernel_and_a_shape_rule():
    assert set(KERNELS) == set(OP_TYPES)


def test_shape_inference_and_errors():
    g = _affine_graph()
    assert g.tensors["y"].shape == (2, 3) and g.tensors["z"].dtype == "float32"
    with pytest.raises(ModelError, match=r"shapes \[2, 3\] and \[4\] do not broadcast"):
        g.add_constant("bad", np.zeros(4, np.float32))
        g.add_op("mul", ["x", "bad"], ["w"])
    with pytest.raises(ModelError, match="undefined tensor"):
        g.add_op("relu", ["nope"], ["v"])
    with pytest.raises(ModelError, match="defined twice"):
        g.add_input("x", (1,))
    with pytest.raises(UnsupportedError, match="unknown"):
        g.add_op("frobnicate", ["x"], ["f"])
    with pytest.raises(ModelError, match="cannot reshape"):
        g.add_op("reshape", ["x"], ["r"], {"shape": (4,)})


def test_evaluate_input_errors():
    g = _affine_graph()
    with pytest.raises(UsageError, match="no value given for input 'x'"):
        evaluate(g, {})
    with pytest.raises(UsageError, match="unknown input 'q'"):
        evaluate(g, {"x": np.zeros((2, 3)), "q": 1})
    with pytest.raises(UsageError, match=r"shape \[5\], the model declares \[2, 3\]"):
        evaluate(g, {"x": np.zeros(5)})
    # Same element count: reshaped to the declared shape.
    assert evaluate(g, {"x": np.zeros(6)})["z"].shape == (2, 3)


def test_fp16_mode_rounds_inputs_constants_and_results():
    g = _affine_graph()
    x = np.array([[1.0001, 2049.0, -0.1], [3e-8, 70000.0, 0.3]], np.float32)
    out = evaluate(g, {"x": x}, fp16=True)["z"]
    assert out.dtype == np.float16
    c16 = np.float16(1 / 3)
    with np.errstate(over="ignore"):
        want = np.maximum((x.astype(np.float16).astype(np.float32) + np.float32(c16))
                          .astype(np.float16), 0)
    np.testing.assert_array_equal(out, want)  # 70000 overflows to inf, as fp16 does
    assert np.isinf(out[1, 1])
    fp32 = evaluate(g, {"x": x})["z"]
    np.testing.assert_array_equal(fp32, np.maximum(x + np.float32(1 / 3), 0))


def test_all_tensors_and_determinism():
    g = _affine_graph()
    x = np.ones((2, 3), np.float32)
    every = evaluate(g, {"x": x}, all_tensors=True)
    assert set(every) == {"x", "c", "y", "z"}
    again = evaluate(g, {"x": x}, all_tensors=True)
    assert all(every[k].tobytes() == again[k].tobytes() for k in every)


def test_random_inputs_rule():
    g = Graph("r")
    g.add_input("a", (2, 3))
    g.add_input("b", (4,), "int32")
    g.add_input("m", (3,), "bool")
    values = random_inputs(g, seed=3)
    rng = np.random.default_rng(3)
    np.testing.assert_array_equal(values["a"], rng.standard_normal((2, 3)).astype(np.float32))
    np.testing.assert_array_equal(values["b"], rng.integers(0, 8, (4,)).astype(np.int32))
    np.testing.assert_array_equal(values["m"], rng.integers(0, 2, (3,)) != 0)
    assert values["a"].dtype == np.float32 and values["b"].dtype == np.int32
    assert random_inputs(g, seed=3)["a"].tobytes() == values["a"].tobytes()
    assert random_inputs(g, seed=4)["a"].tobytes() != values["a"].tobytes()


@pytest.mark.parametrize("shape, view", [
    ((1, 64, 8, 8), (1, 64, 8, 8)), ((1, 375, 1024), (1, 1, 375, 1024)), ((8, 512), (1, 1, 8, 512)),
    ((1, 64), (1, 1, 1, 64)), ((7,), (1, 1, 1, 7)), ((), (1, 1, 1, 1)), ((1, 2, 3, 4, 5), (2, 3, 4, 5))])
def test_ane_shape(shape, view):
    assert ane_shape(shape) == view


def test_ane_shape_rejects_a_real_fifth_dimension():
    with pytest.raises(UnsupportedError, match="leading dimensions must be 1"):
        ane_shape((2, 1, 3, 4, 5))


def test_dumps(zoo, tmp_path):
    graph = load(zoo.path("transformer_block", "mlpackage"))
    text = dump_text(graph)
    assert text == dump_text(load(zoo.path("transformer_block", "mlpackage")))  # deterministic
    assert text.splitlines()[1].startswith("  input %x: float32[1,16,64]")
    assert text.count(" = layer_norm(") == 2 and " = softmax(" in text and " = gelu(" in text
    data = json.loads(dump_json(graph))
    assert [op["type"] for op in data["ops"]] == [op.type for op in graph.ops]
    weight = next(op for op in data["ops"] if op["type"] == "linear")["attrs"]["weight"]
    assert weight["dtype"] == "float32" and len(weight["sha256"]) == 64
    dot = dump_dot(graph)
    assert dot.startswith(f'digraph "{graph.name}" {{') and dot.rstrip().endswith("}")
    assert dot.count("->") >= len(graph.ops)
    written = render_svg(dot, tmp_path / "graph.svg")
    assert written[0] == tmp_path / "graph.dot" and written[0].read_text() == dot
    if shutil.which("dot"):
        assert written[1].read_text().lstrip().startswith("<")
    else:
        assert written == [tmp_path / "graph.dot"]  # no Graphviz program: only the .dot, no error


def test_fused_activation_is_applied_before_storage():
    """passes/fuse_activation marks `attrs["fused_activation"]`; the evaluator honours it."""
    g = Graph("fused")
    g.add_input("x", (1, 4))
    g.add_constant("c", np.array([[-1.0, 0.5, -0.25, 2.0]], np.float32))
    g.add_op("add", ["x", "c"], ["y"], {"fused_activation": "relu"})
    g.set_outputs(["y"])
    x = np.array([[0.5, -1.0, 0.125, 1.0]], np.float32)
    np.testing.assert_array_equal(evaluate(g, {"x": x})["y"], [[0.0, 0.0, 0.0, 3.0]])
    g.ops[0].attrs.update(fused_activation="clip", fused_activation_attrs={"min": -0.3, "max": 2.5})
    np.testing.assert_allclose(evaluate(g, {"x": x})["y"], [[-0.3, -0.3, -0.125, 2.5]])


def test_copy_is_independent():
    g = _affine_graph()
    c = g.copy()
    c.ops[0].attrs["fused_activation"] = "relu"
    c.ops.pop()
    c.metadata["note"] = 1
    assert len(g.ops) == 2 and "fused_activation" not in g.ops[0].attrs and "note" not in g.metadata
    assert c.constants["c"] is g.constants["c"]  # weights are shared, not duplicated
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(evaluate(g, {"x": x})["z"], evaluate(g.copy(), {"x": x})["z"])
