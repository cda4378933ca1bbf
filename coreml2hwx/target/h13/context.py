"""The state of one lowering: the graph, its DRAM surfaces, the constant section, the tasks."""

from __future__ import annotations

import numpy as np

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.ir.graph import Graph, Op
from coreml2hwx.ir.layout import ane_shape
from coreml2hwx.program import Tensor
from coreml2hwx.target.h13.layout import SCRATCH_SLOT, Surface, round_up

FIRST_IO_SLOT = 4
SCRATCH_ALIGN = 64  # TileDMA BaseAddr counts 64-byte units (Addr[31:6])


class Context:
    """Surfaces get BAR slots 4, 5, ... in the alphabetical order of the I/O tensor names.

    Evidence: every oracle (74/74 compiled cases) — e.g. inputs x, z and output y use slots 4, 6 and
    5 (`binary_add_1x64x8x8`); a matmul's output `product` takes slot 4 and its inputs `w`, `x`
    slots 5 and 6 (`env_mm_r2rr_m16_k2048_n2048_tx0_ty0`).  The program descriptor lists the
    surfaces' addresses in the same order (resource_addresses[k] is slot 4 + k).

    Intermediates (tensors one op of the graph writes and a later one reads) live in one DRAM
    scratch buffer, BAR slot 3: eiln's multi-task kernels write their intermediate to slot 3
    (Dst 0x040003C1) and read it back by DMA (ane-facts §2.6, §5.3 div/softmax), and the Asahi
    driver binds exactly one intermediate buffer, tiles[3] (anecc, ane-facts §1.8, §4.1).  Each
    tensor gets its own 64-byte aligned range, addressed through TileDMA BaseAddr (tinygrad
    concat.hwx writes at Dst BaseAddr 0x100000); ranges are reused once their last reader has
    run (`_allocate`).  Apple's newer compiler keeps its chains' intermediates in L2 instead
    (census §9.4); that placement is op-specific and used only inside the fixed task sequences
    that reproduce Apple's (norm, operand); between ops we go through DRAM, and the simulator
    checks every read of the scratch was written first.
    """

    def __init__(self, graph: Graph):
        self.graph = graph
        names = sorted(graph.input_names + graph.output_names)
        self.slots = {name: FIRST_IO_SLOT + i for i, name in enumerate(names)}
        self.constants = bytearray()
        self.specs = []
        self.scratch: dict[str, int] = {}  # intermediate -> byte offset in the scratch slot
        self.scratch_size = 0
        self._live: dict[str, tuple[int, int]] = {}  # intermediate -> (offset, end)
        self._order = {op.name: i for i, op in enumerate(graph.ops)}
        self._producers, self._consumers = graph.producers(), graph.consumers()

    def surface(self, name: str) -> Surface:
        shape = ane_shape(self.graph.tensors[name].shape)
        if name in self.slots:
            return Surface(name, shape, self.slots[name])
        if name not in self.scratch:
            self._allocate(name, Surface(name, shape, SCRATCH_SLOT).batch * shape[0])
        return Surface(name, shape, SCRATCH_SLOT, self.scratch[name])

    def _allocate(self, name: str, nbytes: int):
        """First fit in the scratch slot, after freeing the tensors no op from here on reads."""
        producers, consumers = self._producers, self._consumers
        if name not in producers or self.graph.is_constant(name):
            raise UnsupportedError(f"tensor {name!r} is neither a graph input, an output nor "
                                   "produced by an op of this program")
        now = self._order[producers[name].name]
        for other in list(self._live):
            readers = [self._order[op.name] for op in consumers.get(other, [])]
            if max(readers, default=-1) < now:
                del self._live[other]
        offset = 0
        for start, end in sorted(self._live.values()):
            if offset + nbytes <= start:
                break
            offset = max(offset, round_up(end, SCRATCH_ALIGN))
        self._live[name] = (offset, offset + nbytes)
        self.scratch[name] = offset
        self.scratch_size = max(self.scratch_size, round_up(offset + nbytes, SCRATCH_ALIGN))

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
        scratch = []
        if self.scratch_size:  # its shape is not recorded (as in Apple's containers)
            scratch = [Tensor(name="scratch", role="intermediate", shape=(0, 0, 0, 0),
                              strides=(0, 0, 0, 0), slot=SCRATCH_SLOT, size=self.scratch_size)]
        return ([self.surface(n).tensor("input") for n in inputs]
                + [self.surface(n).tensor("output") for n in outputs] + scratch)


def where(op: Op) -> str:
    return op.source or op.name
