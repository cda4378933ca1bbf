"""`coreml2hwx [MODEL] [debug]`: compile a Core ML model (the original tool's invocation)."""

from __future__ import annotations

import sys
from pathlib import Path

from coreml2hwx.errors import UsageError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "MobileNetV2.mlmodel"
DEFAULT_ROOT = Path("/tmp/hwx_output")


def add_arguments(parser):
    parser.add_argument("model", nargs="?", help=".mlmodel, .mlpackage, .mlmodelc folder or .mil "
                        "file (default: the bundled MobileNetV2-shaped example)")
    parser.add_argument("mode", nargs="?", choices=["debug"],
                        help="also write the IR before/after passes, task listings, placement report "
                             "and compile log")
    parser.add_argument("-o", "--output", help="output folder (default /tmp/hwx_output/<model name>)")
    parser.add_argument("--target", default="h13", choices=["h13", "h14"],
                        help="ANE generation: h13 (M1, default) or h14 (M2)")
    parser.add_argument("--format", choices=["hwx", "anec", "both"], default="hwx")
    parser.add_argument("--strict", action="store_true",
                        help="refuse the model if any layer cannot run on the ANE")


def _progress():
    if not sys.stderr.isatty():
        return None

    def show(i, n):
        print(f"\rcompiling segment {i + 1}/{n}", end="" if i + 1 < n else "\n",
              file=sys.stderr, flush=True)
    return show


def run(args):
    from coreml2hwx.compiler import compile_model, write_outputs

    model = Path(args.model) if args.model else EXAMPLE
    if not model.exists():
        raise UsageError(f"{model}: no such model file or folder")
    out_dir = Path(args.output) if args.output else DEFAULT_ROOT / model.name.split(".")[0]
    formats = ("hwx", "anec") if args.format == "both" else (args.format,)
    compiled = compile_model(model, args.target, strict=args.strict, progress=_progress())
    written = write_outputs(compiled, out_dir, formats, debug=args.mode == "debug")
    programs = [p for p in written if p.suffix in (".hwx", ".anec")]
    ane = sum(s.device == "ane" for s in compiled.segments)
    host = len(compiled.segments) - ane
    print(f"{model} -> {out_dir} ({compiled.target}: {ane} ANE segment(s), {host} host segment(s))")
    if len(programs) <= 4:
        for path in programs:
            print(f"  program: {path}")
    else:
        print(f"  programs: {len(programs)} files ({', '.join(sorted({p.suffix for p in programs}))})"
              f" in {out_dir}")
    print(f"  manifest: {out_dir / 'manifest.json'}")
    if args.mode == "debug":
        print(f"  debug information: {out_dir / 'debug'}")
    return 0
