"""Wall time to compile the MobileNetV2 .mlmodel, and peak memory (goal: <= 0.3 s on 2 cores).

Compiles the bundled example (coreml2hwx/examples/MobileNetV2.mlmodel, MobileNetV2 0.5x224)
or the model given as the first argument: load + passes + placement + lowering + rendering every
output file in memory (writing them is left out: that is the disk's time).  Best of 5 runs in this
process after one warm-up; peak memory is the process's maximum resident set size.
Last line: `compile <model>: <seconds> s, peak <MiB> MiB`.
"""

from __future__ import annotations

import sys

sys.path[0] = str(__import__("pathlib").Path(__file__).resolve().parent.parent)

import resource  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from coreml2hwx.commands.compile import EXAMPLE  # noqa: E402
from coreml2hwx.compiler import compile_model, render_outputs  # noqa: E402


def once(model: Path) -> float:
    start = time.perf_counter()
    render_outputs(compile_model(model), ("hwx",))
    return time.perf_counter() - start


def main():
    model = Path(sys.argv[1]) if len(sys.argv) > 1 else EXAMPLE
    once(model)
    best = min(once(model) for _ in range(5))
    compiled = compile_model(model)
    ane = sum(s.device == "ane" for s in compiled.segments)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{len(compiled.graph.ops)} layers, {ane} ANE segments, "
          f"{len(compiled.segments) - ane} host segments")
    print(f"compile {model.stem}: {best:.3f} s, peak {peak:.0f} MiB")


if __name__ == "__main__":
    main()
