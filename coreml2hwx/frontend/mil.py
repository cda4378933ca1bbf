"""A MIL program as both MIL sources give it (the protobuf of an ML Program, or MIL text).

- `MilProgram(version, functions)`, `MilFunction(name, opset, inputs, ops, outputs)`;
- `MilOp(type, outputs, params, name, line)`: `params` merges the op's arguments and attributes
  (all but `name`); a parameter value is a `Ref(name)` to another value, an immediate (numpy array,
  0-d for scalars; `str` for strings; `BlobRef` for weights in a blob file), or a list of those (a
  tuple argument such as `concat(values = (a, b))`);
- `MilVar(name, dtype, shape)`: dtype is a MIL type name (fp16, fp32, int32, bool, string, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Ref:
    name: str


@dataclass
class MilVar:
    name: str
    dtype: str
    shape: tuple  # ints; a str entry is a symbolic dimension
    kind: str = "tensor"  # "tensor", "list", "tuple", "dict" or "state"


@dataclass
class MilOp:
    type: str
    outputs: list[MilVar]
    params: dict
    name: str
    line: int | None = None
    blocks: int = 0  # nested blocks (control flow); we do not support them


@dataclass
class MilFunction:
    name: str
    opset: str
    inputs: list[MilVar]
    ops: list[MilOp]
    outputs: list[str]


@dataclass
class MilProgram:
    version: str
    functions: dict[str, MilFunction] = field(default_factory=dict)

    def main(self) -> MilFunction:
        if "main" in self.functions:
            return self.functions["main"]
        return next(iter(self.functions.values()))
