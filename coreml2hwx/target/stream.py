"""Task streams: bytes <-> Tasks (header words + register-write records), per stream format.

Two formats exist in the evidence (ane-facts.md §2, §3; h14-register-census.md §3):

* **chained** (H11, H13): a fixed-size header, then dense records `((count-1) << 26) | byte_address`.
  A task's size comes from the program descriptor (first task) or from the previous task's
  NextSize field; the next task starts at NextPointer.  Tasks are self-delimiting by size only.
* **framed** (H14 and later): a 16-byte lead frame, then tasks back to back, each padded to 16 bytes;
  header word 0 holds the task's own size in words.  Records are dense
  (`[31]=0, [30:21] tag, [20:15] count-1, [14:0] word address`) or masked
  (`[31]=1, [30:15] 16-bit mask, [14:0] word address`).

Every loop is bounded by the data size; any malformed stream raises ProgramFormatError naming the
byte offset of the fault.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from coreml2hwx.errors import ProgramFormatError
from coreml2hwx.program import Record, Task


def words_of(data: bytes, offset: int, count: int, file=None) -> list[int]:
    end = offset + 4 * count
    if offset < 0 or end > len(data):
        raise ProgramFormatError(f"task stream ends inside a {count}-word read "
                                 f"({len(data)} bytes available)", file=file, offset=offset)
    return list(struct.unpack_from(f"<{count}I", data, offset))


def pack_words(words) -> bytes:
    return struct.pack(f"<{len(words)}I", *words)


def round_up(value: int, align: int) -> int:
    return -(-value // align) * align


def read_header(fmt, data: bytes, offset: int, file=None):
    """(header words, extension words, offset of the first record) of the task at `offset`."""
    header = words_of(data, offset, fmt.header_words, file)
    pos = offset + 4 * fmt.header_words
    extension = words_of(data, pos, 1, file) if fmt.has_extension(header) else []
    return header, extension, pos + 4 * len(extension)


def place_tasks(tasks: list[Task], encode_task, start: bytes = b"") -> bytes:
    """Each task's words at its `offset` after `start`, zero padding between; offsets increase."""
    out = bytearray(start)
    for task in tasks:
        if task.offset < len(out):
            raise ValueError(f"task at {task.offset:#x} overlaps the previous one")
        out += bytes(task.offset - len(out))
        out += pack_words(encode_task(task))
    return bytes(out)


@dataclass(frozen=True)
class ChainedFormat:
    """H11/H13 style stream (see module docstring).

    `extension_rule(header)` says whether one extra word follows the header (H13: header[9] & 3 == 3,
    `jsw-td`; H11: header word 4 bit 24, `anetools`).  `task_align` is the NextPointer rounding the
    compiler uses when it lays tasks out (H13: 256, h13 census §1.1; H11: 0x200, `anetools`).
    """

    header_words: int
    task_align: int
    next_size_word: int  # header word holding NextSize at bits 16 and up
    next_size_mask: int  # NextSize's mask once shifted down (H13 9 bits, H11 8 bits)
    next_pointer_word: int  # header word holding NextPointer
    eon_word: int  # header word holding EON (bit 25)
    extension_word: int
    extension_mask: int

    def has_extension(self, header: list[int]) -> bool:
        mask = self.extension_mask
        return header[self.extension_word] & mask == mask

    # -- decoding ---------------------------------------------------------------------------
    def decode(self, data: bytes, *, task_count=None, first_task_words=None, file=None,
               base_offset=0) -> list[Task]:
        tasks: list[Task] = []
        offset, size = 0, first_task_words
        seen = set()
        while True:
            if offset in seen or (tasks and offset <= tasks[-1].offset):
                raise ProgramFormatError("task chain loops back (NextPointer does not move forward)",
                                         file=file, offset=base_offset + offset)
            seen.add(offset)
            task = self.decode_task(data, offset, size, file=file, base_offset=base_offset)
            tasks.append(task)
            header = task.header
            next_pointer = header[self.next_pointer_word]
            last = header[self.eon_word] >> 25 & 1 or next_pointer == 0
            if task_count is not None and len(tasks) == task_count:
                if not last:
                    raise ProgramFormatError(f"task {len(tasks) - 1} is not marked last, but the "
                                             f"program declares {task_count} tasks",
                                             file=file, offset=base_offset + offset)
                break
            if last:
                if task_count is not None and len(tasks) != task_count:
                    raise ProgramFormatError(f"chain ends after {len(tasks)} tasks, the program "
                                             f"declares {task_count}", file=file,
                                             offset=base_offset + offset)
                break
            if next_pointer >= len(data):
                raise ProgramFormatError(f"NextPointer {next_pointer:#x} points past the end of the "
                                         f"{len(data):#x}-byte task stream", file=file,
                                         offset=base_offset + offset + 4 * self.next_pointer_word)
            size = (header[self.next_size_word] >> 16 & self.next_size_mask) + 1
            offset = next_pointer
        return tasks

    def decode_task(self, data, offset, size_words, *, file=None, base_offset=0) -> Task:
        """One task at `offset`; with `size_words` None, records run until a zero word or the end."""
        header, extension, pos = read_header(self, data, offset, file)
        end = len(data) // 4 * 4 if size_words is None else offset + 4 * size_words
        if end > len(data):
            raise ProgramFormatError(f"task of {size_words} words overruns the "
                                     f"{len(data):#x}-byte stream", file=file,
                                     offset=base_offset + offset)
        if pos > end:
            raise ProgramFormatError(f"declared task size {size_words} words is smaller than its "
                                     "header", file=file, offset=base_offset + offset)
        body = words_of(data, pos, (end - pos) // 4, file)
        records, i = [], 0
        while i < len(body):
            word = body[i]
            if word == 0:
                if size_words is None:
                    break
                raise ProgramFormatError("zero word where a record header is expected",
                                         file=file, offset=base_offset + pos + 4 * i)
            count = (word >> 26) + 1
            if i + 1 + count > len(body):
                raise ProgramFormatError(f"record {word:#010x} ({count} words) overruns its task "
                                         f"(task ends at {base_offset + end:#x})", file=file,
                                         offset=base_offset + pos + 4 * i)
            records.append(Record(word & 0x3FFFFFF, body[i + 1:i + 1 + count]))
            i += 1 + count
        return Task(header=header, records=records, offset=offset, extension=extension)

    # -- encoding ---------------------------------------------------------------------------
    def encode_task(self, task: Task) -> list[int]:
        words = list(task.header) + list(task.extension)
        for rec in task.records:
            if rec.mask is not None or rec.tag:
                raise ValueError("chained streams have only plain dense records")
            if not 1 <= len(rec.values) <= 64 or rec.address >> 26:
                raise ValueError(f"record at {rec.address:#x} with {len(rec.values)} words "
                                 "does not fit the (count-1)<<26 | address form")
            words.append((len(rec.values) - 1) << 26 | rec.address)
            words.extend(rec.values)
        return words

    def encode(self, tasks: list[Task]) -> bytes:
        """Tasks at their `offset`s, zero padding between (offsets must increase)."""
        return place_tasks(tasks, self.encode_task)

    def layout(self, tasks: list[Task]) -> None:
        """Fill in offsets and the chaining header fields (NextSize, NextPointer) in place."""
        offset = 0
        for task in tasks:
            task.offset = offset
            offset = round_up(offset + 4 * task.size_words, self.task_align)
        for task, nxt in zip(tasks, tasks[1:] + [None]):
            ns, np_ = self.next_size_word, self.next_pointer_word
            size_field = 0 if nxt is None else nxt.size_words - 1
            task.header[ns] = task.header[ns] & ~(self.next_size_mask << 16) | size_field << 16
            task.header[np_] = 0 if nxt is None else nxt.offset


@dataclass(frozen=True)
class FramedFormat:
    """H14+ style stream (see module docstring)."""

    header_words: int
    extension_word: int = 7
    extension_mask: int = 3
    lead_frame: tuple = (1, 0, 0, 0)  # fdt-guide: a 16-byte frame with word 1 [C]; size field 0

    def has_extension(self, header):
        return header[self.extension_word] & self.extension_mask == self.extension_mask

    def decode(self, data: bytes, *, task_count=None, first_task_words=None, file=None,
               base_offset=0) -> list[Task]:
        tasks: list[Task] = []
        offset = 0
        while offset + 4 <= len(data):
            if task_count is not None and len(tasks) == task_count:
                break
            (word0,) = struct.unpack_from("<I", data, offset)
            size = word0 >> 16 & 0x7FF
            if size == 0:  # empty 16-byte frame (the lead frame among them)
                offset += 16
                continue
            tasks.append(self.decode_task(data, offset, size, file=file, base_offset=base_offset))
            offset = round_up(offset + 4 * size, 16)
        if task_count is not None and len(tasks) != task_count:
            raise ProgramFormatError(f"stream holds {len(tasks)} tasks, the program declares "
                                     f"{task_count}", file=file, offset=base_offset + offset)
        return tasks

    def decode_task(self, data, offset, size_words, *, file=None, base_offset=0) -> Task:
        end = offset + 4 * size_words
        if end > len(data):
            raise ProgramFormatError(f"task of {size_words} words overruns the "
                                     f"{len(data):#x}-byte stream", file=file,
                                     offset=base_offset + offset)
        header, extension, pos = read_header(self, data, offset, file)
        if pos > end:
            raise ProgramFormatError(f"task size {size_words} words is smaller than its header",
                                     file=file, offset=base_offset + offset)
        records = []
        while pos < end:
            (word,) = struct.unpack_from("<I", data, pos)
            address = 4 * (word & 0x7FFF)
            if word >> 31:
                mask = word >> 15 & 0xFFFF
                count, rec = 1 + bin(mask).count("1"), dict(mask=mask)
            else:
                count, rec = (word >> 15 & 0x3F) + 1, dict(tag=word >> 21 & 0x3FF)
            if pos + 4 + 4 * count > end:
                raise ProgramFormatError(f"record {word:#010x} ({count} words) overruns its task",
                                         file=file, offset=base_offset + pos)
            records.append(Record(address, words_of(data, pos + 4, count, file), **rec))
            pos += 4 + 4 * count
        return Task(header=header, records=records, offset=offset, extension=extension)

    def record_header(self, rec: Record) -> int:
        if rec.address % 4 or rec.address >> 17:
            raise ValueError(f"register address {rec.address:#x} does not fit a 15-bit word address")
        word_address = rec.address // 4
        if rec.mask is not None:
            if len(rec.values) != 1 + bin(rec.mask).count("1"):
                raise ValueError("masked record: value count does not match its mask")
            return 1 << 31 | rec.mask << 15 | word_address
        if not 1 <= len(rec.values) <= 64 or rec.tag >> 10:
            raise ValueError(f"dense record at {rec.address:#x}: bad count or tag")
        return rec.tag << 21 | (len(rec.values) - 1) << 15 | word_address

    def encode_task(self, task: Task) -> list[int]:
        words = list(task.header) + list(task.extension)
        for rec in task.records:
            words.append(self.record_header(rec))
            words.extend(rec.values)
        return words

    def encode(self, tasks: list[Task]) -> bytes:
        """Tasks at their `offset`s; the lead frame fills the first 16 bytes when they are free."""
        lead = pack_words(self.lead_frame)
        start = lead if tasks and tasks[0].offset >= len(lead) else b""
        return place_tasks(tasks, self.encode_task, start)

    def layout(self, tasks: list[Task]) -> None:
        """Fill in offsets (after the lead frame) and the size field of header word 0."""
        offset = 4 * len(self.lead_frame)
        for task in tasks:
            task.offset = offset
            task.header[0] = task.header[0] & ~(0x7FF << 16) | task.size_words << 16
            offset = round_up(offset + 4 * task.size_words, 16)
