"""The `.anec` container of the Asahi Linux ANE driver (ane-facts.md §4) - H13 programs only.

A payload - the task stream (`tsk_size` bytes), zero padding to 16 bytes, the constant section
(`krn_size` bytes) - described by a header.  Two header variants exist [A]:

* **current** `struct anec` (eiln/anecc, libane; 0x6A8 bytes): size, td_size, td_count, tsk_size,
  krn_size, src_count, dst_count, tiles[32] (16 KiB pages per BAR slot), nchw[32][6] (N, C, H, W,
  plane stride, row stride per I/O slot).  The file is the header padded to 0x1000 bytes (anecc,
  libane up to 8fd8c7c) or to 0x800 bytes (libane since e585747), then the payload.
  `read_anec` tells the two apart by the file size: header + `size` must be the whole file.
* **early** `struct anec` (eiln/ane f182ece, Feb 2023; 0x120 bytes): size, tsk_size, krn_size,
  td_count, td_size, tiles[32], types[32].  It lived in a C header next to a raw payload file (the
  eiln kernel `.bin` files are such payloads), so it is never auto-detected: pass it to
  `read_anec(payload, early_header=...)`; `to_bytes()` then gives the payload back and
  `header_bytes()` the packed struct.

Buffer slots (§2.6, anecc): 0 command (tiles = pages of the whole payload), 1 constants (derived
by the driver, tiles 0), 2/3 intermediates, 4.. outputs, then inputs.
"""

from __future__ import annotations

import copy
import dataclasses

from construct import Array, ConstructError, Int32ul, Int64ul, Struct

from coreml2hwx.errors import ProgramFormatError, UnsupportedError
from coreml2hwx.hwx.descriptors import H13_FIRST_TASK_WORDS_M1, H13_TASK_COUNT
from coreml2hwx.program import Program, Tensor

PAGE = 0x4000
DMA_GRANULE = 16  # the driver puts the kernel at cmd + round_up(tsk_size, 16) (eiln-drv [A])
SLOTS = 32
NCHW = 6
HEADER_SIZES = {"anecc": 0x1000, "libane": 0x800}

AnecHeader = Struct(
    "size" / Int64ul,
    "td_size" / Int32ul,
    "td_count" / Int32ul,
    "tsk_size" / Int64ul,
    "krn_size" / Int64ul,
    "src_count" / Int32ul,
    "dst_count" / Int32ul,
    "tiles" / Array(SLOTS, Int32ul),
    "nchw" / Array(SLOTS * NCHW, Int64ul),
)
STRUCT_SIZE = AnecHeader.sizeof()  # 0x6A8

EarlyAnecHeader = Struct(
    "size" / Int64ul,
    "tsk_size" / Int64ul,
    "krn_size" / Int64ul,
    "td_count" / Int32ul,
    "td_size" / Int32ul,
    "tiles" / Array(SLOTS, Int32ul),
    "types" / Array(SLOTS, Int32ul),
)
EARLY_STRUCT_SIZE = EarlyAnecHeader.sizeof()  # 0x120
TILE_CMD, TILE_ITM, TILE_SRC, TILE_DST = 1, 2, 3, 4  # eiln/ane f182ece drm_ane.h

# byte offsets of the fields, for error messages
_CURRENT_AT = {"size": 0, "td_size": 8, "td_count": 12, "tsk_size": 16, "krn_size": 24,
               "src_count": 32, "dst_count": 36}
_EARLY_AT = {"size": 0, "tsk_size": 8, "krn_size": 16, "td_count": 24, "td_size": 28}


def round_up(value: int, align: int) -> int:
    return -(-value // align) * align


def pages(nbytes: int) -> int:
    return round_up(nbytes, PAGE) // PAGE


def _plain(container) -> dict:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in container.items()
            if not k.startswith("_")}


class AnecFile:
    """An `.anec` read exactly.  `header` is a dict of the struct fields; `variant` is "anecc"
    (payload at 0x1000), "libane" (payload at 0x800) or "early" (raw payload, header apart)."""

    def __init__(self, variant, header: dict, payload: bytes, padding: bytes = b"", file=None):
        self.variant, self.header, self.payload = variant, header, payload
        self.padding = padding  # header bytes after the struct, kept verbatim
        self.file = None if file is None else str(file)

    @property
    def payload_offset(self) -> int:
        return HEADER_SIZES.get(self.variant, 0)

    @property
    def text(self) -> bytes:
        return self.payload[:self.header["tsk_size"]]

    @property
    def constants(self) -> bytes:
        start = round_up(self.header["tsk_size"], DMA_GRANULE)
        return self.payload[start:start + self.header["krn_size"]]

    def header_bytes(self) -> bytes:
        layout = EarlyAnecHeader if self.variant == "early" else AnecHeader
        return layout.build(self.header)

    def to_bytes(self) -> bytes:
        if self.variant == "early":
            return self.payload
        return self.header_bytes() + self.padding + self.payload

    def tensors(self) -> list[Tensor]:
        """Buffers per BAR slot: I/O shapes from `nchw` (current header); others read (0,0,0,0)."""
        h = self.header
        out = []
        for slot in range(2, SLOTS):
            if not h["tiles"][slot]:
                continue
            role, index = self._slot_role(slot)
            shape, strides, total = (0, 0, 0, 0), (0, 0, 0, 0), None
            if "nchw" in h and role != "intermediate":
                n, c, hh, w, plane, row = h["nchw"][slot * NCHW:(slot + 1) * NCHW]
                if n:
                    shape, strides, total = (n, c, hh, w), (c * plane, plane, row, 2), c * plane
            name = {"input": "src", "output": "dst", "intermediate": "itm"}[role] + str(index)
            out.append(Tensor(name=name, role=role, shape=shape, strides=strides, slot=slot,
                              total_bytes=total, size=h["tiles"][slot] * PAGE))
        return out

    def _slot_role(self, slot):
        h = self.header
        if "types" in h:
            kind = h["types"][slot]
            role = {TILE_SRC: "input", TILE_DST: "output"}.get(kind, "intermediate")
            same = [s for s in range(2, slot) if h["tiles"][s] and h["types"][s] == kind]
            return role, len(same)
        if slot < 4:
            return "intermediate", 3 - slot
        if slot < 4 + h["dst_count"]:
            return "output", slot - 4
        return "input", slot - 4 - h["dst_count"]


# -- reading --------------------------------------------------------------------------------------

def _check(header: dict, payload_len: int, at: dict, file, base=0):
    def fail(field, rule):
        return ProgramFormatError(f".anec {field}: {rule}", file=file, offset=base + at[field])
    size, tsk, krn = header["size"], header["tsk_size"], header["krn_size"]
    if size != payload_len:
        raise fail("size", f"{size:#x} but the payload is {payload_len:#x} bytes")
    if size != round_up(tsk, DMA_GRANULE) + krn:
        raise fail("size", f"{size:#x} is not round_up(tsk_size {tsk:#x}, 16) + krn_size {krn:#x}")
    if not header["td_count"]:
        raise fail("td_count", "0 tasks")
    td = header["td_size"]
    if td < 4 or td % 4 or td > tsk:
        raise fail("td_size", f"{td:#x} is not a whole number of words within tsk_size {tsk:#x}")
    if "src_count" in header and header["src_count"] + header["dst_count"] > SLOTS - 4:
        raise fail("src_count", f"{header['src_count']} inputs + {header['dst_count']} outputs "
                                "do not fit the BAR slots")


def _current_variant(data: bytes):
    """("anecc" | "libane", header container) when data is header + payload, else None."""
    if len(data) < STRUCT_SIZE:
        return None
    header = AnecHeader.parse(data[:STRUCT_SIZE])
    for variant, offset in HEADER_SIZES.items():
        if len(data) == offset + header.size:
            return variant, header
    return None


def looks_like_anec(data: bytes) -> bool:
    """True when `data` is a current-header `.anec` whose sizes agree with themselves."""
    found = _current_variant(data)
    if found is None:
        return False
    h = found[1]
    return h.size == round_up(h.tsk_size, DMA_GRANULE) + h.krn_size


def read_anec(data: bytes, file=None, *, early_header=None) -> AnecFile:
    """Read an `.anec` exactly (see the module docstring for the variants and how they are told
    apart).  `early_header`: the early header (packed bytes or a dict of its fields); `data` is then
    the raw payload.  Raises ProgramFormatError naming the file, the offset and the rule."""
    data = bytes(data)
    if early_header is not None:
        return _read_early(data, early_header, file)
    found = _current_variant(data)
    if found is None:
        size = int.from_bytes(data[:8], "little") if len(data) >= 8 else None
        detail = "shorter than the header" if size is None or len(data) < STRUCT_SIZE else (
            f"header says a {size:#x}-byte payload; a file of {len(data):#x} bytes fits neither "
            "the 0x1000- nor the 0x800-byte header")
        raise ProgramFormatError(f"not an .anec: {detail}", file=file, offset=0)
    variant, header = found
    fields = _plain(header)
    offset = HEADER_SIZES[variant]
    _check(fields, len(data) - offset, _CURRENT_AT, file)
    return AnecFile(variant, fields, data[offset:], data[STRUCT_SIZE:offset], file)


def _read_early(payload: bytes, early_header, file) -> AnecFile:
    if isinstance(early_header, (bytes, bytearray)):
        if len(early_header) != EARLY_STRUCT_SIZE:
            raise ProgramFormatError(f"early .anec header is {len(early_header)} bytes, not "
                                     f"{EARLY_STRUCT_SIZE}", file=file, offset=0)
        fields = _plain(EarlyAnecHeader.parse(early_header))
    else:
        fields = {"tiles": [0] * SLOTS, "types": [0] * SLOTS, **early_header}
        try:
            EarlyAnecHeader.build(fields)
        except ConstructError as err:
            raise ProgramFormatError(f"early .anec header: {str(err).splitlines()[0]}",
                                     file=file, offset=0) from None
    _check(fields, len(payload), _EARLY_AT, file)
    return AnecFile("early", fields, payload, b"", file)


# -- writing --------------------------------------------------------------------------------------

def _header_bytes(header_size: int) -> str:
    for variant, size in HEADER_SIZES.items():
        if size == header_size:
            return variant
    raise UnsupportedError(f".anec header size {header_size:#x}: known are 0x1000 (anecc) and "
                           "0x800 (libane)")


def build_anec(*, text: bytes, constants: bytes, td_size: int, td_count: int,
               slots: dict[int, tuple[int, tuple | None]], src_count: int, dst_count: int,
               header_size: int = 0x1000) -> bytes:
    """A current-header `.anec`.  `slots`: BAR slot -> (buffer bytes, (N, C, H, W, plane, row) or
    None)."""
    variant = _header_bytes(header_size)
    payload = text.ljust(round_up(len(text), DMA_GRANULE), b"\0") + constants
    tiles, nchw = [0] * SLOTS, [0] * (SLOTS * NCHW)
    tiles[0] = pages(len(payload))
    for slot, (nbytes, shape) in slots.items():
        tiles[slot] = pages(nbytes)
        if shape is not None:
            nchw[slot * NCHW:(slot + 1) * NCHW] = shape
    header = dict(size=len(payload), td_size=td_size, td_count=td_count, tsk_size=len(text),
                  krn_size=len(constants), src_count=src_count, dst_count=dst_count, tiles=tiles,
                  nchw=nchw)
    padding = bytes(HEADER_SIZES[variant] - STRUCT_SIZE)
    return AnecFile(variant, header, payload, padding).to_bytes()


def hwx_to_anec(hwx, header_size: int = 0x1000) -> bytes:
    """The `.anec` for an H13 `.hwx`: the header fields anecc computes (§1.8), from the program
    descriptor, the buffer segments and the tensor descriptors rather than by scanning words.
    The payload is the task stream, zero padding to 16 bytes and the constant section."""
    pd = hwx.program_descriptor
    if hwx.target != "h13" or pd is None or pd["kind"] != 1:
        what = "no program descriptor" if pd is None else f"program descriptor kind {pd['kind']}"
        raise ProgramFormatError(f"the .anec container runs H13 programs only (this file: "
                                 f"cpusubtype {hwx.cpusubtype}, {what})", file=hwx.file, offset=8)
    by_address = {}
    for td in hwx.tensor_descriptors:
        address = hwx.fvmlibs.get(td["name"])
        if address is not None:
            n, c, h, w = td["shape"]
            by_address[address] = (n, c, h, w, td["strides"][1], td["strides"][2])
    slots = {}
    for slot in range(2, SLOTS):
        address = pd["bar_addresses"][slot]
        if not address:
            continue
        segment = hwx.segment_at(address)
        if segment is None:
            raise ProgramFormatError(f"BAR slot {slot} names {address:#x}, which starts no "
                                     "segment", file=hwx.file,
                                     offset=hwx.program_descriptor_offset + 16 + 8 * slot)
        slots[slot] = (segment.vmsize, by_address.get(address))
    td_size = 4 * (pd["task_words_minus_one"] + 1)
    if not pd["task_count"]:
        raise ProgramFormatError("program descriptor declares 0 tasks", file=hwx.file,
                                 offset=hwx.program_descriptor_offset + 16 + 4 * H13_TASK_COUNT)
    if td_size > len(hwx.text):
        raise ProgramFormatError(f"first task of {td_size:#x} bytes is longer than the "
                                 f"{len(hwx.text):#x}-byte task stream", file=hwx.file,
                                 offset=hwx.program_descriptor_offset + 16
                                 + 4 * H13_FIRST_TASK_WORDS_M1)
    bindings = [td["binding"] for td in hwx.tensor_descriptors]
    try:
        return build_anec(text=hwx.text, constants=hwx.constants, td_size=td_size,
                          td_count=pd["task_count"], slots=slots, src_count=bindings.count(1),
                          dst_count=bindings.count(2), header_size=header_size)
    except ConstructError as err:  # a size that does not fit the anec header's fields
        raise ProgramFormatError(f"does not fit an .anec header: {str(err).splitlines()[0]}",
                                 file=hwx.file, offset=hwx.program_descriptor_offset) from None


# Header fields that name a BAR slot for a tile DMA (the kernel slot KBase0 = 1 is the constant
# section, which the driver places itself: eiln-drv, ane-facts §4.3).
TILE_SLOT_FIELDS = (("RBase0", "RBE0"), ("RBase1", "RBE1"), ("WBase", "WBE"), ("TBase", "TBE"))


def driver_slots(tensors: list[Tensor]) -> list[Tensor]:
    """The tensors re-slotted as the Asahi driver binds buffers (ane-facts §4.1, anecc, libane):
    outputs from slot 4, inputs right after them, intermediates at 3 then 2, each role in order."""
    order = {"output": iter(range(4, SLOTS)),
             "input": iter(range(4 + sum(t.role == "output" for t in tensors), SLOTS)),
             "intermediate": iter((3, 2))}
    out = []
    for t in tensors:
        slot = next(order[t.role], None)
        if slot is None:
            raise UnsupportedError(f"the .anec driver convention has no slot left for {t.role} "
                                   f"tensor {t.name!r}")
        out.append(dataclasses.replace(t, slot=slot))
    return out


def rebind_slots(tasks, mapping: dict[int, int], gen) -> None:
    """Rewrite every enabled tile-DMA slot field of the task headers through `mapping`: the
    tasks then read and write the same tensors in their new slots."""
    header = gen.maps.HEADER
    for task in tasks:
        values = {}
        for slot_field, enable in TILE_SLOT_FIELDS:
            if header.get(task.header, enable):
                old = header.get(task.header, slot_field)
                values[slot_field] = mapping.get(old, old)
        task.header = header.encode(values, task.header)[:len(task.header)]


def write_anec(program: Program, header_size: int = 0x1000) -> bytes:
    """A new `.anec` for an H13 Program (tasks laid out on copies, as `write_hwx` does; empty
    constants become 16 KiB of zeros, as Apple writes them)."""
    from coreml2hwx.hwx.writer import EMPTY_CONSTANTS, _buffer_bytes, default_slots
    from coreml2hwx.target import generation
    if program.target != "h13":
        raise UnsupportedError(f".anec runs H13 programs only (the Asahi driver supports M1 "
                               f"t8103/t6000), not {program.target}")
    gen = generation("h13")
    tasks = copy.deepcopy(program.tasks)
    gen.layout(tasks)
    tensors = driver_slots(program.tensors)
    rebind_slots(tasks, {old.slot: new.slot for old, new in zip(program.tensors, tensors)
                         if old.slot is not None}, gen)
    slots = {}
    for i, slot in default_slots(tensors).items():
        t = tensors[i]
        shape = None
        if t.role in ("input", "output"):
            shape = (*t.shape, t.strides[1], t.strides[2])
        slots[slot] = (_buffer_bytes(t), shape)
    roles = [t.role for t in tensors]
    return build_anec(text=gen.encode_stream(tasks), constants=program.constants or EMPTY_CONSTANTS,
                      td_size=4 * tasks[0].size_words, td_count=len(tasks), slots=slots,
                      src_count=roles.count("input"), dst_count=roles.count("output"),
                      header_size=header_size)
