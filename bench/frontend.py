"""Time `coreml2hwx.frontend.load` on a MobileNetV2 .mlmodel against coremltools' `load_spec`.

    python bench/frontend.py [--size 224] [--keep DIR]

Builds the zoo's MobileNetV2 (torch, seeded random weights, 224x224 input), converts it with
coremltools to a NeuralNetwork .mlmodel, then reports the median of 5 timed runs of
- `load(path)` (protobuf parse + IR graph with every weight as a numpy array), and
- `coremltools.utils.load_spec(path)` (protobuf parse only),
both in this warm process, plus the cold-start time of each in a fresh interpreter (imports
included).  The last line is the figure: load time and its ratio to load_spec.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # the repo, not bench/ (bench/inspect.py would shadow the stdlib module)


def _median_time(fn, runs=5):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cold(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--keep", help="folder to keep the converted model in")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    from tests.models.zoo import Zoo

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-frontend-"))
    path = Zoo(folder).path("mobilenet_v2", "mlmodel", size=args.size)

    import coremltools as ct
    from coreml2hwx.frontend import load

    graph = load(path)
    ours = _median_time(lambda: load(path))
    theirs = _median_time(lambda: ct.utils.load_spec(str(path)))
    cold_ours = _cold(f"from coreml2hwx.frontend import load; load({str(path)!r})")
    cold_theirs = _cold(f"import coremltools as ct; ct.utils.load_spec({str(path)!r})")
    weights = sum(v.size for op in graph.ops for v in op.attrs.values() if hasattr(v, "size"))
    print(f"model: {path.name}, {path.stat().st_size / 1e6:.1f} MB, {len(graph.ops)} IR ops, "
          f"{weights / 1e6:.2f} M weights")
    print(f"warm: load {ours * 1e3:.1f} ms, coremltools load_spec {theirs * 1e3:.1f} ms")
    print(f"cold process (imports included): load {cold_ours:.2f} s, "
          f"import coremltools + load_spec {cold_theirs:.2f} s")
    print(f"load mobilenetv2 {args.size}: {ours:.3f} s ({ours / theirs:.2f}x coremltools load_spec)")


if __name__ == "__main__":
    main()
