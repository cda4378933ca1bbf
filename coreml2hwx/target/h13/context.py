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

    def attr_array(self, op: Op, key: str) -> np.ndarray:
        """An op's weight attribute as an array (reading an unresolved blob reference)."""
        from coreml2hwx.ir.graph import constant_value
        return np.asarray(constant_value(op.attrs[key]))

    def constant_origin(self, name: str) -> str | None:
        """"inline" for a tensor constant written out in the model text, else None.

        Apple's compiler refuses inline tensor operands and biases (oracle README).  The frontend
        marks them in `graph.metadata["inline_constants"]`."""
        inline = self.graph.metadata.get("inline_constants", ())
        return "inline" if name in inline else None

    def inline_attrs(self, op: Op) -> tuple:
        """Weight attributes of `op` given as inline tensors in the model text (frontend mark
        `op.attrs["inline"]`)."""
        return tuple(op.attrs.get("inline", ()))

    def add_constants(self, data: bytes) -> int:
        """Append to the constant section; returns the byte offset."""
        offset = len(self.constants)
        self.constants += data
        return offset

    def tensors(self):
        """Inputs then outputs, each in slot order (the tensor descriptors' order:
        `env_mm_r2rr_*` lists input w before x)."""
        g = self.graph
        inputs = sorted(g.input_names, key=self.slots.get)
        outputs = sorted(g.output_names, key=self.slots.get)
        return ([self.surface(n).tensor("input") for n in inputs]
                + [self.surface(n).tensor("output") for n in outputs])


def where(op: Op) -> str:
    return op.source or op.name
