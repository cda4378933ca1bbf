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
from coreml2hwx.target.h13 import activation, binary, conv, elementwise, matmul, norm, reduce

__all__ = ["lower", "lower_op", "count_tasks", "Context"]


def lower(graph: Graph) -> Program:
    ctx, specs = lower_specs(graph)
    constants = bytes(ctx.constants) if ctx.constants else None
    return assemble(specs, ctx.tensors(), constants)


def count_tasks(graph: Graph) -> int:
    """The number of tasks `lower(graph)` emits, without encoding them (whole-model placement
    asks this of every op; raises UnsupportedError exactly where `lower` does before encoding)."""
    return len(lower_specs(graph)[1])


def lower_specs(graph: Graph):
    """(Context, [TaskSpec]) of a graph: everything `lower` does before assembling."""
    ctx = Context(graph)
    specs = []
    ops = list(graph.ops)
    i = 0
    while i < len(ops):
        fused = fuse(ctx, ops[i], ops[i + 1] if i + 1 < len(ops) else None)
        if fused is not None:
            specs.extend(fused)
            i += 2
            continue
        specs.extend(lower_op(ctx, ops[i]))
        i += 1
    # A transposed copy kept in L2 names the scratch slot 3 without writing it (WBE, no tile DMA
    # destination): matmul's, and reduce over C of one row (upstream reduce_probe_sum_ax1_1x8x1x64).
    names_scratch = any(s.header.get("WBE") and s.dst is None for s in specs)
    if ctx.scratch and (names_scratch or any(op.type in ("matmul", "linear") for op in ops)):
        raise UnsupportedError("a transposed copy kept in L2 names the DRAM scratch slot 3 that "
                               "chained intermediates need too: not combined on h13 yet")
    return ctx, specs


def fuse(ctx: Context, op, nxt) -> list | None:
    """Two-op chains Apple compiles as one unit (census §3.1, README "chains"):
    conv -> relu and add -> relu fuse into one task (`conv_k1_c64_n64_s8_bias0_relu`,
    `chain_add_relu_c512`); x + f(x) with a table activation f keeps x in L2 for a PE add
    (`env_chain_residual_{gelu,silu}_1x768x1x1`)."""
    if nxt is None or op.outputs[0] not in nxt.inputs or _used_later(ctx, op, nxt):
        return None
    if nxt.type == "relu" and op.type == "conv":
        return conv.conv_tasks(ctx, op, relu=True, output=nxt.outputs[0])
    if nxt.type == "relu" and op.type in binary.SAME_SHAPE_RELU and not any(
            ctx.is_constant(t) for t in op.inputs):
        if ctx.shape(op.inputs[0]) == ctx.shape(op.inputs[1]):
            return [elementwise.binary_same_shape(ctx, op, relu=True, output=nxt.outputs[0])]
    if nxt.type == "add" and op.type in activation.ACTIVATIONS and op.inputs[0] in nxt.inputs:
        return binary.residual(ctx, op, nxt)
    return None


def _used_later(ctx: Context, op, nxt) -> bool:
    users = ctx.graph.consumers().get(op.outputs[0], [])
    return len(users) != 1 or op.outputs[0] in ctx.graph.output_names


def lower_op(ctx: Context, op) -> list:
    if op.attrs.get("fused_activation"):
        return fused_activation(ctx, op)
    if op.type == "conv":
        return conv.conv_tasks(ctx, op)
    if op.type == "matmul":
        return matmul.lower_matmul(ctx, op)
    if op.type == "softmax":
        return norm.softmax(ctx, op)
    if op.type == "layer_norm":
        return norm.layer_norm(ctx, op)
    if op.type in reduce.REDUCTIONS:
        return reduce.lower_reduce(ctx, op)
    if op.type in binary.PE_BINARY_OPS:
        return binary.lower_binary(ctx, op)
    if op.type == "abs":
        return [elementwise.unary_pe(ctx, op, op_fields=dict(Cond=1))]
    if op.type == "concat":
        return activation.concat(ctx, op)
    if op.type in activation.ACTIVATIONS:
        return [activation.activation(ctx, op)]
    if op.type == "linear" and "bias" in ctx.inline_attrs(op):
        raise UnsupportedError(f"linear {_shapes(ctx, op)}: an inline bias tensor; Apple's h13 "
                               "compiler refuses it (upstream oracle linear_k256_n512)",
                               where=where(op))
    if op.type == "linear":
        return matmul.lower_linear(ctx, op)
    raise UnsupportedError(f"{op.type} {_shapes(ctx, op)}: no h13 lowering rule for this op yet",
                           where=where(op))


def fused_activation(ctx: Context, op) -> list:
    """An op the `fuse_activation` pass gave a relu: the two task forms Apple fuses a relu into
    (conv: MACCfg.NonlinearMode 1, `conv_k1_c64_n64_s8_bias0_relu`; a same-shape runtime add:
    PE.Cfg.ReluEn, `chain_add_relu_c512`).  Any other producer is refused rather than run
    without its activation."""
    act = op.attrs["fused_activation"]
    if act == "relu" and op.type == "conv":
        return conv.conv_tasks(ctx, op, relu=True)
    if (act == "relu" and op.type in binary.SAME_SHAPE_RELU
            and not any(ctx.is_constant(t) for t in op.inputs)
            and ctx.shape(op.inputs[0]) == ctx.shape(op.inputs[1]) == ctx.shape(op.outputs[0])):
        return [elementwise.binary_same_shape(ctx, op, relu=True)]
    raise UnsupportedError(f"{op.type} {_shapes(ctx, op)} with a fused {act}: no Apple program "
                           "shows this activation fused into this task form", where=where(op))


def _shapes(ctx: Context, op) -> str:
    return " x ".join("x".join(map(str, ctx.graph.tensors[t].shape)) for t in op.inputs)
