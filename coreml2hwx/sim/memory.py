"""DRAM as the ANE sees it: one byte buffer per BAR slot, read and written through strided views.

A task names buffers only by BAR slot (header RBase0/RBase1/WBase/KBase0); every DMA address
register is a byte offset inside that buffer (ane-facts §2.6 [A]).  Slot 0 is the task stream,
slot 1 the kernel (constant) section, the rest the program's tensors.  A slot no tensor declares
is a scratch buffer that grows as tasks write it; reading bytes nobody declared or wrote stops the
run.

Tensors here are 5-D (groups, depth, channels, height, width), fp16, width contiguous (2 bytes);
the other four dimensions have byte strides (group, depth, plane, row).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from coreml2hwx.errors import SimulationError

TEXT_SLOT, KERNEL_SLOT = 0, 1


def extent(shape, strides, element=2) -> int:
    """Bytes from the first to one past the last element of a strided view."""
    if any(n == 0 for n in shape):
        return 0
    return sum((n - 1) * s for n, s in zip(shape, strides)) + element


def _halves(buf: np.ndarray, offset: int) -> np.ndarray:
    """The buffer from `offset` on, as fp16 (a trailing odd byte dropped)."""
    end = offset + (len(buf) - offset) // 2 * 2
    return buf[offset:max(end, offset)].view(np.float16)


class Memory:
    def __init__(self, constants: bytes, where=None):
        self.buffers: dict[int, np.ndarray] = {KERNEL_SLOT: np.frombuffer(constants, np.uint8)}
        self.declared: set[int] = {KERNEL_SLOT}
        self.scratch: set[int] = set()
        self.where = where

    def declare(self, slot: int, size: int) -> None:
        if slot in (TEXT_SLOT, KERNEL_SLOT):
            raise SimulationError(f"a tensor is bound to BAR slot {slot}, which holds the "
                                  f"{'task stream' if slot == 0 else 'kernel section'}")
        size = max(size, len(self.buffers.get(slot, ())))
        self.buffers[slot] = np.zeros(size, np.uint8)
        self.declared.add(slot)
        if size == 0:  # a buffer of no declared size (Apple lists no scratch tensor): grows
            self.scratch.add(slot)

    # -- reads ----------------------------------------------------------------------------------
    def read(self, slot: int, offset: int, shape, strides, what: str,
             dtype=np.float16) -> np.ndarray:
        """The fp16 values `shape` (5-D) at `offset` with byte `strides` (4 outer dims) of a slot,
        as `dtype` (float32 saves the engines a conversion pass)."""
        buf = self._buffer(slot, what)
        full = tuple(strides) + (2,)
        need = offset + extent(shape, full)
        if offset % 2 or any(s % 2 for s in full):
            raise SimulationError(f"{what}: offset {offset:#x} / strides {list(strides)} are not "
                                  "fp16 aligned", where=self.where)
        if need > len(buf):
            raise SimulationError(f"{what}: reads bytes {offset:#x}..{need:#x} of BAR slot {slot}, "
                                  f"which holds {len(buf):#x} bytes", where=self.where)
        view = as_strided(_halves(buf, offset), shape=tuple(shape), strides=full, writeable=False)
        return np.array(view, dtype=dtype)

    def _buffer(self, slot: int, what: str) -> np.ndarray:
        if slot == TEXT_SLOT:
            raise SimulationError(f"{what}: reads BAR slot 0, the task stream", where=self.where)
        buf = self.buffers.get(slot)
        if buf is None:
            raise SimulationError(f"{what}: BAR slot {slot} holds no tensor and no earlier task "
                                  "wrote it", where=self.where)
        return buf

    # -- writes ---------------------------------------------------------------------------------
    def write(self, slot: int, offset: int, data: np.ndarray, strides, what: str) -> None:
        if slot in (TEXT_SLOT, KERNEL_SLOT):
            raise SimulationError(f"{what}: writes BAR slot {slot} (the "
                                  f"{'task stream' if slot == 0 else 'kernel section'})",
                                  where=self.where)
        full = tuple(strides) + (2,)
        if offset % 2 or any(s % 2 for s in full):
            raise SimulationError(f"{what}: offset {offset:#x} / strides {list(strides)} are not "
                                  "fp16 aligned", where=self.where)
        need = offset + extent(data.shape, full)
        buf = self.buffers.get(slot)
        if buf is None or (slot in self.scratch and need > len(buf)):
            grown = np.zeros(max(need, 0 if buf is None else len(buf)), np.uint8)
            if buf is not None:
                grown[:len(buf)] = buf
            self.buffers[slot] = buf = grown
            self.scratch.add(slot)
        if need > len(buf):
            raise SimulationError(f"{what}: writes bytes {offset:#x}..{need:#x} of BAR slot "
                                  f"{slot}, which holds {len(buf):#x} bytes", where=self.where)
        if data.size == 0:
            return
        view = as_strided(_halves(buf, offset), shape=data.shape, strides=full)
        view[...] = data.astype(np.float16, copy=False)
