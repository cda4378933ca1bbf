"""Reference-evaluator kernels on single-op graphs against torch's functional ops.

Ground truth: torch (CPU, float32/float64) for the same operands and attributes.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from coreml2hwx.ir import Graph, evaluate
from coreml2hwx.ir.kernels import erf
from tests.models.zoo import max_relative_error

RNG = np.random.default_rng(2024)


def _run(op_type, x, attrs, extra=()):
    """Evaluate one op on input x (and constant extra operands)."""
    g = Graph("one")
    g.add_input("x", x.shape)
    names = ["x"]
    for i, value in enumerate(extra):
        g.add_constant(f"c{i}", value)
        names.append(f"c{i}")
    g.add_op(op_type, names, ["y"], attrs)
    g.set_outputs(["y"])
    return evaluate(g, {"x": x})["y"]


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a, np.float32))


CONV_CASES = [  # (in shape, weight shape, stride, dilation, pads (t, b, l, r), groups)
    ((1, 3, 9, 9), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 1),
    ((2, 4, 10, 7), (6, 2, 3, 2), (2, 1), (1, 2), (0, 2, 1, 0), 2),
    ((1, 6, 8, 8), (6, 1, 5, 5), (2, 2), (1, 1), (2, 2, 2, 2), 6),    # depthwise
    ((1, 4, 8, 8), (12, 1, 3, 3), (1, 1), (2, 2), (2, 2, 2, 2), 4),   # depthwise, multiplier 3
    ((1, 8, 5, 5), (16, 8, 1, 1), (1, 1), (1, 1), (0, 0, 0, 0), 1),
]


@pytest.mark.parametrize("shape, wshape, stride, dilation, pads, groups", CONV_CASES)
def test_conv2d(shape, wshape, stride, dilation, pads, groups):
    x = RNG.standard_normal(shape).astype(np.float32)
    w = RNG.standard_normal(wshape).astype(np.float32)
    b = RNG.standard_normal(wshape[0]).astype(np.float32)
    got = _run("conv", x, {"weight": w, "bias": b, "strides": stride, "dilations": dilation,
                           "pads": pads, "groups": groups})
    padded = F.pad(_t(x), (pads[2], pads[3], pads[0], pads[1]))
    want = F.conv2d(padded, _t(w), _t(b), stride=stride, dilation=dilation, groups=groups)
    assert max_relative_error(got, want.numpy()) <= 1e-5


def test_conv1d():
    x = RNG.standard_normal((1, 4, 20)).astype(np.float32)
    w = RNG.standard_normal((6, 2, 3)).astype(np.float32)
    got = _run("conv", x, {"weight": w, "bias": None, "strides": (2,), "dilations": (3,),
                           "pads": (1, 2), "groups": 2})
    want = F.conv1d(F.pad(_t(x), (1, 2)), _t(w), stride=2, dilation=3, groups=2)
    assert max_relative_error(got, want.numpy()) <= 1e-5


@pytest.mark.parametrize("stride, dilation, padding, out_pad, groups", [
    (2, 1, 0, 0, 1), (2, 1, 1, 1, 1), (3, 2, 2, 0, 2), (1, 1, 1, 0, 4)])
def test_conv_transpose2d(stride, dilation, padding, out_pad, groups):
    x = RNG.standard_normal((1, 4, 5, 6)).astype(np.float32)
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = RNG.standard_normal(3 * groups).astype(np.float32)
    want = F.conv_transpose2d(_t(x), _t(w), _t(b), stride=stride, padding=padding,
                              output_padding=out_pad, groups=groups, dilation=dilation)
    got = _run("conv_transpose", x, {"weight": w, "bias": b, "strides": (stride, stride),
                                     "dilations": (dilation, dilation), "pads": (padding,) * 4,
                                     "groups": groups, "output_size": tuple(want.shape[2:])})
    assert max_relative_error(got, want.numpy()) <= 1e-5


@pytest.mark.parametrize("kernel, stride, pad, ceil", [(3, 2, 1, False), (3, 2, 1, True),
                                                       (2, 2, 0, True), (3, 3, 0, True)])
def test_pooling(kernel, stride, pad, ceil):
    x = RNG.standard_normal((1, 3, 8, 7)).astype(np.float32)
    attrs = {"kernel": (kernel, kernel), "strides": (stride, stride), "pads": (pad,) * 4,
             "ceil_mode": ceil}
    got_max = _run("max_pool", x, attrs)
    want_max = F.max_pool2d(_t(x), kernel, stride, pad, ceil_mode=ceil)
    assert max_relative_error(got_max, want_max.numpy()) <= 1e-6
    for exclude in (False, True):
        got = _run("avg_pool", x, {**attrs, "exclude_padding": exclude})
        want = F.avg_pool2d(_t(x), kernel, stride, pad, ceil_mode=ceil, count_include_pad=not exclude)
        assert max_relative_error(got, want.numpy()) <= 1e-6, exclude


@pytest.mark.parametrize("mode, coords, size", [
    ("nearest", "asymmetric", (12, 21)), ("bilinear", "half_pixel", (12, 14)),
    ("bilinear", "align_corners", (11, 5)), ("bilinear", "half_pixel", (3, 4))])
def test_upsample(mode, coords, size):
    x = RNG.standard_normal((1, 2, 6, 7)).astype(np.float32)
    got = _run("upsample", x, {"mode": mode, "output_size": size, "coordinates": coords})
    kwargs = {} if mode == "nearest" else {"align_corners": coords == "align_corners"}
    want = F.interpolate(_t(x), size=size, mode=mode, **kwargs)
    assert max_relative_error(got, want.numpy()) <= 1e-6


@pytest.mark.parametrize("a, b, tx, ty", [
    ((3, 4), (4, 5), False, False), ((2, 1, 3, 4), (5, 4), False, True),
    ((2, 4, 3), (2, 4, 5), True, False), ((4,), (3, 4, 2), False, False), ((2, 3, 4), (4,), False, False)])
def test_matmul(a, b, tx, ty):
    x = RNG.standard_normal(a).astype(np.float32)
    y = RNG.standard_normal(b).astype(np.float32)
    got = _run("matmul", x, {"transpose_x": tx, "transpose_y": ty}, extra=[y])
    X, Y = _t(x), _t(y)
    if tx:
        X = X.transpose(-1, -2)
    if ty:
        Y = Y.transpose(-1, -2)
    assert max_relative_error(got, torch.matmul(X, Y).numpy()) <= 1e-5


def test_layer_norm_softmax_and_gelu():
    x = RNG.standard_normal((2, 5, 16)).astype(np.float32) * 3
    gamma = RNG.standard_normal(16).astype(np.float32)
    beta = RNG.standard_normal(16).astype(np.float32)
    got = _run("layer_norm", x, {"axes": (2,), "gamma": gamma, "beta": beta, "epsilon": 1e-5})
    want = F.layer_norm(_t(x), (16,), _t(gamma), _t(beta), eps=1e-5)
    assert max_relative_error(got, want.numpy()) <= 1e-5
    assert max_relative_error(_run("softmax", x, {"axis": 1}), torch.softmax(_t(x), 1).numpy()) <= 1e-6
    for mode, approx in (("exact", "none"), ("tanh", "tanh")):
        got = _run("gelu", x, {"mode": mode})
        assert max_relative_error(got, F.gelu(_t(x).double(), approximate=approx).numpy()) <= 1e-6
    sig = _run("gelu", x, {"mode": "sigmoid"})
    want = (_t(x).double() * torch.sigmoid(1.702 * _t(x).double())).numpy()
    assert max_relative_error(sig, want) <= 1e-6


def test_erf_accuracy():
    x = np.linspace(-6, 6, 2001)
    ref = np.array([math.erf(v) for v in x])
    assert np.max(np.abs(erf(x) - ref)) < 2e-7


UNARY = {
    "relu": (torch.relu, {}), "sigmoid": (torch.sigmoid, {}), "tanh": (torch.tanh, {}),
    "silu": (F.silu, {}), "softplus": (F.softplus, {}), "softsign": (F.softsign, {}),
    "exp": (torch.exp, {}), "abs": (torch.abs, {}), "erf": (torch.erf, {}),
    "elu": (lambda t: F.elu(t, 0.7), {"alpha": 0.7}),
    "leaky_relu": (lambda t: F.leaky_relu(t, 0.05), {"alpha": 0.05}),
    "clip": (lambda t: torch.clamp(t, -0.5, 1.0), {"min": -0.5, "max": 1.0}),
    "hard_sigmoid": (F.hardsigmoid, {"alpha": 1 / 6, "beta": 0.5}),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name):
    fn, attrs = UNARY[name]
    x = RNG.standard_normal((3, 40)).astype(np.float32) * 4
    got = _run(name, x, attrs)
    assert max_relative_error(got, fn(_t(x).double()).numpy()) <= 1e-6


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate"])
def test_pad(mode):
    x = RNG.standard_normal((1, 2, 5, 6)).astype(np.float32)
    got = _run("pad", x, {"pads": ((0, 0), (0, 0), (2, 1), (0, 3)), "mode": mode, "value": 1.5})
    kwargs = {"value": 1.5} if mode == "constant" else {}
    want = F.pad(_t(x), (0, 3, 2, 1), mode=mode, **kwargs)
    np.testing.assert_array_equal(got, want.numpy())


def test_reductions_and_data_movement():
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    X = _t(x).double()
    cases = {
        ("reduce_sum", (1, 3), False): X.sum(dim=(1, 3)),
        ("reduce_mean", (2,), True): X.mean(dim=2, keepdim=True),
        ("reduce_max", (0, 1, 2, 3), False): X.amax(),
        ("reduce_l2_norm", (3,), True): X.norm(dim=3, keepdim=True),
        ("reduce_log_sum_exp", (1,), False): torch.logsumexp(X, dim=1),
    }
    for (op, axes, keep), want in cases.items():
        got = _run(op, x, {"axes": axes, "keep_dims": keep})
        assert max_relative_error(got, want.numpy()) <= 1e-6, op
    np.testing.assert_array_equal(_run("transpose", x, {"perm": (0, 3, 1, 2)}), x.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(_run("slice", x, {"begin": (1, 0, 3, 1), "end": (2, 3, -1, 5),
                                                    "strides": (1, 2, -2, 3)}), x[1:2, 0:3:2, 3::-2, 1:5:3])
    np.testing.assert_array_equal(_run("tile", x, {"reps": (1, 2, 1, 3)}), np.tile(x, (1, 2, 1, 3)))
