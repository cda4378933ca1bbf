"""ANE generations: what the container calls them, how their task streams are laid out.

`generation("h13")` / `generation_for_subtype(4)` give a `Generation` with the stream codec
(`decode_stream`, `encode_stream`, `layout`) and, lazily, the register map of that generation
(`coreml2hwx.target.maps.<name>`: `REGISTERS`, `HEADER`).

The table is ane-facts.md §1.1 (subtypes confirmed by Apple compiles for h13..h17 in `jsw-cont`;
H13 = 4 in every real tinygrad file).  Stream formats: §2.1-2.5 (H13, [A]), §2.14 (H11, [C]),
§3.1 (H14, [B]), §3.2/3.3 (H15-H18, [C]).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cached_property

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.target.stream import ChainedFormat, FramedFormat

# H13: 10-word header; NextSize in word 1, NextPointer word 7, EON word 0; extension word when
# header[9] & 3 == 3 (jsw-td); tasks laid out at 256-byte multiples (h13 census §1.1).
H13_STREAM = ChainedFormat(header_words=10, task_align=256, next_size_word=1, next_size_mask=0x1FF,
                           next_pointer_word=7, eon_word=0, extension_word=9, extension_mask=3)
# H11: 7-word header (+1 DTID word when word 4 bit 24 is set), NextSize[23:16] in word 1,
# NextPointer in word 5, tasks at a 0x200 stride (anetools [C]).
H11_STREAM = ChainedFormat(header_words=7, task_align=0x200, next_size_word=1, next_size_mask=0xFF,
                           next_pointer_word=5, eon_word=0, extension_word=4, extension_mask=1 << 24)
H14_STREAM = FramedFormat(header_words=8)
# H16+: fdt-guide/fdt-py read a 9-word header [C]; unverified against any Apple data here.
H16_STREAM = FramedFormat(header_words=9)


@dataclass(frozen=True)
class Generation:
    name: str
    cpusubtype: int
    isa: int
    soc: str
    stream: object  # ChainedFormat | FramedFormat | None
    evidence: str

    def _stream(self):
        if self.stream is None:
            raise UnsupportedError(f"{self.name}: no evidence for its task-stream layout")
        return self.stream

    def decode_stream(self, data: bytes, *, task_count=None, first_task_words=None, file=None,
                      base_offset=0):
        return self._stream().decode(data, task_count=task_count, first_task_words=first_task_words,
                                     file=file, base_offset=base_offset)

    def encode_stream(self, tasks) -> bytes:
        return self._stream().encode(tasks)

    def layout(self, tasks) -> None:
        """Assign task offsets and the header fields that chain tasks together."""
        self._stream().layout(tasks)

    def record_headers(self, task) -> list[int]:
        """The encoded record header word of each record of `task`, in order."""
        words = self._stream().encode_task(task)
        pos, out = len(task.header) + len(task.extension), []
        for rec in task.records:
            out.append(words[pos])
            pos += 1 + len(rec.values)
        return out

    @cached_property
    def maps(self):
        """The register-map module of this generation (REGISTERS, HEADER)."""
        try:
            return importlib.import_module(f"coreml2hwx.target.maps.{self.name}")
        except ModuleNotFoundError:
            raise UnsupportedError(f"{self.name}: no register map") from None


GENERATIONS = {g.name: g for g in [
    Generation("h11", 1, 5, "A12", H11_STREAM, "C"),
    Generation("h12", 3, 6, "A13", None, "none"),
    Generation("h13", 4, 7, "A14, M1", H13_STREAM, "A"),
    Generation("h14", 5, 11, "A15, M2", H14_STREAM, "B"),
    Generation("h15", 6, 8, "A16, M3", H14_STREAM, "C"),
    Generation("h16", 7, 17, "A17 Pro, M4", H16_STREAM, "C"),
    Generation("h17", 9, 19, "A18, M5", H16_STREAM, "C"),
    Generation("h18", 10, 20, "A19", H16_STREAM, "C"),
]}


def generation(name: str) -> Generation:
    try:
        return GENERATIONS[name.lower()]
    except KeyError:
        raise UnsupportedError(f"unknown target {name!r}; known: {', '.join(GENERATIONS)}") from None


def generation_for_subtype(cpusubtype: int) -> Generation:
    for gen in GENERATIONS.values():
        if gen.cpusubtype == cpusubtype:
            return gen
    raise UnsupportedError(f"cpusubtype {cpusubtype} names no known ANE generation")
