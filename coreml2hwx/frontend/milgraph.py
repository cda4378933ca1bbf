"""MIL program (from protobuf or text) -> IR graph.

Every MIL op maps to IR ops of the vocabulary in `coreml2hwx.ir.shapes`; compile-time constant ops
(`const`, `constexpr_*`) become graph constants, expanded to dense arrays (affine / blockwise
dequantization, look-up tables, sparse masks).  Each IR output shape is checked against the shape
the MIL program declares, so shape inference and the model must agree.

Blob constants are read when their weight file is present and stay `BlobRef`s otherwise.  Tensor
constants (rank >= 1) written out in the program itself rather than in a blob are marked, because
Apple's compiler refuses inline tensor operands and biases (oracle `binary_add_c64_constant_inline`,
`conv_k1_c512_n1024_s1_bias1`): their graph-constant names are listed in
`graph.metadata["inline_constants"]`, and an op whose weight attributes were inline lists those
attribute names in `op.attrs["inline"]`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from coreml2hwx.errors import ModelError, UnsupportedError
from coreml2hwx.frontend.mil import MilFunction, MilOp, Ref
from coreml2hwx.frontend.weights import expand_constexpr
from coreml2hwx.ir.dtypes import MIL_TO_NUMPY
from coreml2hwx.ir.graph import BlobRef, Graph, constant_value

_MISSING = object()

_UNARY_SAME = {
    "relu", "sigmoid", "tanh", "silu", "softplus", "softsign", "exp", "exp2", "sqrt", "abs", "erf",
    "floor", "ceil", "round", "sign", "square", "sin", "cos", "identity",
}
_BINARY = {
    "add": "add", "sub": "sub", "mul": "mul", "real_div": "real_div", "maximum": "maximum",
    "minimum": "minimum", "pow": "pow", "floor_div": "floor_div", "equal": "equal",
    "not_equal": "not_equal", "less": "less", "less_equal": "less_equal", "greater": "greater",
    "greater_equal": "greater_equal",
}
_REDUCE = {
    "reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod", "reduce_l1_norm",
    "reduce_l2_norm", "reduce_sum_square", "reduce_log_sum", "reduce_log_sum_exp",
}
_GELU_MODES = {"EXACT": "exact", "TANH_APPROXIMATION": "tanh", "SIGMOID_APPROXIMATION": "sigmoid"}
_SAMPLING = {"STRICT_ALIGN_CORNERS": "align_corners", "ALIGN_CORNERS": "align_corners",
             "DEFAULT": "asymmetric", "UNALIGN_CORNERS": "half_pixel"}


def _resolve(value):
    """A blob constant read from its file when the file is there; anything else unchanged."""
    if isinstance(value, BlobRef) and Path(value.path).is_file():
        return value.load()
    return value


def _is_inline_tensor(value) -> bool:
    return isinstance(value, np.ndarray) and value.ndim >= 1


def _np_dtype(mil_type: str) -> str:
    return MIL_TO_NUMPY.get(mil_type, mil_type)


def same_pads(sizes, kernel, strides, dilations, lower=False):
    """Explicit (before, after) pads of "same" padding, flattened (TF / MIL rule)."""
    pads = []
    for i, k, s, d in zip(sizes, kernel, strides, dilations):
        span = (k - 1) * d + 1
        total = max(0, (math.ceil(i / s) - 1) * s + span - i)
        before = (total + 1) // 2 if lower else total // 2
        pads += [before, total - before]
    return tuple(pads)


class MilTranslator:
    """Builds an IR `Graph` from one `MilFunction`."""

    def __init__(self, fn: MilFunction, file=None, name="model"):
        self.fn = fn
        self.file = None if file is None else str(file)
        self.graph = Graph(name, source=self.file)
        self.values: dict = {}  # MIL constant name -> value (numpy, str, BlobRef, Deferred)
        self.labels: dict = {}  # MIL name of a classifier's string label output -> class labels
        self.inline: set[str] = set()  # MIL constants written out in the program (rank >= 1)
        self.inline_keys: list[str] = []  # weight attributes of the current op that were inline

    # -- errors -----------------------------------------------------------------------------------
    def _where(self, op: MilOp):
        return op.name + (f" (line {op.line})" if op.line else "")

    def unsupported(self, op: MilOp, what: str):
        return UnsupportedError(f"MIL op {op.name!r} of type {op.type!r}: {what}", file=self.file,
                                where=self._where(op))

    def corrupt(self, op: MilOp, what: str):
        return ModelError(f"MIL op {op.name!r} of type {op.type!r}: {what}", file=self.file,
                          where=self._where(op))

    # -- parameter access -------------------------------------------------------------------------
    def has(self, op, key):
        return op.params.get(key) is not None

    def const(self, op, key, default=_MISSING):
        """A parameter that must be known at compile time, as numpy / str / lazy constant."""
        value = op.params.get(key)
        if value is None:
            if default is _MISSING:
                raise self.corrupt(op, f"required parameter {key!r} is missing")
            return default
        if isinstance(value, Ref):
            if value.name not in self.values:
                raise self.unsupported(op, f"parameter {key!r} must be a compile-time constant, "
                                           f"but {value.name!r} is computed at run time")
            return self.values[value.name]
        if isinstance(value, list):
            raise self.unsupported(op, f"parameter {key!r} is a tuple")
        return _resolve(value)

    def note_inline(self, op, key):
        """Remember that weight parameter `key` of `op` was an inline tensor."""
        value = op.params.get(key)
        if (isinstance(value, Ref) and value.name in self.inline) or _is_inline_tensor(value):
            self.inline_keys.append(key)

    def array(self, op, key, default=_MISSING):
        value = self.const(op, key, default)
        return value if value is None or isinstance(value, str) else constant_value(value)

    def ints(self, op, key, default=_MISSING):
        value = self.array(op, key, default)
        return None if value is None else tuple(int(v) for v in np.asarray(value).reshape(-1))

    def scalar(self, op, key, default=_MISSING):
        value = self.array(op, key, default)
        if isinstance(value, (str, type(None))):
            return value
        value = np.asarray(value)
        if value.size != 1:
            raise self.corrupt(op, f"parameter {key!r} should be a scalar, has shape {list(value.shape)}")
        return value.reshape(()).item()

    def weight(self, op, key, default=_MISSING):
        """A weight parameter for op attributes: numpy array, or a lazy constant when unresolved."""
        value = self.const(op, key, default)
        self.note_inline(op, key)
        if value is None or isinstance(value, np.ndarray):
            return value
        if isinstance(value, str):
            raise self.corrupt(op, f"parameter {key!r} is a string")
        return value  # BlobRef / Deferred: its shape is known, its data is read on use

    def tensor(self, op, key):
        """The IR tensor name for a tensor operand (a constant one becomes a graph constant)."""
        value = op.params.get(key)
        if value is None:
            raise self.corrupt(op, f"required operand {key!r} is missing")
        return self.tensor_of(op, value, key)

    def tensor_of(self, op, value, key):
        if isinstance(value, Ref):
            name = value.name
            if name in self.graph.tensors:
                return name
            if name in self.values:
                self.graph.add_constant(name, self._const_array(op, self.values[name], key))
                if name in self.inline:
                    self._mark_inline_constant(name)
                return name
            raise self.corrupt(op, f"operand {key!r} refers to undefined value {name!r}")
        name = self.graph.unique_tensor_name(f"{op.name}_{key}")
        value = _resolve(value)
        self.graph.add_constant(name, self._const_array(op, value, key))
        if _is_inline_tensor(value):
            self._mark_inline_constant(name)
        return name

    def _mark_inline_constant(self, name):
        self.graph.metadata.setdefault("inline_constants", []).append(name)

    def _const_array(self, op, value, key):
        if isinstance(value, str):
            raise self.corrupt(op, f"operand {key!r} is a string")
        return value if hasattr(value, "load") else np.asarray(value)

    def x_info(self, op, key="x"):
        return self.graph.tensors[self.tensor(op, key)]

    # -- emitting IR ------------------------------------------------------------------------------
    def emit(self, op: MilOp, ir_type, inputs, attrs=None, outputs=None):
        outs = outputs or [v.name for v in op.outputs]
        dtypes = None if outputs else [_np_dtype(v.dtype) for v in op.outputs]
        attrs = dict(attrs or {})
        if self.inline_keys:
            attrs["inline"] = tuple(self.inline_keys)
        ir_op = self.graph.add_op(ir_type, inputs, outs, attrs, name=op.name,
                                  source=op.name, dtypes=dtypes)
        if outputs is None:
            self.check_shapes(op)
        return ir_op

    def check_shapes(self, op):
        for var in op.outputs:
            declared = tuple(var.shape)
            if any(isinstance(d, str) for d in declared):
                continue
            inferred = self.graph.tensors[var.name].shape
            if inferred != declared:
                raise self.corrupt(op, f"output {var.name!r} is declared {list(declared)} but the op "
                                       f"computes {list(inferred)}")

    def temp(self, op, suffix):
        return self.graph.unique_tensor_name(f"{op.outputs[0].name}__{suffix}")

    # -- driver -----------------------------------------------------------------------------------
    def translate(self) -> Graph:
        self.check_supported()
        for var in self.fn.inputs:
            if var.kind != "tensor":
                raise UnsupportedError(f"input {var.name!r} of kind {var.kind} is not supported",
                                       file=self.file, where=var.name)
            if any(isinstance(d, str) for d in var.shape):
                raise UnsupportedError(f"input {var.name!r} has a flexible shape {list(var.shape)}; "
                                       "only static shapes are supported", file=self.file,
                                       where=var.name)
            self.graph.add_input(var.name, var.shape, _np_dtype(var.dtype))
        for op in self.fn.ops:
            self.inline_keys = []
            try:
                HANDLERS[op.type](self, op)
            except (KeyError, ValueError, IndexError, TypeError, ZeroDivisionError) as err:  # malformed
                raise self.corrupt(op, f"cannot be read ({type(err).__name__}: {err})") from err
        outputs = [name for name in self.fn.outputs if name not in self.labels]
        for name in outputs:
            if name not in self.graph.tensors and name in self.values:
                self.graph.add_constant(name, self._const_array(self.fn.ops[-1], self.values[name], name))
            if name not in self.graph.tensors:
                raise ModelError(f"function output {name!r} is never computed", file=self.file)
        self.graph.set_outputs(outputs)
        return self.graph

    def check_supported(self):
        bad = [op for op in self.fn.ops if op.type not in HANDLERS or op.blocks]
        if bad:
            op = bad[0]
            kinds = sorted({o.type for o in bad})
            more = f" ({len(bad)} unsupported ops in all: {', '.join(kinds)})" if len(bad) > 1 else ""
            what = "control flow is not supported" if op.blocks else "op type is not supported"
            raise UnsupportedError(f"MIL op {op.name!r} of type {op.type!r}: {what}{more}",
                                   file=self.file, where=self._where(op))


# -- handlers -------------------------------------------------------------------------------------

def _const(t: MilTranslator, op: MilOp):
    value = op.params.get("val")
    if value is None:
        raise t.corrupt(op, "const without a value")
    if _is_inline_tensor(value):
        t.inline.add(op.outputs[0].name)
    t.values[op.outputs[0].name] = _resolve(value)


def _constexpr(t: MilTranslator, op: MilOp):
    params = {k: t.const(op, k) for k, v in op.params.items() if v is not None}
    try:
        results = expand_constexpr(op.type, params, [(v.dtype, v.shape) for v in op.outputs])
    except (ValueError, IndexError) as err:
        raise t.corrupt(op, f"cannot expand compressed weights: {err}") from None
    for var, value in zip(op.outputs, results):
        t.values[var.name] = value


def _unary_same(t, op):
    t.emit(op, op.type, [t.tensor(op, "x")])


def _unary(ir_type, **params):
    """params: IR attr name -> (MIL parameter, default)."""
    def handler(t, op):
        attrs = {name: t.scalar(op, key, default) for name, (key, default) in params.items()}
        t.emit(op, ir_type, [t.tensor(op, "x")], attrs)
    return handler


def _relu6(t, op):
    t.emit(op, "clip", [t.tensor(op, "x")], {"min": 0.0, "max": 6.0})


def _gelu(t, op):
    mode = t.scalar(op, "mode", "EXACT")
    if mode not in _GELU_MODES:
        raise t.unsupported(op, f"gelu mode {mode!r}")
    t.emit(op, "gelu", [t.tensor(op, "x")], {"mode": _GELU_MODES[mode]})


def _prelu(t, op):
    x = t.x_info(op)
    alpha = np.asarray(t.array(op, "alpha"), dtype=np.float32).reshape(-1)
    t.note_inline(op, "alpha")
    t.emit(op, "prelu", [x.name], {"alpha": alpha, "axis": 1})


def _cast(t, op):
    dtype = t.scalar(op, "dtype")
    if dtype not in MIL_TO_NUMPY:
        raise t.unsupported(op, f"cast to {dtype!r}")
    t.emit(op, "cast", [t.tensor(op, "x")], {"dtype": MIL_TO_NUMPY[dtype]})


def _binary(t, op):
    t.emit(op, _BINARY[op.type], [t.tensor(op, "x"), t.tensor(op, "y")])


def _select(t, op):
    t.emit(op, "select", [t.tensor(op, "cond"), t.tensor(op, "a"), t.tensor(op, "b")])


def _pads(t, op, x, kernel, strides, dilations):
    n = len(kernel)
    pad_type = t.scalar(op, "pad_type", "valid")
    if pad_type == "valid":
        return (0,) * (2 * n)
    if pad_type == "custom":
        pads = t.ints(op, "pad", (0,) * (2 * n))
        if len(pads) != 2 * n:
            raise t.corrupt(op, f"pad has {len(pads)} entries, expected {2 * n}")
        return pads
    if pad_type in ("same", "same_lower"):
        return same_pads(x.shape[2:], kernel, strides, dilations, lower=pad_type == "same_lower")
    raise t.unsupported(op, f"pad_type {pad_type!r}")


def _strides_dilations(t, op, kernel):
    n = len(kernel)
    return t.ints(op, "strides", (1,) * n), t.ints(op, "dilations", (1,) * n)


def _conv(t, op):
    x = t.x_info(op)
    weight = t.weight(op, "weight")
    kernel = tuple(weight.shape[2:])
    strides, dilations = _strides_dilations(t, op, kernel)
    attrs = {
        "weight": weight, "bias": t.weight(op, "bias", None), "strides": strides,
        "dilations": dilations, "pads": _pads(t, op, x, kernel, strides, dilations),
        "groups": int(t.scalar(op, "groups", 1)),
    }
    t.emit(op, "conv", [x.name], attrs)


def _conv_transpose(t, op):
    x = t.x_info(op)
    weight = t.weight(op, "weight")
    kernel = tuple(weight.shape[2:])
    strides, dilations = _strides_dilations(t, op, kernel)
    n = len(kernel)
    full = [(d - 1) * s + (k - 1) * dl + 1 for d, s, k, dl in zip(x.shape[2:], strides, kernel, dilations)]
    pad_type = t.scalar(op, "pad_type", "valid")
    pads = t.ints(op, "pad", (0,) * (2 * n)) if pad_type == "custom" else (0,) * (2 * n)
    if t.has(op, "output_shape"):
        size = t.ints(op, "output_shape")[2:]
    elif pad_type == "same":
        size = tuple(d * s for d, s in zip(x.shape[2:], strides))
    else:
        size = tuple(f - pads[2 * i] - pads[2 * i + 1] for i, f in enumerate(full))
    if pad_type == "same" and not t.has(op, "pad"):
        pads = tuple(p for f, o in zip(full, size) for p in ((f - o) // 2, f - o - (f - o) // 2))
    attrs = {"weight": weight, "bias": t.weight(op, "bias", None), "strides": strides,
             "dilations": dilations, "pads": pads, "groups": int(t.scalar(op, "groups", 1)),
             "output_size": tuple(int(s) for s in size)}
    t.emit(op, "conv_transpose", [x.name], attrs)


def _linear(t, op):
    t.emit(op, "linear", [t.tensor(op, "x")],
           {"weight": t.weight(op, "weight"), "bias": t.weight(op, "bias", None)})


def _matmul(t, op):
    t.emit(op, "matmul", [t.tensor(op, "x"), t.tensor(op, "y")],
           {"transpose_x": bool(t.scalar(op, "transpose_x", False)),
            "transpose_y": bool(t.scalar(op, "transpose_y", False))})


def _vector(t, op, key, channels, fill):
    value = t.array(op, key, None)
    t.note_inline(op, key)
    if value is None:
        return np.full(channels, fill, np.float32)
    return np.asarray(value, np.float32).reshape(-1)


def _batch_norm(t, op):
    x = t.x_info(op)
    c = x.shape[1]
    attrs = {"mean": _vector(t, op, "mean", c, 0.0), "variance": _vector(t, op, "variance", c, 1.0),
             "gamma": _vector(t, op, "gamma", c, 1.0), "beta": _vector(t, op, "beta", c, 0.0),
             "epsilon": float(t.scalar(op, "epsilon", 1e-5))}
    t.emit(op, "batch_norm", [x.name], attrs)


def _instance_norm(t, op):
    x = t.x_info(op)
    c = x.shape[1]
    attrs = {"gamma": _vector(t, op, "gamma", c, 1.0), "beta": _vector(t, op, "beta", c, 0.0),
             "epsilon": float(t.scalar(op, "epsilon", 1e-5))}
    t.emit(op, "instance_norm", [x.name], attrs)


def _axes(t, op, rank, key="axes", default=_MISSING):
    axes = t.ints(op, key, default)
    if axes is None:
        return tuple(range(rank))
    if any(not -rank <= a < rank for a in axes):
        raise t.corrupt(op, f"{key} {list(axes)} out of range for rank {rank}")
    return tuple(sorted({a % rank for a in axes}))


def _layer_norm(t, op):
    x = t.x_info(op)
    axes = _axes(t, op, len(x.shape), default=None)
    norm_shape = tuple(x.shape[a] for a in axes)

    def param(key):
        value = t.array(op, key, None)
        t.note_inline(op, key)
        return None if value is None else np.asarray(value, np.float32).reshape(norm_shape)
    attrs = {"axes": axes, "gamma": param("gamma"), "beta": param("beta"),
             "epsilon": float(t.scalar(op, "epsilon", 1e-5))}
    t.emit(op, "layer_norm", [x.name], attrs)


def _softmax(t, op):
    x = t.x_info(op)
    axis = int(t.scalar(op, "axis", -1)) % len(x.shape)
    t.emit(op, "softmax", [x.name], {"axis": axis})


def _reduce(t, op):
    x = t.x_info(op)
    attrs = {"axes": _axes(t, op, len(x.shape), default=None),
             "keep_dims": bool(t.scalar(op, "keep_dims", False))}
    t.emit(op, op.type, [x.name], attrs)


def _pool(t, op):
    x = t.x_info(op)
    kernel = t.ints(op, "kernel_sizes")
    strides = t.ints(op, "strides", (1,) * len(kernel))
    attrs = {"kernel": kernel, "strides": strides,
             "pads": _pads(t, op, x, kernel, strides, (1,) * len(kernel)),
             "ceil_mode": bool(t.scalar(op, "ceil_mode", False))}
    if op.type == "avg_pool":
        attrs["exclude_padding"] = bool(t.scalar(op, "exclude_padding_from_average", False))
    t.emit(op, op.type, [x.name], attrs)


def _pad(t, op):
    x = t.x_info(op)
    flat = t.ints(op, "pad")
    rank = len(x.shape)
    if len(flat) % 2 or len(flat) // 2 > rank:
        raise t.corrupt(op, f"pad has {len(flat)} entries for a rank-{rank} input")
    pairs = [(0, 0)] * (rank - len(flat) // 2) + [(flat[2 * i], flat[2 * i + 1])
                                                  for i in range(len(flat) // 2)]
    mode = t.scalar(op, "mode", "constant")
    if mode not in ("constant", "reflect", "replicate"):
        raise t.unsupported(op, f"pad mode {mode!r}")
    t.emit(op, "pad", [x.name], {"pads": tuple(pairs), "mode": mode,
                                 "value": float(t.scalar(op, "constant_val", 0.0))})


def _upsample_size(t, op, x):
    sh = float(t.scalar(op, "scale_factor_height", 1))
    sw = float(t.scalar(op, "scale_factor_width", 1))
    return (int(math.floor(x.shape[2] * sh)), int(math.floor(x.shape[3] * sw)))


def _upsample_nearest(t, op):
    x = t.x_info(op)
    t.emit(op, "upsample", [x.name], {"mode": "nearest", "output_size": _upsample_size(t, op, x),
                                      "coordinates": "asymmetric"})


def _upsample_bilinear(t, op):
    x = t.x_info(op)
    align = bool(t.scalar(op, "align_corners", True))
    half = bool(t.scalar(op, "half_pixel_centers", not align))
    coords = "align_corners" if align else ("half_pixel" if half else "asymmetric")
    t.emit(op, "upsample", [x.name], {"mode": "bilinear", "output_size": _upsample_size(t, op, x),
                                      "coordinates": coords})


def _resize_bilinear(t, op):
    x = t.x_info(op)
    mode = t.scalar(op, "sampling_mode", "DEFAULT")
    if mode not in _SAMPLING:
        raise t.unsupported(op, f"sampling_mode {mode!r}")
    size = (int(t.scalar(op, "target_size_height", 1)), int(t.scalar(op, "target_size_width", 1)))
    t.emit(op, "upsample", [x.name], {"mode": "bilinear", "output_size": size,
                                      "coordinates": _SAMPLING[mode]})


def _resize_nearest(t, op):
    x = t.x_info(op)
    size = (int(t.scalar(op, "target_size_height", 1)), int(t.scalar(op, "target_size_width", 1)))
    t.emit(op, "upsample", [x.name], {"mode": "nearest", "output_size": size,
                                      "coordinates": "asymmetric"})


def _concat(t, op):
    values = op.params.get("values")
    values = values if isinstance(values, list) else [values]
    names = [t.tensor_of(op, v, "values") for v in values]
    if bool(t.scalar(op, "interleave", False)):
        raise t.unsupported(op, "interleaved concat")
    rank = len(t.graph.tensors[names[0]].shape)
    t.emit(op, "concat", names, {"axis": int(t.scalar(op, "axis")) % rank})


def _split(t, op):
    x = t.x_info(op)
    axis = int(t.scalar(op, "axis")) % len(x.shape)
    sizes = t.ints(op, "split_sizes", None)
    if sizes is None:
        n = int(t.scalar(op, "num_splits", len(op.outputs)))
        if x.shape[axis] % n:
            # MIL splits a length that does not divide evenly with a shorter last piece.
            step = math.ceil(x.shape[axis] / n)
            sizes = tuple(min(step, x.shape[axis] - i * step) for i in range(n))
        else:
            sizes = (x.shape[axis] // n,) * n
    t.emit(op, "split", [x.name], {"axis": axis, "sizes": sizes})


def _masked(t, op, key, rank, default):
    value = t.ints(op, key, None)
    return tuple(bool(v) for v in value) if value is not None else (default,) * rank


def _slice_by_index(t, op):
    x = t.x_info(op)
    rank = len(x.shape)
    begin, end = t.ints(op, "begin"), t.ints(op, "end")
    stride = t.ints(op, "stride", (1,) * rank)
    begin_mask = _masked(t, op, "begin_mask", rank, False)
    end_mask = _masked(t, op, "end_mask", rank, False)
    squeeze = _masked(t, op, "squeeze_mask", rank, False)
    starts, stops = [], []
    for i, size in enumerate(x.shape):
        s = stride[i]
        if s == 0:
            raise t.corrupt(op, "slice stride 0")
        start, stop, _ = slice(None if begin_mask[i] else begin[i],
                               None if end_mask[i] else end[i], s).indices(size)
        if squeeze[i]:
            start = begin[i] % size if not begin_mask[i] else (0 if s > 0 else size - 1)
            stop = start + 1 if s > 0 else start - 1
        starts.append(start)
        stops.append(stop)
    _emit_slice(t, op, x, starts, stops, stride, squeeze)


def _emit_slice(t, op, x, starts, stops, strides, squeeze=None):
    attrs = {"begin": tuple(starts), "end": tuple(stops), "strides": tuple(strides)}
    if squeeze and any(squeeze):
        mid = t.temp(op, "slice")
        t.emit(op, "slice", [x.name], attrs, outputs=[mid])
        shape = tuple(d for d, sq in zip(t.graph.tensors[mid].shape, squeeze) if not sq)
        t.graph.add_op("reshape", [mid], [op.outputs[0].name], {"shape": shape},
                       name=f"{op.name}/squeeze", source=op.name,
                       dtypes=[_np_dtype(op.outputs[0].dtype)])
        t.check_shapes(op)
    else:
        t.emit(op, "slice", [x.name], attrs)


def _slice_by_size(t, op):
    x = t.x_info(op)
    begin, size = t.ints(op, "begin"), t.ints(op, "size")
    starts = [b % d if d else 0 for b, d in zip(begin, x.shape)]
    stops = [d if s == -1 else b + s for b, s, d in zip(starts, size, x.shape)]
    _emit_slice(t, op, x, starts, stops, (1,) * len(x.shape))


def _reshape_like(t, op):
    """reshape / squeeze / expand_dims / flatten2d: the declared output shape is the target."""
    x = t.x_info(op)
    declared = tuple(op.outputs[0].shape)
    if any(isinstance(d, str) for d in declared):
        if op.type != "reshape":
            raise t.unsupported(op, "dynamic output shape")
        declared = _reshape_target(t, op, x)
    t.emit(op, "reshape", [x.name], {"shape": declared})


def _reshape_target(t, op, x):
    shape = list(t.ints(op, "shape"))
    for i, d in enumerate(shape):
        if d == 0:
            shape[i] = x.shape[i]
    if -1 in shape:
        known = math.prod(d for d in shape if d != -1)
        shape[shape.index(-1)] = math.prod(x.shape) // known
    return tuple(shape)


def _transpose(t, op):
    x = t.x_info(op)
    perm = tuple(p % len(x.shape) for p in t.ints(op, "perm"))
    t.emit(op, "transpose", [x.name], {"perm": perm})


def _classify(t, op):
    """A classifier's (label, probabilities): the probabilities pass through; the string label is
    not a tensor, so its class labels go to `graph.metadata["classifier"]`."""
    if len(op.outputs) != 2:
        raise t.corrupt(op, f"classify has {len(op.outputs)} outputs, expected 2")
    label, probs = op.outputs
    classes = op.params.get("classes")
    labels = [str(c) if isinstance(c, str) else np.asarray(c).item() for c in classes] \
        if isinstance(classes, list) else []
    t.graph.add_op("identity", [t.tensor(op, "probabilities")], [probs.name], name=op.name,
                   source=op.name)
    t.labels[label.name] = labels
    t.graph.metadata["classifier"] = {"labels": labels, "probabilities": probs.name,
                                      "label_output": label.name}


def _tile(t, op):
    t.emit(op, "tile", [t.tensor(op, "x")], {"reps": t.ints(op, "reps")})


HANDLERS = {
    "const": _const,
    **{name: _constexpr for name in (
        "constexpr_affine_dequantize", "constexpr_blockwise_shift_scale", "constexpr_lut_to_dense",
        "constexpr_sparse_to_dense", "constexpr_cast", "constexpr_lut_to_sparse",
        "constexpr_sparse_blockwise_shift_scale")},
    **{name: _unary_same for name in _UNARY_SAME},
    "log": _unary("log", epsilon=("epsilon", 1e-45)),
    "rsqrt": _unary("rsqrt", epsilon=("epsilon", 1e-12)),
    "inverse": _unary("reciprocal", epsilon=("epsilon", 1e-4)),
    "clip": _unary("clip", min=("alpha", _MISSING), max=("beta", _MISSING)),
    "relu6": _relu6,
    "leaky_relu": _unary("leaky_relu", alpha=("alpha", 0.01)),
    "elu": _unary("elu", alpha=("alpha", 1.0)),
    "thresholded_relu": _unary("thresholded_relu", alpha=("alpha", 1.0)),
    "sigmoid_hard": _unary("hard_sigmoid", alpha=("alpha", 0.2), beta=("beta", 0.5)),
    "scaled_tanh": _unary("scaled_tanh", alpha=("alpha", 1.0), beta=("beta", 1.0)),
    "linear_activation": _unary("affine", alpha=("alpha", _MISSING), beta=("beta", 0.0)),
    "gelu": _gelu,
    "prelu": _prelu,
    "cast": _cast,
    **{name: _binary for name in _BINARY},
    "select": _select,
    "conv": _conv,
    "conv_transpose": _conv_transpose,
    "linear": _linear,
    "matmul": _matmul,
    "batch_norm": _batch_norm,
    "instance_norm": _instance_norm,
    "layer_norm": _layer_norm,
    "softmax": _softmax,
    **{name: _reduce for name in _REDUCE},
    "max_pool": _pool,
    "avg_pool": _pool,
    "pad": _pad,
    "upsample_nearest_neighbor": _upsample_nearest,
    "upsample_bilinear": _upsample_bilinear,
    "resize_bilinear": _resize_bilinear,
    "resize_nearest_neighbor": _resize_nearest,
    "concat": _concat,
    "split": _split,
    "slice_by_index": _slice_by_index,
    "slice_by_size": _slice_by_size,
    "reshape": _reshape_like,
    "squeeze": _reshape_like,
    "expand_dims": _reshape_like,
    "flatten2d": _reshape_like,
    "transpose": _transpose,
    "tile": _tile,
    "classify": _classify,
}

SUPPORTED_MIL_OPS = frozenset(HANDLERS)


def mil_to_graph(fn: MilFunction, file=None, name="model") -> Graph:
    return MilTranslator(fn, file, name).translate()
