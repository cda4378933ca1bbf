"""Register-level differences between two programs (ours, Apple's, or an oracle's).

Each difference is one line naming the task, the header field or the register (by its map name) and
both values, so a miss against an oracle reads like a to-do list.
"""

from __future__ import annotations

import hashlib

from coreml2hwx.program import Program, Task
from coreml2hwx.target import Generation


def _header_fields(task: Task, gen: Generation) -> dict[str, object]:
    header = gen.maps.HEADER
    words = task.header + task.extension
    return {header.path(i, f): v for i, f, v in header.decode(words)}


def _field_diffs(gen: Generation, address: int, a: int | None, b: int | None) -> str:
    regs = gen.maps.REGISTERS
    found = regs.lookup(address)
    if found is None or a is None or b is None:
        return ""
    _, register = found
    pairs = zip(register.decode(a), register.decode(b))
    return ", ".join(f"{fa.name} {va}->{vb}" for (fa, va), (_, vb) in pairs if va != vb)


def _name(gen: Generation, address: int) -> str:
    found = gen.maps.REGISTERS.lookup(address)
    return f"{found[0].name}.{found[1].name}" if found else "?"


def task_diffs(i: int, a: Task, b: Task, gen: Generation, state_a=None, state_b=None) -> list[str]:
    out = []
    ha, hb = _header_fields(a, gen), _header_fields(b, gen)
    for path in ha.keys() | hb.keys():
        if ha.get(path) != hb.get(path):
            out.append(f"task {i} header {path}: {ha.get(path)} -> {hb.get(path)}")
    wa, wb = (a.writes(), b.writes()) if state_a is None else (state_a, state_b)
    for address in sorted(wa.keys() | wb.keys()):
        va, vb = wa.get(address), wb.get(address)
        if va == vb:
            continue
        fmt = lambda v: "unwritten" if v is None else f"{v:#010x}"  # noqa: E731
        detail = _field_diffs(gen, address, va, vb)
        out.append(f"task {i} {address:#07x} {_name(gen, address)}: {fmt(va)} -> {fmt(vb)}"
                   + (f" ({detail})" if detail else ""))
    return sorted(out, key=lambda line: (not line.startswith(f"task {i} header"), line))


def constant_identity(program: Program) -> tuple[int, str]:
    """(size, sha256) of the constant section; an oracle-derived program has only its summary."""
    summary = program.constant_summary
    if summary and not program.constants:
        return summary["size"], summary["sha256"]
    return len(program.constants), hashlib.sha256(program.constants).hexdigest()


def program_diffs(a: Program, b: Program, gen: Generation, *, states=False) -> list[str]:
    """Differences from `a` to `b`; empty when the programs are the same at register level."""
    out = []
    if a.target != b.target:
        return [f"target: {a.target} -> {b.target} (register maps differ; not compared)"]
    if len(a.tasks) != len(b.tasks):
        out.append(f"task count: {len(a.tasks)} -> {len(b.tasks)}")
    pairs = zip(a.states(), b.states())
    for i, ((ta, sa), (tb, sb)) in enumerate(pairs):
        out += task_diffs(i, ta, tb, gen, sa if states else None, sb if states else None)
    ca, cb = constant_identity(a), constant_identity(b)
    if ca != cb:
        out.append(f"constant section: {ca[0]} bytes sha256 {ca[1][:16]} -> {cb[0]} bytes sha256 "
                   f"{cb[1][:16]}")
    for role in ("input", "output"):
        ta = [(t.shape, t.strides) for t in a.tensors if t.role == role]
        tb = [(t.shape, t.strides) for t in b.tensors if t.role == role]
        if ta != tb:
            out.append(f"{role} tensors (shape, strides): {ta} -> {tb}")
    return out
