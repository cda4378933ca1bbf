"""The fast read path gives what the plain one gives.

Ground truth: Apple's .hwx files in ../shared/artifacts.  `read_hwx` parses with construct's
compiled layouts, keeps each load command's bytes instead of rebuilding them, leaves the symbol and
relocation tables as bytes until they are used, and `load_program` maps the file instead of
reading it.  Each shortcut is checked against the slow way on Apple's bytes: construct's
interpreted parse of the same byte ranges, and `program_from_bytes` of the file read whole.
"""

from __future__ import annotations

import os
import struct
import threading

import pytest
from construct import Array

from coreml2hwx.hwx import load_program, program_from_bytes, read_hwx
from coreml2hwx.hwx.macho import (LAYOUTS, LC_SYMTAB, NLIST_SIZE, RELOC_SIZE, MachHeader, Nlist64,
                                  RelocationInfo)
from tests.hwx.hwx_helpers import apple_hwx_files, short_id

HWX = apple_hwx_files()


@pytest.mark.parametrize("path", HWX, ids=short_id)
def test_command_fields_are_the_interpreted_parse_of_the_file(path):
    data = path.read_bytes()
    hwx = read_hwx(data)
    assert hwx.image.header == MachHeader.parse(data[:32])
    for command in hwx.load_commands:
        body = data[command.offset:command.offset + command.cmdsize]
        assert command.to_bytes() == body
        layout = LAYOUTS[command.cmd]
        assert command.fields == layout.parse(body)
        # the fields alone hold every byte of the command (why keeping the bytes loses nothing)
        assert layout.build(command.fields) == body


@pytest.mark.parametrize("path", HWX, ids=short_id)
def test_symbol_and_relocation_tables_are_the_interpreted_parse(path):
    data = path.read_bytes()
    hwx = read_hwx(data)
    (symtab,) = [c for c in hwx.load_commands if c.cmd == LC_SYMTAB]
    _, _, symoff, nsyms = struct.unpack_from("<4I", data, symtab.offset)
    expected = Array(nsyms, Nlist64).parse(data[symoff:symoff + NLIST_SIZE * nsyms])
    assert len(hwx.image.symbols) == nsyms and list(hwx.image.symbols) == list(expected)
    assert hwx.image.symbols == expected
    for ref in hwx.sections:
        head = ref.header
        raw = data[head.reloff:head.reloff + RELOC_SIZE * head.nreloc]
        relocations = list(Array(head.nreloc, RelocationInfo).parse(raw))
        assert list(hwx.image.relocations.get(ref.ordinal, [])) == relocations


def test_some_apple_file_has_relocations():
    """So the relocation comparison above is not vacuous."""
    assert any(read_hwx(p.read_bytes()).relocations for p in HWX)


def _same_program(a, b):
    assert a == b
    assert type(a.constants) is type(b.constants) is bytes
    assert a.descriptor == b.descriptor
    assert a.constant_summary == b.constant_summary


@pytest.mark.parametrize("path", HWX, ids=short_id)
def test_load_program_maps_the_file_and_gets_what_the_bytes_give(path):
    _same_program(load_program(path), program_from_bytes(path.read_bytes(), file=path))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_load_program_reads_a_file_it_cannot_map(tmp_path):
    """A named pipe cannot be mapped: the file is read instead."""
    (path,) = [p for p in HWX if short_id(p) == "extra/accel/ane/ops/relu.hwx"]
    fifo = tmp_path / "relu.hwx"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=(path.read_bytes(),))
    writer.start()
    try:
        program = load_program(fifo)
    finally:
        writer.join()
    _same_program(program, load_program(path))
