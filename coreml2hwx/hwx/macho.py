"""Apple's ANE Mach-O variant (`.hwx`), read and written byte for byte.

Layout facts: ane-facts.md §1.1-1.7 ([A] from the tinygrad files in ../shared/artifacts).
A 32-byte header (magic 0xBEEFFACE, cputype 0x80, cpusubtype = generation), load commands, then the
file regions the commands point at: section data, relocations, symbol table, string table.

`parse_hwx` keeps everything: each load command's bytes, with a construct container (one of the
layouts below) as its fields unless it is a command we do not know; every region a command points
at; and every byte no structure covers that is not zero (padding, trailing data).
`HwxImage.to_bytes()` puts the file back together from those parts, so reading then writing gives
back the identical bytes.

Speed: the layouts are declared once, here, and parsed with construct's compiled form (`fast`).
The symbol and relocation tables are kept as the bytes read and parsed on first use
(`RecordTable`): loading a program needs neither, and parsing them record by record was over
half of a load (GitHub issue 4).

Every count and offset is checked against the data before it is used, so bad input raises one
`ProgramFormatError` naming the file, the byte offset and the broken rule - never a traceback, and
every loop is bounded by the data size.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from construct import (Array, Bytes, ConstructError, GreedyBytes, Int8ul, Int16ul, Int32ul,
                       Int64ul, Struct, this)

from coreml2hwx.errors import ProgramFormatError

MAGIC = 0xBEEFFACE
MAGIC_MACHO64 = 0xFEEDFACF  # what tinygrad patched in so macholib would parse the files (§1.1)
CPU_TYPE_ANE = 0x80

LC_SYMTAB = 0x2
LC_THREAD = 0x4
LC_LOADFVMLIB = 0x6
LC_IDENT = 0x8
LC_SEGMENT_64 = 0x19

COMMAND_NAMES = {LC_SYMTAB: "LC_SYMTAB", LC_THREAD: "LC_THREAD", LC_LOADFVMLIB: "LC_LOADFVMLIB",
                 LC_IDENT: "LC_IDENT", LC_SEGMENT_64: "LC_SEGMENT_64", 0x31: "LC_NOTE"}

# Section types (low byte of the flags) that occupy no file bytes.
ZEROFILL_TYPES = {0x1, 0xC, 0x12}

MachHeader = Struct(
    "magic" / Int32ul,
    "cputype" / Int32ul,
    "cpusubtype" / Int32ul,
    "filetype" / Int32ul,
    "ncmds" / Int32ul,
    "sizeofcmds" / Int32ul,
    "flags" / Int32ul,
    "reserved" / Int32ul,
)
HEADER_SIZE = MachHeader.sizeof()

CommandHeader = Struct("cmd" / Int32ul, "cmdsize" / Int32ul)

Section64 = Struct(
    "sectname" / Bytes(16),
    "segname" / Bytes(16),
    "addr" / Int64ul,
    "size" / Int64ul,
    "offset" / Int32ul,
    "align" / Int32ul,
    "reloff" / Int32ul,
    "nreloc" / Int32ul,
    "flags" / Int32ul,
    "reserved1" / Int32ul,
    "reserved2" / Int32ul,
    "reserved3" / Int32ul,
)
SECTION_SIZE = Section64.sizeof()

SegmentCommand64 = Struct(
    "cmd" / Int32ul,
    "cmdsize" / Int32ul,
    "segname" / Bytes(16),
    "vmaddr" / Int64ul,
    "vmsize" / Int64ul,
    "fileoff" / Int64ul,
    "filesize" / Int64ul,
    "maxprot" / Int32ul,
    "initprot" / Int32ul,
    "nsects" / Int32ul,
    "flags" / Int32ul,
    "sections" / Array(this.nsects, Section64),
    "tail" / GreedyBytes,
)
SEGMENT_FIXED = 72

SymtabCommand = Struct(
    "cmd" / Int32ul,
    "cmdsize" / Int32ul,
    "symoff" / Int32ul,
    "nsyms" / Int32ul,
    "stroff" / Int32ul,
    "strsize" / Int32ul,
    "tail" / GreedyBytes,
)

# LC_THREAD: a flavor, a count of 32-bit state words, then (on the ANE) NUL-terminated strings.
ThreadCommand = Struct(
    "cmd" / Int32ul,
    "cmdsize" / Int32ul,
    "flavor" / Int32ul,
    "count" / Int32ul,
    "state" / Array(this.count, Int32ul),
    "tail" / GreedyBytes,
)
THREAD_FIXED = 16

FvmlibCommand = Struct(
    "cmd" / Int32ul,
    "cmdsize" / Int32ul,
    "name_offset" / Int32ul,
    "minor_version" / Int32ul,
    "header_addr" / Int32ul,
    "tail" / GreedyBytes,
)
FVMLIB_FIXED = 20

IdentCommand = Struct("cmd" / Int32ul, "cmdsize" / Int32ul, "text" / GreedyBytes)

Nlist64 = Struct(
    "n_strx" / Int32ul,
    "n_type" / Int8ul,
    "n_sect" / Int8ul,
    "n_desc" / Int16ul,
    "n_value" / Int64ul,
)
NLIST_SIZE = Nlist64.sizeof()

RelocationInfo = Struct("r_address" / Int32ul, "r_info" / Int32ul)
RELOC_SIZE = RelocationInfo.sizeof()

# Tables of `count` records (count given as a keyword: `fast(table).parse(raw, count=n)`).
SymbolTable = Array(this.count, Nlist64)
RelocationTable = Array(this.count, RelocationInfo)

LAYOUTS = {LC_SEGMENT_64: SegmentCommand64, LC_SYMTAB: SymtabCommand, LC_THREAD: ThreadCommand,
           LC_LOADFVMLIB: FvmlibCommand, LC_IDENT: IdentCommand}

_COMPILED = {}


def fast(layout):
    """construct's compiled form of one of the layouts above: the same containers from `parse`,
    the same bytes from `build`, several times faster.  Compiled once, on first use."""
    compiled = _COMPILED.get(id(layout))
    if compiled is None:
        compiled = _COMPILED[id(layout)] = layout.compile()
    return compiled


class RecordTable(Sequence):
    """A table of fixed-size records (`SymbolTable`, `RelocationTable`) kept as the bytes it was
    read from; the records (construct containers) are parsed on first use."""

    def __init__(self, table, raw: bytes):
        self.table, self.raw = table, raw
        self._records = None

    def __len__(self):
        return len(self.raw) // self.table.subcon.sizeof()

    def __getitem__(self, index):
        if self._records is None:
            self._records = list(fast(self.table).parse(self.raw, count=len(self)))
        return self._records[index]

    def __eq__(self, other):
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None

    def __repr__(self):
        return f"RecordTable({len(self)} records)"


def table_bytes(records, table) -> bytes:
    """The bytes of a record table: as read, or built from a list of containers."""
    if isinstance(records, RecordTable):
        return records.raw
    return fast(table).build(list(records), count=len(records))


def cstring(data: bytes, start: int = 0) -> str:
    """The NUL-terminated string at `start` (to the end of `data` when unterminated)."""
    end = data.find(b"\0", start)
    return data[start:len(data) if end < 0 else end].decode("latin-1")


def fixed_name(raw: bytes) -> str:
    """A 16-byte Mach-O name field."""
    return cstring(raw)


def name16(name: str) -> bytes:
    raw = name.encode("latin-1")
    if len(raw) > 16:
        raise ValueError(f"Mach-O name {name!r} is longer than 16 bytes")
    return raw.ljust(16, b"\0")


@dataclass
class LoadCommand:
    """One load command at file `offset`.  A command read from a file keeps its bytes (`raw`) and,
    when it is a known command, their fields (a construct container, read only); an unknown one
    has `fields` None (opaque).  A command made by the writer has only `fields`."""

    offset: int
    cmd: int
    cmdsize: int
    fields: object = None  # construct Container for known commands
    raw: bytes | None = None

    @property
    def name(self) -> str:
        return COMMAND_NAMES.get(self.cmd, f"LC_{self.cmd:#x}")

    def to_bytes(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return fast(LAYOUTS[self.cmd]).build(self.fields)

    def describe(self) -> str:
        """One line for listings."""
        f = self.fields
        head = f"{self.offset:#06x} {self.name} ({self.cmdsize:#x} bytes)"
        if f is None:
            return head + " (kept as opaque bytes)"
        if self.cmd == LC_SEGMENT_64:
            sects = ", ".join(fixed_name(s.sectname) for s in f.sections)
            return (f"{head} {fixed_name(f.segname)} vm {f.vmaddr:#x}+{f.vmsize:#x} "
                    f"file {f.fileoff:#x}+{f.filesize:#x} prot {f.maxprot}/{f.initprot} "
                    f"flags {f.flags:#x} [{sects}]")
        if self.cmd == LC_SYMTAB:
            return (f"{head} {f.nsyms} symbols at {f.symoff:#x}, strings at {f.stroff:#x}+"
                    f"{f.strsize:#x}")
        if self.cmd == LC_THREAD:
            return f"{head} flavor {f.flavor}, {f.count} words"
        if self.cmd == LC_LOADFVMLIB:
            return f"{head} {fvmlib_name(self)!r} at {f.header_addr:#x}"
        if self.cmd == LC_IDENT:
            return f"{head} {cstring(f.text).splitlines()[:2]}"
        return head


def fvmlib_name(command: LoadCommand) -> str:
    return cstring(command.to_bytes(), command.fields.name_offset)


@dataclass
class SectionRef:
    """Where a section sits: its segment command, its index there and its 1-based ordinal."""

    command: LoadCommand
    index: int
    ordinal: int

    @property
    def header(self):
        return self.command.fields.sections[self.index]

    @property
    def segname(self) -> str:
        return fixed_name(self.header.segname)

    @property
    def sectname(self) -> str:
        return fixed_name(self.header.sectname)

    @property
    def header_offset(self) -> int:
        return self.command.offset + SEGMENT_FIXED + SECTION_SIZE * self.index

    @property
    def has_file_data(self) -> bool:
        seg = self.command.fields
        return seg.filesize > 0 and (self.header.flags & 0xFF) not in ZEROFILL_TYPES


@dataclass
class HwxImage:
    """Every part of an hwx file; `to_bytes()` rebuilds it exactly."""

    header: object
    commands: list[LoadCommand]
    size: int
    section_data: dict = field(default_factory=dict)  # ordinal -> bytes
    # ordinal -> RelocationInfo containers (a RecordTable when read, a list when written)
    relocations: dict = field(default_factory=dict)
    symbols: Sequence = field(default_factory=list)  # Nlist64 containers (idem)
    strings: bytes = b""
    extra: list = field(default_factory=list)  # (offset, bytes) not covered by any structure

    def sections(self) -> list[SectionRef]:
        out = []
        for command in self.commands:
            if command.cmd == LC_SEGMENT_64 and command.fields is not None:
                for i in range(len(command.fields.sections)):
                    out.append(SectionRef(command, i, len(out) + 1))
        return out

    def symtab(self) -> LoadCommand | None:
        return next((c for c in self.commands if c.cmd == LC_SYMTAB and c.fields is not None), None)

    def to_bytes(self) -> bytes:
        out = bytearray(self.size)
        for offset, chunk in self.extra:
            out[offset:offset + len(chunk)] = chunk
        out[:HEADER_SIZE] = fast(MachHeader).build(self.header)
        pos = HEADER_SIZE
        for command in self.commands:
            raw = command.to_bytes()
            out[pos:pos + len(raw)] = raw
            pos += len(raw)
        for ref in self.sections():
            head = ref.header
            if ref.ordinal in self.section_data:
                data = self.section_data[ref.ordinal]
                out[head.offset:head.offset + len(data)] = data
            if ref.ordinal in self.relocations:
                raw = table_bytes(self.relocations[ref.ordinal], RelocationTable)
                out[head.reloff:head.reloff + len(raw)] = raw
        symtab = self.symtab()
        if symtab is not None:
            st = symtab.fields
            raw = table_bytes(self.symbols, SymbolTable)
            out[st.symoff:st.symoff + len(raw)] = raw
            out[st.stroff:st.stroff + len(self.strings)] = self.strings
        if len(out) != self.size:
            raise ValueError("a structure was placed past the end of the file")
        return bytes(out)


# -- reading ------------------------------------------------------------------------------------

def _fail(message, file, offset):
    return ProgramFormatError(message, file=file, offset=offset)


def _parse(layout, data, offset, what, file):
    try:
        return fast(layout).parse(data)
    except ConstructError as err:  # pre-checks make this unreachable; keep the one-line rule
        raise _fail(f"{what} does not parse: {str(err).splitlines()[0]}", file, offset) from None


def parse_header(data: bytes, file=None):
    if len(data) < HEADER_SIZE:
        raise _fail(f"file is {len(data)} bytes, shorter than the {HEADER_SIZE}-byte Mach-O header",
                    file, len(data))
    header = fast(MachHeader).parse(data[:HEADER_SIZE])
    if header.magic not in (MAGIC, MAGIC_MACHO64):
        raise _fail(f"magic {header.magic:#010x} is not an ANE hwx (expected {MAGIC:#010x})",
                    file, 0)
    if header.cputype != CPU_TYPE_ANE:
        raise _fail(f"cputype {header.cputype:#x} is not the ANE ({CPU_TYPE_ANE:#x})", file, 4)
    end = HEADER_SIZE + header.sizeofcmds
    if end > len(data):
        raise _fail(f"load commands ({header.sizeofcmds:#x} bytes) run past the end of the "
                    f"{len(data):#x}-byte file", file, 20)
    if 8 * header.ncmds > header.sizeofcmds:
        raise _fail(f"{header.ncmds} load commands cannot fit in sizeofcmds {header.sizeofcmds:#x}",
                    file, 16)
    return header


def _command_bounds(cmd, cmdsize, count_fields, offset, file):
    """Check that the variable part a command declares fits inside it."""
    need = {
        LC_SEGMENT_64: lambda: SEGMENT_FIXED + SECTION_SIZE * count_fields,
        LC_THREAD: lambda: THREAD_FIXED + 4 * count_fields,
        LC_SYMTAB: lambda: 24,
        LC_LOADFVMLIB: lambda: FVMLIB_FIXED,
        LC_IDENT: lambda: 8,
    }[cmd]()
    if need > cmdsize:
        what = {LC_SEGMENT_64: f"{count_fields} sections", LC_THREAD: f"{count_fields} state words"}
        detail = what.get(cmd, "its fixed fields")
        raise _fail(f"{COMMAND_NAMES[cmd]} declares {detail} ({need:#x} bytes) but is only "
                    f"{cmdsize:#x} bytes long", file, offset)


def _count_field(cmd, body):
    if cmd == LC_SEGMENT_64 and len(body) >= SEGMENT_FIXED:
        return int.from_bytes(body[64:68], "little")
    if cmd == LC_THREAD and len(body) >= THREAD_FIXED:
        return int.from_bytes(body[12:16], "little")
    return 0


def _command_header(raw: bytes) -> tuple[int, int]:
    head = fast(CommandHeader).parse(raw[:8])
    return head.cmd, head.cmdsize


def parse_command(body: bytes, offset: int, file=None) -> LoadCommand:
    body = bytes(body)
    cmd, cmdsize = _command_header(body)
    layout = LAYOUTS.get(cmd)
    if layout is None:
        return LoadCommand(offset, cmd, cmdsize, raw=body)
    _command_bounds(cmd, cmdsize, _count_field(cmd, body), offset, file)
    # Every layout is fixed-width fields plus a greedy tail, so its fields hold every byte of the
    # body (tests/hwx check that they build back to it).
    fields = _parse(layout, body, offset, COMMAND_NAMES[cmd], file)
    if cmd == LC_LOADFVMLIB and not 0 < fields.name_offset <= cmdsize:
        raise _fail(f"LC_LOADFVMLIB name offset {fields.name_offset:#x} lies outside the "
                    f"{cmdsize:#x}-byte command", file, offset + 8)
    return LoadCommand(offset, cmd, cmdsize, fields=fields, raw=body)


def parse_commands(data: bytes, header, file=None) -> list[LoadCommand]:
    commands, pos = [], HEADER_SIZE
    end = HEADER_SIZE + header.sizeofcmds
    for index in range(header.ncmds):
        if pos + 8 > end:
            raise _fail(f"load command {index} starts past the end of the load commands "
                        f"({end:#x})", file, pos)
        _, cmdsize = _command_header(data[pos:pos + 8])
        if cmdsize < 8:
            raise _fail(f"load command {index} has cmdsize {cmdsize} (at least 8 needed)",
                        file, pos + 4)
        if pos + cmdsize > end:
            raise _fail(f"load command {index} ({cmdsize:#x} bytes) runs past the end of the "
                        f"load commands ({end:#x})", file, pos + 4)
        commands.append(parse_command(data[pos:pos + cmdsize], pos, file))
        pos += cmdsize
    return commands


def _check_range(start, length, size, what, file, offset):
    if start + length > size:
        raise _fail(f"{what} ({start:#x}+{length:#x}) points past the end of the {size:#x}-byte "
                    "file", file, offset)


def _read_sections(image: HwxImage, data: bytes, file):
    size = len(data)
    for command in image.commands:
        if command.cmd == LC_SEGMENT_64 and command.fields is not None:
            seg = command.fields
            _check_range(seg.fileoff, seg.filesize, size,
                         f"segment {fixed_name(seg.segname)} file range", file, command.offset + 40)
    for ref in image.sections():
        head, where = ref.header, ref.header_offset
        name = f"section {ref.segname},{ref.sectname}"
        if ref.has_file_data:
            _check_range(head.offset, head.size, size, f"{name} data", file, where + 48)
            image.section_data[ref.ordinal] = data[head.offset:head.offset + head.size]
        if head.nreloc:
            _check_range(head.reloff, RELOC_SIZE * head.nreloc, size, f"{name} relocations", file,
                         where + 56)
            raw = data[head.reloff:head.reloff + RELOC_SIZE * head.nreloc]
            image.relocations[ref.ordinal] = RecordTable(RelocationTable, raw)


def _read_symtab(image: HwxImage, data: bytes, file):
    symtab = image.symtab()
    if symtab is None:
        return
    st = symtab.fields
    _check_range(st.symoff, NLIST_SIZE * st.nsyms, len(data), f"symbol table of {st.nsyms} entries",
                 file, symtab.offset + 8)
    _check_range(st.stroff, st.strsize, len(data), "string table", file, symtab.offset + 16)
    raw = data[st.symoff:st.symoff + NLIST_SIZE * st.nsyms]
    image.symbols = RecordTable(SymbolTable, raw)
    image.strings = data[st.stroff:st.stroff + st.strsize]
    # n_strx is the first u32 of each Nlist64 (0 = no name, allowed even with no strings)
    n_strx = np.frombuffer(raw, "<u4")[::NLIST_SIZE // 4]
    bad = np.flatnonzero(n_strx >= max(st.strsize, 1))
    if bad.size:
        i = int(bad[0])
        raise _fail(f"symbol {i} names string {int(n_strx[i]):#x}, past the {st.strsize:#x}-byte "
                    "string table", file, st.symoff + NLIST_SIZE * i)


def _covered(image: HwxImage) -> list[tuple[int, int]]:
    spans = [(0, HEADER_SIZE + sum(c.cmdsize for c in image.commands))]
    for ref in image.sections():
        head = ref.header
        if ref.ordinal in image.section_data:
            spans.append((head.offset, head.offset + head.size))
        if ref.ordinal in image.relocations:
            spans.append((head.reloff, head.reloff + RELOC_SIZE * head.nreloc))
    symtab = image.symtab()
    if symtab is not None:
        st = symtab.fields
        spans.append((st.symoff, st.symoff + NLIST_SIZE * st.nsyms))
        spans.append((st.stroff, st.stroff + st.strsize))
    return sorted(spans)


def _uncovered_nonzero(image: HwxImage, data: bytes) -> list[tuple[int, bytes]]:
    """The gaps between structures that hold anything but zeros, kept verbatim."""
    extra, pos = [], 0
    for start, end in _covered(image) + [(len(data), len(data))]:
        if start > pos:
            gap = data[pos:start]
            if gap.count(0) != len(gap):
                extra.append((pos, gap))
        pos = max(pos, end)
    return extra


def parse_hwx(data, file=None) -> HwxImage:
    """Split an hwx into its parts (see the module docstring); raises ProgramFormatError.

    `data`: bytes, or an `mmap` of the file (its slices are bytes too, so every part is copied
    out of it once and the map can be closed afterwards); anything else is copied to bytes."""
    if not isinstance(data, (bytes, mmap.mmap)):
        data = bytes(data)
    header = parse_header(data, file)
    image = HwxImage(header=header, commands=parse_commands(data, header, file), size=len(data))
    _read_sections(image, data, file)
    _read_symtab(image, data, file)
    image.extra = _uncovered_nonzero(image, data)
    return image
