"""Header ExeCycles: Apple's compiler writes an estimate of each task's run time."""

from __future__ import annotations


def exe_cycles(spec) -> int:
    return spec.header.get("ExeCycles", 0)
