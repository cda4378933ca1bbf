"""Write a Program as a new `.hwx`, laid out as Apple's macOS-12-era H13 compiler does.

Evidence: the tinygrad files (zin_ane_compiler v4.2.1, ane-facts.md §1.2-1.7 [A]); the tests
compare our files with theirs byte by byte.

* `__PAGEZERO` (vm 0..0x4000), `__TEXT` at vm 0x30000000 / file 0x4000 with `__text` (the task
  stream) and `__const` at round_up(stream, 64); vmsize rounded to 16 KiB.
* One `__FVMLIB` segment per input (prot 1/1, section `__const` flags 0x21), then per output
  (prot 2/2, `__data` flags 0x23), each at the next 16 KiB boundary; an `LC_LOADFVMLIB` per tensor,
  outputs named `<name>@output`.
* Program descriptor (LC_THREAD flavor 1, 532 words): BAR slot 0 text, 1 constants, then each
  tensor's slot; first task size, task count.  Tensor descriptors (flavor 3), inputs then outputs,
  each group sorted by name (Apple lists `image` before `image2` although the plist declares
  `image2` first; the segments keep the declared order).
* `LC_IDENT` naming coreml2hwx, `LC_SYMTAB` with the kernel chunks, the tensors, Apple's fixed stabs
  type table and one stab per tensor (what anecc parses), and a relocation for every enabled
  kernel-DMA channel's CoeffBaseAddr against `__const`.

Intermediate buffers (role "intermediate") have no sample in the old-compiler files.  They get a
segment with (maxprot, initprot, nsects, flags) = (3, 3, 1, 4), the signature anecc classifies as
intermediate [A-derived], named `__DATA,__bss` after the newer compiler's scratch [B]; the zero-fill
section type 0x1 is our choice [H].
"""

from __future__ import annotations

import copy
import hashlib

from construct import Container

from coreml2hwx import __version__
from coreml2hwx.errors import UnsupportedError
from coreml2hwx.hwx import descriptors as desc
from coreml2hwx.hwx.hwxfile import TARGET_SUBTYPES
from coreml2hwx.hwx.macho import (CPU_TYPE_ANE, FVMLIB_FIXED, HEADER_SIZE, LC_IDENT,
                                  LC_LOADFVMLIB, LC_SEGMENT_64, LC_SYMTAB, LC_THREAD, MAGIC,
                                  NLIST_SIZE, RELOC_SIZE, SECTION_SIZE, SEGMENT_FIXED, HwxImage,
                                  LoadCommand, name16)
from coreml2hwx.program import Program, Tensor

BASE = 0x30000000
PAGE = 0x4000
TEXT_FILE_OFFSET = 0x4000
CONST_ALIGN = 64
EMPTY_CONSTANTS = bytes(0x4000)  # ops without weights carry 16 KiB of zeros [A] eiln-k, tg-hwx
MH_EXECUTE, MH_PIE = 2, 0x200000

# Section flags: custom types in the low byte (§1.2 [A]).
TEXT_FLAGS, TEXT_RELOC_FLAGS, CONST_FLAGS = 0x28, 0x128, 0x26
INPUT_SECTION_FLAGS, OUTPUT_SECTION_FLAGS, SCRATCH_SECTION_FLAGS = 0x21, 0x23, 0x1

# H13 task fields the relocations follow (§1.6, §2.2, §2.7 [A]).
KBE0 = 1 << 5  # header word 9: kernel DMA through KBase0
COEFF_DMA_CONFIG = 0x1F808  # + 4i: CoeffDMAConfig[i], bit 0 = channel enabled
COEFF_BASE_ADDR = 0x1F848  # + 4i: CoeffBaseAddr[i], byte offset in the constant section
RELOC_INFO = 2 | 1 << 24 | 2 << 25  # section ordinal 2 (__const), pc-relative bit, 4-byte length


def round_up(value: int, align: int) -> int:
    return -(-value // align) * align


def write_hwx(program: Program, *, ident: str | None = None) -> bytes:
    """A new `.hwx` for `program`: H13, or H14 in the same layout with H14's program descriptor
    (kind 4, `descriptors.h14_program_state`; no Apple H14 container to compare with [H]).

    `ident` replaces the `LC_IDENT` text (by default it names coreml2hwx, its version and the
    target).
    The tasks are laid out on copies (offsets, NextSize, NextPointer), so a Program whose tasks are
    already laid out - any Program read from a file - is written back unchanged.  An empty constant
    section is written as Apple does for weightless ops: 16 KiB of zeros.
    """
    if program.target not in ("h13", "h14"):
        raise UnsupportedError(f"writing an .hwx for {program.target} is not supported: the "
                               "container layouts known are H13's (macOS 12 samples) and H14's "
                               "program descriptor (oracles)")
    return _Layout(program, ident).image().to_bytes()


def default_slots(tensors: list[Tensor]) -> dict[int, int]:
    """Tensor index -> BAR slot: the given slot, else the Linux driver convention (§2.6):
    intermediates 3 then 2, outputs from 4, inputs after the outputs."""
    slots, taken = {}, {t.slot for t in tensors if t.slot is not None}
    free = {"intermediate": [3, 2], "output": list(range(4, 32)), "input": []}
    n_out = sum(t.role == "output" for t in tensors)
    free["input"] = list(range(4 + n_out, 32))
    for i, t in enumerate(tensors):
        if t.slot is not None:
            slots[i] = t.slot
            continue
        options = [s for s in free.get(t.role, []) if s not in taken]
        if not options:
            raise UnsupportedError(f"no free BAR slot for {t.role} tensor {t.name!r}")
        slots[i] = options[0]
        taken.add(options[0])
    bad = [s for s in slots.values() if not 2 <= s < desc.BAR_SLOTS]
    if bad or len(set(slots.values())) != len(slots):
        raise UnsupportedError(f"tensor BAR slots {sorted(slots.values())} must be distinct and "
                               "within 2..31 (0 and 1 hold the task stream and constants)")
    return slots


class _Buffer:
    """One tensor's segment in the new file."""

    def __init__(self, tensor: Tensor, slot: int, vmaddr: int):
        self.tensor, self.slot, self.vmaddr = tensor, slot, vmaddr
        self.nbytes = _buffer_bytes(tensor)
        self.vmsize = round_up(max(self.nbytes, 1), PAGE)

    @property
    def fvmlib_name(self) -> str:
        t = self.tensor
        return f"{t.name}@output" if t.role == "output" else t.name


def _buffer_bytes(tensor: Tensor) -> int:
    """Bytes of a tensor's buffer: N x total_bytes (one batch element, §1.4) when the shape is
    known, else the size the tensor reserves."""
    total = tensor.total_bytes if tensor.total_bytes is not None else tensor.strides[0]
    if tensor.role == "intermediate":
        nbytes = tensor.size or total
    else:
        nbytes = tensor.shape[0] * total or tensor.size or 0
    if not nbytes:
        raise UnsupportedError(f"{tensor.role} tensor {tensor.name!r} has neither a shape nor a "
                               "size")
    return nbytes


class _Layout:
    def __init__(self, program: Program, ident: str | None = None):
        self.program = program
        self.ident = ident
        self.tasks = copy.deepcopy(program.tasks)
        from coreml2hwx.target import generation
        gen = generation(program.target)
        gen.layout(self.tasks)
        self.text = gen.encode_stream(self.tasks)
        self.constants = program.constants or EMPTY_CONSTANTS
        self.const_offset = round_up(len(self.text), CONST_ALIGN)
        self.text_vmsize = round_up(self.const_offset + len(self.constants), PAGE)
        self.buffers = self._buffers()
        self.relocations = self._relocations()

    # -- placement --------------------------------------------------------------------------------
    def _buffers(self) -> list[_Buffer]:
        tensors = self.program.tensors
        slots = default_slots(tensors)
        order = sorted(range(len(tensors)),
                       key=lambda i: ({"input": 0, "output": 1}.get(tensors[i].role, 2), i))
        out, vmaddr = [], BASE + self.text_vmsize
        for i in order:
            buf = _Buffer(tensors[i], slots[i], vmaddr)
            out.append(buf)
            vmaddr += buf.vmsize
        return out

    def _relocations(self) -> list[tuple[int, int]]:
        """(stream offset of CoeffBaseAddr[i], its value) for every enabled kernel-DMA channel.
        H13 only: H14 records name the constant section by BAR slot (their tag), and no H14
        container shows relocations."""
        out = []
        if self.program.target != "h13":
            return out
        for task in self.tasks:
            if not task.header[9] & KBE0:
                continue
            writes, places = task.writes(), _register_places(task)
            for i in range(16):
                base = COEFF_BASE_ADDR + 4 * i
                if writes.get(COEFF_DMA_CONFIG + 4 * i, 0) & 1 and base in places:
                    out.append((places[base], writes[base]))
        return out

    # -- load commands ----------------------------------------------------------------------------
    @staticmethod
    def _segment(name, vmaddr, vmsize, fileoff, filesize, prot, flags, sections):
        return Container(cmd=LC_SEGMENT_64, cmdsize=SEGMENT_FIXED + SECTION_SIZE * len(sections),
                           segname=name16(name), vmaddr=vmaddr, vmsize=vmsize, fileoff=fileoff,
                           filesize=filesize, maxprot=prot, initprot=prot, nsects=len(sections),
                           flags=flags, sections=sections, tail=b"")

    @staticmethod
    def _section(seg, sect, addr, size, offset, align, flags, reloff=0, nreloc=0):
        return Container(sectname=name16(sect), segname=name16(seg), addr=addr, size=size,
                         offset=offset, align=align, reloff=reloff, nreloc=nreloc, flags=flags,
                         reserved1=0, reserved2=0, reserved3=0)

    def _text_segment(self, text_fileoff, reloff):
        n = len(self.relocations)
        sections = [
            self._section("__TEXT", "__text", BASE, len(self.text), text_fileoff, 14,
                          TEXT_RELOC_FLAGS if n else TEXT_FLAGS, reloff if n else 0, n),
            self._section("__TEXT", "__const", BASE + self.const_offset, len(self.constants),
                          text_fileoff + self.const_offset, 6, CONST_FLAGS),
        ]
        # SG_NORELOC (4) only when __text has no relocations [A]
        return self._segment("__TEXT", BASE, self.text_vmsize, text_fileoff, self.text_vmsize, 5,
                             0 if n else 4, sections)

    def _buffer_segment(self, buf: _Buffer):
        role = buf.tensor.role
        seg, sect, prot, flags, sflags = {
            "input": ("__FVMLIB", "__const", 1, 6, INPUT_SECTION_FLAGS),
            "output": ("__FVMLIB", "__data", 2, 6, OUTPUT_SECTION_FLAGS),
        }.get(role, ("__DATA", "__bss", 3, 4, SCRATCH_SECTION_FLAGS))
        section = self._section(seg, sect, buf.vmaddr, buf.nbytes, 0, 14, sflags)
        return self._segment(seg, buf.vmaddr, buf.vmsize, 0, 0, prot, flags, [section])

    @staticmethod
    def _fvmlib(buf: _Buffer):
        name = buf.fvmlib_name.encode("latin-1") + b"\0"
        size = round_up(FVMLIB_FIXED + len(name), 8)
        return Container(cmd=LC_LOADFVMLIB, cmdsize=size, name_offset=FVMLIB_FIXED,
                         minor_version=0, header_addr=buf.vmaddr,
                         tail=name.ljust(size - FVMLIB_FIXED, b"\0"))

    def _program_descriptor(self):
        bars = [0] * desc.BAR_SLOTS
        bars[0], bars[1] = BASE, BASE + self.const_offset
        for buf in self.buffers:
            bars[buf.slot] = buf.vmaddr
        name = self.program.name.encode("latin-1") + b"\0"
        if self.program.target == "h14":
            state = desc.h14_program_state(
                bars, text_address=BASE, text_words=len(self.text) // 4,
                task_count=len(self.tasks), max_exe_cycles=max(t.header[1] for t in self.tasks))
            return _thread(desc.FLAVOR_H14_PROGRAM, state, name)
        state = desc.h13_program_state(bars, first_task_words=self.tasks[0].size_words,
                                       task_count=len(self.tasks))
        return _thread(desc.FLAVOR_H13_PROGRAM, state, name)

    def _tensor_descriptors(self):
        network = self.program.name
        out = []
        for role, binding, first_id in (("input", 1, 0x92), ("output", 2, 0x99)):
            bufs = sorted((b for b in self.buffers if b.tensor.role == role),
                          key=lambda b: b.fvmlib_name)
            for k, buf in enumerate(bufs):
                t = buf.tensor
                code = _element_code(t)
                total = t.total_bytes if t.total_bytes is not None else t.strides[0]
                extent = total if role == "input" else desc.live_extent(
                    t.shape, t.strides, desc.ELEMENT_BYTES[t.dtype])
                # word 27: 0x92, 0x93 for inputs and 0x99 for the output in the one-task files;
                # concat.hwx (two tasks) has 0x94 for both inputs and 0x9A [A, meaning unknown].
                state = desc.tensor_state(binding=binding, element_code=code, shape=t.shape,
                                          strides=t.strides, total_bytes=total, extent=extent,
                                          word27=first_id + k, network=network)
                name = buf.fvmlib_name.encode("latin-1")
                strings = network.encode("latin-1") + b"\0" + name + b"\0" + name + b"\0"
                out.append(_thread(desc.FLAVOR_TENSOR, state, strings))
        return out

    def _ident(self):
        text = self.ident
        if text is None:
            text = f"ANEC v1\ncoreml2hwx {__version__}\n\t-t {self.program.target}\n"
        text = text.encode("latin-1") + b"\0"
        return Container(cmd=LC_IDENT, cmdsize=8 + round_up(len(text), 8),
                         text=text.ljust(round_up(len(text), 8), b"\0"))

    # -- symbols ----------------------------------------------------------------------------------
    def _symbols(self):
        """[(name, n_type, n_sect, n_desc, n_value)] in Apple's order (§1.5)."""
        const_addr = BASE + self.const_offset
        chunks = list(dict.fromkeys(value for _, value in self.relocations))
        digest = hashlib.sha256(self.constants).hexdigest().upper()
        out = []
        for k, value in enumerate(chunks):
            # Apple's 64 hex digits hash the kernel some way we cannot reproduce; ours hash the
            # constant section.  Apple names a lone chunk K<hash>, several K<hash>_ne_<i>.
            name = f"K{digest}" if len(chunks) == 1 else f"K{digest}_ne_{k}"
            out.append((name, 0x0F, 2, 2, const_addr + value))
        io = [b for b in self.buffers if b.tensor.role in ("input", "output")]
        for ordinal, buf in enumerate(self.buffers, start=3):
            if buf.tensor.role in ("input", "output"):
                out.append((buf.fvmlib_name, 0x0F, ordinal, 2 if buf.tensor.role == "input" else 0,
                            buf.vmaddr))
        out += [(stab, 0x80, 0, 0, 0) for stab in desc.STAB_TYPES]
        for k, buf in enumerate(io):
            t, number = buf.tensor, desc.FIRST_TENSOR_TYPE + 5 * k
            stab = desc.tensor_stab(buf.fvmlib_name, number, t.shape, t.strides, _element_code(t))
            out.append((stab, 0x20, 0, number, 0))
        return out

    # -- assembly ---------------------------------------------------------------------------------
    def image(self) -> HwxImage:
        symbols = self._symbols()
        strings, nlists = bytearray(b"\0"), []
        for name, n_type, n_sect, n_desc, n_value in symbols:
            nlists.append(Container(n_strx=len(strings), n_type=n_type, n_sect=n_sect,
                                    n_desc=n_desc, n_value=n_value))
            strings += name.encode("latin-1") + b"\0"

        fixed = [self._segment("__PAGEZERO", 0, PAGE, 0, 0, 0, 4, [])]
        text_index = len(fixed)
        fixed.append(None)  # __TEXT, filled once the file offsets are known
        fixed += [self._buffer_segment(b) for b in self.buffers]
        fixed += [self._fvmlib(b) for b in self.buffers if b.tensor.role in ("input", "output")]
        fixed.append(self._program_descriptor())
        fixed += self._tensor_descriptors()
        fixed.append(self._ident())
        symtab = Container(cmd=LC_SYMTAB, cmdsize=24, symoff=0, nsyms=len(nlists), stroff=0,
                           strsize=len(strings), tail=b"")
        fixed.append(symtab)

        text_cmdsize = SEGMENT_FIXED + 2 * SECTION_SIZE
        sizeofcmds = sum(c.cmdsize for c in fixed if c is not None) + text_cmdsize
        symtab.symoff = HEADER_SIZE + sizeofcmds
        symtab.stroff = symtab.symoff + NLIST_SIZE * len(nlists)
        reloff = round_up(symtab.stroff + len(strings), 8)
        text_fileoff = max(TEXT_FILE_OFFSET,
                           round_up(reloff + RELOC_SIZE * len(self.relocations), PAGE))
        fixed[text_index] = self._text_segment(text_fileoff, reloff)

        header = Container(magic=MAGIC, cputype=CPU_TYPE_ANE,
                           cpusubtype=TARGET_SUBTYPES[self.program.target], filetype=MH_EXECUTE,
                           ncmds=len(fixed), sizeofcmds=sizeofcmds, flags=MH_PIE, reserved=0)
        commands, pos = [], HEADER_SIZE
        for fields in fixed:
            commands.append(LoadCommand(pos, fields.cmd, fields.cmdsize, fields=fields))
            pos += fields.cmdsize
        image = HwxImage(header=header, commands=commands, size=text_fileoff + self.text_vmsize)
        image.section_data = {1: self.text, 2: self.constants}
        if self.relocations:
            image.relocations = {1: [Container(r_address=at, r_info=RELOC_INFO)
                                     for at, _ in self.relocations]}
        image.symbols = nlists
        image.strings = bytes(strings)
        return image


def _thread(flavor, state, strings: bytes):
    tail = strings.ljust(round_up(len(strings), 8), b"\0")
    return Container(cmd=LC_THREAD, cmdsize=16 + 4 * len(state) + len(tail), flavor=flavor,
                     count=len(state), state=state, tail=tail)


def _element_code(tensor: Tensor) -> int:
    try:
        return desc.ELEMENT_CODES[tensor.dtype]
    except KeyError:
        raise UnsupportedError(f"tensor {tensor.name!r}: dtype {tensor.dtype!r} has no element "
                               f"code (known: {', '.join(desc.ELEMENT_CODES)})") from None


def _register_places(task) -> dict[int, int]:
    """Register address -> byte offset (in the task stream) of the word that writes it."""
    places, pos = {}, task.offset + 4 * (len(task.header) + len(task.extension))
    for rec in task.records:
        for j, address in enumerate(rec.addresses()):
            places[address] = pos + 4 + 4 * j
        pos += 4 + 4 * len(rec.values)
    return places
