"""The [N, C, H, W] view the ANE gives a tensor of any rank.

Evidence (Apple-compiled oracles, tensor descriptors in ../shared/oracles/h13):
- rank 4 is kept as is;
- rank 3 [A, M, K] becomes [1, A, M, K]: `env_bcast_add_1x375x1024_blob_1x1x1024` has a MIL
  [1, 375, 1024] input described as [1, 1, 375, 1024] (h14 `env_mm_r3rr_m64_k64_n64_tx0_ty1_b1`
  likewise).  Every oracle rank-3 tensor has A = 1, so A > 1 landing in C is our assumption;
- rank 2 [M, K] becomes [1, 1, M, K]: `matmul_m8_k512_n1024_ty1` ([8, 512] -> [1, 1, 8, 512]) and
  `reduce_probe_max_ax2_3_1x64x8x8_flat` ([1, 64] -> [1, 1, 1, 64]);
- rank 1 [K] as [1, 1, 1, K] and rank 0 as [1, 1, 1, 1] follow the same rule (no oracle has them);
- rank 5 is accepted only when its leading dims are 1.
"""

from __future__ import annotations

from coreml2hwx.errors import UnsupportedError


def ane_shape(shape) -> tuple[int, int, int, int]:
    """[N, C, H, W] of a tensor shape of any rank (see the module docstring for the evidence)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 4:
        return shape
    if len(shape) < 4:
        return (1,) * (4 - len(shape)) + shape
    lead = shape[:-4]
    if all(d == 1 for d in lead):
        return shape[-4:]
    raise UnsupportedError(f"rank-{len(shape)} tensor {list(shape)} has no [N, C, H, W] view "
                           "(leading dimensions must be 1)")
