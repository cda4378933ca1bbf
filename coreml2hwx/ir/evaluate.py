"""The numpy reference evaluator of an IR graph.

`evaluate(graph, inputs, fp16=False)` runs every op in order and returns the graph outputs.

- fp32 mode (default): every floating-point tensor is float32; a `cast` between float types keeps
  the value (this is the model's own math, whatever precision the model file declares).
- fp16 mode: models what Core ML on the ANE stores.  Float inputs, constants and op weights are
  rounded to float16 before use; each op computes in float32 (float64 inside transcendental
  functions) from those operands and its float results are rounded to float16.  Outputs are float16
  arrays.  Overflow gives ±inf as IEEE float16 does.

An op may carry `attrs["fused_activation"]` (a unary op type, e.g. "relu", with optional
`attrs["fused_activation_attrs"]`), as `coreml2hwx.passes.fuse_activation` sets it: the activation
is applied to the op's first result before that result is stored (and, in fp16 mode, rounded).

`random_inputs(graph, seed=0)` makes deterministic inputs from the declared shapes: one
`numpy.random.default_rng(seed)`, drawn from in the graph's input order; float inputs get
`standard_normal(shape)` as float32, integer inputs `integers(0, 8, shape)`, bool inputs
`integers(0, 2, shape) != 0`.
"""

from __future__ import annotations

import numpy as np

from coreml2hwx.errors import UsageError
from coreml2hwx.ir.dtypes import numpy_dtype
from coreml2hwx.ir.graph import Graph, Op, constant_value, is_lazy
from coreml2hwx.ir.kernels import KERNELS


def _round16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


def _store(value, dtype: str, fp16: bool) -> np.ndarray:
    value = np.asarray(value)
    if dtype.startswith("float"):
        value = value.astype(np.float32, copy=False)
        return _round16(value) if fp16 else value
    return value.astype(numpy_dtype(dtype), copy=False)


def _check_input(graph: Graph, name: str, value) -> np.ndarray:
    info = graph.tensors[name]
    value = np.asarray(value)
    if value.shape != info.shape:
        if value.size != info.size:
            raise UsageError(f"input {name!r} has shape {list(value.shape)}, the model declares "
                             f"{list(info.shape)}", file=graph.source)
        value = value.reshape(info.shape)
    return value


def _prepared(op: Op, fp16: bool) -> Op:
    """The op with lazy weights loaded and, in fp16 mode, float weight arrays rounded to float16."""
    if not fp16 and not any(is_lazy(v) for v in op.attrs.values()):
        return op
    attrs = {}
    for key, value in op.attrs.items():
        value = constant_value(value)
        if fp16 and isinstance(value, np.ndarray) and value.dtype.kind == "f":
            value = _round16(value)
        attrs[key] = value
    return Op(op.type, op.inputs, op.outputs, attrs, op.name, op.source)


def _last_uses(graph: Graph) -> dict[int, list[str]]:
    keep = set(graph.output_names)
    last: dict[str, int] = {}
    for i, op in enumerate(graph.ops):
        for name in op.inputs:
            last[name] = i
    drop: dict[int, list[str]] = {}
    for name, i in last.items():
        if name not in keep:
            drop.setdefault(i, []).append(name)
    return drop


def evaluate(graph: Graph, inputs: dict, fp16: bool = False, *,
             all_tensors: bool = False) -> dict[str, np.ndarray]:
    """Run the graph; returns {output name: array} (every tensor when `all_tensors`).

    IEEE special values (inf from overflow, nan from log of a negative) are results, not errors.
    """
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        return _evaluate(graph, inputs, fp16, all_tensors)


def _evaluate(graph, inputs, fp16, all_tensors):
    unknown = sorted(set(inputs) - set(graph.input_names))
    if unknown:
        raise UsageError(f"unknown input {unknown[0]!r} (the model's inputs: "
                         f"{', '.join(graph.input_names)})", file=graph.source)
    values: dict[str, np.ndarray] = {}
    for info in graph.inputs:
        if info.name not in inputs:
            raise UsageError(f"no value given for input {info.name!r}", file=graph.source)
        values[info.name] = _store(_check_input(graph, info.name, inputs[info.name]), info.dtype, fp16)
    drop = {} if all_tensors else _last_uses(graph)
    for i, op in enumerate(graph.ops):
        args = [_value(graph, values, name, fp16) for name in op.inputs]
        results = _run_op(_prepared(op, fp16), args)
        for name, result in zip(op.outputs, results):
            values[name] = _store(result, graph.tensors[name].dtype, fp16)
        for name in drop.get(i, ()):
            values.pop(name, None)
    names = list(values) if all_tensors else graph.output_names
    return {name: _final(_value(graph, values, name, fp16), fp16) for name in names}


def _run_op(op: Op, args: list) -> list:
    results = KERNELS[op.type](op, args)
    act = op.attrs.get("fused_activation")
    if act:  # fused into the producing task on the ANE: applied before the result is stored
        fused = Op(act, [], [], dict(op.attrs.get("fused_activation_attrs", {})), op.name, op.source)
        results = KERNELS[act](fused, results[:1]) + list(results[1:])
    return results


def _value(graph: Graph, values: dict, name: str, fp16: bool) -> np.ndarray:
    if name in values:
        return values[name]
    if name in graph.constants:
        value = _store(constant_value(graph.constants[name]), graph.tensors[name].dtype, fp16)
        values[name] = value
        return value
    raise UsageError(f"tensor {name!r} has no value (not an input, constant or op output)",
                     file=graph.source)


def _final(value: np.ndarray, fp16: bool) -> np.ndarray:
    if value.dtype == np.float32 and fp16:
        return value.astype(np.float16)
    return value


def random_inputs(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs for every graph input (rule in the module docstring)."""
    rng = np.random.default_rng(seed)
    out = {}
    for info in graph.inputs:
        kind = numpy_dtype(info.dtype).kind
        if kind == "f":
            out[info.name] = rng.standard_normal(info.shape).astype(np.float32)
        elif kind == "b":
            out[info.name] = rng.integers(0, 2, info.shape) != 0
        else:
            out[info.name] = rng.integers(0, 8, info.shape).astype(numpy_dtype(info.dtype))
    return out
