"""Program descriptors of the newer compiler (macOS 26), which no .hwx in the artifacts has.

Ground truth: the oracle files (../shared/oracles), which record Apple's program-descriptor fields
and, for H14, the 32 raw words from command offset 0x810.  Each test rebuilds the command bytes
from those records at the positions upstream's decoder reads (text 0x10, constants 0x18, resource
slots 0x30.., first-task size 0x818, task count 0x81C; H14 raw words from 0x810) and checks that our
reader finds the same fields - and, on H14, derives Apple's constant address.
"""

from __future__ import annotations

import struct

import pytest

from coreml2hwx.hwx.descriptors import program_descriptor
from coreml2hwx.hwx.macho import parse_command
from tests.conftest import load_json, oracle_files


def compiled(target):
    return [p for p in oracle_files(target) if load_json(p)["program_descriptor"]]


def _command(size, flavor, count, placed: dict[int, int], tail: bytes) -> bytes:
    raw = bytearray(size)
    struct.pack_into("<4I", raw, 0, 4, size, flavor, count)
    for at, word in placed.items():
        struct.pack_into("<I", raw, at, word)
    raw[16 + 4 * count:] = tail
    return bytes(raw)


def _u64(placed, at, value):
    placed[at], placed[at + 4] = value & 0xFFFFFFFF, value >> 32


@pytest.mark.parametrize("path", compiled("h13"), ids=lambda p: p.stem)
def test_h13_new_form(path):
    pd = load_json(path)["program_descriptor"]
    placed = {}
    _u64(placed, 0x10, int(pd["text_address"], 16))
    _u64(placed, 0x18, int(pd["constant_address"], 16))
    for i, address in enumerate(pd["resource_addresses"]):
        _u64(placed, 0x30 + 8 * i, int(address, 16))
    placed[0x818], placed[0x81C] = pd["task_words_minus_one"], pd["task_count"]
    placed[16 + 4 * 523] = pd["command_size"] - 8
    raw = _command(pd["command_size"], pd["kind"], pd["code"], placed, b"net\0\0\0\0\0")
    ours = program_descriptor(parse_command(raw, 0))
    for key in ("kind", "code", "command_size", "task_words_minus_one", "task_count"):
        assert ours[key] == pd[key], key
    assert hex(ours["text_address"]) == pd["text_address"]
    assert hex(ours["constant_address"]) == pd["constant_address"]
    assert [hex(a) for a in ours["resource_addresses"]] == pd["resource_addresses"]
    assert ours["name"] == "net"


@pytest.mark.parametrize("path", compiled("h14"), ids=lambda p: p.stem)
def test_h14_kind_4(path):
    pd = load_json(path)["program_descriptor"]
    trailing = [int(w, 16) for w in pd["trailing_words"]]
    placed = {0x810 + 4 * i: w for i, w in enumerate(trailing[:30])}
    tail = struct.pack("<2I", *trailing[30:])  # "main\0..." - the program name
    count = (pd["command_size"] - 16) // 4 - 2
    raw = _command(pd["command_size"], pd["kind"], count, placed, tail)
    ours = program_descriptor(parse_command(raw, 0))
    assert ours["kind"] == 4 and ours["name"] == "main"
    assert ours["trailing_words"] == trailing
    assert hex(ours["text_address"]) == pd["text_address"]
    assert (ours["text_words"], ours["task_count"]) == (pd["text_words"], pd["task_count"])
    # not read from the command: the census rule text + round_up(4 x text_words, 64)
    assert hex(ours["constant_address"]) == pd["constant_address"]
