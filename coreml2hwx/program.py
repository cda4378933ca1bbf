"""The object model every stage speaks: a Program of Tasks, each a header plus register-write records.

A `Program` is what the compiler builds and what a reader makes of an `.hwx`, `.anec` or raw task
stream.  It is generation-neutral: the per-generation meaning of header words and register addresses
lives in `coreml2hwx.target.<gen>` (register maps as data, stream codecs).

Registers persist from task to task: a task's *state* is the previous task's state plus its own
writes (`Program.states()`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator


@dataclass
class Record:
    """One register-write record of a task.

    `address` is the byte address of the first register written.  A dense record writes
    `values[i]` to `address + 4*i`.  A masked record (H14 and later, `mask` not None) writes
    `values[0]` to `address` and one further value to `address + 4*(1+b)` for every set bit `b` of
    the 16-bit mask, in increasing `b`.  `tag` holds the extra header bits of H14+ dense records
    (bits 30:21, a BAR-slot binding); it is 0 on H13.
    """

    address: int
    values: list[int]
    mask: int | None = None
    tag: int = 0

    def addresses(self) -> list[int]:
        if self.mask is None:
            return [self.address + 4 * i for i in range(len(self.values))]
        extra = [self.address + 4 * (1 + b) for b in range(16) if self.mask >> b & 1]
        return [self.address] + extra

    def writes(self) -> Iterator[tuple[int, int]]:
        return zip(self.addresses(), self.values)


@dataclass
class Task:
    """One hardware task: raw header words, optional extension words, and records in stream order.

    `offset` is the task's byte offset inside the task stream; `size_words` its declared size.
    """

    header: list[int]
    records: list[Record] = field(default_factory=list)
    offset: int = 0
    extension: list[int] = field(default_factory=list)

    @property
    def size_words(self) -> int:
        return len(self.header) + len(self.extension) + sum(1 + len(r.values) for r in self.records)

    def writes(self) -> dict[int, int]:
        """Registers this task writes, address -> value (a later write of the same address wins)."""
        out: dict[int, int] = {}
        for rec in self.records:
            out.update(rec.writes())
        return out


@dataclass
class Tensor:
    """A buffer the program reads or writes: shape (N, C, H, W), byte strides (n, c, h, w)."""

    name: str
    role: str  # "input", "output" or "intermediate"
    shape: tuple[int, int, int, int]
    strides: tuple[int, int, int, int]
    dtype: str = "float16"
    slot: int | None = None  # BAR slot the tasks address it through
    total_bytes: int | None = None  # bytes of one batch element, as the tensor descriptor says
    address: int | None = None  # virtual address in the container, where it has one
    size: int | None = None  # bytes reserved for the buffer in the container, where known


@dataclass
class Program:
    """A whole ANE program."""

    target: str  # "h11" .. "h18"
    tasks: list[Task]
    constants: bytes = b""
    tensors: list[Tensor] = field(default_factory=list)
    name: str = "net"
    # What a reader learnt beside the program itself; never part of comparing two programs:
    # the container's program-descriptor fields, and (for an oracle JSON, which keeps no
    # constant bytes) the constant section's summary in the oracle's shape.
    descriptor: dict | None = field(default=None, compare=False, repr=False)
    constant_summary: dict | None = field(default=None, compare=False, repr=False)

    @property
    def inputs(self) -> list[Tensor]:
        return [t for t in self.tensors if t.role == "input"]

    @property
    def outputs(self) -> list[Tensor]:
        return [t for t in self.tensors if t.role == "output"]

    def states(self) -> Iterator[tuple[Task, dict[int, int]]]:
        """Yield each task with the full register state it runs with (registers persist)."""
        state: dict[int, int] = {}
        for task in self.tasks:
            state = {**state, **task.writes()}
            yield task, state
