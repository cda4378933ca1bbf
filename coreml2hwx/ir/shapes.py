"""The IR op vocabulary and its shape inference.

Both frontends (NeuralNetwork layers and MIL ops) produce these op types.  All attributes are static
and already resolved: axes are non-negative, "same" padding is turned into explicit pads, constant
weights are numpy arrays.

Elementwise, one input, output shape = input shape:
    relu sigmoid tanh silu softplus softsign exp exp2 log sqrt abs erf floor ceil round sign square
    sin cos identity
    rsqrt, reciprocal, log         {epsilon}         1/sqrt(x+eps), 1/(x+eps), log(x+eps)
    clip                           {min, max}        relu6 is clip(0, 6)
    leaky_relu, elu                {alpha}
    thresholded_relu               {alpha}           x if x >= alpha else 0
    threshold                      {alpha}           max(x, alpha)
    prelu                          {alpha: [C], axis}
    hard_sigmoid                   {alpha, beta}     clip(alpha*x + beta, 0, 1)
    scaled_tanh                    {alpha, beta}     alpha * tanh(beta * x)
    affine                         {alpha, beta}     alpha*x + beta
    gelu                           {mode: "exact" | "tanh" | "sigmoid"}
    cast                           {dtype}           numpy dtype name
Elementwise, numpy broadcasting of all inputs:
    add sub mul real_div maximum minimum pow floor_div
    equal not_equal less less_equal greater greater_equal (bool result); select(cond, a, b)
Linear algebra:
    conv            x[N,C,*S] {weight[O, C/groups, *K], bias[O]|None, strides, dilations, pads, groups}
                    pads = (before_0, after_0, before_1, after_1, ...) per spatial dim; 1 or 2 spatial dims
    conv_transpose  x[N,C,*S] {weight[C, O/groups, *K], bias, strides, dilations, pads, groups,
                    output_size: spatial output size}; pads crop the full output at the start
    linear          x[..., I] {weight[O, I], bias[O]|None}            y = x @ weight.T + bias
    matmul          x, y      {transpose_x, transpose_y}                batch dims broadcast
Normalization:
    batch_norm      {mean, variance, gamma, beta: [C], epsilon}     channel axis 1
    instance_norm   {gamma, beta: [C], epsilon}                      over axes 2.. per (n, c)
    layer_norm      {axes, gamma|None, beta|None, epsilon}          gamma/beta have shape x.shape[axes]
    softmax         {axis}
Reductions:  reduce_sum reduce_mean reduce_max reduce_min reduce_prod reduce_l1_norm reduce_l2_norm
    reduce_sum_square reduce_log_sum reduce_log_sum_exp      {axes, keep_dims}
Pooling:     max_pool, avg_pool   x[N,C,*S] {kernel, strides, pads, ceil_mode, exclude_padding (avg)}
             global pooling is a pool whose kernel is the whole spatial extent
Shape/data movement:
    pad             {pads: ((before, after), ...) per dim, mode: constant|reflect|replicate, value}
    upsample        x[N,C,H,W] {mode: nearest|bilinear, output_size: (H', W'),
                    coordinates: asymmetric|half_pixel|align_corners}
    concat          {axis}
    split           {axis, sizes}          several outputs
    slice           {begin, end, strides}  one entry per dim, resolved (end may be -1 for a negative
                                           stride that runs past the start)
    reshape         {shape}                fully static, no -1
    transpose       {perm}
    tile            {reps}
Any op may also carry `fused_activation` (a unary op type) and `fused_activation_attrs`, applied
to its first result (set by passes that fuse an activation into its producer), and `inline` (the
names of weight attributes the source model wrote out inline, see coreml2hwx.frontend.milgraph).
"""

from __future__ import annotations

import math

import numpy as np

from coreml2hwx.errors import ModelError, UnsupportedError

UNARY = {
    "relu", "sigmoid", "tanh", "silu", "softplus", "softsign", "exp", "exp2", "log", "sqrt", "abs",
    "erf", "floor", "ceil", "round", "sign", "square", "sin", "cos", "identity", "rsqrt",
    "reciprocal", "clip", "leaky_relu", "elu", "thresholded_relu", "threshold", "prelu",
    "hard_sigmoid", "scaled_tanh", "affine", "gelu", "cast",
}
BINARY = {
    "add", "sub", "mul", "real_div", "maximum", "minimum", "pow", "floor_div",
    "equal", "not_equal", "less", "less_equal", "greater", "greater_equal", "select",
}
REDUCE = {
    "reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod", "reduce_l1_norm",
    "reduce_l2_norm", "reduce_sum_square", "reduce_log_sum", "reduce_log_sum_exp",
}


class ShapeError(ModelError):
    """An op's inputs or attributes are inconsistent."""


def _fail(op, msg):
    raise ShapeError(f"{op.type} {op.name!r}: {msg}", where=op.source)


def broadcast(op, shapes):
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*shapes))
    except ValueError:
        _fail(op, f"shapes {' and '.join(str(list(s)) for s in shapes)} do not broadcast")


def _same(op, ins, graph):
    return [ins[0].shape]


def _binary(op, ins, graph):
    return [broadcast(op, [t.shape for t in ins])]


def _spatial(op, x):
    n_spatial = len(x.shape) - 2
    if n_spatial not in (1, 2):
        raise UnsupportedError(f"{op.type} {op.name!r}: {n_spatial}-D spatial input {list(x.shape)} "
                               "is not supported (1-D and 2-D only)", where=op.source)
    return x.shape[2:]


def window_out(size, kernel, stride, dilation, before, after, ceil_mode=False):
    """Output length of a sliding window (conv / pool) along one dimension."""
    span = (kernel - 1) * dilation + 1
    room = size + before + after - span
    if ceil_mode:
        out = -(-room // stride) + 1
        if (out - 1) * stride >= size + before:  # the last window would start in the padding
            out -= 1
        return out
    return room // stride + 1


def _conv(op, ins, graph):
    x, a = ins[0], op.attrs
    spatial = _spatial(op, x)
    w = a["weight"]
    groups = a.get("groups", 1)
    if len(w.shape) != len(x.shape):
        _fail(op, f"weight rank {len(w.shape)} does not match input rank {len(x.shape)}")
    if x.shape[1] != w.shape[1] * groups:
        _fail(op, f"input has {x.shape[1]} channels but weight expects {w.shape[1]}x{groups} groups")
    out = []
    for i, size in enumerate(spatial):
        o = window_out(size, w.shape[2 + i], a["strides"][i], a["dilations"][i],
                       a["pads"][2 * i], a["pads"][2 * i + 1])
        if o <= 0:
            _fail(op, f"spatial output size {o} <= 0")
        out.append(o)
    return [(x.shape[0], w.shape[0], *out)]


def _conv_transpose(op, ins, graph):
    x, a = ins[0], op.attrs
    _spatial(op, x)
    w = a["weight"]
    if x.shape[1] != w.shape[0]:
        _fail(op, f"input has {x.shape[1]} channels but weight expects {w.shape[0]}")
    return [(x.shape[0], w.shape[1] * a.get("groups", 1), *a["output_size"])]


def _linear(op, ins, graph):
    x, w = ins[0], op.attrs["weight"]
    if x.shape[-1] != w.shape[1]:
        _fail(op, f"input last dim {x.shape[-1]} != weight in-features {w.shape[1]}")
    return [(*x.shape[:-1], w.shape[0])]


def _matmul(op, ins, graph):
    a, b = list(ins[0].shape), list(ins[1].shape)
    squeeze_a, squeeze_b = len(a) == 1, len(b) == 1
    if squeeze_a:
        a = [1] + a
    if squeeze_b:
        b = b + [1]
    if op.attrs.get("transpose_x") and not squeeze_a:
        a[-2], a[-1] = a[-1], a[-2]
    if op.attrs.get("transpose_y") and not squeeze_b:
        b[-2], b[-1] = b[-1], b[-2]
    if a[-1] != b[-2]:
        _fail(op, f"inner dimensions differ: {list(ins[0].shape)} x {list(ins[1].shape)}")
    batch = broadcast(op, [a[:-2], b[:-2]])
    out = [*batch, a[-2], b[-1]]
    if squeeze_a:
        out.pop(-2)
    if squeeze_b:
        out.pop(-1)
    return [tuple(out)]


def _reduce(op, ins, graph):
    shape, axes = ins[0].shape, op.attrs["axes"]
    if any(ax >= len(shape) for ax in axes):
        _fail(op, f"axes {list(axes)} out of range for rank {len(shape)}")
    if op.attrs.get("keep_dims", False):
        return [tuple(1 if i in axes else d for i, d in enumerate(shape))]
    return [tuple(d for i, d in enumerate(shape) if i not in axes)]


def _pool(op, ins, graph):
    x, a = ins[0], op.attrs
    spatial = _spatial(op, x)
    out = []
    for i, size in enumerate(spatial):
        o = window_out(size, a["kernel"][i], a["strides"][i], 1, a["pads"][2 * i],
                       a["pads"][2 * i + 1], a.get("ceil_mode", False))
        if o <= 0:
            _fail(op, f"spatial output size {o} <= 0")
        out.append(o)
    return [(*x.shape[:2], *out)]


def _pad(op, ins, graph):
    pads = op.attrs["pads"]
    shape = ins[0].shape
    if len(pads) != len(shape):
        _fail(op, f"{len(pads)} pad pairs for rank {len(shape)}")
    if op.attrs.get("mode", "constant") == "reflect" and any(
            max(p) >= d for p, d in zip(pads, shape) if max(p) > 0):
        _fail(op, "reflect padding must be smaller than the padded dimension")
    return [tuple(d + b + e for d, (b, e) in zip(shape, pads))]


def _upsample(op, ins, graph):
    x = ins[0]
    if len(x.shape) != 4:
        raise UnsupportedError(f"upsample {op.name!r}: rank-{len(x.shape)} input is not supported",
                               where=op.source)
    return [(*x.shape[:2], *op.attrs["output_size"])]


def _concat(op, ins, graph):
    axis = op.attrs["axis"]
    first = ins[0].shape
    for t in ins[1:]:
        if len(t.shape) != len(first) or any(
                d != e for i, (d, e) in enumerate(zip(first, t.shape)) if i != axis):
            _fail(op, f"cannot concatenate {list(first)} and {list(t.shape)} on axis {axis}")
    return [tuple(sum(t.shape[axis] for t in ins) if i == axis else d for i, d in enumerate(first))]


def _split(op, ins, graph):
    axis, sizes = op.attrs["axis"], op.attrs["sizes"]
    shape = ins[0].shape
    if sum(sizes) != shape[axis]:
        _fail(op, f"split sizes {list(sizes)} do not add up to {shape[axis]}")
    if len(sizes) != len(op.outputs):
        _fail(op, f"{len(sizes)} split sizes for {len(op.outputs)} outputs")
    return [tuple(s if i == axis else d for i, d in enumerate(shape)) for s in sizes]


def _slice(op, ins, graph):
    shape = ins[0].shape
    a = op.attrs
    if not len(a["begin"]) == len(a["end"]) == len(a["strides"]) == len(shape):
        _fail(op, "begin/end/strides must have one entry per dimension")
    out = []
    for size, b, e, s in zip(shape, a["begin"], a["end"], a["strides"]):
        out.append(len(range(size)[slice(b, None if e < 0 else e, s)]))
    return [tuple(out)]


def _reshape(op, ins, graph):
    shape = tuple(op.attrs["shape"])
    if math.prod(shape) != math.prod(ins[0].shape):
        _fail(op, f"cannot reshape {list(ins[0].shape)} to {list(shape)}")
    return [shape]


def _transpose(op, ins, graph):
    perm = op.attrs["perm"]
    if sorted(perm) != list(range(len(ins[0].shape))):
        _fail(op, f"perm {list(perm)} is not a permutation of rank {len(ins[0].shape)}")
    return [tuple(ins[0].shape[p] for p in perm)]


def _tile(op, ins, graph):
    reps = op.attrs["reps"]
    if len(reps) != len(ins[0].shape):
        _fail(op, f"{len(reps)} reps for rank {len(ins[0].shape)}")
    return [tuple(d * r for d, r in zip(ins[0].shape, reps))]


def _norm_channel(op, ins, graph):
    x = ins[0]
    keys = ("mean", "variance", "gamma", "beta") if op.type == "batch_norm" else ("gamma", "beta")
    channels = x.shape[1] if len(x.shape) > 1 else 0
    for key in keys:
        value = op.attrs.get(key)
        if value is not None and value.shape != (channels,):
            _fail(op, f"{key} has shape {list(value.shape)}, expected [{channels}]")
    return [x.shape]


def _layer_norm(op, ins, graph):
    x = ins[0]
    norm_shape = tuple(x.shape[a] for a in op.attrs["axes"])
    for key in ("gamma", "beta"):
        value = op.attrs.get(key)
        if value is not None and value.shape != norm_shape:
            _fail(op, f"{key} has shape {list(value.shape)}, expected {list(norm_shape)}")
    return [x.shape]


def _prelu(op, ins, graph):
    x, alpha, axis = ins[0], op.attrs["alpha"], op.attrs["axis"]
    if alpha.size not in (1, x.shape[axis]):
        _fail(op, f"{alpha.size} slopes for {x.shape[axis]} channels")
    return [x.shape]


def _softmax(op, ins, graph):
    if op.attrs["axis"] >= len(ins[0].shape):
        _fail(op, f"axis {op.attrs['axis']} out of range")
    return [ins[0].shape]


INFER = {
    **{name: _same for name in UNARY},
    **{name: _binary for name in BINARY},
    **{name: _reduce for name in REDUCE},
    "prelu": _prelu,
    "conv": _conv,
    "conv_transpose": _conv_transpose,
    "linear": _linear,
    "matmul": _matmul,
    "batch_norm": _norm_channel,
    "instance_norm": _norm_channel,
    "layer_norm": _layer_norm,
    "softmax": _softmax,
    "max_pool": _pool,
    "avg_pool": _pool,
    "pad": _pad,
    "upsample": _upsample,
    "concat": _concat,
    "split": _split,
    "slice": _slice,
    "reshape": _reshape,
    "transpose": _transpose,
    "tile": _tile,
}

OP_TYPES = frozenset(INFER)


def infer(op, inputs, graph) -> list[tuple[int, ...]]:
    """Output shapes of `op` given its input `TensorInfo`s."""
    rule = INFER.get(op.type)
    if rule is None:
        raise UnsupportedError(f"IR op type {op.type!r} is unknown", where=op.source)
    shapes = rule(op, inputs, graph)
    if len(shapes) != len(op.outputs):
        _fail(op, f"produces {len(shapes)} outputs but {len(op.outputs)} are named")
    return shapes
