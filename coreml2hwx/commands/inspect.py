"""`coreml2hwx inspect FILE`: list any program — .hwx, .anec, a raw task stream, or an oracle JSON."""

from __future__ import annotations

import json
from pathlib import Path

from coreml2hwx.errors import ProgramFormatError, UsageError


def add_arguments(parser):
    parser.add_argument("file", help=".hwx, .anec, raw task stream (with --raw), or oracle .json")
    parser.add_argument("other", nargs="?", help="with --diff: the program to compare FILE with")
    parser.add_argument("--json", action="store_true",
                        help="print JSON in the shape of the oracle files in ../shared/oracles")
    parser.add_argument("--raw", action="store_true", help="FILE is a bare task stream")
    parser.add_argument("--target", default=None, help="generation of a raw stream (h13, h14, ...)")
    parser.add_argument("--state", action="store_true",
                        help="also show the full register state each task runs with")
    parser.add_argument("--diff", action="store_true",
                        help="inspect --diff A B: register-level differences from A to B "
                             "(exit 1 if any)")


def load(path, *, raw_target=None):
    """(Program, Generation, container info dict or None) for any program file we can read."""
    from coreml2hwx.target import generation

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    if path.suffix == ".json":
        from coreml2hwx.report.jsonview import program_from_json

        try:
            case = json.loads(path.read_text())
            gen = generation(case["target"])
            return program_from_json(case, gen), gen, case.get("program_descriptor")
        except (ValueError, KeyError, TypeError) as err:
            raise ProgramFormatError(f"not an oracle-shaped program JSON ({err})", file=path) from None
    from coreml2hwx import hwx

    program = hwx.load_program(path, raw_target=raw_target)
    return program, generation(program.target), program.descriptor


def run(args):
    if args.raw and not args.target:
        raise UsageError("--raw needs --target (h11, h13, h14, ...)")
    raw_target = args.target if args.raw else None
    program, gen, descriptor = load(args.file, raw_target=raw_target)
    if args.diff != bool(args.other):
        raise UsageError("compare two programs with: inspect --diff A B")
    if args.diff:
        from coreml2hwx.report.diff import program_diffs

        other, _, _ = load(args.other, raw_target=raw_target)
        lines = program_diffs(program, other, gen, states=args.state)
        print("\n".join(lines) if lines else "no differences")
        return 1 if lines else 0
    if args.json:
        from coreml2hwx.report.jsonview import program_to_json

        print(json.dumps(program_to_json(program, gen, descriptor), indent=2, sort_keys=True))
        return 0
    from coreml2hwx.report.listing import program_listing

    print(program_listing(program, gen, title=str(args.file), show_state=args.state), end="")
    return 0
