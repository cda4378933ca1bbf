"""A CPU simulator of H13 (M1) and H14 (M2) ANE programs, built from Apple's own programs.

    from coreml2hwx.sim import Simulator, run_program
    outputs = run_program(program, {"x": x}, trace=None)   # {output name: float16 array}
    sim = Simulator(program)          # or: prepared once, run many times
    outputs = sim({"x": x})

`program` is a `coreml2hwx.program.Program` (from `coreml2hwx.hwx.load_program`, or built by the
compiler): tasks, the constant section, and tensors with their BAR slots, shapes and byte strides.
Inputs are floating-point arrays of each input tensor's shape (N, C, H, W), rounded to fp16 as the
ANE stores them.  `trace`, when given, is called as `trace(task_index, result)` with each task's
result tensor (float16, 5-D: groups, depth, channels, height, width).

The tasks run in order from the register state (registers persist across tasks); see
`machine` for the data path, `ne`/`pe` for the engines, `lut` for the activation table, `l2` for
the on-chip buffer model and `evidence` for the register values the simulator accepts.  A field or
value without evidence, a read of memory nobody wrote, or bad inputs raise `SimulationError`
naming the task, the register and the value.

An H14 program runs as the H13 program its tasks translate to (`h14`: Apple's H14 programs are the
H13 ones for the same MIL, re-encoded); the same evidence checks then apply.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from coreml2hwx.errors import SimulationError
from coreml2hwx.program import Program, Tensor
from coreml2hwx.sim import h14
from coreml2hwx.sim.fields import TaskFields
from coreml2hwx.sim.l2 import L2
from coreml2hwx.sim.machine import run_task
from coreml2hwx.sim.memory import Memory, extent

__all__ = ["Simulator", "run_program", "SimulationError", "SUPPORTED_TARGETS"]

SUPPORTED_TARGETS = ("h13", "h14")

Trace = Callable[[int, np.ndarray], None]


class Simulator:
    """A program prepared to run many times: each task's register state is decoded, checked
    against the evidence and its weights and lookup tables unpacked once (at its first run)."""

    def __init__(self, program: Program):
        if program.target not in SUPPORTED_TARGETS:
            raise SimulationError(f"the simulator runs {', '.join(SUPPORTED_TARGETS)} programs; "
                                  f"this one targets {program.target}")
        self.program = program
        runs = h14.to_h13(program) if program.target == "h14" else program
        self.tasks = [TaskFields(index, task, state, runs.target)
                      for index, (task, state) in enumerate(runs.states())]

    def __call__(self, inputs: Mapping[str, np.ndarray],
                 trace: Trace | None = None) -> dict[str, np.ndarray]:
        program = self.program
        memory = Memory(program.constants)
        for tensor in program.tensors:
            if tensor.slot is None and tensor.role == "intermediate":
                continue  # a buffer no BAR slot names: no task can address it
            memory.declare(_slot(tensor), buffer_bytes(tensor))
        for tensor, value in _checked_inputs(program, inputs):
            memory.write(_slot(tensor), 0, _as_groups(tensor, value), _group_strides(tensor),
                         f"input {tensor.name!r}")
        l2 = L2()
        for f in self.tasks:
            result = run_task(f, memory, l2)
            if trace is not None:
                trace(f.index, result)
        return {t.name: _read_output(memory, t) for t in program.outputs}


def run_program(program: Program, inputs: Mapping[str, np.ndarray],
                trace: Trace | None = None) -> dict[str, np.ndarray]:
    """Run `program` on `inputs`; returns {output name: float16 array of its (N, C, H, W)}."""
    return Simulator(program)(inputs, trace)


def buffer_bytes(tensor: Tensor) -> int:
    """Bytes the tensor's buffer needs: its declared size, or the extent of all N batches."""
    n, c, h, w = tensor.shape
    span = extent((n, c, h, w), tuple(tensor.strides[:3]) + (2,)) if tensor.strides else 0
    return max(tensor.size or 0, tensor.total_bytes or 0, span)


def _slot(tensor: Tensor) -> int:
    if tensor.slot is None:
        raise SimulationError(f"tensor {tensor.name!r} is bound to no BAR slot")
    return tensor.slot


def _group_strides(tensor: Tensor):
    """Batch as the 5-D group axis; depth 1 (stride unused)."""
    sn, sc, sh, _ = tensor.strides
    return (sn, 0, sc, sh)


def _as_groups(tensor: Tensor, value: np.ndarray) -> np.ndarray:
    n, c, h, w = tensor.shape
    return value.reshape(n, 1, c, h, w)


def _checked_inputs(program: Program, inputs: Mapping[str, np.ndarray]):
    declared = {t.name: t for t in program.inputs}
    unknown = sorted(set(inputs) - set(declared))
    if unknown:
        raise SimulationError(f"input {unknown[0]!r} is not an input of the program (inputs: "
                              f"{', '.join(declared) or 'none'})")
    for name, tensor in declared.items():
        if name not in inputs:
            raise SimulationError(f"input {name!r} {list(tensor.shape)} is missing")
        yield tensor, _checked_array(tensor, inputs[name])


def _checked_array(tensor: Tensor, value) -> np.ndarray:
    value = np.asarray(value)
    if value.dtype.kind != "f":
        raise SimulationError(f"input {tensor.name!r} has dtype {value.dtype}; a floating-point "
                              "array is expected (the ANE stores fp16)")
    shape = tuple(tensor.shape)
    if value.shape != shape:
        squeezed = tuple(n for n in value.shape if n != 1)
        if value.size != math.prod(shape) or squeezed != tuple(n for n in shape if n != 1):
            raise SimulationError(f"input {tensor.name!r} has shape {list(value.shape)}, the "
                                  f"program declares {list(shape)}")
    with np.errstate(over="ignore"):
        return value.astype(np.float16, copy=False).reshape(shape)


def _read_output(memory: Memory, tensor: Tensor) -> np.ndarray:
    n, c, h, w = tensor.shape
    data = memory.read(_slot(tensor), 0, (n, 1, c, h, w), _group_strides(tensor),
                       f"output {tensor.name!r}")
    return data.reshape(n, c, h, w)
