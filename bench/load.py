"""Time to load a compiled model's .hwx files into Programs: `python bench/load.py [--repeat N]`
(goal, GitHub issue 4: <= 8 ms for MobileNetV2's five files).

Builds its own input: mobilenet_v2 at 224x224 from tests/models/zoo.py, converted by coremltools
to .mlmodel, compiled by `compiler.compile_model` and written by `write_outputs` into a temporary
folder.  Then times `hwx.load_program` over every .hwx of the folder: the fastest of `--repeat`
loads in this process (the machine is shared; the minimum is the least disturbed), the median, and
one load in a fresh interpreter (imports excluded, construct's compiled layouts included: what a
one-shot `coreml2hwx run` pays).  Each load's Programs are dropped inside the timing, as a caller
that loads and lets go would.
Last line: `hwx load: N ms for K files (M tasks)`.
"""

from __future__ import annotations

import sys

sys.path[0] = str(__import__("pathlib").Path(__file__).resolve().parent.parent)

import argparse  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

# Run in a fresh interpreter: the first load after the imports.
FRESH = """
import sys, time
sys.path[0] = {repo!r}
from coreml2hwx.hwx import load_program
files = {files!r}
start = time.perf_counter()
for f in files:
    load_program(f)
print(time.perf_counter() - start)
"""


def compiled_folder(tmp: Path, name: str, size: int) -> list[Path]:
    from coreml2hwx.compiler import compile_model, write_outputs
    from tests.models.zoo import Zoo

    compiled = compile_model(Zoo(tmp / "zoo").path(name, "mlmodel", size=size))
    write_outputs(compiled, tmp / "out")
    return sorted((tmp / "out").glob("*.hwx"))


def load_all(files: list[Path]) -> int:
    from coreml2hwx.hwx import load_program

    return sum(len(load_program(f).tasks) for f in files)


def timed(files: list[Path], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        load_all(files)
        times.append(time.perf_counter() - start)
    return sorted(times)


def fresh_load(files: list[Path]) -> float:
    code = FRESH.format(repo=str(REPO), files=[str(f) for f in files])
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.split()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--model", default="mobilenet_v2", help="zoo model")
    parser.add_argument("--size", type=int, default=224, help="the model's input side")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        files = compiled_folder(Path(tmp), args.model, args.size)
        tasks = load_all(files)
        times = timed(files, args.repeat)
        first = fresh_load(files)
        megabytes = sum(f.stat().st_size for f in files) / 2**20
    best, median = times[0] * 1e3, times[len(times) // 2] * 1e3
    print(f"{args.model} {args.size}x{args.size}: {len(files)} .hwx files, {megabytes:.1f} MiB, "
          f"{tasks} tasks")
    print(f"load the folder: best {best:.2f} ms, median {median:.2f} ms of {args.repeat}; "
          f"first load in a fresh process {first * 1e3:.1f} ms")
    print(f"hwx load: {best:.1f} ms for {len(files)} files ({tasks} tasks)")


if __name__ == "__main__":
    main()
