"""Torch models converted by coremltools, read by our frontends, evaluated by the reference evaluator.

Ground truth: torch's own output for the same weights and inputs (tests/models/zoo.py).
"""

import numpy as np
import pytest

from coreml2hwx.frontend import load
from coreml2hwx.ir import evaluate
from tests.models.zoo import BUILDERS, max_relative_error

FP32_TOLERANCE = 1e-4  # max abs error relative to the output scale (the bar)


@pytest.mark.parametrize("fmt", ["mlmodel", "mlpackage"])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_zoo_model_matches_torch(zoo, name, fmt):
    graph = load(zoo.path(name, fmt))
    _, inputs = zoo.torch_model(name)
    expected = zoo.expected(name)
    assert graph.input_names == list(inputs)
    outputs = evaluate(graph, inputs)
    assert len(outputs) == len(expected)
    for info, want in zip(graph.outputs, expected):
        got = outputs[info.name]
        assert got.dtype == np.float32
        assert max_relative_error(got, want) <= FP32_TOLERANCE, info.name


@pytest.mark.parametrize("fmt", ["mlmodel", "mlpackage"])
def test_ops_trace_back_to_source_layers(zoo, fmt):
    from coreml2hwx.frontend import load_spec

    path = zoo.path("mobilenet_v3_block", fmt)
    graph = load(path)
    spec = load_spec(path)
    if fmt == "mlmodel":
        layer_names = {layer.name for layer in spec.neuralNetwork.layers}
    else:
        block = spec.mlProgram.functions["main"].block_specializations
        ops = next(iter(block.values())).operations
        layer_names = {op.attributes["name"].immediateValue.tensor.strings.values[0] for op in ops}
    assert graph.ops
    assert {op.source for op in graph.ops} <= layer_names
    assert len({op.name for op in graph.ops}) == len(graph.ops)  # op names are unique


def test_neuralnetwork_and_mil_meet_in_one_vocabulary(zoo):
    """NeuralNetwork `convolution`/`innerProduct` and MIL `conv`/`linear` become the same IR ops."""
    nn = load(zoo.path("resnet18", "mlmodel"))
    mil = load(zoo.path("resnet18", "mlpackage"))
    for graph in (nn, mil):
        types = graph.op_types()
        assert {"conv", "linear", "relu", "add", "max_pool"} <= set(types)
    assert [op.type for op in nn.ops if op.type == "conv"] == [op.type for op in mil.ops
                                                               if op.type == "conv"]


@pytest.mark.parametrize("name", ["mobilenet_v2", "transformer_block"])
def test_fp16_ml_program(zoo, name):
    """An ML Program converted with fp16 compute precision (casts, fp16 weights)."""
    graph = load(zoo.path(name, "mlpackage", precision="fp16"))
    assert "cast" in graph.op_types()
    _, inputs = zoo.torch_model(name)
    want = zoo.expected(name)[0]
    fp32 = evaluate(graph, inputs)[graph.output_names[0]]
    fp16 = evaluate(graph, inputs, fp16=True)[graph.output_names[0]]
    assert fp16.dtype == np.float16
    # fp16 weights alone cost about 1e-3 of the output scale; storing every tensor in fp16 more.
    assert max_relative_error(fp32, want) <= 5e-3
    assert max_relative_error(fp16.astype(np.float32), want) <= 2e-2
    assert not np.array_equal(fp16.astype(np.float32), fp32)


def test_fp16_mode_rounds_between_ops(zoo):
    """fp16 mode stores each op's result in fp16: it matches torch run in float16 storage."""
    import torch

    module, inputs = zoo.torch_model("activations")
    graph = load(zoo.path("activations", "mlpackage"))
    got = evaluate(graph, inputs, fp16=True)[graph.output_names[0]].astype(np.float32)
    half = module.to(torch.float16)
    with torch.no_grad():
        want = half(torch.from_numpy(inputs["x"]).half()).float().numpy()
    module.to(torch.float32)
    # torch fp16 on CPU also rounds after each op; the two differ only by accumulation order.
    assert max_relative_error(got, want) <= 4e-3


@pytest.mark.parametrize("fmt", ["neuralnetwork", "mlprogram"])
def test_image_input_classifier(tmp_path, fmt):
    """ct.ImageType preprocessing (scale, per-channel bias) and a classifier wrapper, both formats."""
    import warnings

    import coremltools as ct
    import torch

    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 3), torch.nn.Softmax(dim=1)).eval()
    bias = [-0.5, -0.4, -0.3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ct.convert(torch.jit.trace(net, torch.zeros(1, 3, 8, 8)), convert_to=fmt,
                           inputs=[ct.ImageType(name="img", shape=(1, 3, 8, 8), scale=1 / 255.0,
                                                bias=bias, color_layout=ct.colorlayout.BGR)],
                           classifier_config=ct.ClassifierConfig(["ant", "bee", "cow"]),
                           **({"compute_precision": ct.precision.FLOAT32} if fmt == "mlprogram" else {}))
    path = tmp_path / ("img.mlmodel" if fmt == "neuralnetwork" else "img.mlpackage")
    model.save(str(path))
    graph = load(path)
    meta = graph.metadata["classifier"]
    assert meta["labels"] == ["ant", "bee", "cow"] and meta["label_output"] == "classLabel"
    image = np.random.default_rng(0).uniform(0, 255, (1, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(image) / 255.0 + torch.tensor(bias).reshape(1, 3, 1, 1)).numpy()
    got = evaluate(graph, {"img": image})[meta["probabilities"]]
    assert max_relative_error(got.reshape(want.shape), want) <= 1e-5
