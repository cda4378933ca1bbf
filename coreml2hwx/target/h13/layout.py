"""Where data lives: DRAM surfaces (the program's I/O tensors) and their byte strides.

A DRAM surface is an fp16 [N, C, H, W] tensor with rows padded to 64 bytes (oracle README,
"tensor descriptors"; 438/438 descriptors): row = round_up(2 W, 64), plane = H x row, and one batch
element = C x plane.  The descriptor's first stride and `total_bytes` give one batch element even
when N > 1 (`env_bcast_add_2x64x8x8_*`).
"""

from __future__ import annotations

from dataclasses import dataclass

from coreml2hwx.program import Tensor

ELEMENT = 2  # fp16 bytes
DRAM_ALIGN = 64
L2_ALIGN = 16


def round_up(value: int, align: int) -> int:
    return -(-value // align) * align


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


SCRATCH_SLOT = 3  # BAR slot of the DRAM intermediate buffer (anecc: itm0 -> slot 3, ane-facts §1.8)


@dataclass(frozen=True)
class Surface:
    """A DRAM tensor as the tasks address it: a BAR slot, a byte offset in it, byte strides."""

    name: str
    shape: tuple[int, int, int, int]  # N, C, H, W
    slot: int
    offset: int = 0  # where the tensor starts in its slot (intermediates share the scratch slot)

    @property
    def scratch(self) -> bool:
        return self.slot == SCRATCH_SLOT

    @property
    def n(self) -> int:
        return self.shape[0]

    @property
    def c(self) -> int:
        return self.shape[1]

    @property
    def h(self) -> int:
        return self.shape[2]

    @property
    def w(self) -> int:
        return self.shape[3]

    @property
    def row(self) -> int:
        return round_up(ELEMENT * self.w, DRAM_ALIGN)

    @property
    def plane(self) -> int:
        return self.h * self.row

    @property
    def batch(self) -> int:
        """Bytes of one batch element (the descriptor's first stride and total_bytes)."""
        return self.c * self.plane

    def tensor(self, role: str) -> Tensor:
        return Tensor(name=self.name, role=role, shape=self.shape,
                      strides=(self.batch, self.plane, self.row, ELEMENT), slot=self.slot,
                      total_bytes=self.batch)


def l2_channel_stride(width: int) -> int:
    """L2 bytes per channel of one row: the row's fp16 data rounded to 16 bytes (census, 88/98)."""
    return round_up(ELEMENT * width, L2_ALIGN)
