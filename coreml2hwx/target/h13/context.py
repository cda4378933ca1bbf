"""The state of one lowering: the graph, its DRAM surfaces, the constant section, the tasks."""

from __future__ import annotations

import numpy as np

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.ir.graph import Graph, Op
from coreml2hwx.ir.layout import ane_shape
from coreml2hwx.target.h13.layout import Surface

FIRST_IO_SLOT = 4


class Context:
    """Surfaces get BAR slots 4, 5, ... in the alphabetical order of the I/O tensor names.

    Evidence: every oracle (74/74 compiled cases) — e.g. inputs x, z and output y use slots 4, 6 and
    5 (`binary_add_1x64x8x8`); a matmul's output `product` takes slot 4 and its inputs `w`, `x`
    slots 5 and 6 (`env_mm_r2rr_m16_k2048_n2048_tx0_ty0`).  The program descriptor lists the
    surfaces' addresses in the same order (resource_addresses[k] is slot 4 + k).
    """

    def __init__(self, graph: Graph):
        self.graph = graph
        names = sorted(graph.input_names + graph.output_names)
        self.slots = {name: FIRST_IO_SLOT + i for i, name in enumerate(names)}
        self.constants = bytearray()
        self.specs = []

    def surface(self, name: str) -> Surface:
        if name not in self.slots:
            raise UnsupportedError(f"tensor {name!r} is neither a graph input nor an output; "
                                   "intermediate DRAM tensors are not supported on h13 yet")
        return Surface(name, ane_shape(self.graph.tensors[name].shape), self.slots[name])

    def shape(self, name: str) -> tuple[int, int, int, int]:
        return ane_shape(self.graph.tensors[name].shape)

    def is_constant(self, name: str) -> bool:
        return self.graph.is_constant(name)

    def constant(self, name: str) -> np.ndarray:
        return np.asarray(self.graph.constant(name))

    def add_constants(self, data: bytes) -> int:
        """Append to the constant section; returns the byte offset."""
        offset = len(self.constants)
        self.constants += data
        return offset

    def tensors(self):
        g = self.graph
        return ([self.surface(t.name).tensor("input") for t in g.inputs]
                + [self.surface(t.name).tensor("output") for t in g.outputs])


def where(op: Op) -> str:
    return op.source or op.name
