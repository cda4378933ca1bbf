"""How Apple's compiler packs an H14 task's register writes into records.

An H14 task body is a list of records (`coreml2hwx.program.Record`, encoded by
`coreml2hwx.target.stream.FramedFormat`): *dense* records write consecutive registers and carry a
10-bit tag, *masked* records write a base register plus one register per set bit of a 16-bit mask
(the 16 words after the base: a 17-word window).  Given the registers a task writes, this module
returns the record list Apple's `ane-compile-hwx` emits for them.

The rule, read off the 38 tasks of ../shared/oracles/h14 (h14 census §3):

1. **Buffer addresses go last, as tagged dense records.**  Every register holding a buffer address
   (the words named in `slots`) is taken out of its block and written by a dense record of its
   own, tag = 0x100 + 4 x BAR slot (bit 29 "address", slot in bits 27:23), together with the word
   after it when that word is written: the Hi half of a 64-bit address (0x1110/0x1114,
   0x1508/0x150C, 0x1908/0x190C, 0x1A00/0x1A04; the 32-bit 0x19F4 is a 1-word record).  These
   records follow all other records, in the block order of rule 2; inside the TileDMA blocks in
   address order (0x1110 before 0x1128, binary_add/binary_mul), inside KernelDMA the later
   address first (0x1A00 before 0x19F4, every LUT task).
2. **Blocks in a fixed order:** KernelDMA (0x1900), Common (0x0000), TileDMASrc (0x1100),
   L2 (0x0500), PE (0x0900), NE (0x0D00), TileDMADst (0x1500).  Within a block, records go in
   address order.  No record spans two blocks.
3. **Within a block, the fewest words.**  The block's remaining writes (sorted) are covered by a
   sequence of records, each starting at the first register not yet written: either a dense
   record over the run of consecutive written registers there (at most 64), or a masked record
   over every written register of the 17-word window there.  Apple's choice is the sequence with
   the fewest words (headers + values).  Ties go to the dense record, except where that dense
   record would write a single register and the masked one more: then masked.  (Ties seen: conv
   KernelDMA 0x1900 takes masked + dense 5 + dense 31 rather than dense 1 + masked 16 + dense 31;
   at 0x1944 dense 5 rather than masked 16; binary_add TileDMASrc dense 4 + masked 6 rather than
   masked 8 + dense 2; a lone register is a 1-word dense record, never a masked record with mask 0.)
4. **0x1524 = 0xDEAD is a filler.**  A task, padded to 16 bytes, never ends on a 64-byte
   boundary of the task stream (counted from the stream's start, its 16-byte lead frame
   included).  Where it would, Apple adds 2-word records writing 0xDEAD to 0x1524 (TileDMADst's
   last word, otherwise never written) until it does not: one when the unpadded end falls on
   the boundary, two when it falls 3 or 2 words short of it.  They go where the TileDMADst
   block's records go (after NE; in a task without TileDMADst words too), before the address
   records, and are never merged into the TileDMADst masked record.  Holds for all 38 oracle
   tasks (6 with fillers: env_act_silu_1x256x32x32, env_bcast_add_1x64x8x8_runtime_1x64x1x1#1
   and env_mm_r3rr_m64_k64_n64_tx0_ty1_b1#0 two, binary_add_1x64x8x8, binary_mul_1x128x16x16
   and reduce_sum_axes_2_3 one) and for the upstream oracles checked (joshuaswarren/
   mil-hwx-compiler research/oracles/h14, same compiler build: binary_add_1x{64,128,4096}x1x1
   two, binary_add_1x3x224x224 and 1x128x16x16 one, binary_pow_1x128x16x16 tasks 0 and 1 two
   with no other TileDMADst word).  `pack_records(..., at=offset)` applies the rule; without
   `at`, `repeats` gives the count (address -> times its standalone record is emitted).

This reproduces all 38 oracle tasks exactly (record order, dense/masked choice, masks, tags,
values, fillers; tests/target/test_h14_records.py).  It also reproduces, checked by hand, 8
tasks of the upstream oracle set that ../shared does not hold (joshuaswarren/mil-hwx-compiler
research/oracles/h14: binary_pow_1x128x16x16 x3, whose tasks 0 and 1 write 0x1524 twice with no
other TileDMADst word; binary_add_1x3x224x224; env_bcast_add_2x64x8x8_runtime_2x64x8x8; two
conv_probe and one env_conv
case).  Weakest part: the order of address records inside KernelDMA is seen only in LUT tasks
(0x1A00, then 0x19F4); no task seen has a kernel address (0x1908) next to LUT addresses, and the
rule above would put it after them.
"""

from __future__ import annotations

from typing import Mapping

from coreml2hwx.program import Record

# Block bases in the order Apple emits them (rule 2); each block spans 0x400 bytes from its base.
BLOCK_ORDER = (0x1900, 0x0000, 0x1100, 0x0500, 0x0900, 0x0D00, 0x1500)
BLOCK_SPAN = 0x400
KERNEL_DMA = 0x1900
# Registers Apple writes as a record of their own after their block (rule 4).
FILLER, FILLER_VALUE = 0x1524, 0xDEAD
STANDALONE = (FILLER,)
LINE_BYTES, TASK_ALIGN = 64, 16  # a task must not end on a line; tasks are padded to 16 bytes
WINDOW_WORDS = 16  # mask bits of a masked record
MAX_DENSE = 64  # count field [20:15] + 1
ADDRESS_TAG = 0x100


def address_tag(slot: int) -> int:
    """Dense-record tag (header bits 30:21) of a record writing a buffer address bound to `slot`."""
    return ADDRESS_TAG | slot << 2


def pack_records(writes: Mapping[int, int], slots: Mapping[int, int] | None = None, *,
                 repeats: Mapping[int, int] | None = None, at: int | None = None) -> list[Record]:
    """Apple's record list for a task writing `writes` (byte address -> 32-bit value).

    `slots` maps each register holding a buffer address to the BAR slot it is bound to; naming the
    Lo word of a 64-bit address is enough (the Hi word may be named too, with the same slot).
    `at` is the byte offset in the task stream where the task's first record goes (after its
    header); given it, the 0x1524 fillers of rule 4 are added as the task's end requires.
    Otherwise `repeats` says how often a standalone register's record (0x1524) is emitted, 1 when
    not given.
    Raises ValueError on an address outside the H14 blocks, a misaligned address, a value that is
    not a 32-bit word, or a slot for a register the task does not write.
    """
    if at is not None:
        return pack_at(writes, slots, at)
    slots = dict(slots or {})
    repeats = dict(repeats or {})
    check(writes, slots, repeats)
    by_block: dict[int, list[int]] = {base: [] for base in BLOCK_ORDER}
    for address in sorted(writes):
        by_block[block_of(address)].append(address)
    groups = {base: address_groups(writes, slots, by_block[base]) for base in BLOCK_ORDER}
    records: list[Record] = []
    for base in BLOCK_ORDER:
        taken = {a for group in groups[base] for a in group}
        plain = [a for a in by_block[base] if a not in taken and a not in STANDALONE]
        records += [record(writes, rec) for rec in split_block(plain)]
        for address in STANDALONE:
            if address in by_block[base]:
                records += [Record(address, [writes[address]])] * repeats.get(address, 1)
    for base in BLOCK_ORDER:
        ordered = groups[base][::-1] if base == KERNEL_DMA else groups[base]
        records += [Record(g[0], [writes[a] for a in g], tag=address_tag(slots[g[0]]))
                    for g in ordered]
    return records


def pack_at(writes, slots, at: int) -> list[Record]:
    """Rule 4: the records, with as many fillers as keep the padded task end off a line end."""
    plain = {a: v for a, v in writes.items() if a != FILLER}
    records = pack_records(plain, slots)
    count = fillers(at + 4 * sum(1 + len(r.values) for r in records))
    if not count:
        return records
    return pack_records({**plain, FILLER: FILLER_VALUE}, slots, repeats={FILLER: count})


def fillers(end: int) -> int:
    """How many 2-word filler records a task ending at stream byte `end` gets (rule 4)."""
    if end % 4:
        raise ValueError(f"task end {end:#x} is not word aligned")
    count = 0
    while -(-(end + 8 * count) // TASK_ALIGN) * TASK_ALIGN % LINE_BYTES == 0:
        count += 1
    return count


def check(writes, slots, repeats) -> None:
    for address, value in writes.items():
        if address % 4 or block_of(address) is None:
            raise ValueError(f"register {address:#x} is not an H14 register address "
                             f"(blocks {', '.join(f'{b:#06x}' for b in sorted(BLOCK_ORDER))})")
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"register {address:#x}: value {value!r} is not a 32-bit word")
    for address, slot in slots.items():
        if address not in writes:
            raise ValueError(f"slot given for register {address:#x}, which the task does not write")
        if not 0 <= slot < 64:
            raise ValueError(f"register {address:#x}: BAR slot {slot} does not fit the record tag")
    for address, times in repeats.items():
        if address not in STANDALONE or times < 1:
            raise ValueError(f"repeat count {times} for {address:#x}: only "
                             f"{', '.join(f'{a:#x}' for a in STANDALONE)} repeat, at least once")


def block_of(address: int) -> int | None:
    for base in BLOCK_ORDER:
        if base <= address < base + BLOCK_SPAN:
            return base
    return None


def split_block(addresses: list[int]) -> list[tuple[str, list[int]]]:
    """(kind, addresses) of each record covering one block's sorted addresses (rule 3).

    kind is "dense" or "masked".  best[i] is the cheapest cover of addresses[i:] as (words, kind
    of its first record, registers that record takes); it is filled from the end.
    """
    n = len(addresses)
    best: list[tuple[int, str, int]] = [(0, "", 0)] * (n + 1)  # (words, kind, registers taken)
    for i in range(n - 1, -1, -1):
        run, window = run_length(addresses, i), window_length(addresses, i)
        dense = 1 + run + best[i + run][0]
        masked = 1 + window + best[i + window][0]
        if masked < dense or (masked == dense and run == 1 and window > 1):
            best[i] = (masked, "masked", window)
        else:
            best[i] = (dense, "dense", run)
    out, i = [], 0
    while i < n:
        _, kind, taken = best[i]
        out.append((kind, addresses[i:i + taken]))
        i += taken
    return out


def run_length(addresses: list[int], i: int) -> int:
    """Consecutive registers written from addresses[i] on, at most one dense record's worth."""
    count = 1
    while (i + count < len(addresses) and count < MAX_DENSE
           and addresses[i + count] == addresses[i] + 4 * count):
        count += 1
    return count


def window_length(addresses: list[int], i: int) -> int:
    """Written registers in the masked-record window starting at addresses[i]."""
    end = addresses[i] + 4 * WINDOW_WORDS
    count = 1
    while i + count < len(addresses) and addresses[i + count] <= end:
        count += 1
    return count


def record(writes, rec: tuple[str, list[int]]) -> Record:
    kind, addresses = rec
    values = [writes[a] for a in addresses]
    if kind == "dense":
        return Record(addresses[0], values)
    base = addresses[0]
    mask = sum(1 << ((a - base) // 4 - 1) for a in addresses[1:])
    return Record(base, values, mask=mask)


def address_groups(writes, slots, addresses: list[int]) -> list[list[int]]:
    """One block's address records (rule 1), in address order: each slot word with its Hi word.

    The word after a slot word belongs to the same record when it is written and is not bound to
    a different slot: the Hi half of a 64-bit address (0x1114 after 0x1110, 0x1A04 after 0x1A00;
    0x19F8 after the 32-bit 0x19F4 is never written).  So `slots` may name the Lo word only or
    both words.
    """
    groups: list[list[int]] = []
    for address in addresses:  # sorted
        if address not in slots or (groups and address in groups[-1]):
            continue
        group = [address]
        high = address + 4
        if high in writes and slots.get(high, slots[address]) == slots[address]:
            group.append(high)
        groups.append(group)
    return groups
