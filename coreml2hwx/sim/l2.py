"""The on-chip L2 through which tasks hand tensors to each other.

Model (stated, [H]): L2 is byte addressed (L2 address fields keep bits 20:4, ane-facts §2.6), and
every tensor placed in it is kept as an *entry*: its base, its byte strides and its values.  Two
layouts exist:

* planar - element (g, d, c, h, w) at base + g*GS + d*DS + c*CS + h*RS + 2w;
* channel-dense - base + g*GS + d*DS + h*RS + w*CS + 2c: the NE writes its result this way when
  Common.Cfg bit 28 is set (the result's "channel stride" is then its pixel stride: 0x10 for one
  channel, 0x80 for 64, 0x600 for 768 - oracle matmul_*, real_div, env_chain_residual_*), and a
  PE task reads its second operand this way when Common.Unk30 bit 9 is set.

A reader asks for a view (base, strides, layout, shape).  When an entry has the same base, shape,
layout and strides it is returned as is (the old compiler's wide rows - 1600 fp16 in a 0x20
stride - only ever hand over this way: their byte layout inside L2 is not understood).  Otherwise
the view is gathered byte by byte from the newest entries that cover those addresses; this is
what reshapes, transposes and broadcasts between tasks (softmax's per-row maximum read back as a
column, reduce_mean_axes_1's channels read as width).  An address no entry holds stops the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coreml2hwx.errors import SimulationError


@dataclass(frozen=True)
class Placement:
    base: int
    strides: tuple[int, int, int, int]  # group, depth, channel (pixel when dense), row: bytes
    channel_dense: bool = False

    def addresses(self, shape) -> np.ndarray:
        g, d, c, h, w = (np.arange(n, dtype=np.int64) for n in shape)
        gs, ds, cs, rs = self.strides
        if self.channel_dense:
            cstep, wstep = 2, cs
        else:
            cstep, wstep = cs, 2
        return (self.base + gs * g[:, None, None, None, None] + ds * d[None, :, None, None, None]
                + cstep * c[None, None, :, None, None] + rs * h[None, None, None, :, None]
                + wstep * w[None, None, None, None, :])

    def byte_strides(self, shape) -> list[tuple[int, int]]:
        gs, ds, cs, rs = self.strides
        cstep, wstep = (2, cs) if self.channel_dense else (cs, 2)
        return list(zip((gs, ds, cstep, rs, wstep), shape))

    def distinct(self, shape) -> bool:
        """True when no two elements share an address (nested strides; sufficient condition)."""
        steps = sorted((s, n) for s, n in self.byte_strides(shape) if n > 1)
        span = 2
        for stride, count in steps:
            if stride < span:
                return False
            span = stride * (count - 1) + span
        return True

    def span(self, shape) -> tuple[int, int]:
        last = sum(s * (n - 1) for s, n in self.byte_strides(shape))
        return self.base, self.base + last + 2


@dataclass
class Entry:
    placement: Placement
    data: np.ndarray  # 5-D, fp16 values
    writer: str

    @property
    def addressable(self) -> bool:
        return self.placement.distinct(self.data.shape)


class L2:
    MAX_ENTRIES = 256

    def __init__(self):
        self.entries: list[Entry] = []

    def put(self, placement: Placement, data: np.ndarray, writer: str) -> None:
        new = Entry(placement, np.asarray(data), writer)  # fp16 values (float16 or float32)
        lo, hi = placement.span(data.shape)
        keep = []
        for old in self.entries:
            olo, ohi = old.placement.span(old.data.shape)
            replaced = old.placement.base == placement.base or (
                new.addressable and lo <= olo and ohi <= hi)
            if not replaced:
                keep.append(old)
        self.entries = (keep + [new])[-self.MAX_ENTRIES:]

    def get(self, placement: Placement, shape, what: str) -> np.ndarray:
        shape = tuple(int(n) for n in shape)
        for entry in reversed(self.entries):
            if entry.placement.base == placement.base and self._same(entry, placement, shape):
                return entry.data
        return self._gather(placement, shape, what)

    @staticmethod
    def _same(entry: Entry, placement: Placement, shape) -> bool:
        if entry.data.shape != shape or entry.placement.channel_dense != placement.channel_dense:
            return False
        return all(a == b for (a, n), (b, _) in zip(entry.placement.byte_strides(shape),
                                                     placement.byte_strides(shape)) if n > 1)

    def _gather(self, placement: Placement, shape, what: str) -> np.ndarray:
        wanted = placement.addresses(shape)
        lo, hi = int(wanted.min()), int(wanted.max()) + 2
        addresses, values = [], []
        for entry in reversed(self.entries):  # newest first: the first hit of an address wins
            elo, ehi = entry.placement.span(entry.data.shape)
            if ehi <= lo or elo >= hi or not entry.addressable:
                continue
            addresses.append(entry.placement.addresses(entry.data.shape).ravel())
            values.append(entry.data.ravel())
        if not addresses:
            raise SimulationError(f"{what}: reads L2 {lo:#x}..{hi:#x}, where no earlier task left "
                                  "a tensor it can address")
        addresses = np.concatenate(addresses)
        values = np.concatenate(values)
        known, first = np.unique(addresses, return_index=True)
        flat = wanted.ravel()
        pos = np.clip(np.searchsorted(known, flat), 0, len(known) - 1)
        missing = known[pos] != flat
        if missing.any():
            raise SimulationError(f"{what}: reads L2 byte {int(flat[missing][0]):#x}, which no "
                                  "earlier task wrote")
        return values[first[pos]].reshape(shape)
