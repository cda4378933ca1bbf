"""Intermediate representation: a typed graph of ops over static-shaped tensors, and its numpy
reference evaluator.

Public API
- `Graph`, `Op`, `TensorInfo`, `BlobRef` (coreml2hwx.ir.graph): the graph; see its docstring.
- `OP_TYPES` and the op vocabulary with attributes: coreml2hwx.ir.shapes (module docstring).
- `evaluate(graph, inputs, fp16=False) -> {output name: array}`; `random_inputs(graph, seed=0)`
  (coreml2hwx.ir.evaluate: the fp16 rounding rule and the random-input rule are documented there).
- `ane_shape(shape) -> (N, C, H, W)` (coreml2hwx.ir.layout): Apple's 4-D view of any rank.
- `dump_text`, `dump_json`, `dump_dot`, `render_svg` (coreml2hwx.ir.dump).
"""

from coreml2hwx.ir.dump import dump_dot, dump_json, dump_text, render_svg
from coreml2hwx.ir.evaluate import evaluate, random_inputs
from coreml2hwx.ir.graph import BlobRef, Graph, Op, TensorInfo, constant_value
from coreml2hwx.ir.layout import ane_shape
from coreml2hwx.ir.shapes import OP_TYPES

__all__ = [
    "BlobRef", "Graph", "Op", "OP_TYPES", "TensorInfo", "ane_shape", "constant_value", "dump_dot",
    "dump_json", "dump_text", "evaluate", "random_inputs", "render_svg",
]
