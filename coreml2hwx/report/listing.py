"""Readable listings of a Program: tasks with named header and register fields, constants, tensors.

Every value shown comes from the program itself, decoded through the generation's register map
(`coreml2hwx.target.maps.<gen>`), so the same listing serves our programs and Apple's.
"""

from __future__ import annotations

import hashlib

from coreml2hwx.errors import Coreml2hwxError
from coreml2hwx.program import Program, Task
from coreml2hwx.report import summary
from coreml2hwx.target import Generation


def fmt_value(f, value) -> str:
    if isinstance(value, bool):
        text = str(int(value))
    elif isinstance(value, float):
        text = f"{value:g}"
    elif value > 9 and (f.width >= 24 or f.name in ("Addr", "Value") or f.grade == "-"):
        text = f"{value:#x}"
    else:
        text = str(value)
    raw = _raw(f, value)
    meaning = None if raw is None else f.meaning(raw)
    return f"{f.name}={text}" + (f"({meaning})" if meaning else "")


def _raw(f, value):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return None
    return value & ((1 << f.width) - 1)


def fields_text(fields) -> str:
    """Named fields; unnamed gap bits only where they are non-zero."""
    shown = [fmt_value(f, v) for f, v in fields if not (f.grade == "-" and not v)]
    return " ".join(shown)


def header_lines(task: Task, gen: Generation) -> list[str]:
    header = gen.maps.HEADER
    words = task.header + task.extension
    by_word: dict[int, list] = {}
    for index, f, value in header.decode(words):
        by_word.setdefault(index, []).append((f, value))
    lines = []
    for index, word in enumerate(words):
        text = fields_text(by_word.get(index, []))
        lines.append(f"    [{index}] {word:#010x}  {text}")
    return lines


def register_lines(words: dict[int, int], gen: Generation, indent="    ") -> list[str]:
    lines, block = [], None
    for item in gen.maps.REGISTERS.listing(words):
        name = item.block.name if item.block else "unknown"
        if name != block:
            block = name
            base = f" (base {item.block.base:#07x})" if item.block else ""
            lines.append(f"{indent}{name}{base}")
        reg = item.register.name if item.register else "?"
        lines.append(f"{indent}  {item.address:#07x} {reg:<24} {words[item.address]:#010x}  "
                     f"{fields_text(item.fields)}")
    return lines


def task_lines(index: int, task: Task, state: dict[int, int], gen: Generation,
               show_state: bool) -> list[str]:
    writes = task.writes()
    inherited = len(set(state) - set(writes))
    head = (f"task {index} at {task.offset:#06x}: {task.size_words} words, {len(task.records)} "
            f"records, {len(writes)} registers written, {inherited} inherited")
    lines = [head]
    try:
        lines += [f"  {line}" for line in summary.describe(gen, task, state)]
    except Coreml2hwxError as err:  # a summary is a convenience; the raw listing still follows
        lines.append(f"  (no summary: {err.line()})")
    lines.append("  header")
    lines += header_lines(task, gen)
    lines.append("  writes")
    lines += register_lines(writes, gen)
    if show_state and inherited:
        lines.append("  state it runs with (inherited registers)")
        lines += register_lines({a: v for a, v in state.items() if a not in writes}, gen)
    return lines


def tensor_lines(program: Program) -> list[str]:
    lines = []
    for t in program.tensors:
        slot = "-" if t.slot is None else t.slot
        n, c, h, w = t.shape
        sn, sc, sh, sw = t.strides
        where = "" if t.address is None else f" at {t.address:#x}"
        lines.append(f"  {t.role:<12} {t.name:<20} N{n} C{c} H{h} W{w} {t.dtype}  strides "
                     f"n={sn} c={sc} h={sh} w={sw}  slot {slot}{where}")
    return lines


def constants_lines(data: bytes) -> list[str]:
    nonzero = sum(1 for b in data if b) if len(data) <= 1 << 16 else None
    nz = "" if nonzero is None else f", {nonzero} non-zero bytes"
    return [f"  {len(data)} bytes{nz}, sha256 {hashlib.sha256(data).hexdigest()}"]


def program_listing(program: Program, gen: Generation, *, title: str = "",
                    show_state: bool = False, extra: list[str] = ()) -> str:
    lines = [f"{title}{': ' if title else ''}{gen.name.upper()} ({gen.soc}, cpusubtype "
             f"{gen.cpusubtype}), {len(program.tasks)} task(s), program {program.name!r}"]
    lines += list(extra)
    lines.append("tensors")
    lines += tensor_lines(program) or ["  (none recorded)"]
    lines.append("constant section")
    summary = program.constant_summary
    if summary and not program.constants:
        lines.append(f"  {summary['size']} bytes (known by its summary only), sha256 "
                     f"{summary['sha256']}")
    else:
        lines += constants_lines(program.constants)
    for index, (task, state) in enumerate(program.states()):
        lines += task_lines(index, task, state, gen, show_state)
    return "\n".join(lines) + "\n"
