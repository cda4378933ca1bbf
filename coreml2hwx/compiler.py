"""The whole-model compile: model file -> IR -> passes -> placement -> segments -> programs.

    compiled = compile_model("MobileNetV2.mlmodel", target="h13")
    write_outputs(compiled, "/tmp/hwx_output/MobileNetV2", formats=("hwx",), debug=True)

Placement asks the target's own lowering whether it can compile each op (so what the report says
and what the compiler does can never disagree): an op the target refuses runs on the host, with
the refusal as its reason.  Consecutive ops of one placement form a segment; each ANE segment
becomes one program, host segments are evaluated by the reference evaluator (`coreml2hwx run`).

Inside an ANE program the target chains the ops itself (H13: intermediates in the DRAM scratch
slot 3, `target/h13/context.py`).  Pooling, resizing and other ops no Apple program shows stay on
the host; their reason names the missing rule.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.ir.graph import Graph, Op
from coreml2hwx.program import Program

MANIFEST = "manifest.json"


@dataclass
class Placement:
    device: str  # "ane" or "host"
    reason: str  # why (for host: the rule the target refused; for ane: what it lowers to)
    tasks: int = 0  # tasks the op takes alone (ane)


@dataclass
class Segment:
    index: int
    device: str
    ops: list[Op]
    inputs: list[str]
    outputs: list[str]
    program: Program | None = None

    @property
    def name(self) -> str:
        return f"segment{self.index}"


@dataclass
class Compiled:
    model: Path
    target: str
    graph_before: Graph
    graph: Graph
    placement: dict[str, Placement]
    segments: list[Segment]
    log: list[str] = field(default_factory=list)


def lowering(target: str):
    """The target's lowering module: `lower(graph) -> Program` (raises UnsupportedError)."""
    try:
        return importlib.import_module(f"coreml2hwx.target.{target}")
    except ModuleNotFoundError:
        raise UnsupportedError(f"no code generator for target {target!r} yet") from None


def subgraph(graph: Graph, ops: list[Op], name: str) -> Graph:
    """A graph of `ops` alone: what they read from outside becomes inputs (constants stay
    constants), what the rest of `graph` reads from them becomes outputs."""
    sub = Graph(name, source=graph.source)
    sub.metadata = dict(graph.metadata)  # what the passes decided (e.g. apple_mil_checks)
    produced = {out for op in ops for out in op.outputs}
    for op in ops:
        for tensor in op.inputs:
            if tensor in sub.tensors:
                continue
            info = graph.tensors[tensor]
            if graph.is_constant(tensor):
                sub.add_constant(tensor, graph.constants[tensor], info.dtype)
            elif tensor not in produced:
                sub.add_input(tensor, info.shape, info.dtype)
        sub.ops.append(op)
        for out in op.outputs:
            sub.tensors[out] = graph.tensors[out]
    inside = {id(op) for op in ops}
    read_outside = {t for op in graph.ops if id(op) not in inside for t in op.inputs}
    sub.set_outputs([t for op in ops for t in op.outputs
                     if t in read_outside or t in graph.output_names])
    return sub


def place(graph: Graph, target: str) -> dict[str, Placement]:
    mod = lowering(target)
    # a target may answer "how many tasks" without encoding them (faster; same refusals)
    count = getattr(mod, "count_tasks", None) or (lambda g: len(mod.lower(g).tasks))
    placement = {}
    for op in graph.ops:
        try:
            tasks = count(subgraph(graph, [op], op.name))
        except UnsupportedError as err:
            placement[op.name] = Placement("host", err.message)
        else:
            placement[op.name] = Placement("ane", f"{tasks} task(s)", tasks)
    return placement


def segments_of(graph: Graph, placement: dict[str, Placement]) -> list[Segment]:
    runs: list[list[Op]] = []
    for op in graph.ops:
        if runs and placement[runs[-1][0].name].device == placement[op.name].device:
            runs[-1].append(op)
        else:
            runs.append([op])
    out = []
    for i, ops in enumerate(runs):
        sub = subgraph(graph, ops, f"segment{i}")
        out.append(Segment(i, placement[ops[0].name].device, ops, sub.input_names,
                           sub.output_names))
    return out


def lower_segments(graph, segments, mod, log, progress=None) -> list[Segment]:
    """Lower every ANE segment to one program.  A segment the target cannot chain as a whole
    (e.g. two ops that both need the same scratch slot) is cut into the longest runs that lower,
    the intermediates between runs passing through the host; each op alone was lowered during
    placement, so a run of one op always lowers."""
    out = []
    for i, seg in enumerate(segments):
        if progress:
            progress(i, len(segments))
        if seg.device != "ane":
            out.append(seg)
            continue
        try:
            seg.program = mod.lower(subgraph(graph, seg.ops, seg.name))
            out.append(seg)
        except UnsupportedError as err:
            if len(seg.ops) == 1:
                raise err.with_file(graph.source)
            runs = lowerable_runs(graph, seg.ops, mod)
            log.append(f"{seg.name}: cut into {len(runs)} programs ({err.message})")
            for ops, program in runs:
                sub = subgraph(graph, ops, ops[0].name)
                out.append(Segment(0, "ane", ops, sub.input_names, sub.output_names, program))
    for index, seg in enumerate(out):
        seg.index = index
    return out


def lowerable_runs(graph, ops, mod) -> list:
    """[(ops, program)]: from the first op on, the longest run that lowers (found by bisection
    on its length), then the same from the op after it."""
    runs, start = [], 0
    while start < len(ops):
        good, bad = start + 1, len(ops) + 1  # a run of `good - start` ops lowers
        best = mod.lower(subgraph(graph, ops[start:good], ops[start].name))
        while bad - good > 1:
            mid = (good + bad) // 2
            try:
                best_mid = mod.lower(subgraph(graph, ops[start:mid], ops[start].name))
            except UnsupportedError:
                bad = mid
            else:
                good, best = mid, best_mid
        runs.append((ops[start:good], best))
        start = good
    return runs


def compile_model(path, target: str = "h13", *, strict: bool = False, progress=None) -> Compiled:
    from coreml2hwx import frontend, passes

    path = Path(path)
    log = []
    graph_before = frontend.load(path)
    graph = graph_before.copy()  # passes rewrite their graph in place
    log.append(f"loaded {path.name}: {len(graph.ops)} ops")
    for name, note in passes.run_pipeline(graph):
        log.append(f"pass {name}: {note or 'no change'}")
    placement = place(graph, target)
    host = [op for op in graph.ops if placement[op.name].device == "host"]
    if strict and host:
        reasons = "; ".join(f"{op.name} ({op.type}): {placement[op.name].reason}" for op in host)
        raise UnsupportedError(f"{len(host)} layer(s) cannot run on the {target} ANE: {reasons}",
                               file=path)
    segments = lower_segments(graph, segments_of(graph, placement), lowering(target), log,
                              progress)
    log.append(f"{len(segments)} segment(s): "
               + ", ".join(f"{s.name} {s.device} ({len(s.ops)} ops)" for s in segments))
    return Compiled(path, target, graph_before, graph, placement, segments, log)


def program_file(compiled: Compiled, seg: Segment, ext: str) -> str:
    """`model.hwx` when one ANE segment is the whole model (the original tool's name)."""
    if len(compiled.segments) == 1:
        return f"model.{ext}"
    return f"{seg.name}.{ext}"


def manifest(compiled: Compiled, formats) -> dict:
    graph = compiled.graph
    data = compiled.model.read_bytes() if compiled.model.is_file() else b""
    return {
        "model": str(compiled.model),
        "model_sha256": hashlib.sha256(data).hexdigest() if data else None,
        "target": compiled.target,
        "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in graph.inputs],
        "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype}
                    for t in graph.outputs],
        "segments": [{
            "index": s.index, "device": s.device, "inputs": s.inputs, "outputs": s.outputs,
            "ops": [op.name for op in s.ops],
            "programs": ({ext: program_file(compiled, s, ext) for ext in formats}
                         if s.device == "ane" else {}),
            "tasks": len(s.program.tasks) if s.program else 0,
            **({"reasons": {op.name: compiled.placement[op.name].reason for op in s.ops}}
               if s.device == "host" else {}),
        } for s in compiled.segments],
    }


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: never a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_outputs(compiled: Compiled, formats=("hwx",), debug=False) -> dict[str, bytes]:
    """Every output file name -> its bytes (built fully in memory before anything is written)."""
    from coreml2hwx import hwx

    files: dict[str, bytes] = {}
    for seg in compiled.segments:
        if seg.device != "ane":
            continue
        if "hwx" in formats:
            files[program_file(compiled, seg, "hwx")] = hwx.write_hwx(seg.program)
        if "anec" in formats:
            files[program_file(compiled, seg, "anec")] = hwx.write_anec(seg.program)
    if any(seg.device == "host" for seg in compiled.segments):
        from coreml2hwx.ir import serialize

        files["graph.json"], files["graph.bin"] = serialize.save(compiled.graph)
    files[MANIFEST] = (json.dumps(manifest(compiled, formats), indent=2) + "\n").encode()
    if debug:
        files.update(debug_files(compiled))
    return files


def debug_files(compiled: Compiled) -> dict[str, bytes]:
    from coreml2hwx import ir
    from coreml2hwx.report.listing import program_listing
    from coreml2hwx.report.placement import placement_html, placement_text
    from coreml2hwx.report.svg import placement_svg, render
    from coreml2hwx.target import generation

    gen = generation(compiled.target)
    files = {
        "debug/ir_before.txt": ir.dump_text(compiled.graph_before).encode(),
        "debug/ir_before.dot": ir.dump_dot(compiled.graph_before).encode(),
        "debug/ir_after.txt": ir.dump_text(compiled.graph).encode(),
        "debug/ir_after.dot": ir.dump_dot(compiled.graph).encode(),
        "debug/ir_after.json": ir.dump_json(compiled.graph).encode(),
        "debug/placement.txt": placement_text(compiled).encode(),
        "debug/compile.log": ("\n".join(compiled.log) + "\n").encode(),
    }
    after_svg = placement_svg(ir.dump_dot(compiled.graph), compiled.placement)
    files["debug/placement.html"] = placement_html(compiled, after_svg).encode()
    for name, svg in (("ir_before", render(ir.dump_dot(compiled.graph_before))),
                      ("ir_after", after_svg)):
        if svg is not None:  # Graphviz's `dot` program installed: the drawings too
            files[f"debug/{name}.svg"] = svg.encode()
    for seg in compiled.segments:
        if seg.program is not None:
            files[f"debug/{seg.name}.listing.txt"] = program_listing(
                seg.program, gen, title=seg.name).encode()
    return files


# Files a compile writes into its output folder; those a new compile does not write again are
# removed, so a folder never holds programs of an earlier compile (the manifest names the current).
OUTPUT_PATTERNS = ("model.hwx", "model.anec", "segment*.hwx", "segment*.anec", "graph.json",
                   "graph.bin", MANIFEST, "debug/*")


def write_outputs(compiled: Compiled, out_dir, formats=("hwx",), debug=False) -> list[Path]:
    out_dir = Path(out_dir)
    files = render_outputs(compiled, formats, debug)
    written = []
    for name, data in files.items():
        atomic_write(out_dir / name, data)
        written.append(out_dir / name)
    stale = {p for pattern in OUTPUT_PATTERNS for p in out_dir.glob(pattern) if p.is_file()}
    for path in sorted(stale - set(written)):
        path.unlink()
    debug_dir = out_dir / "debug"
    if debug_dir.is_dir() and not any(debug_dir.iterdir()):
        debug_dir.rmdir()
    return written
