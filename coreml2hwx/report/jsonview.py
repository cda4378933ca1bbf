"""Programs as JSON in the shape of the oracle files in ../shared/oracles (see its README).

Per task: `header_words`, `records` ({address, count, header}), `blocks` (block base -> {name, words}),
`size_bytes`; per program: `target`, `task_descriptors`, `tensor_descriptors`, `constant_section`,
`program_descriptor` (when the container has one), `inputs`, `outputs`.  Addresses are lowercase hex
`0x%05x`, values `0x%08x`, so any program - ours or Apple's - can be compared with an oracle
mechanically.  `task_from_json` goes the other way, for oracles.
"""

from __future__ import annotations

import hashlib

import numpy as np

from coreml2hwx.program import Program, Record, Task
from coreml2hwx.target import Generation
from coreml2hwx.target.stream import FramedFormat

CHUNK = 2048


def hex_address(value: int) -> str:
    return f"0x{value:05x}"


def hex_word(value: int) -> str:
    return f"0x{value:08x}"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _nonzero(data: bytes) -> int:
    return int(np.count_nonzero(np.frombuffer(data, np.uint8)))


def _fp16_value(bits: int):
    value = float(np.array([bits], np.uint16).view(np.float16)[0])
    if value in (float("inf"), float("-inf")):
        return "+inf" if value > 0 else "-inf"
    return value


def constant_section_summary(data: bytes) -> dict:
    """The oracle `constant_section` object for a constant section's bytes."""
    size = len(data)
    chunks = []
    if size <= 64 * 1024:
        for offset in range(0, size, CHUNK):
            part = data[offset:offset + CHUNK]
            chunks.append({"nonzero_bytes": _nonzero(part), "offset": offset,
                           "sha256": _sha(part), "size": len(part)})
    fp16_words = None
    if size <= 256:
        halves = np.frombuffer(data[: size - size % 2], "<u2")
        fp16_words = [{"index": int(i), "value": _fp16_value(int(h))}
                      for i, h in enumerate(halves) if h]
    return {
        "chunk_bytes": CHUNK,
        "chunk_count": -(-size // CHUNK),
        "chunks": chunks,
        "nonzero_bytes": _nonzero(data),
        "nonzero_fp16_words": fp16_words,
        "prefix_128_nonzero_bytes": _nonzero(data[:128]),
        "prefix_128_sha256": _sha(data[:128]),
        "sha256": _sha(data),
        "size": size,
        "tail_after_128_nonzero_bytes": _nonzero(data[128:]),
    }


def blocks_of(writes: dict[int, int], gen: Generation) -> dict:
    """Group register writes by the block of the register map that holds them."""
    regs = gen.maps.REGISTERS
    blocks: dict[int, dict] = {}
    for address in sorted(writes):
        found = regs.lookup(address)
        base, name = (found[0].base, found[0].name) if found else (address, "unknown")
        block = blocks.setdefault(base, {"name": name, "words": {}})
        block["words"][hex_address(address)] = hex_word(writes[address])
    return {hex_address(base): blocks[base] for base in sorted(blocks)}


def task_to_json(task: Task, gen: Generation) -> dict:
    headers = gen.record_headers(task)
    return {
        "blocks": blocks_of(task.writes(), gen),
        "header_words": [hex_word(w) for w in task.header + task.extension],
        "records": [{"address": hex_address(r.address), "count": len(r.values),
                     "header": hex_word(h)} for r, h in zip(task.records, headers)],
        "size_bytes": 4 * task.size_words,
    }


def tensor_descriptor(tensor) -> dict:
    return {"binding": 1 if tensor.role == "input" else 2, "element_code": 5,
            "shape": list(tensor.shape), "strides": list(tensor.strides),
            "total_bytes": tensor.total_bytes}


def program_to_json(program: Program, gen: Generation, program_descriptor=None) -> dict:
    ordered = program.inputs + program.outputs
    out = {
        "target": program.target,
        "task_descriptors": [task_to_json(t, gen) for t in program.tasks],
        "tensor_descriptors": [tensor_descriptor(t) for t in ordered],
        "constant_section": constant_section_summary(program.constants),
        "inputs": [_io(t) for t in program.inputs],
        "outputs": [_io(t) for t in program.outputs],
    }
    if program_descriptor is not None:
        out["program_descriptor"] = program_descriptor
    return out


def _io(tensor) -> dict:
    return {"name": tensor.name, "shape": list(tensor.shape), "dtype": tensor.dtype}


def task_from_json(td: dict, gen: Generation) -> Task:
    """Rebuild a Task from an oracle task descriptor (records in stream order, values by address).

    The oracle keeps each record's header word; for masked records the mask, and for H14 dense
    records the slot tag, are taken from it (the address list of a masked record is only in the
    mask).  Counts and addresses are re-derived by the encoder, so a round trip checks them.
    """
    words = {int(a, 16): int(v, 16) for b in td["blocks"].values() for a, v in b["words"].items()}
    header = [int(w, 16) for w in td["header_words"]]
    stream = gen.stream
    n_header = stream.header_words
    task = Task(header=header[:n_header], extension=header[n_header:])
    for rec in td["records"]:
        address, head = int(rec["address"], 16), int(rec["header"], 16)
        mask, tag = None, 0
        if isinstance(stream, FramedFormat):
            if head >> 31:
                mask = head >> 15 & 0xFFFF
            else:
                tag = head >> 21 & 0x3FF
        record = Record(address, [0] * rec["count"], mask=mask, tag=tag)
        record.values = [words[a] for a in record.addresses()]
        task.records.append(record)
    return task


def program_from_json(case: dict, gen: Generation) -> Program:
    """An oracle-shaped JSON object back into a Program (constants are known only by their hash,
    so they stay empty; tensors come from `tensor_descriptors`, named by role and order)."""
    from coreml2hwx.program import Tensor

    tensors, counts = [], {1: 0, 2: 0}
    for desc in case.get("tensor_descriptors", []):
        role = "input" if desc["binding"] == 1 else "output"
        name = desc.get("name") or f"{role}{counts[desc['binding']]}"
        counts[desc["binding"]] += 1
        tensors.append(Tensor(name, role, tuple(desc["shape"]), tuple(desc["strides"]),
                              total_bytes=desc.get("total_bytes")))
    tasks = [task_from_json(td, gen) for td in case["task_descriptors"]]
    if tasks:
        gen.layout(tasks)
    program = Program(gen.name, tasks, b"", tensors, name=case.get("case", "net"))
    # The oracle keeps its constant section only as a summary (size, hashes); readers that
    # compare programs use it in place of the bytes.
    program.constant_summary = case.get("constant_section")
    return program
