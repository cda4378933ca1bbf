"""Shared fixtures.  Ground truth comes from `../shared` (Apple's programs and oracles)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coreml2hwx.shared import shared_dir

_SHARED = shared_dir()
MISSING = ("the ground-truth folder `shared/` was not found beside the checkout "
           "(expected <repo>/../shared, or set COREML2HWX_SHARED)")


@pytest.fixture(scope="session")
def shared() -> Path:
    """Path of ../shared; a test that needs it fails (never skips) when it is missing."""
    if _SHARED is None:
        pytest.fail(MISSING)
    return _SHARED


def shared_files(pattern: str) -> list[Path]:
    """Files under shared/ matching a glob, for parametrising; fails loudly when shared/ is missing."""
    if _SHARED is None:
        raise RuntimeError(MISSING)
    return sorted(_SHARED.glob(pattern))


def oracle_files(target: str) -> list[Path]:
    return shared_files(f"oracles/{target}/*.json")


def load_json(path: Path):
    return json.loads(Path(path).read_text())
