"""Graph -> graph rewrites, one per module, registered by name; a pipeline is a list of names.

    @register("fold_constants")
    def fold_constants(graph): ...      # rewrites `graph` in place, returns a short note or None

`run_pipeline(graph, names)` runs them in order and returns [(name, note)] for the compile log.
"""

from __future__ import annotations

import importlib
from typing import Callable

from coreml2hwx.ir.graph import Graph

PASSES: dict[str, Callable[[Graph], str | None]] = {}

# The default order: fold what is known at compile time, then fuse what one H13 task can do.
DEFAULT_PIPELINE = ["mil_checks", "fold_constants", "fold_batchnorm", "fuse_activation",
                    "linear_as_conv", "prune"]

_MODULES = ["mil_checks", "fold_constants", "fold_batchnorm", "fuse_activation", "linear_as_conv",
            "prune"]


def register(name: str):
    def wrap(fn):
        PASSES[name] = fn
        return fn
    return wrap


def _load():
    for module in _MODULES:
        importlib.import_module(f"coreml2hwx.passes.{module}")


def run_pipeline(graph: Graph, names=None) -> list[tuple[str, str | None]]:
    _load()
    log = []
    for name in names or DEFAULT_PIPELINE:
        log.append((name, PASSES[name](graph)))
    return log

