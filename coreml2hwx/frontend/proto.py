"""coremltools' generated protobuf modules, without importing coremltools itself.

`import coremltools` costs seconds and pulls in torch; its `coremltools/proto/*_pb2.py` modules only
need `google.protobuf`.  When coremltools is not imported yet, we load its real `proto` package
(found with `importlib.util.find_spec`, which does not run `coremltools/__init__`) under the very
module names coremltools uses (`coremltools.proto`, `coremltools.proto.Model_pb2`, ...).  A later
`import coremltools` then finds `coremltools.proto` in `sys.modules` and reuses it, so the protobuf
descriptors are registered once per process whichever side comes first.

The generated modules import each other with `from . import X_pb2`, and Python's `__import__`
imports the top-level package of such a name; a placeholder `coremltools` module stands in while the
package loads and is removed right after, so the real coremltools still imports normally later.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from coreml2hwx.errors import UnsupportedError

_PACKAGE = "coremltools.proto"


def _register_proto_package() -> None:
    spec = importlib.util.find_spec("coremltools")
    if spec is None or not spec.submodule_search_locations:
        raise UnsupportedError("coremltools is not installed; its protobuf definitions are needed "
                               "to read Core ML models (pip install coremltools)")
    proto_dir = Path(list(spec.submodule_search_locations)[0]) / "proto"
    init = proto_dir / "__init__.py"
    if not init.is_file():
        raise UnsupportedError(f"coremltools at {proto_dir.parent} has no proto package")
    proto_spec = importlib.util.spec_from_file_location(
        _PACKAGE, init, submodule_search_locations=[str(proto_dir)])
    module = importlib.util.module_from_spec(proto_spec)
    placeholder = ModuleType("coremltools")
    placeholder.__path__ = []  # a package with no submodules of its own
    sys.modules["coremltools"] = placeholder
    sys.modules[_PACKAGE] = module
    try:
        proto_spec.loader.exec_module(module)  # imports Model_pb2, which imports every other pb2
    except BaseException:
        del sys.modules[_PACKAGE]
        raise
    finally:
        if sys.modules.get("coremltools") is placeholder:
            del sys.modules["coremltools"]


def pb2(name: str) -> ModuleType:
    """The generated module `coremltools.proto.<name>` (e.g. "Model_pb2")."""
    if "coremltools" not in sys.modules and _PACKAGE not in sys.modules:
        _register_proto_package()
    return importlib.import_module(f"{_PACKAGE}.{name}")


def model_pb2() -> ModuleType:
    return pb2("Model_pb2")


def mil_pb2() -> ModuleType:
    return pb2("MIL_pb2")
