"""Core ML models in, IR graphs out.

Public API
- `load(path) -> coreml2hwx.ir.Graph` reads
  - `.mlmodel`: NeuralNetwork (plain, classifier, regressor) or ML Program specs;
  - `.mlpackage`: the folder's `Manifest.json` names the model spec; its `weights/weight.bin` blobs
    are read from the folder holding the spec (`@model_path`);
  - `.mlmodelc`: a compiled model whose program is textual MIL (`model.mil` + `weights/`);
  - `.mil`: MIL text; `@model_path` is the folder holding the file.
- `parse_mil_text(text, base_dir=None) -> Graph`: MIL text alone.  BLOBFILE constants are read from
  `base_dir` when the file is there, and otherwise stay unresolved (`coreml2hwx.ir.BlobRef`, read on
  first use), so a program parses without its weights.
- `parse_mil_program(text, base_dir=None)`: the parsed `MilProgram` before translation to IR.

Only coremltools' generated protobuf modules are imported (see `coreml2hwx.frontend.proto`), never
coremltools itself.  Errors are `ModelError` (corrupt or inconsistent file) or `UnsupportedError`
(a layer / op / feature we do not handle), naming the file and the layer.
"""

from __future__ import annotations

import json
from pathlib import Path

from coreml2hwx.errors import Coreml2hwxError, ModelError, UnsupportedError
from coreml2hwx.ir.graph import Graph

__all__ = ["load", "parse_mil_text", "parse_mil_program", "load_spec"]


def load(path) -> Graph:
    """Read a Core ML model (.mlmodel, .mlpackage, .mlmodelc, .mil) into an IR graph."""
    path = Path(path)
    try:
        return _load(path)
    except Coreml2hwxError as err:
        raise err.with_file(path)


def _load(path: Path) -> Graph:
    if not path.exists():
        raise ModelError("no such file or folder", file=path)
    if path.is_dir():
        if (path / "Manifest.json").is_file():
            return _load_spec_file(_package_model(path), name=_stem(path))
        if (path / "model.mil").is_file():
            return _load_mil_file(path / "model.mil", name=_stem(path))
        if path.suffix == ".mlmodelc":
            raise UnsupportedError("compiled model without model.mil (a NeuralNetwork .mlmodelc); "
                                   "give the .mlmodel it was compiled from", file=path)
        raise ModelError("folder is neither an .mlpackage (no Manifest.json) nor an .mlmodelc "
                         "(no model.mil)", file=path)
    if path.suffix == ".mil":
        return _load_mil_file(path, name=_stem(path))
    return _load_spec_file(path, name=_stem(path))


def _stem(path: Path) -> str:
    return path.name.split(".")[0] or "model"


def _package_model(package: Path) -> Path:
    """The model spec an .mlpackage's Manifest.json points at."""
    manifest_path = package / "Manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        root = manifest["rootModelIdentifier"]
        entry = manifest["itemInfoEntries"][root]
        model = package / "Data" / entry["path"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(f"Manifest.json is corrupt ({type(err).__name__}: {err})",
                         file=manifest_path) from None
    if not model.is_file():
        raise ModelError(f"Manifest.json names {entry['path']!r}, which is missing",
                         file=manifest_path)
    return model


def load_spec(path):
    """The `Model_pb2.Model` protobuf of an .mlmodel file (or an .mlpackage)."""
    from coreml2hwx.frontend.proto import model_pb2

    path = Path(path)
    if path.is_dir():
        path = _package_model(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ModelError(f"cannot read model: {err.strerror}", file=path) from None
    spec = model_pb2().Model()
    try:
        spec.ParseFromString(data)
    except Exception as err:  # protobuf raises DecodeError (a plain Exception subclass)
        raise ModelError(f"model file is corrupt: not a Core ML protobuf ({err})", file=path) from None
    if spec.WhichOneof("Type") is None:
        raise ModelError("model file is corrupt or empty: it holds no model type", file=path)
    return spec


def _load_spec_file(path: Path, name: str) -> Graph:
    spec = load_spec(path)
    kind = spec.WhichOneof("Type")
    if kind in ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor"):
        from coreml2hwx.frontend.neuralnetwork import nn_to_graph

        graph = nn_to_graph(spec, file=path, name=name)
        graph.metadata["format"] = "neuralnetwork"
    elif kind == "mlProgram":
        from coreml2hwx.frontend.milgraph import mil_to_graph
        from coreml2hwx.frontend.milproto import read_program

        program = read_program(spec.mlProgram, model_dir=path.parent, file=path)
        graph = mil_to_graph(program.main(), file=path, name=name)
        graph.metadata["format"] = "mlprogram"
    else:
        raise UnsupportedError(f"model type {kind!r} is not supported (only NeuralNetwork and ML "
                               "Program models)", file=path)
    graph.metadata["spec_version"] = spec.specificationVersion
    return graph


def _load_mil_file(path: Path, name: str) -> Graph:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ModelError(f"cannot read MIL text: {err}", file=path) from None
    graph = parse_mil_text(text, base_dir=path.parent, file=path, name=name)
    return graph


def parse_mil_program(text: str, base_dir=None, file=None):
    from coreml2hwx.frontend.miltext import parse_program

    return parse_program(text, base_dir=base_dir, file=file)


def parse_mil_text(text: str, base_dir=None, *, file=None, name: str = "model") -> Graph:
    """MIL text -> IR graph (weights from `base_dir` when present, else unresolved BlobRefs)."""
    from coreml2hwx.frontend.milgraph import mil_to_graph

    program = parse_mil_program(text, base_dir=base_dir, file=file)
    graph = mil_to_graph(program.main(), file=file, name=name)
    graph.metadata["format"] = "mil"
    return graph
