"""`coreml2hwx report MODEL`: where each layer would run, why, and an estimated cost."""

from __future__ import annotations

from pathlib import Path

from coreml2hwx.errors import UsageError


def add_arguments(parser):
    parser.add_argument("model", help=".mlmodel, .mlpackage, .mlmodelc folder or .mil file")
    parser.add_argument("--target", default="h13")
    parser.add_argument("--html", metavar="FILE", help="also write an HTML page with the graph "
                        "coloured by placement and the layer table")


def run(args):
    from coreml2hwx import frontend, passes
    from coreml2hwx.compiler import (Compiled, atomic_write, lower_segments, lowering, place,
                                     segments_of)
    from coreml2hwx.report.placement import placement_html, placement_text

    model = Path(args.model)
    if not model.exists():
        raise UsageError(f"{model}: no such model file or folder")
    graph = frontend.load(model)
    log = [f"pass {n}: {note or 'no change'}" for n, note in passes.run_pipeline(graph)]
    placement = place(graph, args.target)
    # the programs a compile would write: a segment the target cannot chain whole is cut there too
    segments = lower_segments(graph, segments_of(graph, placement), lowering(args.target), log)
    compiled = Compiled(model, args.target, graph, graph, placement, segments, log)
    print(placement_text(compiled), end="")
    if args.html:
        from coreml2hwx.ir import dump_dot
        from coreml2hwx.report.svg import placement_svg

        svg = placement_svg(dump_dot(graph), placement)
        atomic_write(Path(args.html), placement_html(compiled, svg).encode())
        print(f"wrote {args.html}")
    return 0
