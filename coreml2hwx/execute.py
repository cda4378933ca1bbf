"""Run a compiled output folder as a whole: ANE segments in the simulator, host segments with the
reference evaluator, in manifest order, handing tensors over by name.

ANE programs see each tensor in Apple's 4-D view (`ir.ane_shape`); values are reshaped between the
model's shape and that view (the same element order) at segment boundaries.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from coreml2hwx.errors import Coreml2hwxError, ModelError, UsageError

MANIFEST = "manifest.json"
GRAPH_JSON, GRAPH_BIN = "graph.json", "graph.bin"


def load_manifest(out_dir) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise UsageError(f"{out_dir}: no {MANIFEST} (not a coreml2hwx output folder)")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise ModelError(f"corrupt manifest ({err})", file=path) from None


def _host_graph(out_dir: Path, manifest: dict):
    from coreml2hwx.ir import serialize

    if not any(s["device"] == "host" for s in manifest["segments"]):
        return None
    return serialize.load((out_dir / GRAPH_JSON).read_bytes(), (out_dir / GRAPH_BIN).read_bytes(),
                          source=out_dir / GRAPH_JSON)


def random_model_inputs(manifest: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """The same rule as `coreml2hwx reference` (ir.random_inputs): one default_rng(seed), drawn in
    input order, standard normal float32 for float inputs."""
    rng = np.random.default_rng(seed)
    out = {}
    for t in manifest["inputs"]:
        if t["dtype"].startswith("float"):
            out[t["name"]] = rng.standard_normal(t["shape"]).astype(np.float32)
        elif t["dtype"] == "bool":
            out[t["name"]] = rng.integers(0, 2, t["shape"]) != 0
        else:
            out[t["name"]] = rng.integers(0, 8, t["shape"]).astype(t["dtype"])
    return out


class CompiledModel:
    """An output folder loaded once - programs decoded into simulators, host subgraphs cut - and
    run as often as wanted: `CompiledModel(out_dir)(inputs)`."""

    def __init__(self, out_dir):
        from coreml2hwx.compiler import subgraph
        from coreml2hwx.hwx import load_program
        from coreml2hwx.sim import Simulator

        out_dir = Path(out_dir)
        self.manifest = manifest = load_manifest(out_dir)
        self.shapes = {t["name"]: tuple(t["shape"])
                       for t in manifest["inputs"] + manifest["outputs"]}
        graph = _host_graph(out_dir, manifest)
        if graph is not None:
            self.shapes.update({name: info.shape for name, info in graph.tensors.items()})
        self.segments = []  # ("ane", (Simulator, .hwx path)) or ("host", subgraph), in order
        for seg in manifest["segments"]:
            if seg["device"] == "ane":
                path = out_dir / seg["programs"]["hwx"]
                try:
                    self.segments.append(("ane", (Simulator(load_program(path)), path)))
                except Coreml2hwxError as err:
                    raise err.with_file(path)
            else:
                ops = [op for op in graph.ops if op.name in set(seg["ops"])]
                self.segments.append(("host", subgraph(graph, ops, f"segment{seg['index']}")))

    def __call__(self, inputs: dict, seed: int = 0) -> dict[str, np.ndarray]:
        from coreml2hwx.ir import evaluate

        values = {**random_model_inputs(self.manifest, seed), **inputs}
        for device, step in self.segments:
            if device == "ane":
                sim, path = step
                feed = {t.name: np.asarray(values[t.name]).reshape(t.shape)
                        for t in sim.program.inputs}
                try:
                    result = sim(feed)
                except Coreml2hwxError as err:
                    raise err.with_file(path)
            else:
                feed = {name: np.asarray(values[name], np.float32).reshape(
                    step.tensors[name].shape) for name in step.input_names}
                result = evaluate(step, feed)
            for name, value in result.items():
                values[name] = value.reshape(self.shapes.get(name, value.shape))
        return {t["name"]: values[t["name"]] for t in self.manifest["outputs"]}


def run_compiled(out_dir, inputs: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Load an output folder and run it once (`CompiledModel` to run it many times)."""
    return CompiledModel(out_dir)(inputs, seed)
