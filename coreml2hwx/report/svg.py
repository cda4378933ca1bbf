"""The IR graph drawn with each op coloured by placement (Graphviz renders it when `dot` exists)."""

from __future__ import annotations

import json
import shutil

COLOURS = {"ane": "#c9efc4", "host": "#f7c6c6"}


def placement_dot(dot: str, placement) -> str:
    """Add a fill colour to every op node (`"op:<name>"`) of `ir.dump_dot`'s output."""
    extra = [f'  {json.dumps("op:" + name, ensure_ascii=False)} [fillcolor="{COLOURS[p.device]}"];'
             for name, p in placement.items()]
    head, _, tail = dot.rstrip().rpartition("}")
    return head + "\n".join(extra) + "\n}" + tail + "\n"


def render(dot: str) -> str | None:
    """SVG text of a DOT graph, or None when Graphviz's `dot` program is not installed."""
    if not shutil.which("dot"):
        return None
    import graphviz

    svg = graphviz.Source(dot).pipe(format="svg").decode()
    return svg[svg.find("<svg"):]


def placement_svg(dot: str, placement) -> str | None:
    return render(placement_dot(dot, placement))
