"""Malformed containers give one line: the file, the byte offset, the broken rule.

Ground truth for the inputs: Apple's relu.hwx and sum.hwx (../shared/artifacts), each damaged in
one known place; the expected offsets are where that damage sits in the file.
"""

from __future__ import annotations

import struct

import pytest

from coreml2hwx.errors import ProgramFormatError
from coreml2hwx.hwx import load_program, program_from_hwx, read_hwx
from tests.hwx.hwx_helpers import apple_hwx_files, short_id

FILES = {short_id(p): p for p in apple_hwx_files()}
RELU = FILES["extra/accel/ane/ops/relu.hwx"]  # commands: 0x20 PAGEZERO, 0x68 TEXT, ... 0xdf0 SYMTAB
NAME = "relu.hwx"


def damaged(**patches):
    data = bytearray(RELU.read_bytes())
    for at, value in patches.get("words", {}).items():
        struct.pack_into("<I", data, at, value)
    if "length" in patches:
        data = data[:patches["length"]]
    return bytes(data)


def expect(data, offset, rule, reader=read_hwx):
    with pytest.raises(ProgramFormatError) as info:
        result = reader(data, file=NAME) if reader is read_hwx else reader(read_hwx(data, NAME))
        del result
    line = str(info.value)
    assert line.startswith(f"{NAME}: offset {offset:#x}: "), line
    assert rule in line and "\n" not in line, line
    assert info.value.offset == offset


def test_truncated_header():
    expect(damaged(length=20), 20, "shorter than the 32-byte Mach-O header")


def test_truncated_inside_the_load_commands():
    expect(damaged(length=0x300), 20, "load commands (0xde8 bytes) run past the end")


def test_truncated_inside_the_text_segment():
    # the __TEXT command sits at 0x68; its fileoff field at +40
    expect(damaged(length=0x5000), 0x68 + 40,
           "segment __TEXT file range (0x4000+0x8000) points past the end of the 0x5000-byte")


def test_section_past_the_end():
    # __TEXT,__const: second section header of the __TEXT command (0x68 + 72 + 80); size at +40,
    # the error names its offset field (+48)
    const = 0x68 + 72 + 80
    expect(damaged(words={const + 40: 0x100000}), const + 48,
           "section __TEXT,__const data (0x4280+0x100000) points past the end")


def test_wrong_magic():
    expect(damaged(words={0: 0xFEEDFACE}), 0, "magic 0xfeedface is not an ANE hwx")


def test_wrong_cputype():
    expect(damaged(words={4: 7}), 4, "cputype 0x7 is not the ANE")


def test_too_many_commands_for_sizeofcmds():
    expect(damaged(words={16: 1000}), 16, "1000 load commands cannot fit")


def test_command_size_zero():
    expect(damaged(words={0x68 + 4: 0}), 0x68 + 4, "cmdsize 0")


def test_command_running_past_the_commands():
    expect(damaged(words={0xdf0 + 4: 0x1000}), 0xdf0 + 4, "runs past the end of the load commands")


def test_section_count_overrun():
    expect(damaged(words={0x68 + 64: 9}), 0x68,
           "declares 9 sections (0x318 bytes) but is only 0xe8")


def test_thread_state_count_overrun():
    expect(damaged(words={0x2c8 + 12: 0xFFFFFFFF}), 0x2c8, "declares 4294967295 state words")


def test_segment_file_range_past_the_end():
    expect(damaged(words={0x68 + 48: 0x100000}), 0x68 + 40, "segment __TEXT file range")


def test_symbol_table_past_the_end():
    expect(damaged(words={0xdf0 + 12: 0x100000}), 0xdf0 + 8, "symbol table of 1048576 entries")


def test_fvmlib_name_offset_outside_its_command():
    expect(damaged(words={0x280 + 8: 0x400}), 0x280 + 8, "name offset 0x400 lies outside")


def test_task_count_that_the_chain_does_not_hold():
    # program descriptor at 0x2c8: word 515 = task count
    expect(damaged(words={0x2c8 + 16 + 4 * 515: 2}), 0x4000, "the program declares 2",
           reader=program_from_hwx)


def test_first_task_size_past_the_stream():
    expect(damaged(words={0x2c8 + 16 + 4 * 514: 0x400}), 0x4000, "overruns",
           reader=program_from_hwx)


def test_text_address_outside_the_text_section():
    expect(damaged(words={0x2c8 + 16: 0x40000000}), 0x2c8 + 16, "lies outside __TEXT,__text",
           reader=program_from_hwx)


def test_unknown_generation():
    expect(damaged(words={8: 2}), 8, "cpusubtype 2", reader=program_from_hwx)


def test_load_program_names_the_path(tmp_path):
    path = tmp_path / "broken.hwx"
    path.write_bytes(damaged(length=0x300))
    with pytest.raises(ProgramFormatError, match=r"broken.hwx: offset 0x14: load commands"):
        load_program(path)
    with pytest.raises(ProgramFormatError, match=r"missing.hwx: cannot read"):
        load_program(tmp_path / "missing.hwx")


def test_unknown_commands_are_kept_not_dropped():
    """An unknown command (here LC_NOTE, 0x31, in place of LC_IDENT) stays as opaque bytes."""
    data = damaged(words={0xc70: 0x31})
    hwx = read_hwx(data, NAME)
    note = hwx.load_commands[9]
    assert note.name == "LC_NOTE" and note.fields is None and note.raw[8:15] == b"ANEC v1"
    assert hwx.to_bytes() == data


def test_symbol_naming_a_string_past_the_string_table():
    # relu.hwx: LC_SYMTAB at 0xdf0 - 14 symbols at 0xe08, 0x161 bytes of strings at 0xee8
    assert struct.unpack_from("<4I", RELU.read_bytes(), 0xdf0 + 8) == (0xe08, 14, 0xee8, 0x161)
    n_strx = 0xe08 + 16 * 3  # symbol 3's first field
    expect(damaged(words={n_strx: 0x161}), n_strx,
           "symbol 3 names string 0x161, past the 0x161-byte string table")
    read_hwx(damaged(words={n_strx: 0x160}), NAME)  # the table's last byte is a valid start
