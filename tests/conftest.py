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


# PROVENANCE.md pairs each hwx with the plist compiled into it.  Two stated pairings disagree with
# the files and are left out: ops/relu.hwx (W = 77) is said to come from a5aced8d4799's neuron.plist
# (W = 678), and history 73ae6d78211e's gemm.hwx (C = 64) from a gemm.plist with C = 128.
PLIST_PAIRS = {  # paths under artifacts/tinygrad_tinygrad
    "extra/accel/ane/ops/sigmoid.hwx": "extra/accel/ane/2_compile/simple/neuron.plist",
    "extra/accel/ane/ops/concat.hwx": "extra/accel/ane/2_compile/simple/concat.plist",
    "extra/accel/ane/ops/conv.hwx": "extra/accel/ane/2_compile/simple/conv.plist",
    "extra/accel/ane/ops/gemm.hwx": "history/aae2e3520880/ane/2_compile/simple/gemm.plist",
    "extra/accel/ane/ops/sum.hwx": "extra/accel/ane/2_compile/plists/sum.plist",
    "history/73536a753947/ane/compiled/model.hwx": "history/73536a753947/ane/compiled/net.plist",
    "history/e03759f01d32/ane/ops/concat.hwx":
        "history/e03759f01d32/ane/2_compile/simple/concat.plist",
    "history/ff52f832dc06/ane/ops/conv.hwx": "history/ff52f832dc06/ane/2_compile/simple/conv.plist",
    "history/ddd6778423fe/ane/2_compile/model.hwx.golden":
        "history/ddd6778423fe/ane/2_compile/neuron.plist",
    "history/d4d8bd0337ca/ane/2_compile/model.hwx.golden":
        "history/d4d8bd0337ca/ane/2_compile/min.plist",
    "history/e2184c20ad8f/ane/2_compile/model.hwx.golden":
        "history/e2184c20ad8f/ane/2_compile/min.plist",
}
