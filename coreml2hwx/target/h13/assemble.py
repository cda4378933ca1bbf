"""Task specs -> a Program: header fields that depend on a task's place in the chain, the stream
layout, the constant section and the I/O tensors.

Header rules (h13-register-census §5, each 98/98 unless noted):
* TID = task index, LNID = not the first task, EON = the last task, TBE = not the last task;
* LogEvents 0x42A single, 0x408 first, 0x400 middle, 0x422 last: bit 3 marks the first task,
  bits 1 and 5 the last;
* DebugLogEvents 0xFFF86A single/last, 0xFFF868 first, 0xFFF800 middle; a first task that is a
  plain NE copy (no LUT) has 0x68 (12/12 such first tasks); bit 13 is clear in tasks whose LUT
  rescales its input's exponent (reciprocal, log2, sqrt, rsqrt: real_div, pow, sqrt, rsqrt tasks,
  6/6; exp2 keeps it: softmax task 2, pow task 2; so does an 8-NE vector LUT over more than
  128 channels, `_wide_vector_lut`);
* SPL on the first task; DisallowAbort = NE.KernelCfg bit 12 (the 4 reductions that keep their
  result in L2 for a later task);
* NextSize / NextPointer: `Generation.layout` (tasks at 256-byte multiples).
"""

from __future__ import annotations

from coreml2hwx.program import Program
from coreml2hwx.target.h13.cost import exe_cycles
from coreml2hwx.target.h13.spec import TaskSpec, finish
from coreml2hwx.target.h13.task import GEN, build_task

EXPONENT_LUT_MODES = {0x67, 0xC5, 0xC6, 0xC9}  # reciprocal, sqrt, rsqrt, log2 (lut-rules.md §2)
EMPTY_CONSTANTS = bytes(16384)  # a program without constants carries 16 KiB of zeros (74/74)


def position_fields(spec: TaskSpec, index: int, count: int) -> dict:
    first, last = index == 0, index == count - 1
    log = 0x400 | (0x8 if first else 0) | (0x22 if last else 0)
    if last:  # an NE copy writing the result: 0x6A (upstream reduce_probe_sum_ax2_1x64x8x8)
        debug = 0x6A if spec.first_fetch_is_bypass else 0xFFF86A
    elif first:
        debug = 0x68 if spec.first_fetch_is_bypass else 0xFFF868
    else:
        debug = 0xFFF800
    if spec.lut_mode in EXPONENT_LUT_MODES and not _wide_vector_lut(spec):
        debug &= ~0x2000
    fields = dict(TID=index, LNID=int(not first), EON=int(last), TBE=int(not last),
                  LogEvents=log, DebugLogEvents=debug)
    fields.setdefault("SPL", int(first))
    return fields


def _wide_vector_lut(spec: TaskSpec) -> bool:
    """An 8-NE vector LUT task (Common.Cfg bit 28) over more than 128 channels keeps bit 13
    (upstream binary_real_div_1x{256,512,1024,2048,4096}x1x1 task 0: 0xFFF868; 64 and 128
    channels clear it: real_div_1x64x1x1, upstream real_div_1x128x1x1)."""
    return bool(spec.get("common.Cfg", "Bit28")) and spec.get("common.Cin", "Cin", 1) > 128


def assemble(specs: list[TaskSpec], tensors, constants: bytes | None) -> Program:
    tasks = []
    for index, spec in enumerate(specs):
        finish(spec)
        header = position_fields(spec, index, len(specs))
        header.update(spec.header)
        header["DisallowAbort"] = int(bool(spec.get("ne.KernelCfg", "Bit12")))
        header["ExeCycles"] = exe_cycles(spec)
        tasks.append(build_task(header, spec.fields))
    GEN.layout(tasks)
    return Program(target="h13", tasks=tasks, constants=constants or EMPTY_CONSTANTS,
                   tensors=list(tensors))
