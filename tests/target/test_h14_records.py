"""H14 record packing (coreml2hwx.target.h14.records) against the records Apple's compiler emitted.

Ground truth: every task of ../shared/oracles/h14/*.json (Apple's ane-compile-hwx, target h14).
For each task the test takes from the oracle only what a compiler knows before packing: the
registers written (the union of the task's `blocks` words), the BAR slot of each address word (read
off the oracle's tagged dense records) and how often the standalone 0x1524 record is repeated.  It
packs them and compares the encoded record headers and values with the oracle's `records`.
A second test leaves out the 0x1524 filler and its count and gives the packer only where the task
starts in the stream (the oracle's task sizes, 16-byte padded, after the 16-byte lead frame): the
packer must add the fillers itself.  All 38 tasks are expected to match; none is marked as an
expected failure.
"""

from __future__ import annotations

import pytest

from coreml2hwx.target import generation
from coreml2hwx.target.h14.records import FILLER, address_tag, fillers, pack_records
from tests.conftest import load_json, oracle_files

FMT = generation("h14").stream
TASKS = [(case, index, task)
         for case in (load_json(p) for p in oracle_files("h14"))
         for index, task in enumerate(case["task_descriptors"])]
LEAD_FRAME_BYTES = 16  # oracle README: the task stream opens with a 16-byte frame


def stream_offset(case, index: int) -> int:
    """Byte offset of task `index` in its stream, from the sizes Apple gave the tasks before it."""
    offset = LEAD_FRAME_BYTES
    for task in case["task_descriptors"][:index]:
        offset += -(-task["size_bytes"] // 16) * 16
    return offset


def hex_int(text: str) -> int:
    return int(text, 16)


def oracle_writes(task) -> dict[int, int]:
    return {hex_int(a): hex_int(v) for block in task["blocks"].values()
            for a, v in block["words"].items()}


def header_addresses(header: int) -> list[int]:
    """Byte addresses an H14 record header writes (oracle README, 'H14 record header')."""
    base = 4 * (header & 0x7FFF)
    if header >> 31:
        mask = header >> 15 & 0xFFFF
        return [base] + [base + 4 * (1 + b) for b in range(16) if mask >> b & 1]
    return [base + 4 * i for i in range(((header >> 15) & 0x3F) + 1)]


def oracle_records(task) -> list[tuple[int, list[int]]]:
    writes = oracle_writes(task)
    return [(hex_int(r["header"]), [writes[a] for a in header_addresses(hex_int(r["header"]))])
            for r in task["records"]]


def oracle_slots(task, every_word: bool = False) -> dict[int, int]:
    """Address register -> BAR slot, from the tags of the oracle's dense records (census §3).

    By default only each tagged record's first word is named (the Lo word, as the H14 register
    translation names it); with `every_word`, every word the record writes.
    """
    slots = {}
    for header, _ in oracle_records(task):
        tag = header >> 21 & 0x3FF
        if header >> 31 or not tag:
            continue
        slot = (tag - 0x100) >> 2
        assert address_tag(slot) == tag, f"tag {tag:#x} is not 0x100 + 4 x slot"
        words = header_addresses(header) if every_word else header_addresses(header)[:1]
        slots.update(dict.fromkeys(words, slot))
    return slots


def oracle_repeats(task) -> dict[int, int]:
    """How many times each single-word 0x1524 record occurs in the task."""
    headers = [hex_int(r["header"]) for r in task["records"]]
    times = sum(1 for h in headers if not h >> 31 and header_addresses(h) == [0x1524])
    return {0x1524: times} if times else {}


def task_id(item) -> str:
    case, index, _ = item
    return f"{case['case']}#{index}"


def test_every_compiled_oracle_task_is_checked():
    # 27 oracle files, one refused by Apple's compiler: 38 tasks (h14 census §1).
    assert len(TASKS) >= 38


def encoded(records) -> list[tuple[int, list[int]]]:
    return [(FMT.record_header(r), r.values) for r in records]


@pytest.mark.parametrize("item", TASKS, ids=task_id)
def test_records_equal_apples(item):
    _, _, task = item
    writes, repeats = oracle_writes(task), oracle_repeats(task)
    ours = encoded(pack_records(writes, oracle_slots(task), repeats=repeats))
    expected = oracle_records(task)
    assert [f"{h:#010x}" for h, _ in ours] == [f"{h:#010x}" for h, _ in expected]
    assert ours == expected
    words = len(task["header_words"]) + sum(1 + len(v) for _, v in ours)
    assert 4 * words == task["size_bytes"]
    # Naming both words of each 64-bit address gives the same records.
    assert encoded(pack_records(writes, oracle_slots(task, every_word=True),
                                repeats=repeats)) == expected


@pytest.mark.parametrize("item", TASKS, ids=task_id)
def test_fillers_follow_from_where_the_task_ends(item):
    case, index, task = item
    writes = oracle_writes(task)
    writes.pop(FILLER, None)
    at = stream_offset(case, index) + 4 * len(task["header_words"])
    assert encoded(pack_records(writes, oracle_slots(task), at=at)) == oracle_records(task)


def test_filler_count_keeps_the_padded_end_off_a_64_byte_line():
    # Unpadded task ends (stream bytes) in the oracles: 0x100 (binary_add_1x64x8x8: one filler),
    # 0xF8 (env_act_silu_1x256x32x32: two), 0xB4 (env_mm_r3rr_m64_k64_n64_tx0_ty1_b1#0: two),
    # 0xF0 (env_act_gelu_1x768x1x1_sigmoid_approximation) and 0xC4
    # (binary_add_c64_constant_scalar): none.
    assert [fillers(end) for end in (0x100, 0xF8, 0xB4, 0xF0, 0xC4)] == [1, 2, 2, 0, 0]
    with pytest.raises(ValueError, match="word aligned"):
        fillers(0x102)


def test_lone_register_is_dense_and_window_is_seventeen_words():
    # Evidence: a lone PE 0x900 is a 1-word dense record (binary_add_1x64x8x8); 0x40 rides in the
    # Common masked record at mask bit 15 (binary_pow_1x64x1x1#2, mask 0xe65c); bit 15 is the last
    # mask bit, so 0x44 needs a record of its own (oracle README, H14 record header).
    (rec,) = pack_records({0x900: 5}, {})
    assert rec.mask is None and rec.values == [5]
    (rec,) = pack_records({0x0: 1, 0x40: 2}, {})
    assert rec.mask == 0x8000
    first, second = pack_records({0x0: 1, 0x44: 2}, {})
    assert first.address == 0 and second.address == 0x44


def test_bad_input_raises():
    with pytest.raises(ValueError, match="0x2000"):
        pack_records({0x2000: 1}, {})
    with pytest.raises(ValueError, match="not write"):
        pack_records({0x1110: 0}, {0x1108: 4})
    with pytest.raises(ValueError, match="32-bit"):
        pack_records({0x0: 1 << 32}, {})
