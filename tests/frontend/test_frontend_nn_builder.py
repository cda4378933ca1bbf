"""NeuralNetwork models made with coremltools' NeuralNetworkBuilder: classifier and regressor
wrappers, image inputs with preprocessing, legacy layers, quantized weights.

Ground truth: torch functional ops applied to the same weights, following the layer formulas of the
NeuralNetwork specification; for quantized weights, the original float weights (and coremltools' own
dequantizer).
"""

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import coremltools as ct
from coremltools.models import datatypes
from coremltools.models.neural_network import NeuralNetworkBuilder
from coremltools.models.neural_network import quantization_utils

from coreml2hwx.frontend import load
from coreml2hwx.ir import evaluate
from tests.models.zoo import max_relative_error

RNG = np.random.default_rng(1234)


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _save(spec, path):
    ct.utils.save_spec(spec, str(path))
    return path


def _classifier_spec():
    w = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32)
    b = RNG.standard_normal(8).astype(np.float32)
    fc = RNG.standard_normal((4, 8)).astype(np.float32)
    builder = NeuralNetworkBuilder([("image", datatypes.Array(3, 8, 8))], [("probs", None)],
                                   mode="classifier")
    builder.add_convolution("conv", kernel_channels=3, output_channels=8, height=3, width=3,
                            stride_height=1, stride_width=1, border_mode="valid", groups=1,
                            W=w.transpose(2, 3, 1, 0), b=b, has_bias=True, input_name="image",
                            output_name="c")
    builder.add_activation("relu", "RELU", "c", "r")
    builder.add_pooling("gap", height=0, width=0, stride_height=1, stride_width=1,
                        layer_type="AVERAGE", padding_type="VALID", input_name="r", output_name="g",
                        is_global=True)
    builder.add_flatten("flat", mode=0, input_name="g", output_name="f")
    builder.add_inner_product("fc", W=fc, b=None, input_channels=8, output_channels=4,
                              has_bias=False, input_name="f", output_name="logits")
    builder.add_softmax("softmax", input_name="logits", output_name="probs")
    builder.set_pre_processing_parameters(image_input_names=["image"], is_bgr=True, red_bias=-1.0,
                                          green_bias=-2.0, blue_bias=-3.0, image_scale=1 / 255.0)
    builder.set_class_labels(["cat", "dog", "eel", "fox"], predicted_feature_name="label",
                             prediction_blob="probs")
    return builder.spec, (w, b, fc)


def test_classifier_with_bgr_image_input(tmp_path):
    spec, (w, b, fc) = _classifier_spec()
    graph = load(_save(spec, tmp_path / "classifier.mlmodel"))
    assert graph.input_names == ["image"]
    assert graph.tensors["image"].shape == (1, 3, 8, 8)
    assert graph.metadata["classifier"]["labels"] == ["cat", "dog", "eel", "fox"]
    assert graph.metadata["image_inputs"] == {"image": "BGR"}
    image = RNG.uniform(0, 255, (1, 3, 8, 8)).astype(np.float32)
    # Spec: for a BGR image, channel 0 gets blueBias, 1 greenBias, 2 redBias.
    pre = _t(image) / 255.0 + torch.tensor([-3.0, -2.0, -1.0]).reshape(1, 3, 1, 1)
    x = F.relu(F.conv2d(pre, _t(w), _t(b))).mean(dim=(2, 3))
    want = torch.softmax(x @ _t(fc).T, dim=1).numpy()
    got = evaluate(graph, {"image": image})["probs"]
    assert max_relative_error(got.reshape(1, 4), want) <= 1e-5


def test_regressor(tmp_path):
    w = RNG.standard_normal((2, 5)).astype(np.float32)
    builder = NeuralNetworkBuilder([("x", datatypes.Array(5))], [("y", None)], mode="regressor")
    builder.add_inner_product("fc", W=w, b=np.array([0.5, -0.5], np.float32), input_channels=5,
                              output_channels=2, has_bias=True, input_name="x", output_name="y")
    graph = load(_save(builder.spec, tmp_path / "regressor.mlmodel"))
    x = RNG.standard_normal(5).astype(np.float32)
    got = evaluate(graph, {"x": x})["y"].reshape(-1)
    np.testing.assert_allclose(got, w @ x + [0.5, -0.5], rtol=1e-6, atol=1e-6)


def _legacy_spec():
    """Legacy (rank-5 era) layers, each reading the [4, 6, 6] input, one model output each."""
    c = 4
    p = {k: RNG.standard_normal(c).astype(np.float32) for k in ("scale", "shift", "mean", "gamma", "beta")}
    p["var"] = RNG.uniform(0.5, 1.5, c).astype(np.float32)
    p["prelu"] = RNG.uniform(0.05, 0.5, c).astype(np.float32)
    outs = ["scale", "bn", "stanh", "lin", "hsig", "elu", "prelu", "softsign", "threlu", "log", "pow",
            "inv", "rsqrt", "maxpool", "avgpool", "gmax", "reflect", "up_bilinear", "up_nearest",
            "resize", "slice", "reduce_l2", "reduce_sumsq", "permute", "reshape", "concat", "split0",
            "split1", "add_alpha", "max", "ave", "mvn", "clip"]
    b = NeuralNetworkBuilder([("x", datatypes.Array(c, 6, 6))], [(o, None) for o in outs])
    b.add_scale("scale", W=p["scale"], b=p["shift"], has_bias=True, input_name="x", output_name="scale",
                shape_scale=[c], shape_bias=[c])
    b.add_batchnorm("bn", c, p["gamma"], p["beta"], p["mean"], p["var"], "x", "bn", epsilon=1e-3)
    b.add_activation("stanh", "SCALED_TANH", "x", "stanh", params=[1.5, 0.7])
    b.add_activation("lin", "LINEAR", "x", "lin", params=[2.0, -1.0])
    b.add_activation("hsig", "SIGMOID_HARD", "x", "hsig", params=[0.3, 0.4])
    b.add_activation("elu", "ELU", "x", "elu", params=0.8)
    b.add_activation("prelu", "PRELU", "x", "prelu", params=p["prelu"])
    b.add_activation("softsign", "SOFTSIGN", "x", "softsign")
    b.add_activation("threlu", "THRESHOLDEDRELU", "x", "threlu", params=0.5)
    b.add_unary("log", "x", "log", "log", shift=3.0, scale=0.5)
    b.add_unary("pow", "x", "pow", "power", alpha=3.0)
    b.add_unary("inv", "x", "inv", "inverse", shift=5.0, epsilon=1e-4)
    b.add_unary("rsqrt", "x", "rsqrt", "rsqrt", shift=4.0, epsilon=1e-4)
    b.add_pooling("maxpool", 3, 3, 2, 2, "MAX", "INCLUDE_LAST_PIXEL", "x", "maxpool",
                  padding_top=1, padding_bottom=1, padding_left=1, padding_right=1)
    b.add_pooling("avgpool", 3, 3, 2, 2, "AVERAGE", "SAME", "x", "avgpool", exclude_pad_area=True)
    b.add_pooling("gmax", 0, 0, 1, 1, "MAX", "VALID", "x", "gmax", is_global=True)
    b.add_padding("reflect", left=1, right=2, top=1, bottom=0, input_name="x", output_name="reflect",
                  padding_type="reflection")
    b.add_upsample("up_bilinear", 2, 2, "x", "up_bilinear", mode="BILINEAR",
                   linear_upsample_mode="ALIGN_CORNERS_TRUE")
    b.add_upsample("up_nearest", 2, 3, "x", "up_nearest", mode="NN")
    b.add_resize_bilinear("resize", "x", "resize", target_height=9, target_width=4,
                          mode="STRICT_ALIGN_ENDPOINTS_MODE")
    b.add_slice("slice", "x", "slice", axis="width", start_index=1, end_index=-1, stride=2)
    b.add_reduce("reduce_l2", "x", "reduce_l2", axis="C", mode="L2")
    b.add_reduce("reduce_sumsq", "x", "reduce_sumsq", axis="HW", mode="sumsquare")
    b.add_permute("permute", (0, 3, 1, 2), "x", "permute")
    b.add_reshape("reshape", "x", "reshape", (2, 36, 2), mode=0)
    b.add_elementwise("concat", ["x", "scale"], "concat", "CONCAT")
    b.add_split("split", "x", ["split0", "split1"])
    b.add_elementwise("add_alpha", ["x"], "add_alpha", "ADD", alpha=2.5)
    b.add_elementwise("max", ["x", "scale"], "max", "MAX")
    b.add_elementwise("ave", ["x", "scale", "bn"], "ave", "AVE")
    b.add_mvn("mvn", "x", "mvn", across_channels=True, normalize_variance=True, epsilon=1e-5)
    b.add_clip("clip", "x", "clip", min_value=-0.3, max_value=0.6)
    return b.spec, p


def _legacy_expected(x, p):
    X = _t(x)
    chan = lambda v: _t(v).reshape(1, -1, 1, 1)  # noqa: E731
    scale = X * chan(p["scale"]) + chan(p["shift"])
    bn = (X - chan(p["mean"])) / torch.sqrt(chan(p["var"]) + 1e-3) * chan(p["gamma"]) + chan(p["beta"])
    return {
        "scale": scale, "bn": bn,
        "stanh": 1.5 * torch.tanh(0.7 * X), "lin": 2 * X - 1,
        "hsig": torch.clamp(0.3 * X + 0.4, 0, 1), "elu": F.elu(X, 0.8),
        "prelu": torch.where(X >= 0, X, X * chan(p["prelu"])), "softsign": F.softsign(X),
        "threlu": torch.where(X >= 0.5, X, torch.zeros_like(X)),
        "log": torch.log(0.5 * X + 3.0 + 1e-45), "pow": X ** 3,
        "inv": 1 / (X + 5 + 1e-4), "rsqrt": 1 / torch.sqrt(X + 4 + 1e-4),
        "maxpool": F.max_pool2d(X, 3, 2, padding=1, ceil_mode=True),
        "avgpool": F.avg_pool2d(F.pad(X, (0, 1, 0, 1)), 3, 2) * 9 / F.avg_pool2d(
            F.pad(torch.ones_like(X), (0, 1, 0, 1)), 3, 2) / 9,
        "gmax": X.amax(dim=(2, 3), keepdim=True),
        "reflect": F.pad(X, (1, 2, 1, 0), mode="reflect"),
        "up_bilinear": F.interpolate(X, scale_factor=2, mode="bilinear", align_corners=True),
        "up_nearest": F.interpolate(X, scale_factor=(2, 3), mode="nearest"),
        "resize": F.interpolate(X, size=(9, 4), mode="bilinear", align_corners=True),
        "slice": X[..., 1:-1:2],
        "reduce_l2": torch.sqrt((X * X).sum(dim=1, keepdim=True)),
        "reduce_sumsq": (X * X).sum(dim=(2, 3), keepdim=True),
        "permute": X.permute(0, 3, 1, 2), "reshape": X.reshape(1, 2, 36, 2),
        "concat": torch.cat([X, scale], dim=1), "split0": X[:, :2], "split1": X[:, 2:],
        "add_alpha": X + 2.5, "max": torch.maximum(X, scale), "ave": (X + scale + bn) / 3,
        "mvn": (X - X.mean()) / torch.sqrt(X.var(unbiased=False) + 1e-5),
        "clip": torch.clamp(X, -0.3, 0.6),
    }


def test_legacy_layers(tmp_path):
    spec, params = _legacy_spec()
    graph = load(_save(spec, tmp_path / "legacy.mlmodel"))
    assert graph.tensors["x"].shape == (1, 4, 6, 6)  # [C, H, W] under the rank-5 mapping
    x = RNG.standard_normal((1, 4, 6, 6)).astype(np.float32)
    got = evaluate(graph, {"x": x})
    for name, want in _legacy_expected(x, params).items():
        assert max_relative_error(got[name], want.numpy()) <= 1e-5, name


def _quantizable_spec():
    w = RNG.standard_normal((6, 4, 3, 3)).astype(np.float32)
    w[2] *= 10  # per-channel ranges differ, so a per-channel scale matters
    fc = RNG.standard_normal((3, 6)).astype(np.float32)
    b = NeuralNetworkBuilder([("x", datatypes.Array(4, 5, 5))], [("y", None)])
    b.add_convolution("conv", kernel_channels=4, output_channels=6, height=3, width=3,
                      stride_height=1, stride_width=1, border_mode="same", groups=1,
                      W=w.transpose(2, 3, 1, 0), b=None, has_bias=False, input_name="x",
                      output_name="c")
    b.add_pooling("gap", 0, 0, 1, 1, "AVERAGE", "VALID", "c", "g", is_global=True)
    b.add_inner_product("fc", W=fc, b=None, input_channels=6, output_channels=3, has_bias=False,
                        input_name="g", output_name="y")
    return b.spec, w, fc


QUANT_MODES = {
    "linear8": ("_linear_quantization", 8, "channel"),
    "linear4": ("_linear_quantization", 4, "channel"),
    "symmetric8": ("_linear_quantization_symmetric", 8, "channel"),
    "lut3": ("_lookup_table_quantization_linear", 3, "tensor"),
    "lut8": ("_lookup_table_quantization_linear", 8, "tensor"),
}


@pytest.mark.parametrize("mode", sorted(QUANT_MODES))
def test_quantized_weights(tmp_path, mode):
    qmode, nbits, granularity = QUANT_MODES[mode]
    spec, w, _ = _quantizable_spec()
    quantized = copy.deepcopy(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantization_utils._quantize_spec_weights(quantized, nbits, qmode)
    wp = quantized.neuralNetwork.layers[0].convolution.weights
    assert not len(wp.floatValue) and len(wp.rawValue)  # really stored quantized
    graph = load(_save(quantized, tmp_path / f"{mode}.mlmodel"))
    got = graph.ops[0].attrs["weight"]
    # Bound: half a quantization step of the float weights' range (per channel or per tensor).
    axes = (1, 2, 3) if granularity == "channel" else None
    span = np.max(w, axis=axes, keepdims=True) - np.min(w, axis=axes, keepdims=True)
    if mode == "symmetric8":
        span = 2 * np.max(np.abs(w), axis=axes, keepdims=True)
    step = span / (2 ** nbits - 1)
    assert np.all(np.abs(got - w) <= step / 2 * 1.01 + 1e-7)
    # And exactly what coremltools' own dequantizer makes of the stored bytes.
    dequantized = copy.deepcopy(quantized)
    quantization_utils._dequantize_nn_spec(dequantized.neuralNetwork)
    reference = np.array(dequantized.neuralNetwork.layers[0].convolution.weights.floatValue,
                         np.float32).reshape(w.shape)
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-6)  # theirs is float64 math


def test_float16_weights(tmp_path):
    spec, w, fc = _quantizable_spec()
    half = copy.deepcopy(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantization_utils._quantize_spec_weights(half, 16, "_linear_quantization")
    assert len(half.neuralNetwork.layers[0].convolution.weights.float16Value)
    graph = load(_save(half, tmp_path / "half.mlmodel"))
    np.testing.assert_array_equal(graph.ops[0].attrs["weight"], w.astype(np.float16).astype(np.float32))
    x = RNG.standard_normal((1, 4, 5, 5)).astype(np.float32)
    want = F.conv2d(_t(x), _t(w), padding=1).mean(dim=(2, 3)) @ _t(fc).T
    got = evaluate(graph, {"x": x})["y"].reshape(1, 3)
    assert max_relative_error(got, want.numpy()) <= 2e-3


def test_deconvolution(tmp_path):
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)  # torch layout [Cin, Cout, kh, kw]
    b = NeuralNetworkBuilder([("x", datatypes.Array(4, 5, 5))], [("y", None)])
    b.add_convolution("deconv", kernel_channels=4, output_channels=3, height=3, width=3,
                      stride_height=2, stride_width=2, border_mode="valid", groups=1,
                      W=w.transpose(2, 3, 0, 1), b=np.arange(3, dtype=np.float32), has_bias=True,
                      is_deconv=True, input_name="x", output_name="y")
    graph = load(_save(b.spec, tmp_path / "deconv.mlmodel"))
    x = RNG.standard_normal((1, 4, 5, 5)).astype(np.float32)
    want = F.conv_transpose2d(_t(x), _t(w), torch.arange(3.0), stride=2).numpy()
    got = evaluate(graph, {"x": x})["y"]
    assert max_relative_error(got, want) <= 1e-5
