"""`HwxFile`: an hwx read exactly, with views of what the ANE needs from it."""

from __future__ import annotations

from dataclasses import dataclass

from coreml2hwx.errors import ProgramFormatError
from coreml2hwx.hwx import descriptors as desc
from coreml2hwx.hwx.macho import (HEADER_SIZE, LC_IDENT, LC_LOADFVMLIB, LC_SEGMENT_64, HwxImage,
                                  cstring, fixed_name, fvmlib_name, parse_hwx)

# cpusubtype -> generation (ane-facts.md §1.1; H13 = 4 in every real file [A], the rest [B]).
SUBTYPE_TARGETS = {1: "h11", 3: "h12", 4: "h13", 5: "h14", 6: "h15", 7: "h16", 9: "h17", 10: "h18"}
TARGET_SUBTYPES = {name: subtype for subtype, name in SUBTYPE_TARGETS.items()}


@dataclass
class Segment:
    name: str
    vmaddr: int
    vmsize: int
    fileoff: int
    filesize: int
    maxprot: int
    initprot: int
    nsects: int
    flags: int
    offset: int  # file offset of its load command


class HwxFile:
    """An `.hwx` read exactly (`read_hwx`).  `to_bytes()` gives back the identical bytes.

    Views (all computed when the file is read, so a malformed file fails in `read_hwx`):
    `cpusubtype`, `target` ("h13"... or None for an unknown subtype), `load_commands` (each with
    `.describe()`), `segments`, `sections`, `text` / `constants` (bytes of `__TEXT,__text` /
    `__TEXT,__const`), `program_descriptor` (dict, see `descriptors.program_descriptor`; None when
    the file has none), `tensor_descriptors` (dicts in the oracle JSON shape plus `name`),
    `fvmlibs` (name -> buffer address), `symbols`, `relocations`, `ident`.
    """

    def __init__(self, image: HwxImage, file=None):
        self.image = image
        self.file = None if file is None else str(file)
        programs = desc.thread_commands(image, desc.PROGRAM_FLAVORS)
        self.program_descriptor = desc.program_descriptor(programs[0], file) if programs else None
        self.program_descriptor_count = len(programs)
        # file offset of the program descriptor command (of the header when there is none)
        self.program_descriptor_offset = programs[0].offset if programs else HEADER_SIZE
        self.tensor_descriptors = [desc.tensor_descriptor(c, file)
                                   for c in desc.thread_commands(image, (desc.FLAVOR_TENSOR,))]
        self.fvmlibs = {fvmlib_name(c): c.fields.header_addr for c in image.commands
                        if c.cmd == LC_LOADFVMLIB and c.fields is not None}

    # -- header -----------------------------------------------------------------------------------
    @property
    def cpusubtype(self) -> int:
        return self.image.header.cpusubtype

    @property
    def target(self) -> str | None:
        return SUBTYPE_TARGETS.get(self.cpusubtype)

    def to_bytes(self) -> bytes:
        return self.image.to_bytes()

    # -- load commands ----------------------------------------------------------------------------
    @property
    def load_commands(self):
        return self.image.commands

    @property
    def segments(self) -> list[Segment]:
        out = []
        for c in self.image.commands:
            if c.cmd == LC_SEGMENT_64 and c.fields is not None:
                f = c.fields
                out.append(Segment(fixed_name(f.segname), f.vmaddr, f.vmsize, f.fileoff,
                                   f.filesize, f.maxprot, f.initprot, f.nsects, f.flags, c.offset))
        return out

    def segment_at(self, vmaddr: int) -> Segment | None:
        return next((s for s in self.segments if s.vmaddr == vmaddr), None)

    @property
    def sections(self):
        return self.image.sections()

    def section(self, segname: str, sectname: str):
        return next((s for s in self.sections
                     if s.segname == segname and s.sectname == sectname), None)

    def section_bytes(self, segname: str, sectname: str) -> bytes:
        ref = self.section(segname, sectname)
        if ref is None:
            raise ProgramFormatError(f"no {segname},{sectname} section among the load commands",
                                     file=self.file, offset=HEADER_SIZE)
        return self.image.section_data.get(ref.ordinal, b"")

    @property
    def text(self) -> bytes:
        """The task stream (`__TEXT,__text`)."""
        return self.section_bytes("__TEXT", "__text")

    @property
    def constants(self) -> bytes:
        """The constant (kernel) section (`__TEXT,__const`)."""
        return self.section_bytes("__TEXT", "__const")

    @property
    def text_offset(self) -> int:
        """File offset of the task stream (for error messages)."""
        ref = self.section("__TEXT", "__text")
        return 0 if ref is None else ref.header.offset

    @property
    def symbols(self) -> list[dict]:
        strings = self.image.strings
        return [{"name": cstring(strings, s.n_strx), "type": s.n_type, "sect": s.n_sect,
                 "desc": s.n_desc, "value": s.n_value} for s in self.image.symbols]

    @property
    def relocations(self) -> dict:
        """(segname, sectname) -> [(r_address, r_info)]."""
        out = {}
        for ref in self.sections:
            rels = self.image.relocations.get(ref.ordinal)
            if rels:
                out[(ref.segname, ref.sectname)] = [(r.r_address, r.r_info) for r in rels]
        return out

    @property
    def ident(self) -> str:
        for c in self.image.commands:
            if c.cmd == LC_IDENT and c.fields is not None:
                return cstring(c.fields.text)
        return ""


def read_hwx(data: bytes, file=None) -> HwxFile:
    """Read an `.hwx` exactly; malformed input raises ProgramFormatError (file, offset, rule)."""
    return HwxFile(parse_hwx(data, file), file)
