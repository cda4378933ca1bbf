"""Per-generation register maps and task headers, one data module each (`REGISTERS`, `HEADER`).

| module | evidence |
|---|---|
| h13 | Apple's register printer (A) and the H13 oracles / Apple-compiled files (A-obs) |
| h14 | the H14 oracles, each task paired with its H13 twin (B / H), fdt names (C) |
| h11 | anetools only (C), no block addresses |
| h15 | fdt (C): H14's header and Common, other blocks raw |
| h16, h17, h18 | fdt via ane-facts §3.3 (C) |

H12 (A13) has no map: no public source documents its task descriptors (ane-facts §1.1).
"""

from __future__ import annotations

import importlib

from coreml2hwx.errors import UnsupportedError

GENERATIONS = ("h11", "h13", "h14", "h15", "h16", "h17", "h18")


def load(generation: str):
    """The map module of a generation (`REGISTERS`, `HEADER`, block constants)."""
    name = generation.lower()
    if name == "h12":
        raise UnsupportedError("h12: no public source documents its task descriptors, so it has "
                               "no register map")
    if name not in GENERATIONS:
        known = ", ".join(GENERATIONS)
        raise UnsupportedError(f"no register map for {generation!r}; known: {known}")
    return importlib.import_module(f"{__name__}.{name}")
