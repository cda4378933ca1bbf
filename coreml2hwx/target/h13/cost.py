"""Header ExeCycles: Apple's compiler writes an estimate of each task's run time (census §5).

The estimate is a fitted model, not a known formula.  What the oracles support (Apple H13 tasks, the
visible set plus the upstream envelope cases used while fitting):

    ExeCycles = floor(sum over the task's DRAM streams (1.9 x lines + 0.375 x planes) / 1024)

where a stream is each DMA source and the DMA destination, `lines` its 64-byte rows
(C x H x ceil(2W/64) per batch element) and `planes` its channel planes (C per batch element).
It reproduces every element-wise PE and NE task: 1x1 shapes (floor(4.5 C / 1024) per stream pair),
8x8, 16x16, 32x32 and 224x224, batched shapes.  A PE task with two DMA sources of width 1 costs
9 C / 1024, as if it had four streams (binary_{add,sub,minimum}_*, env_bcast_*_runtime_*x1x1).
Tasks that fetch weights add their kernel bytes (see `kernel_cycles`).
"""

from __future__ import annotations

import math

LINE = 1.898
PLANE = 0.375
KERNEL_LINE = 1.915
KERNEL_RUN = 1
UNIT = 1024


def stream_cost(surface, view=None) -> float:
    n, c, h, w = view or surface.shape
    lines = n * c * h * math.ceil(2 * w / 64)
    return LINE * lines + PLANE * runs(n, c, h, w)


def view_cost(surface, channels: int) -> float:
    """A DMA stream: the surface's 64-byte lines, and one run per channel of the task's view."""
    n, c, h, w = surface.shape
    lines = n * c * h * math.ceil(2 * w / 64)
    if w > 512:
        return LINE * lines + PLANE * runs(n, c, h, w)
    return LINE * lines + PLANE * n * channels


def runs(n, c, h, w) -> int:
    """Contiguous DMA runs: one per channel plane, or one per 512-element piece of each row when
    a PE task stages wide rows piecewise (`env_bcast_add_1x375x1024_blob_1x1x1024`: 750 runs)."""
    if w > 512:
        return n * c * h * math.ceil(w / 512)
    return n * c


VIEW_RUNS = True


def exe_cycles(spec) -> int:
    if "ExeCycles" in spec.header:
        return spec.header["ExeCycles"]
    cin, cout = spec.get("common.Cin", "Cin", 1), spec.get("common.Cout", "Cout", 1)
    total = 0.0
    for surface, channels in ((spec.src1, cin), (spec.src2, cin), (spec.dst, cout)):
        if surface is not None:
            total += view_cost(surface, channels) if VIEW_RUNS else stream_cost(surface)
    if spec.kept_source:  # keeping the source in L2 costs a second source stream
        total += view_cost(spec.src1, cin)
    if spec.src2 is not None and spec.src1.w == 1:
        total += stream_cost(spec.src1)  # the W = 1 two-source PE case (see the docstring)
    chunks = set(spec.kernel_chunks)
    total += KERNEL_LINE * sum(size for _, size in chunks) / 64 + KERNEL_RUN * len(chunks)
    return int(total // UNIT)
