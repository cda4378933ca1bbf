"""`coreml2hwx run PROGRAM`: execute an .hwx, .anec or raw task stream in the simulator.

    coreml2hwx run net.hwx --input image=x.npy --output-dir out/ [--trace trace/]
    coreml2hwx run add.bin --raw --target h13 --output-dir out/ \\
        --io-shapes input:a:5:1x1x2560x1600 input:b:6:1x1x2560x1600 output:y:4:1x1x2560x1600

Writes one `<output name>.npy` (float16) per program output; with `--trace DIR`, also
`task<i>.npy`, each task's result (groups, depth, channels, height, width).  Inputs not given are
made deterministic-random (standard normal, seed 0) from their declared shapes.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from coreml2hwx.errors import Coreml2hwxError, UsageError

ROLES = ("input", "output", "intermediate")


def add_arguments(parser):
    parser.add_argument("program", help="an .hwx, an .anec, a raw task stream (with --raw), or a "
                        "compiled output folder (runs every segment of its manifest)")
    parser.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy",
                        help="an input tensor (repeat for several); missing inputs are random")
    parser.add_argument("--output-dir", "-o", required=True, metavar="DIR",
                        help="where to write one .npy per output")
    parser.add_argument("--trace", metavar="DIR", help="also write each task's result tensor")
    parser.add_argument("--raw", action="store_true",
                        help="PROGRAM is a raw task stream followed by its kernel section")
    parser.add_argument("--target", default="h13", help="generation of a raw stream (h13)")
    parser.add_argument("--io-shapes", nargs="+", default=[], metavar="ROLE:NAME:SLOT:NxCxHxW",
                        help="tensors of a raw stream: role (input/output/intermediate), name, "
                             "BAR slot and shape; strides follow the 64-byte row rule")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")


def run(args) -> int:
    from coreml2hwx.sim import run_program

    if Path(args.program).is_dir():
        return _run_compiled(args)
    program = _load(args)
    inputs = _inputs(args, program)
    out_dir = _directory(args.output_dir)
    trace_dir = _directory(args.trace) if args.trace else None
    trace = None
    if trace_dir is not None:
        def trace(index, result):
            np.save(trace_dir / f"task{index:03d}.npy", result)
    try:
        outputs = run_program(program, inputs, trace=trace)
    except Coreml2hwxError as err:
        raise err.with_file(args.program)
    for name, value in outputs.items():
        np.save(out_dir / f"{_file_name(name)}.npy", value)
    return 0


def _run_compiled(args) -> int:
    """A compiled output folder: every segment in manifest order (coreml2hwx.execute)."""
    from coreml2hwx.execute import load_manifest, run_compiled

    if args.raw or args.io_shapes or args.trace:
        raise UsageError("--raw, --io-shapes and --trace apply to a single program, not a folder")
    declared = [t["name"] for t in load_manifest(args.program)["inputs"]]
    given = {}
    for item in args.input:
        name, sep, path = item.partition("=")
        if not sep or name not in declared:
            raise UsageError(f"--input {item!r}: expected NAME=FILE.npy with NAME one of "
                             f"{', '.join(declared)}")
        given[name] = _load_array(path)
    outputs = run_compiled(args.program, given, seed=args.seed)
    out_dir = _directory(args.output_dir)
    for name, value in outputs.items():
        np.save(out_dir / f"{_file_name(name)}.npy", value)
    return 0


# -- the program ---------------------------------------------------------------------------------

def _load(args):
    from coreml2hwx.hwx import load_program

    if not args.raw:
        if args.io_shapes:
            raise UsageError("--io-shapes describes the tensors of a raw stream; add --raw")
        return load_program(args.program)
    if not args.io_shapes:
        raise UsageError("a raw task stream needs --io-shapes (its tensors are not in the file)")
    program = load_program(args.program, raw_target=args.target)
    program.constants = _kernel_section(Path(args.program).read_bytes(), program)
    program.tensors = [_io_tensor(spec) for spec in args.io_shapes]
    return program


def _kernel_section(data: bytes, program) -> bytes:
    """A raw anec payload keeps its kernel section at round_up(end of the task chain, 16): the
    Asahi driver's BAR[1] = cmd + round_up(tsk_size, 16) (ane-facts §2.6, eiln-drv)."""
    last = program.tasks[-1]
    end = last.offset + 4 * last.size_words
    return data[-(-end // 16) * 16:]


def _io_tensor(spec: str):
    from coreml2hwx.program import Tensor

    match = re.fullmatch(r"(\w+):([^:]+):(\d+):(\d+)x(\d+)x(\d+)x(\d+)", spec)
    if not match or match.group(1) not in ROLES:
        raise UsageError(f"--io-shapes {spec!r}: expected ROLE:NAME:SLOT:NxCxHxW with ROLE one of "
                         f"{', '.join(ROLES)}, e.g. input:x:5:1x1x2560x1600")
    role, name, slot = match.group(1), match.group(2), int(match.group(3))
    n, c, h, w = (int(match.group(i)) for i in range(4, 8))
    row = -(-2 * w // 64) * 64  # ane-facts §1.7: rows padded to 64 bytes
    plane = row * h
    return Tensor(name, role, (n, c, h, w), (c * plane, plane, row, 2), slot=slot)


# -- inputs and outputs --------------------------------------------------------------------------

def _inputs(args, program) -> dict[str, np.ndarray]:
    declared = {t.name: t for t in program.inputs}
    given = {}
    for item in args.input:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--input {item!r}: expected NAME=FILE.npy")
        if name not in declared:
            raise UsageError(f"--input {name!r}: the program's inputs are "
                             f"{', '.join(declared) or 'none'}")
        given[name] = _load_array(path)
    rng = np.random.default_rng(args.seed)
    for name, tensor in declared.items():
        if name not in given:
            given[name] = rng.standard_normal(tensor.shape).astype(np.float16)
    return given


def _load_array(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UsageError("no such file", file=path) from None
    except (OSError, ValueError) as err:
        raise UsageError(f"not a .npy array ({err})", file=path) from None


def _directory(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create the directory: {err.strerror}", file=path) from None
    return out


def _file_name(name: str) -> str:
    return re.sub(r"[^\w.@-]", "_", name)
