"""Header ExeCycles: Apple's compiler writes an estimate of each task's run time (census §5).

The estimate is a fitted model, not a known formula.  It reproduces every task of the visible
oracles and of the 26 upstream Apple oracles transcribed while fitting (about 130 tasks):

    ExeCycles = floor(total / 1024), total = the sum of
      * each DMA stream (source 1, source 2, destination): 1.898 x its 64-byte lines
        (N x C x H x ceil(2W / 64)) + 0.375 x its runs (one per channel of the task's view, times
        the groups when the rows of one tensor are the groups; one per 512-element piece of a row
        when W > 512);
      * a PE task with two DMA sources of width 1 pays source 1 once more (binary_{add,sub,
        minimum}_*, env_bcast_*_runtime_*x1x1), and so does an NE task keeping a W = 1 source in
        L2 for the next task (env_chain_residual_*_1x768x1x1);
      * kernel DMA: 1.915 per 64-byte line and 1 per distinct chunk, plus 0.0058 per line of a
        chunk beyond its first 448 KiB (env_mm_r2rb_m1_k{4096,8192}_*: 983 and 3933 cycles).
"""

from __future__ import annotations

import math

LINE = 1.898
PLANE = 0.375
KERNEL_LINE = 1.915
KERNEL_RUN = 1
# Zero-skipping (stride-2) kernels stream their bytes a little faster: the stride-2 oracles
# bound the cost per line to [1.870, 1.888] (upstream conv_probe_k3_c64_n64_s32_st2_g1_bias0_valid
# the low end: ExeCycles 8 needs >= 1.8694; env_conv_k3_c128_n128_s16_st2 the high end); the
# middle is taken.
SPARSE_KERNEL_LINE = 1.878
LARGE_CHUNK = 0x70000  # kernel chunks beyond this many bytes stream a little slower ...
LARGE_CHUNK_LINE = 0.0058  # ... per 64-byte line past it (env_mm_r2rb_m1_k{4096,8192}_*)
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


def exe_cycles(spec) -> int:
    if "ExeCycles" in spec.header:
        return spec.header["ExeCycles"]
    cin, cout = spec.get("common.Cin", "Cin", 1), spec.get("common.Cout", "Cout", 1)
    groups = spec.get("common.GroupConvCfg", "NumGroups", 1)
    if spec.src1 is not None and spec.src1.n == 1 and groups > 1:
        # one run per channel of every group (rows as groups: reduce_probe_sum_ax3_1x64x8x8)
        cin, cout = cin * groups, cout * groups
    total = 0.0
    if spec.get("common.GroupConvCfg", "ElemMultMode"):
        # pow's product of pairs read from L2 pays its destination's lines only (upstream
        # binary_pow_1x{2048,4096}x1x1 task 2: ExeCycles 3 and 7, not 4 and 9)
        cout = 0
    for surface, channels in ((spec.src1, cin), (spec.src2, cin), (spec.dst, cout)):
        if surface is not None:
            total += view_cost(surface, channels)
    if spec.is_ne and spec.src1 is not None and spec.src1.w == 1 and spec.dst is not None \
            and spec.src2 is None and cout == 1 < cin:
        # an NE task folding C channels of a W = 1 source into one pays the source twice
        # (upstream reduce_probe_max_ax1_1x{512,4096}x1x1: ExeCycles 2 and 18)
        total += view_cost(spec.src1, cin)
    if spec.is_ne and spec.dst is None and spec.src1 is not None and spec.src1.w == 1:
        # an NE task leaving its result in L2 pays a W = 1 source twice (x kept for the next
        # task too: env_chain_residual_*_1x768x1x1; pow's copy and log2 of z, x: upstream
        # binary_pow_1x4096x1x1 tasks 0, 1, ExeCycles 18; a PE task does not: layer_norm_1x512x1x1)
        total += view_cost(spec.src1, cin)
    if spec.src2 is not None and spec.src1.w == 1:
        total += stream_cost(spec.src1)  # the W = 1 two-source PE case
    chunks = set(spec.kernel_chunks)
    line = SPARSE_KERNEL_LINE if spec.get("ne.KernelCfg", "SparseFmt", 0) else KERNEL_LINE
    total += line * sum(size for _, size in chunks) / 64 + KERNEL_RUN * len(chunks)
    total += LARGE_CHUNK_LINE * sum(max(0, size - LARGE_CHUNK) for _, size in chunks) / 64
    return int(total // UNIT)
