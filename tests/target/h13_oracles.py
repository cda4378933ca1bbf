"""Helpers for the H13 encoder tests: Apple's oracle cases, compiled through our frontend and lowering.

Ground truth: ../shared/oracles/h13 (programs Apple's ane-compile-hwx emitted for each case's MIL).
The comparison and the weights rule live in bench/parity.py, which these tests reuse.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

from coreml2hwx.shared import REPO_ROOT
from coreml2hwx.target.h13 import lower
from tests.conftest import load_json, oracle_files

_spec = importlib.util.spec_from_file_location("bench_parity", REPO_ROOT / "bench" / "parity.py")
parity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(parity)

CASES = [load_json(p) for p in oracle_files("h13")]


def cases_of(*families: str) -> list[dict]:
    return [c for c in CASES if c["family"] in families]


def case_id(case: dict) -> str:
    return case["case"]


def graph(case: dict):
    with tempfile.TemporaryDirectory() as tmp:
        return parity.graph_of(case, Path(tmp))


def compile_case(case: dict):
    return lower(graph(case))


def differences(case: dict) -> list[str]:
    """Field-by-field differences between our program and Apple's (empty when equal)."""
    return parity.compare_program(compile_case(case), case)
