"""Evaluate ops whose inputs are all constants, at compile time, with the reference kernels."""

from __future__ import annotations

from coreml2hwx.ir.graph import constant_value
from coreml2hwx.ir.kernels import KERNELS
from coreml2hwx.passes import register


@register("fold_constants")
def fold_constants(graph):
    folded, kept = 0, []
    for op in graph.ops:
        if op.inputs and all(graph.is_constant(name) for name in op.inputs) and op.type in KERNELS:
            values = KERNELS[op.type](op, [constant_value(graph.constants[n]) for n in op.inputs])
            for name, value in zip(op.outputs, values):
                graph.constants[name] = value.astype(graph.tensors[name].dtype, copy=False)
            folded += 1
        else:
            kept.append(op)
    graph.ops = kept
    return f"folded {folded} constant ops" if folded else None
