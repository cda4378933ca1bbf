"""The IR graph: typed, static-shaped tensors, constants, and ops in topological order.

A `Graph` holds
- `tensors`: every named value, name -> `TensorInfo(name, shape, dtype)`;
- `constants`: name -> numpy array (or an unresolved `BlobRef`) for constant tensors that ops read
  through `op.inputs` (e.g. the second operand of `add`, or a constant `matmul` operand);
- `inputs` / `outputs`: lists of `TensorInfo` in the model's declared order;
- `ops`: `Op(type, inputs, outputs, attrs, name, source)` in topological order.  `op.source` is the
  model layer (NeuralNetwork layer / MIL op name) the op comes from; `op.name` is that same name,
  made unique (`layer/suffix`) when one layer becomes several IR ops.

Weights that belong to an op (conv / linear weight and bias, normalization parameters, prelu slopes)
sit in `op.attrs` as numpy arrays; small parameters (axes, strides, pads, alpha) are Python ints,
floats and tuples.  The vocabulary of op types and their attributes is documented in
`coreml2hwx.ir.shapes`.

A constant (in `constants` or a weight in `op.attrs`) may be *lazy*: a `BlobRef` (or any object with
`shape`, `dtype` and `load()`) whose data is read on first use -- MIL text parsed without its weight
file gives these.  `constant_value(v)` / `graph.constant(name)` return the array either way.

Ranks are the model's own.  `coreml2hwx.ir.layout.ane_shape` gives the [N, C, H, W] view the ANE uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from coreml2hwx.errors import ModelError


@dataclass(frozen=True)
class TensorInfo:
    """A named tensor: static shape (tuple of ints) and numpy dtype name ("float32", "float16", ...)."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class Op:
    """One operation.  `name` is unique in the graph; `source` names the model layer it came from."""

    type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)
    name: str = ""
    source: str = ""


@dataclass
class BlobRef:
    """A constant kept in a weight file and not read yet (e.g. MIL text parsed without its weights).

    `path` is the weight file, `offset` the byte offset of the blob's 64-byte metadata record, `dtype`
    the MIL element type name and `shape` the tensor shape.  `load()` reads it with `reader` (the
    frontend's MILBlob reader); it raises ModelError when the file is missing or malformed.
    """

    path: str
    offset: int
    dtype: str
    shape: tuple[int, ...]
    reader: Callable[["BlobRef"], np.ndarray] | None = field(default=None, repr=False, compare=False)

    def load(self) -> np.ndarray:
        if self.reader is None:
            raise ModelError(f"constant at offset {self.offset} of this weight file was never "
                             "resolved", file=self.path)
        return self.reader(self)


def is_lazy(value) -> bool:
    """True for a constant whose data is read on demand (`BlobRef` or any object with `load()`)."""
    return hasattr(value, "load") and hasattr(value, "shape")


def constant_value(value) -> np.ndarray:
    """The numpy array of a constant, reading a lazy one (`BlobRef`, ...) on demand."""
    return value.load() if is_lazy(value) else value


class Graph:
    """A static-shaped dataflow graph; see the module docstring."""

    def __init__(self, name: str = "model", source: str | None = None):
        self.name = name
        self.source = source  # the model file it was read from
        self.tensors: dict[str, TensorInfo] = {}
        self.constants: dict[str, np.ndarray | BlobRef] = {}
        self.inputs: list[TensorInfo] = []
        self.outputs: list[TensorInfo] = []
        self.ops: list[Op] = []
        self.metadata: dict = {}
        self._op_name_set: set[str] = set()

    # -- queries ----------------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def is_constant(self, name: str) -> bool:
        return name in self.constants

    def constant(self, name: str) -> np.ndarray:
        return constant_value(self.constants[name])

    def producers(self) -> dict[str, Op]:
        """Tensor name -> the op that writes it."""
        return {out: op for op in self.ops for out in op.outputs}

    def consumers(self) -> dict[str, list[Op]]:
        """Tensor name -> ops that read it, in graph order."""
        users: dict[str, list[Op]] = {}
        for op in self.ops:
            for name in op.inputs:
                users.setdefault(name, []).append(op)
        return users

    def op_types(self) -> list[str]:
        return sorted({op.type for op in self.ops})

    def copy(self) -> "Graph":
        """An independent copy for passes to rewrite: new op / attribute / tensor containers, the
        same (read-only by convention) weight arrays."""
        import copy as _copy

        other = Graph(self.name, self.source)
        other.tensors = dict(self.tensors)
        other.constants = dict(self.constants)
        other.inputs, other.outputs = list(self.inputs), list(self.outputs)
        other.ops = [Op(op.type, list(op.inputs), list(op.outputs), dict(op.attrs), op.name, op.source)
                     for op in self.ops]
        other.metadata = _copy.deepcopy(self.metadata)
        other._op_name_set = set(self._op_name_set)
        return other

    # -- construction -----------------------------------------------------------------------------
    def add_input(self, name: str, shape, dtype: str = "float32") -> TensorInfo:
        info = self._define(name, shape, dtype)
        self.inputs.append(info)
        return info

    def add_constant(self, name: str, value, dtype: str | None = None) -> TensorInfo:
        if is_lazy(value):
            info = self._define(name, value.shape, dtype or _numpy_name(value.dtype))
        else:
            value = np.asarray(value)
            info = self._define(name, value.shape, dtype or value.dtype.name)
        self.constants[name] = value
        return info

    def add_op(self, op_type: str, inputs, outputs, attrs=None, *, name=None, source=None,
               dtypes=None) -> Op:
        """Append an op; output shapes come from shape inference (`coreml2hwx.ir.shapes`)."""
        from coreml2hwx.ir.shapes import infer

        op = Op(op_type, list(inputs), list(outputs), dict(attrs or {}),
                name=self.unique_op_name(name or outputs[0]), source=source or name or outputs[0])
        for tensor in op.inputs:
            if tensor not in self.tensors:
                raise ModelError(f"op {op.name!r} ({op_type}) reads undefined tensor {tensor!r}",
                                 file=self.source, where=op.source)
        in_infos = [self.tensors[t] for t in op.inputs]
        shapes = infer(op, in_infos, self)
        for i, (out, shape) in enumerate(zip(op.outputs, shapes)):
            dtype = dtypes[i] if dtypes else _result_dtype(op_type, in_infos, op.attrs)
            self._define(out, shape, dtype)
        self.ops.append(op)
        return op

    def set_outputs(self, names) -> None:
        self.outputs = [self.tensors[n] for n in names]

    def unique_op_name(self, base: str) -> str:
        taken = self._op_names()
        if base not in taken:
            taken.add(base)
            return base
        i = 1
        while f"{base}_{i}" in taken:
            i += 1
        taken.add(f"{base}_{i}")
        return f"{base}_{i}"

    def unique_tensor_name(self, base: str) -> str:
        if base not in self.tensors:
            return base
        i = 1
        while f"{base}_{i}" in self.tensors:
            i += 1
        return f"{base}_{i}"

    def _op_names(self) -> set[str]:
        if len(self._op_name_set) < len(self.ops):  # ops appended from outside (e.g. by a pass)
            self._op_name_set |= {op.name for op in self.ops}
        return self._op_name_set

    def _define(self, name: str, shape, dtype: str) -> TensorInfo:
        if name in self.tensors:
            raise ModelError(f"tensor {name!r} is defined twice", file=self.source, where=name)
        info = TensorInfo(name, tuple(int(d) for d in shape), dtype)
        self.tensors[name] = info
        return info

    def __repr__(self) -> str:
        return (f"Graph({self.name!r}, {len(self.inputs)} inputs, {len(self.outputs)} outputs, "
                f"{len(self.ops)} ops)")


def _numpy_name(dtype: str) -> str:
    from coreml2hwx.ir.dtypes import numpy_dtype

    return numpy_dtype(dtype).name


_BOOL_RESULT = {"equal", "not_equal", "less", "less_equal", "greater", "greater_equal", "logical_not",
                "logical_and", "logical_or", "logical_xor"}


def _result_dtype(op_type: str, inputs: list[TensorInfo], attrs: dict) -> str:
    if op_type == "cast":
        return attrs["dtype"]
    if op_type in _BOOL_RESULT:
        return "bool"
    floats = [t.dtype for t in inputs if t.dtype.startswith("float")]
    if floats:
        return floats[0]
    return inputs[0].dtype if inputs else "float32"
