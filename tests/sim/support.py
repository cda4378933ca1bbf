"""Apple's programs from ../shared as `Program`s the simulator can run, and their source math.

* eiln: raw anec payloads (TD stream, then the kernel section) with tensor slots and sizes from the
  metadata CSV (eiln/ane anec_*.h).  The kernel section starts at round_up(end of the task chain,
  16): the Asahi driver's BAR[1] = cmd + round_up(tsk_size, 16) (ane-facts §2.6, eiln-drv).  The
  CSV's own `size - krn_size` agrees for 35 kernels; its softmin row carries norm's sizes (the test
  of the stream codec notes the same slip), and there the rule finds softmin's exp2 table.
* oracles: tasks rebuilt from the JSON (`task_from_json`), tensors from the tensor descriptors, and
  the constant section rebuilt from the oracle README's weights rule or lut-rules.md.  Every rebuilt
  section is compared with the oracle's sha256 before use: a section that does not hash like
  Apple's is never run, so the bytes the simulator reads are Apple's.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import struct
from functools import lru_cache

import numpy as np

from coreml2hwx.program import Program, Tensor
from coreml2hwx.report.jsonview import task_from_json
from coreml2hwx.target import generation
from tests.conftest import shared_files

EILN_CSV = "artifacts/eiln_ane/f182ece390b4/anec/kernels_metadata_from_ab8475b_headers.csv"
EILN_SHAPE = (1, 1, 2560, 1600)  # read from every eiln task's InDim/Cin (1600 x 2560, C = 1)
EILN_STRIDES = (0x7D0000, 0x7D0000, 0xC80, 2)  # TileDMASrc row / plane strides of every task
PAGE = 0x4000
ROLES = {"src": "input", "dst": "output", "itm": "intermediate"}


def round_up(n: int, align: int) -> int:
    return -(-n // align) * align


# -- eiln --------------------------------------------------------------------------------------

def eiln_rows() -> dict[str, dict]:
    (path,) = shared_files(EILN_CSV)
    return {row["name"]: row for row in csv.DictReader(path.open())}


def eiln_tiles(row) -> dict[int, tuple[int, str]]:
    """BAR slot -> (16 KiB pages, kind such as 'src0')."""
    out = {}
    for item in row["tiles(idx:count(kind))"].split(";"):
        slot, rest = item.split(":")
        pages, kind = rest.rstrip(")").split("(")
        out[int(slot)] = (int(pages), kind)
    return out


@lru_cache(maxsize=None)
def eiln_program(name: str) -> Program:
    row = eiln_rows()[name]
    (csv_path,) = shared_files(EILN_CSV)
    data = csv_path.parent.joinpath("kernels", row["file"]).read_bytes()
    tasks = generation("h13").decode_stream(data)
    end = tasks[-1].offset + 4 * tasks[-1].size_words
    tensors = [Tensor(kind, ROLES[kind[:3]], EILN_SHAPE, EILN_STRIDES, slot=slot,
                      size=pages * PAGE)
               for slot, (pages, kind) in eiln_tiles(row).items() if slot != 0]
    return Program("h13", tasks, data[round_up(end, 16):], tensors, name)


def eiln_kernel(name: str) -> bytes:
    return eiln_program(name).constants


# -- oracles -----------------------------------------------------------------------------------

def oracle(name: str, target: str = "h13") -> dict:
    (path,) = shared_files(f"oracles/{target}/{name}.json")
    return json.loads(path.read_text())


def mil_inputs(mil: str) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of the MIL main function's inputs, in order."""
    signature = re.search(r"func main<\w+>\((.*?)\)\s*\{", mil, re.S).group(1)
    return [(name, tuple(int(n) for n in dims.split(",")))
            for dims, name in re.findall(r"tensor<fp16, \[([\d, ]+)\]>\s+(\w+)", signature)]


def _bound_slots(tasks):
    """Input, output and scratch BAR slots from what the tasks fetch and write."""
    reads, writes = set(), set()
    for task in tasks:
        h8, h9, w = task.header[8], task.header[9], task.writes()
        if h8 >> 5 & 1 and w.get(0x13800, 0) & 1:
            reads.add(h8 & 31)
        if h8 >> 11 & 1:
            reads.add(h8 >> 6 & 31)
        if h9 >> 5 & 1 and h9 & 31 != 1:
            reads.add(h9 & 31)  # runtime x runtime matmul: weights from a surface
        if h8 >> 17 & 1 and w.get(0x17800, 0) & 1:
            writes.add(h8 >> 12 & 31)
    return sorted(reads - writes - {1}), sorted(writes - reads), sorted(reads & writes)


def _tag_slots(tasks):
    """H14: input, output and scratch BAR slots from the record tags (bits 30:21 = 0x100 + 4 x
    slot on the record writing a buffer address, h14 census §3): source 1 (0x1110, when its
    DMAConfig 0x1100 is enabled), source 2 (0x1128), a kernel that is not the constant section
    (0x1908), the result (0x1508, when its DMAConfig 0x1500 is enabled)."""
    reads, writes = set(), set()
    for task in tasks:
        w = task.writes()
        tags = {r.address: (r.tag - 0x100) >> 2 for r in task.records if r.tag}
        if 0x1110 in tags and w.get(0x1100, 0) & 1:
            reads.add(tags[0x1110])
        if 0x1128 in tags:
            reads.add(tags[0x1128])
        if 0x1908 in tags:
            reads.add(tags[0x1908])
        if 0x1508 in tags and w.get(0x1500, 0) & 1:
            writes.add(tags[0x1508])
    return sorted(reads - writes - {1}), sorted(writes - reads), sorted(reads & writes)


def oracle_program(case: dict, constants: bytes) -> Program:
    """The oracle's tasks with tensors bound to slots.

    Input tensor descriptors, in their order, take the input slots in increasing order; outputs
    likewise.  This holds for every oracle here: element-wise ops read x from 4 and y from 6 and
    write 5; matmuls write 4, read 5 (and a runtime w as the kernel from 6) - census §5 Header[8].
    The descriptors list inputs by name (`w` before `x`), so they take the sorted MIL names.
    H14 oracles name their slots in the record tags instead of the header (`_tag_slots`).
    """
    gen = generation(case["target"])
    tasks = [task_from_json(td, gen) for td in case["task_descriptors"]]
    ins, outs, scratch = (_tag_slots if case["target"] == "h14" else _bound_slots)(tasks)
    mil = dict(mil_inputs(case["mil"]))
    descs = [t for t in case["tensor_descriptors"] if t["binding"] == 1]
    out_descs = [t for t in case["tensor_descriptors"] if t["binding"] == 2]
    assert len(mil) == len(ins) == len(descs) and len(out_descs) == len(outs)
    tensors = []
    for name, desc, slot in zip(sorted(mil), descs, ins):
        assert int(np.prod(mil[name])) == int(np.prod(desc["shape"])), (name, desc["shape"])
        tensors.append(Tensor(name, "input", tuple(desc["shape"]), tuple(desc["strides"]),
                              slot=slot, total_bytes=desc["total_bytes"]))
    tensors += [Tensor(f"out{i}", "output", tuple(t["shape"]), tuple(t["strides"]), slot=s,
                       total_bytes=t["total_bytes"])
                for i, (t, s) in enumerate(zip(out_descs, outs))]
    tensors += [Tensor(f"scratch{s}", "intermediate", (0, 0, 0, 0), (0, 0, 0, 0), slot=s)
                for s in scratch]  # grows as tasks write it
    return Program(case["target"], tasks, constants, tensors, case["case"])


# -- weights as Apple compiled them (oracles/README.md "Regenerating the weights") -------------

# fp16 0.5 for "fp16(0x1p-1)"; 0x3801 for the "distinct" conv_known probes (upstream
# known_weights() with no bit plane flipped - the constant-section hash confirms it)
PAYLOAD_HALFWORD = {"fp16(0x1p-1)": b"\x00\x38", "distinct": b"\x01\x38"}


def weights_file(payload_bytes: int, value: str = "fp16(0x1p-1)") -> bytes:
    payload = PAYLOAD_HALFWORD[value] * (payload_bytes // 2)
    header = bytearray(128)
    header[0:8] = struct.pack("<II", 1, 2)
    header[64:84] = struct.pack("<IQQ", 0xDEADBEEF, len(payload), 128)
    return bytes(header) + payload


def compiled_tensor(case: dict, shape) -> np.ndarray:
    """The tensor Apple compiled for a BLOBFILE constant: the first elements of weights.bin."""
    count = int(np.prod(shape))
    w = case["weights"]
    data = weights_file(w["payload_bytes"], w.get("value", "fp16(0x1p-1)"))[:2 * count]
    return np.frombuffer(data, np.float16).reshape(shape)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def matches_apple(case: dict, section: bytes) -> bool:
    want = case["constant_section"]
    return len(section) == want["size"] and sha256(section) == want["sha256"]


# -- weight packing, as Apple's sections hash (coreml2hwx/sim/kernel.py states the rule) --------

def _pad64(data: bytes) -> bytes:
    return data + bytes(round_up(len(data), 64) - len(data))


def _pow2floor(n: int) -> int:
    return 1 << (n.bit_length() - 1)


def _plane_schedule(cout: int, max_lanes: int):
    start, out = 0, []
    while start < cout:
        left = cout - start
        if left >= 16:
            lanes = min(max_lanes, _pow2floor(left // 16))
            out += [(j, start + j * lanes, lanes) for j in range(16)]
            start += 16 * lanes
        else:
            out += [(j, start + j, 1) for j in range(left)]
            start = cout
    return out


def _sparse_plane(rows: np.ndarray) -> bytes:
    body = bytearray()
    for row in rows:
        body.append(0)
        for group in range(0, len(row), 8):
            values = row[group:group + 8]
            mask = sum(1 << i for i, v in enumerate(values) if v != 0)
            body.append(mask)
            body += b"".join(np.float16(v).tobytes() for v in values if v != 0)
    tail = bytes(max(rows.shape[1] // 2 - 2, 0))
    return struct.pack("<H", len(body)) + bytes(body) + tail


def pack_conv(weight: np.ndarray, bias, max_lanes: int, groups: int = 1,
              sparse: bool = False) -> bytes:
    """Dense / grouped / sparse conv and matmul weights W[cout][cin/g][kh][kw] as Apple packs."""
    cout_g = weight.shape[0] // groups
    chunks = [bytearray() for _ in range(16)]
    schedule = _plane_schedule(cout_g, max_lanes)
    for chunk in range(16):
        for g in range(groups):
            for c, first, lanes in schedule:
                if c != chunk:
                    continue
                outs = g * cout_g + np.arange(first, first + lanes)
                rows = weight[outs].reshape(lanes, -1).T
                if sparse:
                    chunks[chunk] += _pad64(_sparse_plane(rows))
                    continue
                parts = ([] if bias is None else [bias[outs]]) + [rows.reshape(-1)]
                chunks[chunk] += _pad64(np.concatenate(parts).astype(np.float16).tobytes())
    return b"".join(_pad64(bytes(c)) for c in chunks)


def pack_depthwise(weight: np.ndarray, bias) -> bytes:
    chunks = [bytearray() for _ in range(16)]
    for o in range(weight.shape[0]):
        if bias is not None:
            chunks[o % 16] += np.float16(bias[o]).tobytes()
        chunks[o % 16] += weight[o].astype(np.float16).tobytes()
    return b"".join(_pad64(bytes(c)) for c in chunks)


# -- activation tables (lut-rules.md §2-§3) ------------------------------------------------------

def _f16(x) -> np.float16:
    return np.float16(x)


def lut_table(slots_0_3, samples, below, above, step, mode) -> bytes:
    slots = np.zeros(64, np.float16)
    slots[0:4] = [_f16(v) for v in slots_0_3]
    slots[4:37] = np.asarray(samples, np.float64).astype(np.float16)
    slots[37:39] = [_f16(v) for v in below]
    slots[39:41] = [_f16(v) for v in above]
    raw = slots.view(np.uint16)
    raw[41] = step & 0xFFFF
    raw[42] = mode
    return raw.tobytes()


def _line_to_bound(xe, ye16, xb, yb):
    slope = _f16((yb - float(ye16)) / (xb - xe))
    return slope, _f16(yb - float(slope) * xb)


def sigmoid_table() -> bytes:
    k = np.arange(33)
    samples = (1 / (1 + np.exp(-(-8 + k / 2)))).astype(np.float16)
    lo, hi = -9.9375, float(_f16(np.log(4095)))
    below = _line_to_bound(-8, samples[0], lo, 0.0)
    above = _line_to_bound(8, samples[32], hi, 1.0)
    return lut_table((lo, hi, 0, 1), samples, below, above, 1, 0x01)


def verbatim_h14_table(case_name: str) -> bytes:
    """A fitted table (silu, gelu-sigmoid) from the H14 oracle's listed fp16 words."""
    halves = np.zeros(64, np.float16)
    for word in oracle(case_name, "h14")["constant_section"]["nonzero_fp16_words"]:
        if word["index"] < 64:
            value = word["value"]
            halves[word["index"]] = np.inf if value == "+inf" else -np.inf if value == "-inf" \
                else value
    return halves.tobytes()


TABLES = {
    "tanh": lambda: lut_table((0, 4, 0, 1), np.tanh(np.arange(33) / 8), (0, 0), (0, 1), 3, 0x60),
    "sigmoid": sigmoid_table,
    "exp2": lambda: lut_table((-25, 16, 0, np.inf), 2 ** (np.arange(33) / 32), (0, 0), (0, 0), 5,
                              0x0A),
    "reciprocal": lambda: lut_table((0, np.inf, np.inf, 0), 1 / (0.5 + np.arange(33) / 64), (0, 0),
                                    (0, 0), 6, 0x67),
    "log2": lambda: lut_table((0, np.inf, -np.inf, 0), np.log2(0.5 + np.arange(33) / 64), (0, 0),
                              (0, 0), 6, 0xC9),
    "sqrt": lambda: lut_table((0, np.inf, 0, np.inf),
                              np.where(np.arange(33) < 8, 0, np.sqrt(np.arange(33) / 16)), (0, 0),
                              (0, 0), 4, 0xC5),
    "rsqrt": lambda: lut_table((0, np.inf, np.inf, 0),
                               np.where(np.arange(33) < 8, 0,
                                        1 / np.sqrt(np.maximum(np.arange(33), 1) / 16)),
                               (0, 0), (0, 0), 4, 0xC6),
    "leaky_relu_0.125": lambda: lut_table((-np.inf, np.inf, -np.inf, np.inf), np.zeros(33),
                                          (0.125, 0), (1, 0), 0x40, 0x01),
    "maximum_0.5": lambda: lut_table((0.5, np.inf, 0.5, np.inf), np.full(33, 0.5), (1, 0), (1, 0),
                                     0x40, 0x01),
    # Fitted tables, emitted verbatim (lut-rules §4): gelu from the eiln gelu kernel (old
    # compiler, same bytes as the new one), silu and gelu-sigmoid from the H14 oracle words.
    "gelu": lambda: eiln_kernel("gelu")[:128],
    "silu": lambda: verbatim_h14_table("env_act_silu_1x256x32x32"),
    "gelu_sigmoid": lambda: verbatim_h14_table("env_act_gelu_1x768x1x1_sigmoid_approximation"),
}


def bare_tables(case: dict, *names: str) -> bytes:
    """H14: each table once, 128 bytes, back to back (h14 census §1: 128 bytes, pow 256)."""
    return b"".join(TABLES[name]() for name in names)


def table_section(case: dict, *names: str) -> bytes:
    """Tables at 0x0 (and 0x800 for a second: pow on H13), zero padded to the oracle's size."""
    section = bytearray(case["constant_section"]["size"])
    for i, name in enumerate(names):
        table = TABLES[name]()
        section[0x800 * i:0x800 * i + 128] = table
    return bytes(section)
