"""H13 (M1) code generation: IR graph -> Program, by rules derived from Apple's compiler output.

Public API
- `lower(graph) -> Program`: a single-segment graph of supported ops; anything outside the rules
  raises `UnsupportedError` naming the op, its shape and the rule it falls outside.
- `lower_op(ctx, op) -> list[TaskSpec]`: the tasks of one op (building block for `lower`).

Evidence: ../shared/oracles/h13 (Apple's ane-compile-hwx, macOS 26.6.2) and
../shared/docs/h13-register-census.md; each module cites the rules it applies.
"""

from __future__ import annotations

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.ir.graph import Graph
from coreml2hwx.program import Program
from coreml2hwx.target.h13.assemble import assemble
from coreml2hwx.target.h13.context import Context, where
from coreml2hwx.target.h13 import elementwise

__all__ = ["lower", "lower_op", "Context"]


def lower(graph: Graph) -> Program:
    ctx = Context(graph)
    specs = []
    for op in graph.ops:
        specs.extend(lower_op(ctx, op))
    constants = bytes(ctx.constants) if ctx.constants else None
    return assemble(specs, ctx.tensors(), constants)


def lower_op(ctx: Context, op) -> list:
    if op.type in elementwise.PE_OPS:
        return [elementwise.binary_same_shape(ctx, op)]
    raise UnsupportedError(f"{op.type} {_shapes(ctx, op)}: no h13 lowering rule for this op yet",
                           where=where(op))


def _shapes(ctx: Context, op) -> str:
    return " x ".join("x".join(map(str, ctx.graph.tensors[t].shape)) for t in op.inputs)
