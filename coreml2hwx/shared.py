"""Where the project's ground-truth folder `shared/` (oracles, artifacts, docs) lives.

It sits beside the checkout (`<repo>/../shared`), as in CI; `COREML2HWX_SHARED` overrides that.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path | None:
    """The shared folder, or None when it cannot be found."""
    env = os.environ.get("COREML2HWX_SHARED")
    candidates = [Path(env)] if env else [REPO_ROOT.parent / "shared"]
    for path in candidates:
        if (path / "oracles").is_dir():
            return path
    return None
