"""Register parity with Apple's compiler: `python bench/parity.py ORACLE_DIR`.

For every oracle JSON in ORACLE_DIR (../shared/oracles/h13 or h14 format, see its README) this
compiles the oracle's MIL text through the frontend (`parse_mil_text`, with `weights.bin` rebuilt
by the README's rule) and the lowering of the oracle's target (`coreml2hwx.target.h13.lower`,
`coreml2hwx.target.h14.lower`), then compares our program with Apple's field by
field: task count, every header word, the record layout, every register word, the tensor
descriptors and the constant section (size and sha256).  A case Apple refused (`error` set) is
matched when we refuse it too.

Excluded from the comparison, because they are DRAM addresses the loader assigns, not program
content: the program descriptor's `text_address`, `constant_address` and `resource_addresses`
(virtual addresses of the task stream, constant section and I/O surfaces in the container:
0x30000000 + the sizes of the surfaces laid out before them, census §3.2).  Nothing in a task is
excluded: TDs hold no absolute addresses, only BAR-slot offsets (ane-facts §2.6).

Prints one line per family `family: matched/total`, the differing fields of each miss, and last
`<target> parity: N/M` for each target found.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

# the repo on the import path in place of bench/ (bench/inspect.py would shadow the stdlib)
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import numpy as np


from coreml2hwx.errors import Coreml2hwxError, UnsupportedError  # noqa: E402
from coreml2hwx.report.jsonview import task_to_json, tensor_descriptor  # noqa: E402
from coreml2hwx.target import generation  # noqa: E402

MAX_SHOWN = 12
# Halfword every payload element holds: uniform 0.5, or for the `conv_known_*` probes ("distinct")
# the baseline known-weight payload, every element 0x3801 (upstream mil-hwx-compiler
# `research/mint_conv_probes.py`: `known_weights(elements)` with no bit plane flipped is
# `LOW_PATTERN` = 0x3801 throughout; `conv_known_k1_c64_n128_s16_st1_g1_bias0_same` confirms it).
PAYLOAD_HALFWORD = {"fp16(0x1p-1)": b"\x00\x38", "distinct": b"\x01\x38"}


# -- rebuilding the oracle's input ------------------------------------------------------------------
def oracle_weight_tensor(weights: dict) -> bytes | None:
    """The bytes Apple compiled for every BLOBFILE constant (oracle README, "Regenerating the
    weights"): the first `elements*2` bytes of a 128-byte header followed by fp16 0.5 halfwords,
    because the oracle's blob record decodes to data offset 0."""
    if weights.get("storage") != "BLOBFILE":
        return None
    elements = weights["payload_bytes"] // 2
    payload = PAYLOAD_HALFWORD[weights.get("value")] * elements
    header = bytearray(128)
    header[0:8] = struct.pack("<II", 1, 2)
    header[64:84] = struct.pack("<IQQ", 0xDEADBEEF, len(payload), 128)
    return (bytes(header) + payload)[:elements * 2]


def well_formed_weights(data: bytes) -> bytes:
    """A MILBlob v2 file with one fp16 record at offset 64 whose data sits at offset 128."""
    header = bytearray(64)
    header[0:8] = struct.pack("<II", 1, 2)
    record = bytearray(64)
    record[0:24] = struct.pack("<IIQQ", 0xDEADBEEF, 1, len(data), 128)  # dtype 1 = fp16
    return bytes(header) + bytes(record) + data


def graph_of(case: dict, workdir: Path):
    """The oracle's MIL through the frontend, with its weights in a well-formed weights.bin.

    Every BLOBFILE constant of an oracle points at the same record (offset 64).  When the case has
    constants of different sizes (a conv weight and its bias), one well-formed record cannot hold
    both, and the frontend rightly rejects a record of the wrong size; those constants are parsed
    unresolved and then read as the prefix of the record's data - exactly the tensor Apple's
    compiler read for each of them (README rule 3)."""
    from coreml2hwx.frontend import parse_mil_text

    data = oracle_weight_tensor(case["weights"])
    if data is None:
        return parse_mil_text(case["mil"], workdir)
    (workdir / "weights.bin").write_bytes(well_formed_weights(data))
    if len(case["weights"].get("shapes", [])) < 2:
        return parse_mil_text(case["mil"], workdir)
    graph = parse_mil_text(case["mil"], None)
    resolve_shared_record(graph, np.frombuffer(data, np.float16))
    return graph


def resolve_shared_record(graph, halfwords: np.ndarray) -> None:
    from coreml2hwx.ir.graph import BlobRef

    def read(ref):
        count = int(np.prod(ref.shape))
        return halfwords[:count].reshape(ref.shape).copy()

    for name, value in list(graph.constants.items()):
        if isinstance(value, BlobRef):
            graph.constants[name] = read(value)
    for op in graph.ops:
        for key, value in list(op.attrs.items()):
            if isinstance(value, BlobRef):
                op.attrs[key] = read(value)


# -- comparing ---------------------------------------------------------------------------------------
def compare_program(program, case: dict) -> list[str]:
    gen = generation(case.get("target", "h13"))
    want_tasks = case["task_descriptors"]
    diffs = []
    if len(program.tasks) != len(want_tasks):
        diffs.append(f"task count {len(program.tasks)} != {len(want_tasks)}")
    for i, (task, want) in enumerate(zip(program.tasks, want_tasks)):
        diffs += [f"task {i} {d}" for d in compare_task(task_to_json(task, gen), want)]
    ours = [tensor_descriptor(t) for t in program.inputs + program.outputs]
    for i, (got, want) in enumerate(zip(ours, case["tensor_descriptors"])):
        for key in ("binding", "element_code", "shape", "strides", "total_bytes"):
            if got[key] != want[key]:
                diffs.append(f"tensor {i} {key} {got[key]} != {want[key]}")
    if len(ours) != len(case["tensor_descriptors"]):
        diffs.append(f"tensor count {len(ours)} != {len(case['tensor_descriptors'])}")
    section = case["constant_section"]
    if len(program.constants) != section["size"]:
        diffs.append(f"constant size {len(program.constants)} != {section['size']}")
    elif hashlib.sha256(program.constants).hexdigest() != section["sha256"]:
        diffs.append("constant sha256 differs")
    return diffs


def compare_task(got: dict, want: dict) -> list[str]:
    diffs = []
    for k, (a, b) in enumerate(zip(got["header_words"], want["header_words"])):
        if a != b:
            diffs.append(f"header[{k}] {a} != {b}")
    if len(got["header_words"]) != len(want["header_words"]):
        diffs.append("header length differs")
    layout = [(r["address"], r["count"]) for r in got["records"]]
    if layout != [(r["address"], r["count"]) for r in want["records"]]:
        diffs.append("record layout differs")
    ours, theirs = _words(got), _words(want)
    for address in sorted(set(ours) | set(theirs)):
        a, b = ours.get(address), theirs.get(address)
        if a != b:
            diffs.append(f"reg {address} {a} != {b}")
    return diffs


def _words(task_json: dict) -> dict:
    return {a: v for block in task_json["blocks"].values() for a, v in block["words"].items()}


# -- running -----------------------------------------------------------------------------------------
def run_case(case: dict, build_graph=graph_of) -> tuple[bool, list[str], str]:
    """(matched, differences, note) for one oracle case."""
    from coreml2hwx.compiler import lowering

    refused = case.get("error")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            program = lowering(case.get("target", "h13")).lower(build_graph(case, Path(tmp)))
        except Coreml2hwxError as err:
            if refused:
                return True, [], f"refused, as Apple did: {err}"
            return False, [f"we refuse: {err}"], ""
    if refused:
        return False, [f"Apple refused ({refused}) but we compiled it"], ""
    diffs = compare_program(program, case)
    return not diffs, diffs, ""


def main(argv=None, build_graph=graph_of) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("oracle_dir", type=Path)
    parser.add_argument("--verbose", "-v", action="store_true", help="list every difference")
    args = parser.parse_args(argv)
    files = sorted(p for p in args.oracle_dir.glob("*.json") if p.name != "index.json")
    totals, matched = defaultdict(int), defaultdict(int)  # by (target, family)
    misses = []
    for path in files:
        case = json.loads(path.read_text())
        target = case.get("target")
        if target not in ("h13", "h14"):
            continue
        ok, diffs, note = run_case(case, build_graph)
        key = (target, case.get("family", "?"))
        totals[key] += 1
        matched[key] += ok
        if not ok:
            misses.append((case["case"], diffs))
        elif note:
            print(f"  {case['case']}: {note}")
    for case_name, diffs in misses:
        shown = diffs if args.verbose else diffs[:MAX_SHOWN]
        more = "" if len(shown) == len(diffs) else f" (+{len(diffs) - len(shown)} more)"
        print(f"MISS {case_name}: " + "; ".join(shown) + more)
    targets = sorted({t for t, _ in totals})
    for target, family in sorted(totals):
        label = family if len(targets) == 1 else f"{target} {family}"
        print(f"{label}: {matched[target, family]}/{totals[target, family]}")
    for target in targets:
        got = sum(n for (t, _), n in matched.items() if t == target)
        of = sum(n for (t, _), n in totals.items() if t == target)
        print(f"{target} parity: {got}/{of}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
