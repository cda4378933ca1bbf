"""Reading Apple's .hwx files exactly.

Ground truth: the Apple-compiled tinygrad files in ../shared/artifacts (zin_ane_compiler v4.2.1,
-t h13) and the net.plist files their PROVENANCE.md pairs them with.
"""

from __future__ import annotations

import plistlib
import struct

import pytest

from coreml2hwx.hwx import load_program, read_hwx
from coreml2hwx.hwx.descriptors import parse_stab
from tests.conftest import PLIST_PAIRS, shared_files
from tests.hwx.hwx_helpers import apple_hwx_files, short_id

HWX = apple_hwx_files()


def test_the_artifacts_hold_the_expected_apple_files():
    # 7 in the final tinygrad tree + 10 historical versions (PROVENANCE.md); a new file adds one.
    assert len(HWX) >= 17


@pytest.mark.parametrize("path", HWX, ids=short_id)
def test_read_then_write_gives_identical_bytes(path):
    data = path.read_bytes()
    hwx = read_hwx(data, file=path)
    assert hwx.to_bytes() == data
    # every command was understood (none kept opaque) and nothing outside a structure was non-zero
    assert all(c.fields is not None for c in hwx.load_commands)
    assert hwx.image.extra == []


@pytest.mark.parametrize("path", HWX, ids=short_id)
def test_header_fields(path):
    hwx = read_hwx(path.read_bytes())
    h = hwx.image.header
    assert (h.magic, h.cputype, h.filetype, h.flags) == (0xBEEFFACE, 0x80, 2, 0x200000)
    assert hwx.cpusubtype == 4 and hwx.target == "h13"
    assert [s.name for s in hwx.segments[:2]] == ["__PAGEZERO", "__TEXT"]


def _word_walk_task_count(text: bytes, first_task_words: int) -> int:
    """Count tasks by following NextPointer (header word 7) from offset 0, independently of the
    codec: §2.4 - the last task has NextPointer 0."""
    offset, count = 0, 0
    while True:
        count += 1
        next_pointer = struct.unpack_from("<I", text, offset + 28)[0]
        if next_pointer == 0:
            return count
        assert next_pointer > offset
        offset = next_pointer


@pytest.mark.parametrize("path", HWX, ids=short_id)
def test_program_descriptor_agrees_with_the_task_stream(path):
    hwx = read_hwx(path.read_bytes())
    pd = hwx.program_descriptor
    text_ref = hwx.section("__TEXT", "__text")
    const_ref = hwx.section("__TEXT", "__const")
    assert pd["kind"] == 1 and pd["code"] == 532 and pd["command_size"] == 0x868
    assert pd["text_address"] == text_ref.header.addr == 0x30000000
    assert pd["constant_address"] == const_ref.header.addr
    assert const_ref.header.addr - text_ref.header.addr == -(-len(hwx.text) // 64) * 64
    assert pd["name"] == "net"
    assert pd["task_count"] == _word_walk_task_count(hwx.text, pd["task_words_minus_one"] + 1)
    program = load_program(path)
    assert len(program.tasks) == pd["task_count"]
    assert program.tasks[0].size_words == pd["task_words_minus_one"] + 1
    last = program.tasks[-1]
    assert last.offset + 4 * last.size_words == len(hwx.text)


@pytest.mark.parametrize("path", HWX, ids=short_id)
def test_bar_table_names_the_tensor_buffers(path):
    """Slot 0 text, slot 1 constants, the output at 4, the inputs after it (§1.3)."""
    hwx = read_hwx(path.read_bytes())
    bars = hwx.program_descriptor["bar_addresses"]
    program = load_program(path)
    outputs = [t for t in program.tensors if t.role == "output"]
    inputs = [t for t in program.tensors if t.role == "input"]
    assert [t.slot for t in outputs] == list(range(4, 4 + len(outputs)))
    assert [t.slot for t in inputs] == list(range(4 + len(outputs), 4 + len(program.tensors)))
    for t in program.tensors:
        assert bars[t.slot] == t.address == hwx.segment_at(t.address).vmaddr


@pytest.mark.parametrize("path", HWX, ids=short_id)
def test_tensor_descriptors_agree_with_the_stabs(path):
    """The tensor descriptors (LC_THREAD flavor 3) and the stabs anecc reads say the same thing."""
    hwx = read_hwx(path.read_bytes())
    stabs = {}
    for sym in hwx.symbols:
        parsed = parse_stab(sym["name"]) if sym["type"] == 0x20 else None
        if parsed:
            stabs[parsed[0]] = parsed
    assert len(stabs) == len(hwx.tensor_descriptors)
    for td in hwx.tensor_descriptors:
        name, shape, strides, code = stabs[td["name"]]
        assert list(shape) == td["shape"] and list(strides) == td["strides"]
        assert code == td["element_code"] == 5
        n, c, h, w = td["shape"]
        row = -(-2 * w // 64) * 64  # §1.7 row stride rule
        assert td["strides"] == [c * h * row, h * row, row, 2]
        assert td["total_bytes"] == c * h * row


@pytest.mark.parametrize("hwx_name", sorted(PLIST_PAIRS))
def test_input_tensors_agree_with_their_net_plist(hwx_name, shared):
    root = shared / "artifacts/tinygrad_tinygrad"
    plist = plistlib.loads((root / PLIST_PAIRS[hwx_name]).read_bytes())
    net = plist[plist["Networks"][0]]
    program = load_program(root / hwx_name)
    inputs = [t for t in program.tensors if t.role == "input"]
    # the inputs come back in the order the plist declares them (e.g. sum: image2, image)
    assert [t.name for t in inputs] == net["Inputs"]
    for t in inputs:
        spec = net[t.name]
        expected = (spec.get("BatchSize", 1), spec["InputChannels"], spec["InputHeight"],
                    spec["InputWidth"])
        assert t.shape == expected
        if "InputRowStride" in spec:
            assert t.strides[2] == spec["InputRowStride"]
            assert t.strides[1] == spec["InputPlaneStride"]
    assert [t.name + "@output" for t in program.tensors if t.role == "output"] == net["Outputs"]


def test_load_commands_list_in_file_order():
    (path,) = [p for p in HWX if short_id(p) == "extra/accel/ane/ops/sum.hwx"]
    hwx = read_hwx(path.read_bytes())
    names = [c.name for c in hwx.load_commands]
    assert names == ["LC_SEGMENT_64"] * 5 + ["LC_LOADFVMLIB"] * 3 + ["LC_THREAD"] * 4 + [
        "LC_IDENT", "LC_SYMTAB"]
    assert [c.offset for c in hwx.load_commands][:2] == [0x20, 0x68]
    assert "flavor 1, 532 words" in hwx.load_commands[8].describe()
    assert hwx.ident.startswith("ANEC v1\nzin_ane_compiler v4.2.1\n")
    assert list(hwx.fvmlibs) == ["image2", "image", "probs@output"]


def test_every_hwx_in_the_artifacts_was_found(shared):
    names = {p.name for p in shared_files("artifacts/**/*.hwx")}
    assert names <= {p.name for p in HWX}
