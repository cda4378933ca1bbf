"""Containers -> Program: `program_from_hwx`, `program_from_anec`, `load_program` (by content)."""

from __future__ import annotations

import mmap
from contextlib import contextmanager
from pathlib import Path

from coreml2hwx.errors import ProgramFormatError, UnsupportedError
from coreml2hwx.hwx import descriptors as desc
from coreml2hwx.hwx.anec import AnecFile, looks_like_anec, read_anec
from coreml2hwx.hwx.hwxfile import HwxFile, read_hwx
from coreml2hwx.hwx.macho import HEADER_SIZE, MAGIC, MAGIC_MACHO64
from coreml2hwx.program import Program, Tensor

OUTPUT_SUFFIX = "@output"
CPUSUBTYPE_OFFSET = 8


def _generation(name_or_subtype, file, offset):
    from coreml2hwx.target import generation, generation_for_subtype
    try:
        if isinstance(name_or_subtype, int):
            return generation_for_subtype(name_or_subtype)
        return generation(name_or_subtype)
    except UnsupportedError as err:
        raise ProgramFormatError(err.message, file=file, offset=offset) from None


def _decode(gen, stream, *, file, base_offset, **counts):
    try:
        return gen.decode_stream(stream, file=file, base_offset=base_offset, **counts)
    except UnsupportedError as err:  # a generation without a known stream layout
        raise ProgramFormatError(err.message, file=file, offset=base_offset) from None


# -- hwx ------------------------------------------------------------------------------------------

def _task_stream(hwx: HwxFile, pd: dict) -> tuple[bytes, int]:
    ref = hwx.section("__TEXT", "__text")
    text = hwx.text
    start = pd["text_address"] - ref.header.addr
    if not 0 <= start <= len(text):
        raise ProgramFormatError(f"program descriptor text address {pd['text_address']:#x} lies "
                                 f"outside __TEXT,__text ({ref.header.addr:#x}+{len(text):#x})",
                                 file=hwx.file, offset=hwx.program_descriptor_offset + 16)
    return text[start:], hwx.text_offset + start


def program_tasks(hwx: HwxFile):
    """The tasks of the hwx's (first) program, decoded with its generation's stream codec."""
    pd = hwx.program_descriptor
    if pd is None:
        raise ProgramFormatError("no program descriptor (LC_THREAD flavor 1 or 4)", file=hwx.file,
                                 offset=HEADER_SIZE)
    gen = _generation(hwx.cpusubtype, hwx.file, CPUSUBTYPE_OFFSET)
    where = hwx.program_descriptor_offset
    if pd["task_count"] == 0:
        raise ProgramFormatError("program descriptor declares 0 tasks", file=hwx.file,
                                 offset=where)
    stream, base = _task_stream(hwx, pd)
    counts = {"task_count": pd["task_count"]}
    if "task_words_minus_one" in pd:
        counts["first_task_words"] = pd["task_words_minus_one"] + 1
    if "text_words" in pd:
        stream = stream[:4 * pd["text_words"]]
    return gen, _decode(gen, stream, file=hwx.file, base_offset=base, **counts)


def _hwx_tensor(hwx: HwxFile, td: dict, bars: list[int], where: int) -> Tensor:
    role = {1: "input", 2: "output"}.get(td["binding"])
    if role is None:
        raise ProgramFormatError(f"tensor descriptor {td['name']!r} has binding {td['binding']} "
                                 "(1 = input, 2 = output)", file=hwx.file, offset=where)
    name = td["name"]
    if role == "output" and name.endswith(OUTPUT_SUFFIX):
        name = name[:-len(OUTPUT_SUFFIX)]
    address = hwx.fvmlibs.get(td["name"])
    segment = None if address is None else hwx.segment_at(address)
    slots = [s for s in range(2, len(bars)) if address is not None and bars[s] == address]
    return Tensor(name=name, role=role, shape=tuple(td["shape"]), strides=tuple(td["strides"]),
                  dtype=desc.ELEMENT_TYPES.get(td["element_code"], f"code{td['element_code']}"),
                  slot=slots[0] if slots else None, total_bytes=td["total_bytes"],
                  address=address, size=None if segment is None else segment.vmsize)


def _scratch_tensors(hwx: HwxFile, bars: list[int]) -> list[Tensor]:
    """Intermediate buffers: segments with anecc's intermediate signature (prot 3/3, flags 4).
    Their shape is not recorded in the container, so it reads as (0, 0, 0, 0)."""
    out = []
    for seg in hwx.segments:
        if (seg.maxprot, seg.initprot, seg.nsects, seg.flags) == (3, 3, 1, 4):
            slots = [s for s in range(2, len(bars)) if bars[s] == seg.vmaddr]
            out.append(Tensor(name=f"itm{len(out)}", role="intermediate", shape=(0, 0, 0, 0),
                              strides=(0, 0, 0, 0), slot=slots[0] if slots else None,
                              address=seg.vmaddr, size=seg.vmsize))
    return out


def hwx_tensors(hwx: HwxFile) -> list[Tensor]:
    """Inputs and outputs in the order of their buffers (the declared order), then intermediates."""
    bars = hwx.program_descriptor["bar_addresses"] if hwx.program_descriptor else []
    commands = desc.thread_commands(hwx.image, (desc.FLAVOR_TENSOR,))
    tensors = [_hwx_tensor(hwx, td, bars, c.offset)
               for td, c in zip(hwx.tensor_descriptors, commands)]
    declared = list(hwx.fvmlibs)
    order = sorted(range(len(tensors)), key=lambda i: (
        declared.index(hwx.tensor_descriptors[i]["name"])
        if hwx.tensor_descriptors[i]["name"] in declared else len(declared) + i))
    tensors = [tensors[i] for i in order]
    return tensors + _scratch_tensors(hwx, bars)


def program_from_hwx(hwx: HwxFile) -> Program:
    """The Program of an hwx.  The program descriptor dict rides along as `program.descriptor`
    (an attribute for listings, not a Program field: it takes no part in comparisons)."""
    gen, tasks = program_tasks(hwx)
    constants = hwx.constants if hwx.section("__TEXT", "__const") is not None else b""
    program = Program(target=gen.name, tasks=tasks, constants=constants,
                      tensors=hwx_tensors(hwx), name=hwx.program_descriptor["name"])
    program.descriptor = hwx.program_descriptor
    return program


# -- anec -----------------------------------------------------------------------------------------

def program_from_anec(anec: AnecFile) -> Program:
    """Tasks and constants of an `.anec` (H13: the only generation the Asahi driver runs).

    Tensors come from the BAR-slot tables: `nchw` gives N, C, H, W and the plane/row strides of
    each I/O slot (current header); shapes the header does not record read as (0, 0, 0, 0)."""
    gen = _generation("h13", anec.file, 0)
    h = anec.header
    stream = anec.payload[:h["tsk_size"]]
    tasks = _decode(gen, stream, file=anec.file, base_offset=anec.payload_offset,
                    task_count=h["td_count"], first_task_words=h["td_size"] // 4)
    return Program(target="h13", tasks=tasks, constants=anec.constants, tensors=anec.tensors(),
                   name="net")


# -- by content -----------------------------------------------------------------------------------

def load_program(path, *, raw_target=None) -> Program:
    """A Program from a file, recognised by its content: an `.hwx` (magic 0xBEEFFACE), an `.anec`
    (header consistent with the file size), or - only when `raw_target` ("h13", ...) is given - a
    raw task stream."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            if _is_hwx(head):
                with _mapped(f, head) as data:
                    hwx = read_hwx(data, path)
                return program_from_hwx(hwx)
            data = head + f.read()
    except OSError as err:
        raise ProgramFormatError(f"cannot read: {err.strerror}", file=path) from None
    return program_from_bytes(data, file=path, raw_target=raw_target)


def _is_hwx(head: bytes) -> bool:
    return len(head) == 4 and int.from_bytes(head, "little") in (MAGIC, MAGIC_MACHO64)


@contextmanager
def _mapped(f, head: bytes):
    """The whole file, mapped rather than read when the system allows it.  `read_hwx` copies each
    part out of the map, so the bytes are copied once instead of twice (read, then sliced): for
    a MobileNetV2's 7 MB of constants the page faults of the second copy cost more than the
    parse (bench/load.py).  `head`: the bytes already read from `f`."""
    try:
        view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # not mappable (a pipe, a special file)
        view = None
    if view is None:
        yield head + f.read()
        return
    with view:
        yield view


def program_from_bytes(data: bytes, *, file=None, raw_target=None) -> Program:
    magic = int.from_bytes(data[:4], "little") if len(data) >= 4 else None
    if _is_hwx(data[:4]):
        return program_from_hwx(read_hwx(data, file))
    if looks_like_anec(data):
        return program_from_anec(read_anec(data, file))
    if raw_target is None:
        shown = "too short" if magic is None else f"magic {magic:#010x}"
        raise ProgramFormatError(f"neither an .hwx ({shown}, expected {MAGIC:#010x}) nor an .anec "
                                 "(no consistent header); give the target to read a raw task "
                                 "stream", file=file, offset=0)
    gen = _generation(raw_target, file, 0)
    tasks = _decode(gen, data, file=file, base_offset=0)
    return Program(target=gen.name, tasks=tasks)
