"""Comparisons with a stated tolerance (see each test for why the tolerance is what it is)."""

from __future__ import annotations

import numpy as np


def fp16(x) -> np.ndarray:
    """Round once to fp16 (round half to even), as the hardware stores results."""
    with np.errstate(over="ignore"):
        return np.asarray(x).astype(np.float16)


def ulp16(x) -> np.ndarray:
    """The fp16 unit in the last place at |x| (subnormal spacing below 2^-14)."""
    a = np.abs(np.asarray(x, np.float64))
    exp = np.floor(np.log2(np.maximum(a, 2.0 ** -14)))
    return 2.0 ** (exp - 10)


def assert_exact(sim: np.ndarray, ref32: np.ndarray, what: str = "") -> None:
    """Bit-exact against the float32 computation rounded once to fp16."""
    want = fp16(ref32)
    got = np.asarray(sim, np.float16)
    bad = ~((got == want) | (np.isnan(got) & np.isnan(want)))
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {bad.size} elements differ from the "
                           f"once-rounded fp16 result; first at {np.argwhere(bad)[0].tolist()}: "
                           f"got {got[bad][0]}, want {want[bad][0]}")


def assert_close(sim, ref, *, atol=0.0, rtol=0.0, ulps=0.0, what: str = "") -> None:
    """|sim - ref| <= atol + rtol |ref| + ulps * ulp16(ref), everywhere (ref in float64)."""
    got = np.asarray(sim, np.float64)
    ref = np.asarray(ref, np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    limit = atol + rtol * np.abs(ref) + ulps * ulp16(ref)
    err = np.abs(got - ref)
    both_inf = np.isinf(got) & np.isinf(ref) & (np.sign(got) == np.sign(ref))
    bad = ~((err <= limit) | both_inf)
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} elements outside the "
                             f"tolerance; worst |err| {np.nanmax(np.where(bad, err, 0)):.3g}; "
                             f"first at {list(i)}: got {got[i]!r}, want {ref[i]!r}, "
                             f"limit {limit[i]:.3g}")
