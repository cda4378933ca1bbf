"""H14 (M2) code generation: the H13 lowering, re-encoded as Apple's compiler encodes H14.

Apple's H14 programs in ../shared/oracles/h14 have the task structure of the H13 programs for the
same MIL (same task count, L2 layout, strides and weights; h14 census §1); what differs is the
encoding.  So nothing here decides anything about an op:

    graph --h13.lower--> H13 Program --registers.h14_tasks--> H14 header + register writes per task
          --records.pack_records--> records --stream layout--> H14 Program

`registers` translates each task's H13 register state into the registers H14 writes (moved
fields, re-encoded DMA words, defaults left out) and its header words; `records` splits the writes
into dense and masked records the way Apple does.  Both are checked against every H14 oracle
(tests/target).  A task the translation has no rule for raises UnsupportedError, so placement
keeps that op on the host.
"""

from __future__ import annotations

from coreml2hwx.ir.graph import Graph
from coreml2hwx.program import Program, Task
from coreml2hwx.target import generation, h13
from coreml2hwx.target.h14.records import TASK_ALIGN, pack_records
from coreml2hwx.target.h14.registers import h14_constants, h14_tasks
from coreml2hwx.target.stream import round_up

__all__ = ["lower", "count_tasks", "from_h13"]


def lower(graph: Graph) -> Program:
    return from_h13(h13.lower(graph))


def count_tasks(graph: Graph) -> int:
    """Task count of `lower(graph)` (the same as H13's); refuses exactly where `lower` does."""
    return len(lower(graph).tasks)


def from_h13(program13: Program) -> Program:
    """The H14 program Apple's compiler makes where it makes `program13` for H13."""
    gen = generation("h14")
    tasks, offset = [], 4 * len(gen.stream.lead_frame)
    for plan in h14_tasks(program13):
        # Records are packed in stream order: the 0x1524 fillers depend on where a task ends.
        records = pack_records(plan.writes, plan.slots, at=offset + 4 * len(plan.header))
        tasks.append(Task(header=list(plan.header), records=records))
        offset = round_up(offset + 4 * tasks[-1].size_words, TASK_ALIGN)
    gen.layout(tasks)
    return Program(target="h14", tasks=tasks, constants=h14_constants(program13),
                   tensors=list(program13.tensors), name=program13.name)
