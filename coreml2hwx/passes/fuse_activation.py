"""Fuse a relu into the task that produces its input, where Apple's H13 programs do so.

Evidence (../shared/oracles/h13): `conv_k1_c64_n64_s8_bias0_relu` is one NE task with
MACCfg.NonlinearMode = relu; `chain_add_relu_c512` is one PE task with PE.Cfg.ReluEn.  The fused op
keeps its type and gets `attrs["fused_activation"] = "relu"` (the reference evaluator applies it).
Other activations stay separate tasks: no Apple program shows them fused.
"""

from __future__ import annotations

from coreml2hwx.passes import register

FUSES_RELU = {"conv", "add"}


@register("fuse_activation")
def fuse_activation(graph):
    producers, consumers = graph.producers(), graph.consumers()
    fused = 0
    for act in [op for op in graph.ops if op.type == "relu"]:
        src = producers.get(act.inputs[0])
        if (src is None or src.type not in FUSES_RELU or src.attrs.get("fused_activation")
                or len(consumers.get(act.inputs[0], [])) != 1 or act.inputs[0] in graph.output_names):
            continue
        if src.type == "add" and not _two_runtime_same_shape(graph, src):
            continue  # Apple's add+relu task is the two-operand PE form only
        src.attrs["fused_activation"] = "relu"
        src.outputs[0] = act.outputs[0]  # the result keeps the name the model gives it
        del graph.tensors[act.inputs[0]]
        graph.ops.remove(act)
        fused += 1
    return f"fused {fused} relu into their producers" if fused else None


def _two_runtime_same_shape(graph, op) -> bool:
    a, b = op.inputs
    return (not graph.is_constant(a) and not graph.is_constant(b)
            and graph.tensors[a].shape == graph.tensors[b].shape)
