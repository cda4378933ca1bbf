"""numpy kernels for every IR op type (see `coreml2hwx.ir.shapes` for the vocabulary).

Each kernel takes the op, its input arrays, and returns a list of output arrays.  Floating-point
kernels compute in float32 (float64 where a transcendental needs it) whatever the input precision.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from coreml2hwx.ir.dtypes import numpy_dtype
from coreml2hwx.ir.shapes import window_out

F32 = np.float32


def _f(x):
    return np.asarray(x, dtype=F32)


def erf(x):
    """Error function, |error| < 1.2e-7 (Numerical Recipes `erfc` Chebyshev fit), in float64."""
    x = np.asarray(x, dtype=np.float64)
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = (-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277)))))))))
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0)


def sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _gelu(x, mode):
    x64 = np.asarray(x, dtype=np.float64)
    if mode == "exact":
        y = 0.5 * x64 * (1.0 + erf(x64 / np.sqrt(2.0)))
    elif mode == "tanh":
        y = 0.5 * x64 * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x64 + 0.044715 * x64 ** 3)))
    elif mode == "sigmoid":
        y = x64 * sigmoid(1.702 * x64)
    else:
        raise ValueError(f"gelu mode {mode!r}")
    return y


def _unary(fn):
    return lambda op, ins: [_f(fn(_f(ins[0]), op.attrs))]


UNARY_FNS = {
    "relu": lambda x, a: np.maximum(x, 0),
    "sigmoid": lambda x, a: sigmoid(x),
    "tanh": lambda x, a: np.tanh(x),
    "silu": lambda x, a: x * sigmoid(x),
    "softplus": lambda x, a: np.logaddexp(0.0, x.astype(np.float64)),
    "softsign": lambda x, a: x / (1 + np.abs(x)),
    "exp": lambda x, a: np.exp(x.astype(np.float64)),
    "exp2": lambda x, a: np.exp2(x.astype(np.float64)),
    "log": lambda x, a: np.log(x.astype(np.float64) + a.get("epsilon", 0.0)),
    "sqrt": lambda x, a: np.sqrt(x),
    "rsqrt": lambda x, a: 1.0 / np.sqrt(x.astype(np.float64) + a.get("epsilon", 0.0)),
    "reciprocal": lambda x, a: 1.0 / (x.astype(np.float64) + a.get("epsilon", 0.0)),
    "abs": lambda x, a: np.abs(x),
    "erf": lambda x, a: erf(x),
    "floor": lambda x, a: np.floor(x),
    "ceil": lambda x, a: np.ceil(x),
    "round": lambda x, a: np.round(x),
    "sign": lambda x, a: np.sign(x),
    "square": lambda x, a: x * x,
    "sin": lambda x, a: np.sin(x),
    "cos": lambda x, a: np.cos(x),
    "clip": lambda x, a: np.minimum(np.maximum(x, a["min"]), a["max"]),
    "leaky_relu": lambda x, a: np.where(x >= 0, x, x * F32(a["alpha"])),
    "elu": lambda x, a: np.where(x > 0, x, a["alpha"] * np.expm1(np.minimum(x, 0).astype(np.float64))),
    "thresholded_relu": lambda x, a: np.where(x >= a["alpha"], x, 0),
    "threshold": lambda x, a: np.maximum(x, a["alpha"]),
    "hard_sigmoid": lambda x, a: np.clip(F32(a["alpha"]) * x + F32(a["beta"]), 0, 1),
    "scaled_tanh": lambda x, a: a["alpha"] * np.tanh(a["beta"] * x.astype(np.float64)),
    "affine": lambda x, a: F32(a["alpha"]) * x + F32(a["beta"]),
    "gelu": lambda x, a: _gelu(x, a.get("mode", "exact")),
}


def _identity(op, ins):
    return [ins[0]]


def _cast(op, ins):
    target = numpy_dtype(op.attrs["dtype"])
    x = ins[0]
    if target.kind == "f":
        return [x.astype(F32)]  # precision is applied by the evaluator's rounding rule
    if target.kind in "iu" and x.dtype.kind == "f":
        x = np.trunc(x)
    return [x.astype(target)]


def _prelu(op, ins):
    x = _f(ins[0])
    alpha = _f(op.attrs["alpha"]).reshape(-1)
    shape = [1] * x.ndim
    shape[op.attrs["axis"]] = alpha.size
    return [np.where(x >= 0, x, x * alpha.reshape(shape))]


BINARY_FNS = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": lambda a, b: a.astype(np.float64) / b,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "pow": lambda a, b: np.power(a.astype(np.float64), b),
    "floor_div": lambda a, b: np.floor_divide(a, b),
    "equal": np.equal,
    "not_equal": np.not_equal,
    "less": np.less,
    "less_equal": np.less_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
}


def _binary(name):
    fn = BINARY_FNS[name]

    def kernel(op, ins):
        a, b = ins
        out = fn(a, b)
        return [out if out.dtype == bool or out.dtype.kind in "iu" else _f(out)]
    return kernel


def _select(op, ins):
    cond, a, b = ins
    return [np.where(cond.astype(bool), a, b)]


# -- convolution ----------------------------------------------------------------------------------

def _as_2d(x, w, a):
    """View 1-D convolution operands as 2-D ones with H = 1."""
    strides, dil, pads = list(a["strides"]), list(a["dilations"]), list(a["pads"])
    if x.ndim == 3:
        return x[:, :, None, :], w[:, :, None, :], [1] + strides, [1] + dil, [0, 0] + pads, True
    return x, w, strides, dil, pads, False


def conv2d(x, w, bias, strides, dilations, pads, groups):
    """Cross-correlation as Core ML / torch define it.  x [N,C,H,W], w [O, C/groups, kh, kw]."""
    n, c, _, _ = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = strides, dilations
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[1]), (pads[2], pads[3])))
    ho = (xp.shape[2] - ((kh - 1) * dh + 1)) // sh + 1
    wo = (xp.shape[3] - ((kw - 1) * dw + 1)) // sw + 1
    og = o // groups
    if cg == 1 and og == 1:  # depthwise: one multiply-add per kernel tap
        y = np.zeros((n, o, ho, wo), F32)
        for i in range(kh):
            for j in range(kw):
                tap = xp[:, :, i * dh: i * dh + (ho - 1) * sh + 1: sh,
                         j * dw: j * dw + (wo - 1) * sw + 1: sw]
                y += tap * w[:, 0, i, j][None, :, None, None]
    else:
        win = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
        win = win[:, :, : (ho - 1) * sh + 1: sh, : (wo - 1) * sw + 1: sw, ::dh, ::dw]
        y = np.empty((n, o, ho, wo), F32)
        for g in range(groups):
            cols = win[:, g * cg:(g + 1) * cg].transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, -1)
            wg = w[g * og:(g + 1) * og].reshape(og, -1)
            y[:, g * og:(g + 1) * og] = (cols @ wg.T).reshape(n, ho, wo, og).transpose(0, 3, 1, 2)
    if bias is not None:
        y += _f(bias)[None, :, None, None]
    return y


def _conv(op, ins):
    a = op.attrs
    x, w, strides, dil, pads, one_d = _as_2d(_f(ins[0]), _f(a["weight"]), a)
    y = conv2d(x, w, a.get("bias"), strides, dil, pads, a.get("groups", 1))
    return [y[:, :, 0, :] if one_d else y]


def conv_transpose2d(x, w, bias, strides, dilations, pads, groups, output_size):
    """Transposed convolution; w [C, O/groups, kh, kw]; pads crop the full result at the start."""
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    (sh, sw), (dh, dw) = strides, dilations
    oh, ow = output_size
    full_h = max((h - 1) * sh + (kh - 1) * dh + 1, pads[0] + oh)
    full_w = max((wd - 1) * sw + (kw - 1) * dw + 1, pads[2] + ow)
    y = np.zeros((n, og * groups, full_h, full_w), F32)
    cg = c // groups
    for g in range(groups):
        xg = x[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                contrib = np.einsum("nchw,co->nohw", xg, w[g * cg:(g + 1) * cg, :, i, j])
                y[:, g * og:(g + 1) * og, i * dh: i * dh + (h - 1) * sh + 1: sh,
                  j * dw: j * dw + (wd - 1) * sw + 1: sw] += contrib
    y = y[:, :, pads[0]: pads[0] + oh, pads[2]: pads[2] + ow]
    if bias is not None:
        y = y + _f(bias)[None, :, None, None]
    return np.ascontiguousarray(y)


def _conv_transpose(op, ins):
    a = op.attrs
    x, w, strides, dil, pads, one_d = _as_2d(_f(ins[0]), _f(a["weight"]), a)
    size = list(a["output_size"])
    if one_d:
        size = [1] + size
    y = conv_transpose2d(x, w, a.get("bias"), strides, dil, pads, a.get("groups", 1), size)
    return [y[:, :, 0, :] if one_d else y]


def _linear(op, ins):
    y = _f(ins[0]) @ _f(op.attrs["weight"]).T
    if op.attrs.get("bias") is not None:
        y = y + _f(op.attrs["bias"])
    return [_f(y)]


def _matmul(op, ins):
    a, b = _f(ins[0]), _f(ins[1])
    if op.attrs.get("transpose_x") and a.ndim > 1:
        a = np.swapaxes(a, -1, -2)
    if op.attrs.get("transpose_y") and b.ndim > 1:
        b = np.swapaxes(b, -1, -2)
    return [_f(np.matmul(a, b))]


# -- normalization --------------------------------------------------------------------------------

def _channel_shape(x, vec):
    shape = [1] * x.ndim
    shape[1] = -1
    return _f(vec).reshape(shape)


def _batch_norm(op, ins):
    a = op.attrs
    x = _f(ins[0])
    scale = _f(a["gamma"]) / np.sqrt(_f(a["variance"]) + F32(a["epsilon"]))
    y = (x - _channel_shape(x, a["mean"])) * _channel_shape(x, scale) + _channel_shape(x, a["beta"])
    return [_f(y)]


def _normalize(x, axes, epsilon):
    x = x.astype(np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + epsilon)


def _instance_norm(op, ins):
    x = _f(ins[0])
    y = _normalize(x, tuple(range(2, x.ndim)), op.attrs["epsilon"])
    if op.attrs.get("gamma") is not None:
        y = y * _channel_shape(x, op.attrs["gamma"])
    if op.attrs.get("beta") is not None:
        y = y + _channel_shape(x, op.attrs["beta"])
    return [_f(y)]


def _layer_norm(op, ins):
    a = op.attrs
    x = _f(ins[0])
    axes = tuple(a["axes"])
    y = _normalize(x, axes, a["epsilon"])
    bshape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    if a.get("gamma") is not None:
        y = y * _f(a["gamma"]).reshape(bshape)
    if a.get("beta") is not None:
        y = y + _f(a["beta"]).reshape(bshape)
    return [_f(y)]


def _softmax(op, ins):
    x = ins[0].astype(np.float64)
    e = np.exp(x - x.max(axis=op.attrs["axis"], keepdims=True))
    return [_f(e / e.sum(axis=op.attrs["axis"], keepdims=True))]


REDUCE_FNS = {
    "reduce_sum": lambda x, ax, k: np.sum(x, axis=ax, keepdims=k),
    "reduce_mean": lambda x, ax, k: np.mean(x, axis=ax, keepdims=k),
    "reduce_max": lambda x, ax, k: np.max(x, axis=ax, keepdims=k),
    "reduce_min": lambda x, ax, k: np.min(x, axis=ax, keepdims=k),
    "reduce_prod": lambda x, ax, k: np.prod(x, axis=ax, keepdims=k),
    "reduce_l1_norm": lambda x, ax, k: np.sum(np.abs(x), axis=ax, keepdims=k),
    "reduce_l2_norm": lambda x, ax, k: np.sqrt(np.sum(x * x, axis=ax, keepdims=k)),
    "reduce_sum_square": lambda x, ax, k: np.sum(x * x, axis=ax, keepdims=k),
    "reduce_log_sum": lambda x, ax, k: np.log(np.sum(x, axis=ax, keepdims=k)),
    "reduce_log_sum_exp": lambda x, ax, k: _logsumexp(x, ax, k),
}


def _logsumexp(x, axes, keep):
    m = np.max(x, axis=axes, keepdims=True)
    y = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return y if keep else np.squeeze(y, axis=axes)


def _reduce(name):
    fn = REDUCE_FNS[name]
    return lambda op, ins: [_f(fn(ins[0].astype(np.float64), tuple(op.attrs["axes"]),
                                  op.attrs.get("keep_dims", False)))]


# -- pooling --------------------------------------------------------------------------------------

def _pool_geometry(x, a):
    """Per spatial dim: (before, after) padding including the extra tail a ceil-mode pool reads."""
    geo = []
    for i, size in enumerate(x.shape[2:]):
        k, s = a["kernel"][i], a["strides"][i]
        before, after = a["pads"][2 * i], a["pads"][2 * i + 1]
        out = window_out(size, k, s, 1, before, after, a.get("ceil_mode", False))
        tail = max(0, (out - 1) * s + k - (size + before + after))
        geo.append((before, after, tail, out))
    return geo


def _windows(xp, a, geo):
    nd = len(geo)
    win = sliding_window_view(xp, tuple(a["kernel"]), axis=tuple(range(2, 2 + nd)))
    index = [slice(None), slice(None)] + [slice(0, (g[3] - 1) * s + 1, s)
                                         for g, s in zip(geo, a["strides"])]
    return win[tuple(index)]


def _max_pool(op, ins):
    x = _f(ins[0])
    geo = _pool_geometry(x, op.attrs)
    widths = [(0, 0), (0, 0)] + [(b, e + t) for b, e, t, _ in geo]
    xp = np.pad(x, widths, constant_values=-np.inf)
    win = _windows(xp, op.attrs, geo)
    return [win.max(axis=tuple(range(-len(geo), 0)))]


def _avg_pool(op, ins):
    x = _f(ins[0])
    a = op.attrs
    geo = _pool_geometry(x, a)
    widths = [(0, 0), (0, 0)] + [(b, e + t) for b, e, t, _ in geo]
    xp = np.pad(x, widths)
    axes = tuple(range(-len(geo), 0))
    total = _windows(xp, a, geo).sum(axis=axes, dtype=np.float64)
    # The divisor counts the input (and, unless excluded, the explicit padding) under each window;
    # the extra tail read by a ceil-mode pool never counts.
    ones = np.ones((1, 1, *x.shape[2:]), F32)
    if a.get("exclude_padding", True):
        mask = np.pad(ones, widths)
    else:
        mask = np.pad(np.pad(ones, [(0, 0), (0, 0)] + [(b, e) for b, e, _, _ in geo],
                             constant_values=1), [(0, 0), (0, 0)] + [(0, t) for _, _, t, _ in geo])
    count = _windows(mask, a, geo).sum(axis=axes)
    return [_f(total / np.maximum(count, 1))]


# -- data movement --------------------------------------------------------------------------------

def _pad(op, ins):
    a = op.attrs
    mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}[a.get("mode", "constant")]
    if mode == "constant":
        return [np.pad(ins[0], a["pads"], constant_values=a.get("value", 0.0))]
    return [np.pad(ins[0], a["pads"], mode=mode)]


def _source_coords(out_size, in_size, mode):
    o = np.arange(out_size, dtype=np.float64)
    if mode == "align_corners":
        return o * ((in_size - 1) / (out_size - 1)) if out_size > 1 else np.zeros(1)
    scale = in_size / out_size
    if mode == "half_pixel":
        return np.maximum((o + 0.5) * scale - 0.5, 0.0)
    return o * scale  # asymmetric


def _linear_weights(out_size, in_size, mode):
    src = np.clip(_source_coords(out_size, in_size, mode), 0, in_size - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = (src - lo).astype(F32)
    return lo, hi, frac


def _upsample(op, ins):
    x = _f(ins[0])
    a = op.attrs
    (oh, ow), (h, w) = a["output_size"], x.shape[2:]
    if a["mode"] == "nearest":
        rows = np.minimum(np.floor(np.arange(oh) * (h / oh)).astype(np.int64), h - 1)
        cols = np.minimum(np.floor(np.arange(ow) * (w / ow)).astype(np.int64), w - 1)
        return [x[:, :, rows][:, :, :, cols]]
    coords = a.get("coordinates", "half_pixel")
    r0, r1, fr = _linear_weights(oh, h, coords)
    c0, c1, fc = _linear_weights(ow, w, coords)
    rows = x[:, :, r0] * (1 - fr)[:, None] + x[:, :, r1] * fr[:, None]
    return [_f(rows[..., c0] * (1 - fc) + rows[..., c1] * fc)]


def _concat(op, ins):
    return [np.concatenate(ins, axis=op.attrs["axis"])]


def _split(op, ins):
    cuts = np.cumsum(op.attrs["sizes"])[:-1]
    return [np.ascontiguousarray(p) for p in np.split(ins[0], cuts, axis=op.attrs["axis"])]


def _slice(op, ins):
    a = op.attrs
    index = tuple(slice(b, None if e < 0 else e, s) for b, e, s in zip(a["begin"], a["end"], a["strides"]))
    return [np.ascontiguousarray(ins[0][index])]


def _reshape(op, ins):
    return [ins[0].reshape(op.attrs["shape"])]


def _transpose(op, ins):
    return [np.ascontiguousarray(ins[0].transpose(op.attrs["perm"]))]


def _tile(op, ins):
    return [np.tile(ins[0], op.attrs["reps"])]


KERNELS = {
    **{name: _unary(fn) for name, fn in UNARY_FNS.items()},
    **{name: _binary(name) for name in BINARY_FNS},
    **{name: _reduce(name) for name in REDUCE_FNS},
    "identity": _identity,
    "cast": _cast,
    "prelu": _prelu,
    "select": _select,
    "conv": _conv,
    "conv_transpose": _conv_transpose,
    "linear": _linear,
    "matmul": _matmul,
    "batch_norm": _batch_norm,
    "instance_norm": _instance_norm,
    "layer_norm": _layer_norm,
    "softmax": _softmax,
    "max_pool": _max_pool,
    "avg_pool": _avg_pool,
    "pad": _pad,
    "upsample": _upsample,
    "concat": _concat,
    "split": _split,
    "slice": _slice,
    "reshape": _reshape,
    "transpose": _transpose,
    "tile": _tile,
}
