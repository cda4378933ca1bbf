"""Shared helpers of the container tests: Apple's files in ../shared/artifacts."""

from __future__ import annotations

from coreml2hwx.hwx.macho import MAGIC
from tests.conftest import shared_files

EILN_DIR = "artifacts/eiln_ane/f182ece390b4/anec"
EILN_CSV = f"{EILN_DIR}/kernels_metadata_from_ab8475b_headers.csv"


def apple_hwx_files():
    """Every Apple .hwx in the artifacts: any `*.hwx*` that is named `.hwx` or starts with the hwx
    magic (so model.hwx.golden / .signed count, the compiler's debug dumps do not)."""
    out = []
    for path in shared_files("artifacts/**/*.hwx*"):
        if path.is_file() and (path.suffix == ".hwx" or
                               path.read_bytes()[:4] == MAGIC.to_bytes(4, "little")):
            out.append(path)
    return out


def short_id(path) -> str:
    parts = path.parts
    return "/".join(parts[parts.index("artifacts") + 2:])
