"""Register maps kept as data: fields, registers, blocks, a generation's map and its task header.

A `Field` is a name, a bit range, an evidence grade and a source (where the fact comes from).
A `Register` is a word at a byte offset inside its `Block`; its named fields never overlap, and the
bits no field names are kept as raw gap fields (`Bits31_21`, `Bit7`), so decoding a word and
encoding it again gives the same word.  A `RegisterMap` is one generation's blocks; a `HeaderMap`
its task-header words.  Everything is addressed by byte address and named by a dotted path
`block.Register.Field` (blocks lowercase as in the oracle JSON, registers and fields CamelCase as
in the fact sheet), e.g. ``common.ConvCfg.Kw``.

Field values are the raw bits of the field (a stride field `[31:6]` holds bytes / 64, as Apple's
register printer shows it), converted by the field's kind: `uint`, `sint` (two's complement),
`bool` (one bit), `fp16`, `fp32` (IEEE bits; NaN payloads are not preserved).

Grades, strongest first (ane-facts.md §0.1): A = Apple's printer or Apple data, A-obs = role seen in
Apple-compiled programs, B = two sources agree, C = one reverse-engineering source, H = hypothesis,
and "-" for raw bits no source names.  Derived maps (a later generation re-basing an earlier one)
keep the weaker of the two grades.

Maps are written by hand as data (`coreml2hwx.target.maps.<gen>`); helpers `reg`, `raw`, `spec`
keep those tables short.  Definition mistakes raise ValueError at import; bad values or paths from
callers raise UnsupportedError naming the path or address and the rule broken.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field as dc_field
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from coreml2hwx.errors import UnsupportedError

GRADES = ("A", "A-obs", "B", "C", "H", "-")
KINDS = ("uint", "sint", "bool", "fp16", "fp32")
NO_EVIDENCE = "no source names these bits"


def weaker(a: str, b: str) -> str:
    """The weaker of two evidence grades."""
    return a if GRADES.index(a) >= GRADES.index(b) else b


class Evidence(NamedTuple):
    grade: str
    source: str


# ----------------------------------------------------------------------------------------------
# Fields
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    name: str
    hi: int
    lo: int
    grade: str
    source: str
    kind: str = "uint"
    values: Mapping[int, str] | None = None  # known encodings -> plain words

    def __repr__(self):
        return f"Field({self.name}[{self.hi}:{self.lo}] {self.kind} {self.grade})"

    def __post_init__(self):
        if not 0 <= self.lo <= self.hi <= 31:
            raise ValueError(f"field {self.name}: bits [{self.hi}:{self.lo}] are not inside 31..0")
        if self.grade not in GRADES:
            raise ValueError(f"field {self.name}: unknown grade {self.grade!r}")
        if self.kind not in KINDS:
            raise ValueError(f"field {self.name}: unknown kind {self.kind!r}")
        need = {"bool": 1, "fp16": 16, "fp32": 32}.get(self.kind)
        if need is not None and self.width != need:
            raise ValueError(f"field {self.name}: {self.kind} needs {need} bits, has {self.width}")
        if self.values is not None:
            object.__setattr__(self, "values", dict(self.values))

    @property
    def width(self) -> int:
        return self.hi - self.lo + 1

    @property
    def mask(self) -> int:
        """The field's bits in place inside the 32-bit word."""
        return ((1 << self.width) - 1) << self.lo

    def bits(self, word: int) -> int:
        return (word & self.mask) >> self.lo

    def value(self, bits: int):
        """Raw field bits -> the value of this field's kind."""
        if self.kind == "bool":
            return bool(bits)
        if self.kind == "sint":
            return bits - (1 << self.width) if bits >> (self.width - 1) else bits
        if self.kind == "fp16":
            return float(np.array([bits], np.uint16).view(np.float16)[0])
        if self.kind == "fp32":
            return float(np.array([bits], np.uint32).view(np.float32)[0])
        return bits

    def to_bits(self, value, where: str = "") -> int:
        """A value (number, bool, or a word of `values`) -> raw field bits; UnsupportedError if it
        does not fit."""
        where = where or self.name
        if isinstance(value, str):
            return self._named_bits(value, where)
        if self.kind in ("fp16", "fp32"):
            return self._float_bits(value, where)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, (int, np.integer)):
            raise UnsupportedError(f"{self.kind} field takes an integer, got {value!r}",
                                   where=where)
        value = int(value)
        low, high = (-(1 << (self.width - 1)), (1 << (self.width - 1)) - 1) if self.kind == "sint" \
            else (0, (1 << self.width) - 1)
        if not low <= value <= high:
            raise UnsupportedError(f"value {value} does not fit bits [{self.hi}:{self.lo}] "
                                   f"({self.kind}, {low}..{high})", where=where)
        return value & ((1 << self.width) - 1)

    def _named_bits(self, word: str, where: str) -> int:
        if not self.values:
            raise UnsupportedError(f"{self.kind} field takes a number, got {word!r}", where=where)
        for bits, name in self.values.items():
            if name == word:
                return bits
        known = ", ".join(sorted(self.values.values()))
        raise UnsupportedError(f"no known encoding {word!r} (known: {known})", where=where)

    def _float_bits(self, value, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise UnsupportedError(f"{self.kind} field takes a number, got {value!r}", where=where)
        ftype, utype = (np.float16, np.uint16) if self.kind == "fp16" else (np.float32, np.uint32)
        with np.errstate(over="ignore"):
            converted = np.array([value], ftype)
        if np.isinf(converted[0]) and np.isfinite(float(value)):
            raise UnsupportedError(f"value {value} overflows {self.kind}", where=where)
        return int(converted.view(utype)[0])

    def meaning(self, bits: int) -> str | None:
        return (self.values or {}).get(bits)

    def with_evidence(self, ev: Evidence) -> "Field":
        """The same bits, graded no stronger than `ev`, with `ev.source` added to the source."""
        return dataclasses.replace(self, grade=weaker(self.grade, ev.grade),
                                   source=f"{self.source}; {ev.source}")


def gap_field(hi: int, lo: int) -> Field:
    name = f"Bit{lo}" if hi == lo else f"Bits{hi}_{lo}"
    return Field(name, hi, lo, "-", NO_EVIDENCE)


# ----------------------------------------------------------------------------------------------
# Registers
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Register:
    """One 32-bit register at byte `offset` inside its block."""

    name: str
    offset: int
    fields: tuple[Field, ...]
    grade: str
    source: str
    note: str = ""
    layout: tuple[Field, ...] = dc_field(init=False, repr=False, compare=False)

    def __repr__(self):
        return f"Register({self.name} +{self.offset:#x}, {len(self.fields)} fields, {self.grade})"

    def __post_init__(self):
        fields = tuple(sorted(self.fields, key=lambda f: f.lo))
        object.__setattr__(self, "fields", fields)
        if self.offset % 4 or self.offset < 0:
            raise ValueError(f"register {self.name}: offset {self.offset:#x} is not word aligned")
        if self.grade not in GRADES:
            raise ValueError(f"register {self.name}: unknown grade {self.grade!r}")
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise ValueError(f"register {self.name}: duplicate field names {names}")
        layout, next_bit = [], 0
        for f in fields:
            if f.lo < next_bit:
                raise ValueError(f"register {self.name}: field {f.name} overlaps the one below")
            if f.lo > next_bit:
                layout.append(gap_field(f.lo - 1, next_bit))
            layout.append(f)
            next_bit = f.hi + 1
        if next_bit < 32:
            layout.append(gap_field(31, next_bit))
        if {g.name for g in layout if g.grade == "-"} & set(names):
            raise ValueError(f"register {self.name}: a field name collides with a gap name")
        object.__setattr__(self, "layout", tuple(layout))

    def field(self, name: str) -> Field:
        for f in self.layout:
            if f.name == name:
                return f
        raise UnsupportedError(f"register {self.name} has no field {name!r} "
                               f"(fields: {', '.join(f.name for f in self.layout)})")

    def decode(self, word: int) -> list[tuple[Field, object]]:
        """Every field of the layout (named and gap) with its value; nothing of the word is lost."""
        check_word(word, self.name)
        return [(f, f.value(f.bits(word))) for f in self.layout]

    def encode(self, values: Mapping[str, object], base: int = 0, where: str = "") -> int:
        """Set the named fields of `base` to `values`."""
        word = check_word(base, where or self.name)
        for name, value in values.items():
            f = self.field(name)
            bits = f.to_bits(value, f"{where or self.name}.{name}")
            word = word & ~f.mask | bits << f.lo
        return word

    # -- deriving one generation's register from another's ------------------------------------
    def at(self, offset: int) -> "Register":
        return dataclasses.replace(self, offset=offset)

    def renamed(self, name: str) -> "Register":
        return dataclasses.replace(self, name=name)

    def graded(self, ev: Evidence, note: str | None = None) -> "Register":
        """Every field graded no stronger than `ev`, with the source extended."""
        return dataclasses.replace(
            self, fields=tuple(f.with_evidence(ev) for f in self.fields),
            grade=weaker(self.grade, ev.grade), source=f"{self.source}; {ev.source}",
            note=self.note if note is None else note)

    def only(self, *names: str) -> "Register":
        self._check_names(names)
        return dataclasses.replace(self, fields=tuple(f for f in self.fields if f.name in names))

    def without(self, *names: str) -> "Register":
        self._check_names(names)
        kept = tuple(f for f in self.fields if f.name not in names)
        return dataclasses.replace(self, fields=kept)

    def refit(self, ev: Evidence, **ranges) -> "Register":
        """Move named fields to new bit ranges (`Kw=(5, 0)`), with the evidence for the move."""
        self._check_names(ranges)
        moved = [dataclasses.replace(f, hi=ranges[f.name][0], lo=ranges[f.name][1], grade=ev.grade,
                                     source=ev.source) if f.name in ranges else f
                 for f in self.fields]
        return dataclasses.replace(self, fields=tuple(moved))

    def _check_names(self, names: Iterable[str]):
        missing = set(names) - {f.name for f in self.fields}
        if missing:
            raise ValueError(f"register {self.name} has no fields {sorted(missing)}")


def check_word(word: int, where: str) -> int:
    if not isinstance(word, (int, np.integer)) or not 0 <= int(word) <= 0xFFFFFFFF:
        raise UnsupportedError(f"register value {word!r} is not a 32-bit word", where=where)
    return int(word)


# ----------------------------------------------------------------------------------------------
# Blocks and maps
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    """A contiguous block of registers; `base` is None where no source gives its address (H11)."""

    name: str
    base: int | None
    size_words: int
    registers: tuple[Register, ...]
    note: str = ""

    def __repr__(self):
        where = "address unknown" if self.base is None else f"{self.base:#07x}"
        return f"Block({self.name} @ {where}, {self.size_words} words)"

    def __post_init__(self):
        regs = tuple(sorted(self.registers, key=lambda r: r.offset))
        object.__setattr__(self, "registers", regs)
        offsets = [r.offset for r in regs]
        names = [r.name for r in regs]
        if len(set(offsets)) != len(offsets) or len(set(names)) != len(names):
            raise ValueError(f"block {self.name}: duplicate register offsets or names")
        if regs and regs[-1].offset >= 4 * self.size_words:
            raise ValueError(f"block {self.name}: register {regs[-1].name} lies past its "
                             f"{self.size_words} words")

    @property
    def end(self) -> int:
        return self.base + 4 * self.size_words

    def contains(self, address: int) -> bool:
        return self.base is not None and self.base <= address < self.end and address % 4 == 0

    def register_at(self, offset: int) -> Register:
        """The register at `offset`; a word no source names is a raw `Unk<offset>` register."""
        for r in self.registers:
            if r.offset == offset:
                return r
        if not 0 <= offset < 4 * self.size_words or offset % 4:
            raise UnsupportedError(f"offset {offset:#x} is not a word of block {self.name}")
        return raw(f"Unk{offset:02X}", offset, Evidence("-", NO_EVIDENCE))

    def register(self, name: str) -> Register:
        for r in self.registers:
            if r.name == name:
                return r
        if name.startswith("Unk"):
            try:
                return self.register_at(int(name[3:], 16))
            except ValueError:
                pass
        raise UnsupportedError(f"block {self.name} has no register {name!r}")

    def rebased(self, base: int | None, ev: Evidence | None = None, *,
                size_words: int | None = None, extra: Sequence[Register] = (),
                note: str | None = None) -> "Block":
        """The same registers at another base (graded by `ev`), plus `extra` registers."""
        regs = tuple(r.graded(ev) if ev else r for r in self.registers) + tuple(extra)
        return Block(self.name, base, size_words or self.size_words, regs,
                     self.note if note is None else note)


class Decoded(NamedTuple):
    address: int
    block: Block | None  # None: the address lies in no block
    register: Register | None
    fields: list  # [(Field, value)]
    written: bool  # written by the task itself, not carried over from an earlier one


class RegisterMap:
    """One generation's register blocks, addressed by byte address."""

    def __init__(self, generation: str, blocks: Sequence[Block], note: str = ""):
        self.generation = generation
        self.blocks = tuple(blocks)
        self.note = note
        names = [b.name for b in self.blocks]
        if len(set(names)) != len(names):
            raise ValueError(f"{generation}: duplicate block names {names}")
        placed = sorted((b for b in self.blocks if b.base is not None), key=lambda b: b.base)
        for lower, upper in zip(placed, placed[1:]):
            if lower.end > upper.base:
                raise ValueError(f"{generation}: blocks {lower.name} and {upper.name} overlap")

    def block(self, name: str) -> Block:
        for b in self.blocks:
            if b.name == name:
                return b
        raise UnsupportedError(f"{self.generation} has no register block {name!r} "
                               f"(blocks: {', '.join(b.name for b in self.blocks)})")

    def lookup(self, address: int) -> tuple[Block, Register] | None:
        for b in self.blocks:
            if b.contains(address):
                return b, b.register_at(address - b.base)
        return None

    def _located(self, address: int) -> tuple[Block, Register]:
        found = self.lookup(address)
        if found is None:
            raise UnsupportedError(f"{self.generation}: no register block holds this address",
                                   where=f"register {address:#07x}")
        return found

    def decode(self, address: int, value: int) -> list[tuple[Field, object]]:
        block, register = self._located(address)
        return register.decode(value)

    def listing(self, words: Mapping[int, int], written: Iterable[int] | None = None
                ) -> list[Decoded]:
        """Every word of `words` (a task's writes, or the full register state it runs with),
        decoded, by address.  With `written` (the task's own writes) each entry says whether the
        task wrote it or it carried over from an earlier task; without, every word counts as
        written.  Words outside every block are listed with block and register None."""
        own = None if written is None else set(written)
        out = []
        for address in sorted(words):
            mine = own is None or address in own
            found = self.lookup(address)
            if found is None:
                out.append(Decoded(address, None, None, [], mine))
            else:
                out.append(Decoded(address, *found, found[1].decode(words[address]), mine))
        return out

    def path(self, address: int, f: Field | str) -> str:
        block, register = self._located(address)
        return f"{block.name}.{register.name}.{getattr(f, 'name', f)}"

    def field(self, path: str) -> tuple[int, Field]:
        """`block.Register.Field` -> (byte address, Field)."""
        block_name, sep, rest = path.partition(".")
        reg_name, sep2, field_name = rest.rpartition(".")
        if not sep or not sep2 or not reg_name:
            raise UnsupportedError("a field path is block.Register.Field", where=path)
        try:
            block = self.block(block_name)
            register = block.register(reg_name)
            found = register.field(field_name)
        except UnsupportedError as err:
            raise UnsupportedError(err.message, where=path) from None
        if block.base is None:
            raise UnsupportedError(f"{self.generation}: no source gives the address of block "
                                   f"{block.name}", where=path)
        return block.base + register.offset, found

    def encode(self, path_values: Mapping[str, object], base: Mapping[int, int] | None = None
               ) -> dict[int, int]:
        """Set fields by path.  Returns `base` updated (a new dict), or only the touched registers
        (untouched bits zero) when no base is given."""
        out = dict(base or {})
        for path, value in path_values.items():
            address, f = self.field(path)
            word = check_word(out.get(address, 0), path)
            out[address] = word & ~f.mask | f.to_bits(value, path) << f.lo
        return out

    _MISSING = object()

    def get(self, state: Mapping[int, int], path: str, default=_MISSING):
        """The value of a named field in a register state (address -> word)."""
        address, f = self.field(path)
        if address not in state:
            if default is not RegisterMap._MISSING:
                return default
            raise UnsupportedError(f"register {address:#07x} was never written", where=path)
        return f.value(f.bits(check_word(state[address], path)))


# ----------------------------------------------------------------------------------------------
# Task headers
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Extension:
    """Extra header words present when `header[word] & mask == mask`."""

    word: int
    mask: int
    registers: tuple[Register, ...]
    grade: str
    source: str

    def present(self, header: Sequence[int]) -> bool:
        return len(header) > self.word and header[self.word] & self.mask == self.mask


class HeaderMap:
    """A task header: one Register per word (`Header[i]`), plus an optional extension.

    Field names are unique across the header, so a field is named by its name alone
    (``"NextPointer"``); decode/encode work on the list header words + extension words.
    """

    def __init__(self, generation: str, words: Sequence[Register],
                 extension: Extension | None = None, note: str = ""):
        self.generation = generation
        self.words = tuple(words)
        self.extension = extension
        self.note = note
        every = self.words + (extension.registers if extension else ())
        for i, r in enumerate(every):
            if r.offset != 4 * i:
                raise ValueError(f"{generation} header: word {r.name} at {r.offset:#x}, "
                                 f"not {4 * i:#x}")
        names = [f.name for r in every for f in r.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"{generation} header: field names repeat: {names}")
        self._every = every

    @property
    def size_words(self) -> int:
        return len(self.words)

    def extension_words(self, header: Sequence[int]) -> int:
        """How many extension words follow this header."""
        if self.extension and self.extension.present(header):
            return len(self.extension.registers)
        return 0

    def field(self, name: str) -> tuple[int, Field]:
        """Field name -> (word index, Field); gap fields as `Header[i].Bits7_0`."""
        reg_name, _, field_name = name.rpartition(".")
        for i, r in enumerate(self._every):
            if reg_name in ("", r.name):
                for f in (r.layout if reg_name else r.fields):
                    if f.name == field_name:
                        return i, f
        raise UnsupportedError(f"{self.generation} task header has no field {name!r}")

    def decode(self, words: Sequence[int]) -> list[tuple[int, Field, object]]:
        if len(words) < len(self.words) or len(words) > len(self._every):
            extra = len(self._every) - len(self.words)
            raise UnsupportedError(f"{self.generation} header has {len(self.words)} words "
                                   f"(+{extra} extension), got {len(words)}")
        return [(i, f, v) for i, w in enumerate(words) for f, v in self._every[i].decode(w)]

    def encode(self, values: Mapping[str, object], base: Sequence[int] | None = None) -> list[int]:
        words = list(base or [0] * len(self.words))
        for name, value in values.items():
            i, f = self.field(name)
            words += [0] * (i + 1 - len(words))
            words[i] = check_word(words[i], name) & ~f.mask | f.to_bits(value, name) << f.lo
        return words

    def get(self, words: Sequence[int], name: str):
        i, f = self.field(name)
        if i >= len(words):
            raise UnsupportedError("this header has no extension word", where=name)
        return f.value(f.bits(check_word(words[i], name)))

    def path(self, index: int, f: Field) -> str:
        return f"{self._every[index].name}.{f.name}"


# ----------------------------------------------------------------------------------------------
# Table helpers for the map modules
# ----------------------------------------------------------------------------------------------

class Spec(NamedTuple):
    hi: int
    lo: int
    kind: str = "uint"
    values: Mapping[int, str] | None = None
    ev: Evidence | None = None


def spec(hi, lo=None, kind="uint", values=None, ev=None) -> Spec:
    """A field spec for `reg` when a plain `(hi, lo)` is not enough."""
    lo = hi if lo is None else lo
    flag = kind == "uint" and hi == lo and values is None
    return Spec(hi, lo, "bool" if flag else kind, values, ev)


def make_field(name: str, s, ev: Evidence) -> Field:
    if isinstance(s, Field):
        return s
    if isinstance(s, int):
        s = Spec(s, s, "bool")
    elif not isinstance(s, Spec):
        s = Spec(*s)
    fev = s.ev or ev
    return Field(name, s.hi, s.lo, fev.grade, fev.source, s.kind, s.values)


def reg(name: str, offset: int, ev: Evidence, note: str = "", **fields) -> Register:
    """`reg("ConvCfg", 0x1C, PRINTER, Kw=(4, 0), En=0, Bias=spec(15, 0, "fp16"))`: a bare int is
    a one-bit flag, a tuple `(hi, lo)` an unsigned field, `spec(...)` anything else."""
    return Register(name, offset, tuple(make_field(n, s, ev) for n, s in fields.items()),
                    ev.grade, ev.source, note)


def raw(name: str, offset: int, ev: Evidence, note: str = "") -> Register:
    """A register whose fields no source names: one 32-bit `Value` field."""
    return Register(name, offset, (Field("Value", 31, 0, ev.grade, ev.source),), ev.grade,
                    ev.source, note)


def header_word(index: int, ev: Evidence, note: str = "", **fields) -> Register:
    return reg(f"Header[{index}]", 4 * index, ev, note, **fields)
