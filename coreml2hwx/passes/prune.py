"""Drop ops and constants whose results nothing reads (dead code after folding and fusing)."""

from __future__ import annotations

from coreml2hwx.passes import register


@register("prune")
def prune(graph):
    live = set(graph.output_names)
    kept = []
    for op in reversed(graph.ops):
        if any(out in live for out in op.outputs):
            kept.append(op)
            live.update(op.inputs)
    removed = len(graph.ops) - len(kept)
    graph.ops = kept[::-1]
    for name in [n for n in graph.constants if n not in live]:
        del graph.constants[name]
    for name in [n for n in graph.tensors
                 if n not in live and n not in graph.input_names]:
        del graph.tensors[name]
    return f"removed {removed} dead ops" if removed else None
