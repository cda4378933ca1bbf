"""The ANE-specific load commands: program descriptor, tensor descriptors, FVMLIB tensors, stabs.

Program descriptor = `LC_THREAD` whose flavor ("kind") is 1 (H13) or 4 (H14).  Its state words
(ane-facts.md §1.3, oracle README `program_descriptor`):

* words 0..63: the BAR table, 32 little-endian u64 addresses, slot i at words 2i, 2i+1.  Slot 0 is
  the task stream (`text_address`), slot 1 the constant section (`constant_address`), later slots
  the buffers the task headers name (RBase/WBase/KBase).  The oracle files list slots 4..8 as
  `resource_addresses` (their decoder reads five u64 at command offset 0x30).
* H13 (kind 1; 532 words in the macOS-12 files [A], 538 in macOS-26 output [B]): word 512 the
  text address, 514 the first task's size in words minus 1, 515 the task count, 517 0xFFFF,
  523 the command offset of the program name; 528 / 530 unknown.
* H14 (kind 4, 0x890-byte command [B]): the 32 words from 512 are the oracle `trailing_words`:
  [0] text address, [5] text words, [8] task count, [14] name offset (h14 census §3.1).

Tensor descriptor = `LC_THREAD` flavor 3, 30 words + strings (§1.4; offsets as the oracle decoder
reads them): word 1 binding (1 input, 2 output), word 2 offset of the network name, word 4 offset of
the tensor name, word 5 element code (5 = fp16, the stabs type number), words 6..9 N, C, H, W
(word 10 a fifth dimension, 1), words 16..23 byte strides N, C, H, W as u64, words 24..25
total bytes of one batch element (u64).
"""

from __future__ import annotations

import re
import struct

from construct import Array, Int32ul, Int64ul, Padding, Struct

from coreml2hwx.errors import ProgramFormatError
from coreml2hwx.hwx.macho import LC_THREAD, cstring

FLAVOR_H13_PROGRAM = 1
FLAVOR_TENSOR = 3
FLAVOR_H14_PROGRAM = 4
PROGRAM_FLAVORS = (FLAVOR_H13_PROGRAM, FLAVOR_H14_PROGRAM)

BAR_SLOTS = 32
TRAILER = 512  # first word after the BAR table region that carries program fields

# H13 program descriptor word indexes (ane-facts.md §1.3).
H13_TEXT = 512
H13_FIRST_TASK_WORDS_M1 = 514
H13_TASK_COUNT = 515
H13_FFFF = 517
H13_NAME_OFFSET = 523
H13_UNKNOWN_528 = 528
H13_UNKNOWN_530 = 530
H13_OLD_COUNT = 532  # state words of the macOS-12 compiler's command (0x868 bytes with the name)

# H14 program descriptor word indexes (oracle README, h14 census §3.1).
H14_TEXT_WORDS = 517
H14_TASK_COUNT = 520
H14_NAME_OFFSET = 526

# Element codes = the stabs type numbers of the fixed type table (§1.5).
ELEMENT_TYPES = {2: "int8", 3: "uint8", 4: "int16", 5: "float16", 6: "float32"}
ELEMENT_CODES = {name: code for code, name in ELEMENT_TYPES.items()}
ELEMENT_BYTES = {"int8": 1, "uint8": 1, "int16": 2, "float16": 2, "float32": 4}

TensorState = Struct(
    "kind" / Int32ul,
    "binding" / Int32ul,
    "network_name_offset" / Int64ul,
    "name_offset" / Int32ul,
    "element_code" / Int32ul,
    "dims" / Array(5, Int32ul),  # N, C, H, W, and a fifth dimension (1 in every sample)
    Padding(20),
    "strides" / Array(4, Int64ul),  # bytes: N, C, H, W
    "total_bytes" / Int64ul,
    "word26" / Int32ul,  # 1 in every sample [A], meaning unknown
    "word27" / Int32ul,  # 0x92.. inputs, 0x99.. outputs [A], meaning unknown
    "extent" / Int32ul,  # inputs: total bytes; outputs: last element offset + element size [A]
    "word29" / Int32ul,
)
TENSOR_WORDS = TensorState.sizeof() // 4  # 30


def u64(words, index):
    return words[index] | words[index + 1] << 32


def split_u64(value):
    return [value & 0xFFFFFFFF, value >> 32]


def thread_commands(image, flavors):
    return [c for c in image.commands
            if c.cmd == LC_THREAD and c.fields is not None and c.fields.flavor in flavors]


def command_string(command, offset, what, file):
    raw = command.to_bytes()
    if not 0 < offset < len(raw):
        raise ProgramFormatError(f"{what} string offset {offset:#x} lies outside the "
                                 f"{len(raw):#x}-byte command", file=file, offset=command.offset)
    return cstring(raw, offset)


# -- program descriptor ---------------------------------------------------------------------------

def _need_words(command, count, file):
    have = command.fields.count
    if have < count:
        raise ProgramFormatError(f"program descriptor (kind {command.fields.flavor}) has {have} "
                                 f"words; at least {count} are needed", file=file,
                                 offset=command.offset + 12)


def program_descriptor(command, file=None) -> dict:
    """The program descriptor of `command` as a dict (see the module docstring for the fields)."""
    f = command.fields
    words = list(f.state)
    kind = f.flavor
    _need_words(command, BAR_SLOTS * 2, file)
    bars = [u64(words, 2 * i) for i in range(BAR_SLOTS)]
    out = {
        "kind": kind,
        "code": f.count,
        "command_size": command.cmdsize,
        "bar_addresses": bars,
        "resource_addresses": bars[4:9],
        "text_address": bars[0],
        "constant_address": bars[1],
    }
    if kind == FLAVOR_H13_PROGRAM:
        _need_words(command, H13_NAME_OFFSET + 1, file)
        out["task_words_minus_one"] = words[H13_FIRST_TASK_WORDS_M1]
        out["task_count"] = words[H13_TASK_COUNT]
        name_offset = words[H13_NAME_OFFSET]
    else:
        _need_words(command, H14_NAME_OFFSET + 1, file)
        out["text_address"] = u64(words, TRAILER)
        out["text_words"] = words[H14_TEXT_WORDS]
        out["task_count"] = words[H14_TASK_COUNT]
        out["constant_address"] = out["text_address"] + -(-4 * out["text_words"] // 64) * 64
        raw = command.to_bytes()[16 + 4 * TRAILER:16 + 4 * (TRAILER + 32)]
        out["trailing_words"] = list(struct.unpack(f"<{len(raw) // 4}I", raw[:len(raw) // 4 * 4]))
        name_offset = words[H14_NAME_OFFSET]
    out["name"] = command_string(command, name_offset, "program name", file)
    out["other_words"] = {i: w for i, w in enumerate(words)
                          if i >= BAR_SLOTS * 2 and w and i not in _NAMED_WORDS[kind]}
    return out


_NAMED_WORDS = {
    FLAVOR_H13_PROGRAM: {H13_TEXT, H13_TEXT + 1, H13_FIRST_TASK_WORDS_M1, H13_TASK_COUNT,
                         H13_NAME_OFFSET},
    FLAVOR_H14_PROGRAM: {TRAILER, TRAILER + 1, H14_TEXT_WORDS, H14_TASK_COUNT, H14_NAME_OFFSET},
}


def h13_program_state(bars, *, first_task_words, task_count) -> list[int]:
    """State words of a macOS-12-style H13 program descriptor (532 words, tinygrad files [A])."""
    words = [0] * H13_OLD_COUNT
    for slot, address in enumerate(bars):
        words[2 * slot:2 * slot + 2] = split_u64(address)
    words[H13_TEXT:H13_TEXT + 2] = split_u64(bars[0])
    words[H13_FIRST_TASK_WORDS_M1] = first_task_words - 1
    words[H13_TASK_COUNT] = task_count
    words[H13_FFFF] = 0xFFFF
    words[H13_NAME_OFFSET] = 16 + 4 * H13_OLD_COUNT
    # Unknown words, copied from Apple: 0x11 / 3 in every one-task tinygrad file (one, the
    # ddd6778423fe golden, has 0x4 / 3); 7 / 4 in the two-task concat.hwx.
    words[H13_UNKNOWN_528], words[H13_UNKNOWN_530] = (0x11, 3) if task_count == 1 else (7, 4)
    return words


H14_STATE_WORDS = TRAILER + 30  # the name follows in the command's tail (trailing word 30 on)


def h14_program_state(bars, *, text_address, text_words, task_count, max_exe_cycles) -> list[int]:
    """State words of an H14 (kind 4) program descriptor.  The trailing words Apple's compiler
    writes (oracle README, h14 census §3.1, 26/26 programs): [0..1] text address, [4] 4, [5] text
    words, [8] task count, [10], [11] 0xFFFFFFFF, [13] 0xFFFF, [14] the name's command offset,
    [22] 3, [24] 1, [26] 9, [27] 8, [28] the largest ExeCycles of the tasks.  [18] and [20] vary
    with the program's structure in ways no rule explains yet: 0 and 0x11 (17 of the 26 programs,
    every one-task program) are written [H].  The BAR table holds our own layout's addresses as on
    H13 [H]: Apple's H14 programs fill it differently (only slot 8, or 6 and 8) for reasons unknown."""
    words = [0] * H14_STATE_WORDS
    for slot, address in enumerate(bars):
        words[2 * slot:2 * slot + 2] = split_u64(address)
    t = TRAILER
    words[t:t + 2] = split_u64(text_address)
    words[t + 4], words[H14_TEXT_WORDS], words[H14_TASK_COUNT] = 4, text_words, task_count
    words[t + 10] = words[t + 11] = 0xFFFFFFFF
    words[t + 13], words[H14_NAME_OFFSET] = 0xFFFF, 16 + 4 * H14_STATE_WORDS
    words[t + 20], words[t + 22], words[t + 24], words[t + 26], words[t + 27] = 0x11, 3, 1, 9, 8
    words[t + 28] = max_exe_cycles
    return words


# -- tensor descriptors ---------------------------------------------------------------------------

def tensor_descriptor(command, file=None) -> dict:
    """A tensor descriptor in the oracle JSON shape, plus `name`, `network` and the raw extras."""
    f = command.fields
    if f.count < TENSOR_WORDS:
        raise ProgramFormatError(f"tensor descriptor has {f.count} words; {TENSOR_WORDS} are "
                                 "needed", file=file, offset=command.offset + 12)
    state = TensorState.parse(struct.pack(f"<{TENSOR_WORDS}I", *f.state[:TENSOR_WORDS]))
    return {
        "binding": state.binding,
        "element_code": state.element_code,
        "shape": list(state.dims[:4]),
        "strides": list(state.strides),
        "total_bytes": state.total_bytes,
        "name": command_string(command, state.name_offset, "tensor name", file),
        "network": command_string(command, state.network_name_offset, "network name", file),
        "depth": state.dims[4],
        "word26": state.word26,
        "word27": state.word27,
        "extent": state.extent,
    }


def tensor_state(*, binding, element_code, shape, strides, total_bytes, extent, word27,
                 network: str) -> list[int]:
    """State words of a tensor descriptor laid out as in the tinygrad files [A]."""
    raw = TensorState.build(dict(
        kind=FLAVOR_TENSOR, binding=binding, network_name_offset=16 + 4 * TENSOR_WORDS,
        name_offset=16 + 4 * TENSOR_WORDS + len(network.encode("latin-1")) + 1,
        element_code=element_code, dims=list(shape) + [1], strides=list(strides),
        total_bytes=total_bytes, word26=1, word27=word27, extent=extent, word29=0))
    return list(struct.unpack(f"<{TENSOR_WORDS}I", raw))


def live_extent(shape, strides, element_bytes) -> int:
    """Offset of the last element plus its size (outputs' word 28: relu W=77 -> 154, conv C=3 ->
    130, gemm C=512 -> 32706 in the tinygrad files)."""
    _, c, h, w = shape
    _, cs, hs, ws = strides
    return (c - 1) * cs + (h - 1) * hs + (w - 1) * ws + element_bytes


# -- stabs ----------------------------------------------------------------------------------------

STAB_TYPES = ["void:t1=1", "int8:t2=r2;0;127", "uint8:t3=r1;0;255", "int16:t4=r1;-32768;32767",
              "float16:t5=r1;2;0", "float:t6=r1;4;0", "raw10:t7=r1;-512;511", "lut:t8=",
              "uint4:t9=r1;0;15", "uint6:t10=r1;0;63"]
FIRST_TENSOR_TYPE = 11


def tensor_stab(name, type_number, shape, strides, element_code) -> str:
    """`image:t11=ar1;0;1;12=s192n:ar1;0;3;13=s64c:...:5` - one array level per dimension, the third
    field the dimension's size and `s<stride><letter>` its byte stride (§1.5, tinygrad files)."""
    parts = [f"{name}:t{type_number}="]
    for i, (size, stride, letter) in enumerate(zip(shape, strides, "nchw")):
        parts.append(f"ar1;0;{size};{type_number + 1 + i}=s{stride}{letter}:")
    return "".join(parts) + str(element_code)


_STAB = re.compile(r"^(?P<name>.*):t\d+=ar1;0;(\d+);\d+=s(\d+)n:ar1;0;(\d+);\d+=s(\d+)c:"
                   r"ar1;0;(\d+);\d+=s(\d+)h:ar1;0;(\d+);\d+=s(\d+)w:(\d+)$")


def parse_stab(text: str):
    """(name, shape, strides, element_code) of a tensor stab, or None."""
    m = _STAB.match(text)
    if m is None:
        return None
    g = [int(x) for x in m.groups()[1:]]
    return m["name"], (g[0], g[2], g[4], g[6]), (g[1], g[3], g[5], g[7]), g[8]
