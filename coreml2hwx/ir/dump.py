"""Readable dumps of an IR graph for the `debug` mode (the role Espresso's net.plist dump played).

- `dump_text(graph)`: one line per op, `%out: float32[1,32,112,112] = conv(%x) {attrs}  # layer`;
- `dump_json(graph)`: the whole graph as JSON; weight arrays appear as {dtype, shape, sha256};
- `dump_dot(graph)`: a Graphviz DOT drawing;
- `render_svg(dot, path)`: writes `path` with `.dot` suffix, and the SVG at `path` when the Graphviz
  `dot` program is installed (through the `graphviz` package).  Without `dot` only the .dot file is
  written; the function never fails for that reason.

All three dumps are deterministic: the same graph gives the same text.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from coreml2hwx.ir.graph import BlobRef, Graph, TensorInfo, is_lazy


def _type(info: TensorInfo) -> str:
    return f"{info.dtype}[{','.join(str(d) for d in info.shape)}]"


def _array_summary(value) -> dict:
    if isinstance(value, BlobRef):
        return {"blob": value.path, "offset": value.offset, "dtype": value.dtype,
                "shape": list(value.shape)}
    if is_lazy(value):
        return {"deferred": True, "dtype": value.dtype, "shape": list(value.shape)}
    value = np.ascontiguousarray(value)
    summary = {"dtype": value.dtype.name, "shape": list(value.shape)}
    if value.dtype != object:
        summary["sha256"] = hashlib.sha256(value.tobytes()).hexdigest()
    if value.size <= 8 and value.dtype != object:
        summary["values"] = value.reshape(-1).tolist()
    return summary


def _attr_json(value):
    if isinstance(value, np.ndarray) or is_lazy(value):
        return _array_summary(value)
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [_attr_json(v) for v in value]
    return value


def _attr_text(value) -> str:
    if isinstance(value, np.ndarray):
        if value.size <= 4:
            return f"{value.dtype.name}{list(value.shape)}{value.reshape(-1).tolist()}"
        return f"{value.dtype.name}{list(value.shape)}"
    if isinstance(value, BlobRef):
        return f"blob({value.dtype}{list(value.shape)} @{value.offset})"
    if is_lazy(value):
        return f"deferred({value.dtype}{list(value.shape)})"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def dump_text(graph: Graph) -> str:
    lines = [f"graph {graph.name}" + (f"  # {graph.source}" if graph.source else "")]
    for info in graph.inputs:
        lines.append(f"  input %{info.name}: {_type(info)}")
    for name in sorted(graph.constants):
        info = graph.tensors[name]
        lines.append(f"  const %{name}: {_type(info)}")
    for op in graph.ops:
        outs = ", ".join(f"%{o}: {_type(graph.tensors[o])}" for o in op.outputs)
        args = ", ".join(f"%{i}" for i in op.inputs)
        attrs = ", ".join(f"{k}={_attr_text(v)}" for k, v in sorted(op.attrs.items()) if v is not None)
        source = f"  # {op.source}" if op.source and op.source != op.name else ""
        lines.append(f"  {outs} = {op.type}({args})" + (f" {{{attrs}}}" if attrs else "")
                     + f"  [{op.name}]{source}")
    lines.append("  return " + ", ".join(f"%{info.name}: {_type(info)}" for info in graph.outputs))
    return "\n".join(lines) + "\n"


def graph_json(graph: Graph) -> dict:
    return {
        "name": graph.name,
        "source": graph.source,
        "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in graph.inputs],
        "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in graph.outputs],
        "tensors": {n: {"shape": list(t.shape), "dtype": t.dtype} for n, t in graph.tensors.items()},
        "constants": {n: _array_summary(v) for n, v in graph.constants.items()},
        "ops": [{"type": op.type, "name": op.name, "source": op.source, "inputs": op.inputs,
                 "outputs": op.outputs,
                 "attrs": {k: _attr_json(v) for k, v in op.attrs.items()}} for op in graph.ops],
        "metadata": _attr_json_dict(graph.metadata),
    }


def _attr_json_dict(d: dict) -> dict:
    return {k: _attr_json_dict(v) if isinstance(v, dict) else _attr_json(v) for k, v in d.items()}


def dump_json(graph: Graph) -> str:
    return json.dumps(graph_json(graph), indent=1, sort_keys=True) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dump_dot(graph: Graph) -> str:
    lines = [f"digraph {_quote(graph.name)} {{", "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fillcolor="#f4f4f4", fontname="Helvetica"];']
    producer = {}
    for info in graph.inputs:
        node = f"in:{info.name}"
        producer[info.name] = node
        lines.append(f"  {_quote(node)} [label={_quote(info.name + chr(10) + _type(info))}, "
                     'shape=ellipse, fillcolor="#d8eefe"];')
    for op in graph.ops:
        node = f"op:{op.name}"
        label = f"{op.type}\n{op.name}"
        lines.append(f"  {_quote(node)} [label={_quote(label)}];")
        for name in op.inputs:
            if name in graph.constants and name not in producer:
                producer[name] = f"const:{name}"
                lines.append(f"  {_quote(producer[name])} [label={_quote(name)}, shape=note, "
                             'fillcolor="#fff6d5"];')
            if name in producer:
                lines.append(f"  {_quote(producer[name])} -> {_quote(node)} "
                             f"[label={_quote(_type(graph.tensors[name]))}];")
        for name in op.outputs:
            producer[name] = node
    for info in graph.outputs:
        node = f"out:{info.name}"
        lines.append(f"  {_quote(node)} [label={_quote(info.name)}, shape=ellipse, "
                     'fillcolor="#dff5d8"];')
        if info.name in producer:
            lines.append(f"  {_quote(producer[info.name])} -> {_quote(node)} "
                         f"[label={_quote(_type(info))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_svg(dot: str, path) -> list[Path]:
    """Write the DOT text beside `path` (suffix .dot) and, when Graphviz `dot` exists, the SVG.

    Returns the files written: [the .dot] or [the .dot, the .svg].
    """
    path = Path(path)
    dot_path = path.with_suffix(".dot")
    dot_path.write_text(dot)
    written = [dot_path]
    if shutil.which("dot"):
        import graphviz

        svg = graphviz.Source(dot).pipe(format="svg")
        svg_path = path if path.suffix == ".svg" else path.with_suffix(".svg")
        svg_path.write_bytes(svg)
        written.append(svg_path)
    return written
