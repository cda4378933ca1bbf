"""ML Programs made with coremltools' MIL builder, and compressed weights made by coremltools.optimize.

Ground truth: torch functional ops on the same values; for compressed weights, the dense values
coremltools itself materializes from its constexpr ops (and torch's weights they approximate).
"""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import coremltools as ct
import coremltools.optimize.coreml as cto
from coremltools.converters.mil.mil import Builder as mb

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.frontend import load
from coreml2hwx.ir import evaluate
from tests.models.zoo import max_relative_error

RNG = np.random.default_rng(99)


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _convert_program(prog, path, target=ct.target.iOS16):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ct.convert(prog, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
                           minimum_deployment_target=target)
    model.save(str(path))
    return path


W_T = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)  # conv_transpose [Cin, Cout, kh, kw]
BN = {k: RNG.uniform(0.5, 1.5, 4).astype(np.float32) for k in ("mean", "var", "gamma", "beta")}
LN_GAMMA = RNG.uniform(0.5, 1.5, (4, 6, 6)).astype(np.float32)


def _builder_program():
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, 6, 6))], opset_version=ct.target.iOS16)
    def prog(x):
        outs = [
            mb.batch_norm(x=x, mean=BN["mean"], variance=BN["var"], gamma=BN["gamma"],
                          beta=BN["beta"], epsilon=1e-3, name="bn"),
            mb.instance_norm(x=x, gamma=BN["gamma"], beta=BN["beta"], epsilon=1e-5, name="inorm"),
            mb.layer_norm(x=x, axes=[1, 2, 3], gamma=LN_GAMMA, epsilon=1e-5, name="lnorm"),
            mb.conv_transpose(x=x, weight=W_T, strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1],
                              output_shape=[1, 3, 12, 12], name="deconv"),
            mb.upsample_bilinear(x=x, scale_factor_height=2.0, scale_factor_width=2.0,
                                 align_corners=False, half_pixel_centers=False, name="up_asym"),
            mb.resize_bilinear(x=x, target_size_height=9, target_size_width=5,
                               sampling_mode="UNALIGN_CORNERS", name="resize_half"),
            mb.upsample_nearest_neighbor(x=x, scale_factor_height=2, scale_factor_width=3,
                                         name="up_nearest"),
            mb.slice_by_size(x=x, begin=[0, 1, 2, 0], size=[1, 2, -1, 3], name="slice_size"),
            mb.slice_by_index(x=x, begin=[0, 3, 0, 5], end=[1, 0, 6, 0], stride=[1, -1, 2, -2],
                              begin_mask=[True, False, True, False], end_mask=[True, True, True, True],
                              squeeze_mask=[True, False, False, False], name="slice_index"),
            mb.tile(x=x, reps=[1, 1, 2, 1], name="tile"),
            mb.select(cond=mb.greater(x=x, y=0.25), a=x, b=mb.mul(x=x, y=-2.0), name="select"),
            mb.reduce_log_sum_exp(x=x, axes=[1, 3], keep_dims=False, name="lse"),
            mb.reduce_prod(x=mb.sigmoid(x=x), axes=[-1], keep_dims=True, name="prod"),
            mb.softplus(x=x, name="softplus"),
            mb.scaled_tanh(x=x, alpha=1.5, beta=0.5, name="stanh"),
            mb.linear_activation(x=x, alpha=-2.0, beta=0.5, name="linact"),
            mb.thresholded_relu(x=x, alpha=0.3, name="threlu"),
            mb.inverse(x=mb.add(x=mb.abs(x=x), y=1.0), name="inverse"),
            mb.rsqrt(x=mb.add(x=mb.abs(x=x), y=1.0), name="rsqrt"),
            mb.log(x=mb.add(x=mb.abs(x=x), y=1.0), name="log"),
            mb.floor_div(x=mb.mul(x=x, y=10.0), y=3.0, name="floordiv"),
            mb.expand_dims(x=mb.squeeze(x=mb.reduce_mean(x=x, axes=[2], keep_dims=True), axes=[2]),
                           axes=[-1], name="squeeze_expand"),
            mb.flatten2d(x=x, axis=2, name="flatten2d"),
        ]
        parts = mb.split(x=x, split_sizes=[1, 3], axis=1, name="split")
        outs += [mb.concat(values=[parts[1], parts[0]], axis=1, name="concat_swap")]
        return tuple(outs)
    return prog


def _builder_expected(x):
    X = _t(x)
    c = lambda v: _t(v).reshape(1, -1, 1, 1)  # noqa: E731
    mean, var = X.mean(dim=(1, 2, 3), keepdim=True), X.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    return {
        "bn": (X - c(BN["mean"])) / torch.sqrt(c(BN["var"]) + 1e-3) * c(BN["gamma"]) + c(BN["beta"]),
        "inorm": F.instance_norm(X, weight=_t(BN["gamma"]), bias=_t(BN["beta"]), eps=1e-5),
        "lnorm": (X - mean) / torch.sqrt(var + 1e-5) * _t(LN_GAMMA),
        "deconv": F.conv_transpose2d(X, _t(W_T), stride=2, padding=1, output_padding=1),
        "up_asym": _asymmetric_bilinear(X, 2),
        "resize_half": F.interpolate(X, size=(9, 5), mode="bilinear", align_corners=False),
        "up_nearest": F.interpolate(X, scale_factor=(2, 3), mode="nearest"),
        "slice_size": X[:, 1:3, 2:, 0:3],
        "slice_index": torch.flip(X, dims=(1, 3))[0, :, ::2, ::2],
        "tile": X.repeat(1, 1, 2, 1),
        "select": torch.where(X > 0.25, X, -2 * X),
        "lse": torch.logsumexp(X, dim=(1, 3)),
        "prod": torch.sigmoid(X).prod(dim=-1, keepdim=True),
        "softplus": F.softplus(X), "stanh": 1.5 * torch.tanh(0.5 * X), "linact": -2 * X + 0.5,
        "threlu": torch.where(X >= 0.3, X, torch.zeros_like(X)),
        "inverse": 1 / (X.abs() + 1 + 1e-4), "rsqrt": 1 / torch.sqrt(X.abs() + 1 + 1e-12),
        "log": torch.log(X.abs() + 1), "floordiv": torch.floor(X * 10 / 3),
        "squeeze_expand": X.mean(dim=2).unsqueeze(-1), "flatten2d": X.reshape(4 * 1, 36),
        "concat_swap": torch.cat([X[:, 1:], X[:, :1]], dim=1),
    }


def _asymmetric_bilinear(X, scale):
    """Bilinear sampling at input coordinate out / scale (align_corners=False, no half-pixel)."""
    n, c, h, w = X.shape
    ys = torch.clamp(torch.arange(h * scale) / scale, max=h - 1)
    xs = torch.clamp(torch.arange(w * scale) / scale, max=w - 1)
    y0, x0 = ys.floor().long(), xs.floor().long()
    y1, x1 = torch.clamp(y0 + 1, max=h - 1), torch.clamp(x0 + 1, max=w - 1)
    fy, fx = (ys - y0).reshape(-1, 1), xs - x0
    rows = X[:, :, y0] * (1 - fy) + X[:, :, y1] * fy
    return rows[..., x0] * (1 - fx) + rows[..., x1] * fx


def test_mil_builder_ops(tmp_path):
    graph = load(_convert_program(_builder_program(), tmp_path / "ops.mlpackage"))
    x = RNG.standard_normal((1, 4, 6, 6)).astype(np.float32)
    got = evaluate(graph, {"x": x})
    expected = _builder_expected(x)
    assert len(graph.outputs) == len(expected)
    by_source = {}
    for op in graph.ops:
        for out in op.outputs:
            by_source[op.source] = out
    for name, want in expected.items():
        out = by_source[name]
        assert out in got, name
        assert max_relative_error(got[out], want.numpy()) <= 1e-5, name


def test_unsupported_mil_op_is_named(tmp_path):
    @mb.program(input_specs=[mb.TensorSpec(shape=(4, 6))], opset_version=ct.target.iOS16)
    def prog(x):
        return mb.band_part(x=mb.relu(x=x), lower=1, upper=1, name="banded")

    path = _convert_program(prog, tmp_path / "band.mlpackage")
    with pytest.raises(UnsupportedError) as info:
        load(path)
    message = str(info.value)
    assert str(path / "Data") in message or str(path) in message
    assert "'banded'" in message and "'band_part'" in message and "not supported" in message


# -- compressed weights -----------------------------------------------------------------------------

def _small_convnet():
    torch.manual_seed(5)
    net = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3), torch.nn.ReLU(),
                              torch.nn.Conv2d(32, 8, 1)).eval()
    return net, torch.randn(1, 16, 8, 8)


COMPRESSIONS = {
    "affine_int8_ios16": (ct.target.iOS16, cto.linear_quantize_weights,
                          lambda: cto.OpLinearQuantizerConfig(mode="linear_symmetric", weight_threshold=0)),
    "lut4_ios16": (ct.target.iOS16, cto.palettize_weights,
                   lambda: cto.OpPalettizerConfig(nbits=4, mode="uniform", weight_threshold=0)),
    "sparse_ios16": (ct.target.iOS16, cto.prune_weights,
                     lambda: cto.OpMagnitudePrunerConfig(target_sparsity=0.5, weight_threshold=0)),
    "blockwise_int4_ios18": (ct.target.iOS18, cto.linear_quantize_weights,
                             lambda: cto.OpLinearQuantizerConfig(mode="linear", dtype="int4",
                                                                 granularity="per_block",
                                                                 block_size=4, weight_threshold=0)),
    "lut2_grouped_ios18": (ct.target.iOS18, cto.palettize_weights,
                           lambda: cto.OpPalettizerConfig(nbits=2, mode="uniform",
                                                          granularity="per_grouped_channel",
                                                          group_size=4, weight_threshold=0)),
    "sparse_ios18": (ct.target.iOS18, cto.prune_weights,
                     lambda: cto.OpMagnitudePrunerConfig(target_sparsity=0.5, weight_threshold=0)),
}


def _materialized(op):
    value = op.materialized_val_inference()
    return value[-1] if isinstance(value, tuple) else value


@pytest.mark.parametrize("kind", sorted(COMPRESSIONS))
def test_compressed_weights(tmp_path, kind):
    target, compress, config = COMPRESSIONS[kind]
    net, x = _small_convnet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ct.convert(torch.jit.trace(net, x), inputs=[ct.TensorType(name="x", shape=x.shape)],
                           convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
                           minimum_deployment_target=target)
        model = compress(model, cto.OptimizationConfig(global_config=config()))
    path = tmp_path / f"{kind}.mlpackage"
    model.save(str(path))
    program_ops = list(model._mil_program.functions["main"].operations)
    assert any(op.op_type.startswith("constexpr_") for op in program_ops)
    theirs = [_materialized(op.weight.op) for op in program_ops if op.op_type == "conv"]

    graph = load(path)
    ours = [op.attrs["weight"] for op in graph.ops if op.type == "conv"]
    assert len(ours) == len(theirs) == 2
    for mine, reference, layer in zip(ours, theirs, (net[0], net[2])):
        np.testing.assert_array_equal(mine, reference)
        if kind.startswith("sparse"):  # half of the weights, the smallest, are zero
            w = layer.weight.detach().numpy()
            kept = mine != 0
            assert kept.sum() == w.size // 2
            np.testing.assert_array_equal(mine[kept], w[kept])
            assert np.abs(w[~kept]).max() <= np.abs(w[kept]).min()

    with torch.no_grad():  # the evaluator on the expanded weights matches torch on them
        net[0].weight.copy_(_t(ours[0]))
        net[2].weight.copy_(_t(ours[1]))
        want = net(x).numpy()
    got = evaluate(graph, {"x": x.numpy()})[graph.output_names[0]]
    assert max_relative_error(got, want) <= 1e-5
