"""H13 task assembly: named field values -> a `Task` in the record layout Apple's compiler writes.

Every task writes every register of every block; only the kernel-DMA block has two forms
(h13-register-census §4, 98/98 tasks):

* 157 words when the task fetches coefficients (header KBE0 = 1): one 62-word KDMA record;
* 126 words otherwise: the KDMA record is split around CoeffBaseAddr/CoeffBfrSize
  (0x1F800 + 18 words, 0x1F8C8 + 12 words), which are not written.

Records follow the block order of the old fixed layout: KDMA, Common, TileDMASrc, L2, PE, NE,
TileDMADst (ane-facts §2.1).  Values are set by field path through the H13 register map; a field
not given is zero.
"""

from __future__ import annotations

from coreml2hwx.program import Record, Task
from coreml2hwx.target import generation

GEN = generation("h13")
REGISTERS = GEN.maps.REGISTERS
HEADER = GEN.maps.HEADER

_BLOCKS_AFTER_KDMA = ((0x00000, 16), (0x13800, 28), (0x04800, 18), (0x08800, 4), (0x0C800, 5),
                      (0x17800, 7))
LAYOUT_WITH_KERNEL = ((0x1F800, 62),) + _BLOCKS_AFTER_KDMA
LAYOUT_WITHOUT_KERNEL = ((0x1F800, 18), (0x1F8C8, 12)) + _BLOCKS_AFTER_KDMA


def register_words(fields: dict, with_kernel: bool) -> dict[int, int]:
    """Field path -> value, encoded into every register word the task layout writes."""
    layout = LAYOUT_WITH_KERNEL if with_kernel else LAYOUT_WITHOUT_KERNEL
    base = {start + 4 * i: 0 for start, count in layout for i in range(count)}
    words = REGISTERS.encode(fields, base)
    stray = sorted(set(words) - set(base))
    if stray:
        raise ValueError(f"fields set registers outside the task layout: {[hex(a) for a in stray]}")
    return words


def build_task(header_fields: dict, fields: dict) -> Task:
    """A Task from header field values (by name) and register field values (by path)."""
    header = HEADER.encode(header_fields)
    with_kernel = bool(HEADER.get(header, "KBE0"))
    words = register_words(fields, with_kernel)
    layout = LAYOUT_WITH_KERNEL if with_kernel else LAYOUT_WITHOUT_KERNEL
    records = [Record(start, [words[start + 4 * i] for i in range(count)]) for start, count in layout]
    # extension words follow when the map says so (KBase0 = 3: upstream rrmm_r2rr_m32_* task 1)
    return Task(header=header, records=records, extension=[0] * HEADER.extension_words(header))
