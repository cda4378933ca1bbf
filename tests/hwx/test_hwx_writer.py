"""Writing new .hwx files.

Ground truth: Apple's tinygrad files (../shared/artifacts) - our writer, given the Program read
from one of them and Apple's LC_IDENT text, must reproduce that file byte for byte except where the
fact sheet marks a value as unknown - and the H13 oracles (../shared/oracles/h13), whose tasks and
tensor descriptors Apple's compiler produced.
"""

from __future__ import annotations

import struct

import pytest

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.hwx import load_program, program_from_bytes, read_hwx, write_hwx
from coreml2hwx.hwx.descriptors import FLAVOR_TENSOR, H13_UNKNOWN_528
from coreml2hwx.program import Program, Record, Task, Tensor
from coreml2hwx.report.jsonview import task_from_json
from coreml2hwx.target import generation
from tests.conftest import load_json, oracle_files
from tests.hwx.hwx_helpers import apple_hwx_files, short_id

HWX = apple_hwx_files()

# Words whose meaning is unknown and whose Apple value our rule does not reproduce (ane-facts
# §1.3, §1.4): tensor-descriptor word 27 of the two-task concat files (0x94/0x94/0x9A where the
# one-task files have 0x92/0x93/0x99) and program-descriptor word 528 of one golden file (0x4
# where all other one-task files have 0x11).
UNKNOWN_TENSOR_WORD27 = {"extra/accel/ane/ops/concat.hwx",
                         "history/e03759f01d32/ane/ops/concat.hwx"}
UNKNOWN_PROGRAM_WORD528 = {"history/ddd6778423fe/ane/2_compile/model.hwx.golden"}


def _adopt_unknowns(apple: bytearray, ours: bytes, name: str):
    """Copy our values into Apple's bytes at the documented unknown places only."""
    a, b = read_hwx(bytes(apple)), read_hwx(ours)
    # Kernel-chunk symbol names carry a hash Apple computes some way we do not know (§1.5);
    # check their shape, then take ours.
    st = a.image.symtab().fields
    for sa, sb, raw in zip(a.symbols, b.symbols, a.image.symbols):
        if sa["type"] == 0x0F and sa["sect"] == 2:
            assert len(sa["name"]) == len(sb["name"]) and sa["name"][0] == sb["name"][0] == "K"
            assert sa["name"][65:] == sb["name"][65:]  # the _ne_<i> suffix
            at = st.stroff + raw.n_strx
            apple[at:at + len(sb["name"])] = sb["name"].encode()
    for ca, cb in zip(a.load_commands, b.load_commands):
        if ca.cmd != 4:
            continue
        words = []
        if ca.fields.flavor == FLAVOR_TENSOR and name in UNKNOWN_TENSOR_WORD27:
            words = [27]
        if ca.fields.flavor == 1 and name in UNKNOWN_PROGRAM_WORD528:
            words = [H13_UNKNOWN_528]
        for w in words:
            at = ca.offset + 16 + 4 * w
            apple[at:at + 4] = struct.pack("<I", cb.fields.state[w])


@pytest.mark.parametrize("path", HWX, ids=short_id)
def test_writer_reproduces_apples_file(path):
    data = path.read_bytes()
    apple = read_hwx(data)
    ours = write_hwx(load_program(path), ident=apple.ident)
    expected = bytearray(data)
    _adopt_unknowns(expected, ours, short_id(path))
    assert ours == bytes(expected)


@pytest.mark.parametrize("path", HWX, ids=short_id)
def test_write_then_read_gives_the_same_program(path):
    program = load_program(path)
    data = write_hwx(program)
    assert program_from_bytes(data) == program
    assert write_hwx(program) == data  # deterministic


def test_default_ident_names_us_not_apple(shared):
    hwx = read_hwx(write_hwx(load_program(HWX[0])))
    assert hwx.ident.startswith("ANEC v1\ncoreml2hwx ")
    assert "zin_ane_compiler" not in hwx.ident


H13_CASES = [p for p in oracle_files("h13") if load_json(p)["task_descriptors"]]


def oracle_program(case) -> Program:
    gen = generation("h13")
    tasks = [task_from_json(td, gen) for td in case["task_descriptors"]]
    gen.layout(tasks)
    tensors, counts = [], {1: 0, 2: 0}
    for td in case["tensor_descriptors"]:
        role = "input" if td["binding"] == 1 else "output"
        name = f"{role[0]}{counts[td['binding']]}"
        counts[td["binding"]] += 1
        tensors.append(Tensor(name=name, role=role, shape=tuple(td["shape"]),
                              strides=tuple(td["strides"]), total_bytes=td["total_bytes"]))
    return Program("h13", tasks, bytes(case["constant_section"]["size"]), tensors, name="net")


@pytest.mark.parametrize("path", H13_CASES, ids=lambda p: p.stem)
def test_oracle_programs_write_and_read_back(path):
    """Apple's tasks and tensor descriptors (macOS 26 compiler) survive our container."""
    case = load_json(path)
    program = oracle_program(case)
    hwx = read_hwx(write_hwx(program))
    for ours, apple in zip(hwx.tensor_descriptors, case["tensor_descriptors"]):
        assert {k: ours[k] for k in apple} == apple
    pd = hwx.program_descriptor
    assert pd["task_count"] == case["program_descriptor"]["task_count"]
    assert pd["task_words_minus_one"] == case["program_descriptor"]["task_words_minus_one"]
    apple_pd = case["program_descriptor"]
    apple_gap = int(apple_pd["constant_address"], 16) - int(apple_pd["text_address"], 16)
    assert pd["constant_address"] - pd["text_address"] == apple_gap
    back = program_from_bytes(hwx.to_bytes())
    assert back.tasks == program.tasks
    assert back.constants == program.constants
    assert [(t.name, t.role, t.shape, t.strides, t.total_bytes) for t in back.tensors] == \
        [(t.name, t.role, t.shape, t.strides, t.total_bytes) for t in program.tensors]
    # slots filled in by the Linux convention: outputs from 4, then inputs
    assert [t.slot for t in back.outputs] == [4] and \
        [t.slot for t in back.inputs] == list(range(5, 5 + len(back.inputs)))


def test_slots_given_by_the_program_are_kept():
    gen = generation("h13")
    task = Task([1 << 25, 0, 0, 0, 0, 0, 0, 0, 0x000259A4, 0], [Record(0x8800, [0x80000])])
    gen.layout([task])
    t = dict(shape=(1, 64, 8, 8), strides=(32768, 512, 64, 2), total_bytes=32768)
    program = Program("h13", [task], bytes(0x4000), [
        Tensor("x", "input", slot=4, **t), Tensor("y", "input", slot=6, **t),
        Tensor("z", "output", slot=5, **t)])
    back = program_from_bytes(write_hwx(program))
    assert [(x.name, x.slot) for x in back.tensors] == [("x", 4), ("y", 6), ("z", 5)]


def test_empty_constants_become_apples_16k_of_zeros():
    gen = generation("h13")
    task = Task([1 << 25] + [0] * 9, [Record(0x8800, [0])])
    gen.layout([task])
    io = dict(shape=(1, 1, 1, 1), strides=(64, 64, 64, 2), total_bytes=64)
    program = Program("h13", [task], b"", [Tensor("x", "input", **io),
                                           Tensor("y", "output", **io)])
    assert read_hwx(write_hwx(program)).constants == bytes(0x4000)


def test_other_targets_and_dtypes_are_refused():
    with pytest.raises(UnsupportedError, match="h15"):
        write_hwx(Program("h15", []))
    program = load_program(HWX[0])
    program.tensors[0].dtype = "bfloat16"
    with pytest.raises(UnsupportedError, match="bfloat16"):
        write_hwx(program)
