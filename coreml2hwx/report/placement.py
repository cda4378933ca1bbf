"""Per-layer placement report: where each layer runs, why, its tasks and an estimated cost.

The cost is a roofline estimate, not a measurement: max(MACs / peak MAC rate, bytes moved / DRAM
bandwidth) with the assumptions in `ASSUMPTIONS`, so layers can be compared with each other.
"""

from __future__ import annotations

import html

import numpy as np

# M1 (H13): Apple quotes 11 TOPS for the 16-core ANE; counting 2 ops per fp16 MAC gives 5.5e12
# MAC/s at best.  DRAM: M1's LPDDR4X-4266 on a 128-bit bus, about 68 GB/s, of which we assume 60.
PEAK_MACS = {"h13": 5.5e12, "h14": 7.9e12}
BANDWIDTH = {"h13": 60e9, "h14": 90e9}
ASSUMPTIONS = ("estimated cost = max(MACs / peak MAC rate, bytes read+written / DRAM bandwidth); "
               "peak and bandwidth per target: " + ", ".join(
                   f"{t} {PEAK_MACS[t] / 1e12:.1f} TMAC/s, {BANDWIDTH[t] / 1e9:.0f} GB/s"
                   for t in PEAK_MACS) + "; fp16 tensors")


def macs(graph, op) -> int:
    """Multiply-accumulates of one op (elementwise ops count one per output element)."""
    out = graph.tensors[op.outputs[0]]
    n_out = int(np.prod(out.shape, dtype=np.int64))
    if op.type in ("conv", "conv_transpose"):
        w = op.attrs["weight"].shape
        per_output = int(np.prod(w[1:], dtype=np.int64))
        if op.type == "conv_transpose":
            return int(np.prod(graph.tensors[op.inputs[0]].shape, dtype=np.int64)) * int(
                np.prod(w[1:], dtype=np.int64))
        return n_out * per_output
    if op.type == "linear":
        return n_out * op.attrs["weight"].shape[1]
    if op.type == "matmul":
        a = graph.tensors[op.inputs[0]].shape
        k = a[-2] if op.attrs.get("transpose_x") else a[-1]
        return n_out * k
    return n_out


def bytes_moved(graph, op) -> int:
    names = [t for t in op.inputs + op.outputs if not graph.is_constant(t)]
    total = sum(int(np.prod(graph.tensors[t].shape, dtype=np.int64)) for t in names)
    weights = sum(v.size for v in op.attrs.values() if isinstance(v, np.ndarray))
    return 2 * (total + weights)


def cost_seconds(graph, op, target) -> float:
    return max(macs(graph, op) / PEAK_MACS.get(target, 5.5e12),
               bytes_moved(graph, op) / BANDWIDTH.get(target, 60e9))


def rows(compiled):
    graph = compiled.graph
    seg_of = {op.name: s.index for s in compiled.segments for op in s.ops}
    for op in graph.ops:
        p = compiled.placement[op.name]
        shape = "x".join(map(str, graph.tensors[op.outputs[0]].shape))
        yield {
            "layer": op.source or op.name, "op": op.name, "type": op.type, "shape": shape,
            "device": p.device, "reason": p.reason, "tasks": p.tasks,
            "segment": seg_of.get(op.name), "macs": macs(graph, op),
            "cost_us": cost_seconds(graph, op, compiled.target) * 1e6 if p.device == "ane" else None,
        }


def _cost(row) -> str:
    return "" if row["cost_us"] is None else f"{row['cost_us']:.2f}"


def placement_text(compiled) -> str:
    table = list(rows(compiled))
    on_ane = sum(r["device"] == "ane" for r in table)
    lines = [f"{compiled.model.name}: {len(table)} layers, {on_ane} on the {compiled.target} ANE, "
             f"{len(table) - on_ane} on the host, {len(compiled.segments)} segment(s)",
             f"({ASSUMPTIONS})", ""]
    width = max([len(r["layer"]) for r in table] + [5])
    lines.append(f"{'layer':<{width}}  {'type':<14} {'output':<16} {'where':<5} {'tasks':>5} "
                 f"{'est. us':>8}  reason")
    for r in table:
        lines.append(f"{r['layer']:<{width}}  {r['type']:<14} {r['shape']:<16} {r['device']:<5} "
                     f"{r['tasks']:>5} {_cost(r):>8}  {r['reason']}")
    total = sum(r["cost_us"] or 0 for r in table)
    lines.append(f"\nestimated ANE time: {total:.1f} us (sum over ANE layers)")
    cuts = [entry for entry in compiled.log if ": cut into " in entry]
    if cuts:
        lines.append(f"\n{len(cuts)} ANE segment(s) cut into several programs (each op alone "
                     "lowers, together they do not):")
        lines += [f"  {entry}" for entry in cuts]
    return "\n".join(lines) + "\n"


def placement_html(compiled, svg: str | None) -> str:
    table = list(rows(compiled))
    esc = html.escape
    body = "".join(
        f"<tr class='{r['device']}'><td>{esc(r['layer'])}</td><td>{esc(r['type'])}</td>"
        f"<td>{esc(r['shape'])}</td><td>{r['device']}</td><td>{r['tasks']}</td>"
        f"<td>{_cost(r)}</td>"
        f"<td>{esc(r['reason'])}</td></tr>" for r in table)
    graph = svg if svg else "<p>(graph drawing needs Graphviz's <code>dot</code>; not installed)</p>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(compiled.model.name)} on {compiled.target}</title>
<style>body{{font-family:sans-serif}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}} tr.ane{{background:#e3f5e1}}
tr.host{{background:#fbe3e3}}</style></head><body>
<h1>{esc(compiled.model.name)} &rarr; {compiled.target}</h1><p>{esc(ASSUMPTIONS)}</p>
<h2>Graph</h2>{graph}
<h2>Layers</h2><table><tr><th>layer</th><th>type</th><th>output</th><th>where</th><th>tasks</th>
<th>est. &micro;s</th><th>reason</th></tr>{body}</table></body></html>
"""
