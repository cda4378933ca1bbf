"""Tasks decoded per second on the largest program we hold (goal: >= 100k tasks/s).

The largest program by task count among ../shared/artifacts is eiln's `norm` (8 H13 tasks); it is
decoded repeatedly.  Two figures: the task stream into Tasks (header + records), and that plus the
register state and every named field of every written register (what `inspect` lists).
Last line: `inspect decode: N tasks/s (stream), M tasks/s (named fields)`.
"""

from __future__ import annotations

import sys

# This file is named like the standard library's `inspect`: take its folder off the import path.
sys.path[0] = str(__import__("pathlib").Path(__file__).resolve().parent.parent)

import csv  # noqa: E402
import time  # noqa: E402

from coreml2hwx.program import Program  # noqa: E402
from coreml2hwx.shared import shared_dir  # noqa: E402
from coreml2hwx.target import generation  # noqa: E402


def largest_eiln_stream():
    root = shared_dir() / "artifacts/eiln_ane/f182ece390b4/anec"
    rows = list(csv.DictReader((root / "kernels_metadata_from_ab8475b_headers.csv").open()))
    row = max(rows, key=lambda r: int(r["td_count"]))
    data = (root / "kernels" / row["file"]).read_bytes()
    return row["name"], data, int(row["td_count"]), int(row["td_size"], 16) // 4


def rate(fn, tasks_per_call, seconds=1.0):
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return calls * tasks_per_call / (time.perf_counter() - start)


def main():
    if shared_dir() is None:
        raise SystemExit("shared/ not found beside the checkout")
    name, data, count, first = largest_eiln_stream()
    gen = generation("h13")
    regs = gen.maps.REGISTERS

    def stream():
        return gen.decode_stream(data, task_count=count, first_task_words=first)

    def named():
        tasks = stream()
        for task, state in Program("h13", tasks).states():
            regs.listing(task.writes())

    fast, full = rate(stream, count), rate(named, count)
    print(f"program: eiln {name}, {count} tasks")
    print(f"inspect decode: {fast:,.0f} tasks/s (stream), {full:,.0f} tasks/s (named fields)")


if __name__ == "__main__":
    main()
