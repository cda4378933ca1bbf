"""Fuzzing the readers with damaged copies of Apple's files (../shared/artifacts).

Whatever the damage, the only thing that may escape is a ProgramFormatError whose one line names the
file and a byte offset; and whenever a damaged .hwx still reads, writing it back gives exactly the
damaged bytes.  Bounded example counts, no deadline (the hypothesis database is a cache only).
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coreml2hwx.errors import ProgramFormatError
from coreml2hwx.hwx import (hwx_to_anec, program_from_anec, program_from_bytes, program_from_hwx,
                            read_anec, read_hwx)
from coreml2hwx.hwx.macho import LAYOUTS
from tests.hwx.hwx_helpers import apple_hwx_files, short_id

# The 16 small files (32-48 KiB); gemm.hwx (544 KiB) adds nothing the others lack but time.
FILES = {short_id(p): p.read_bytes() for p in apple_hwx_files()
         if p.stat().st_size <= 0x10000}
NAMES = sorted(FILES)
ONE_LINE = re.compile(r"^(?P<file>[^:\n]+): offset 0x[0-9a-f]+: [^\n]+$")
INTERESTING = [0, 1, 2, 3, 4, 0x14, 0x80, 0x9C, 0xFFFF, 0x4000, 0x30000000, 0x7FFFFFFF,
               0xFFFFFFFF]
SETTINGS = settings(max_examples=400, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def damaged_files(draw):
    name = draw(st.sampled_from(NAMES))
    data = bytearray(FILES[name])
    head = 0x1800  # header, load commands, symbols, strings, relocations
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "byte", "byte", "word", "word", "word",
                                     "text-word", "text-word"]))
        if kind == "truncate":
            keep = draw(st.one_of(st.integers(0, len(data)),
                                  st.integers(max(0, len(data) - 0x400), len(data)),
                                  st.integers(min(0x20, len(data)), min(len(data), head))))
            data = data[:keep]
        elif kind == "byte" and len(data) > 0x20:
            # rarely the magic/cputype/subtype words, mostly the load commands and tables
            low = draw(st.sampled_from([0] + [0x10] * 7))
            at = draw(st.integers(low, min(len(data), head) - 1))
            data[at] = draw(st.integers(0, 255))
        elif len(data) >= 0x20:
            lo, hi = (0x10, min(len(data), head)) if kind == "word" else (0x4000, len(data))
            if hi - lo < 4:
                continue
            at = draw(st.integers(lo // 4, (hi - 4) // 4)) * 4
            value = draw(st.one_of(st.sampled_from(INTERESTING + [len(data), len(data) + 4]),
                                   st.integers(0, 0xFFFFFFFF)))
            data[at:at + 4] = value.to_bytes(4, "little")
    return name, bytes(data)


def assert_one_line(err: ProgramFormatError, name: str):
    line = str(err)
    m = ONE_LINE.match(line)
    assert m and m["file"] == name, line
    assert err.offset is not None


@SETTINGS
@given(damaged_files())
def test_damaged_hwx_reads_exactly_or_fails_in_one_line(case):
    name, data = case
    try:
        hwx = read_hwx(data, file=name)
        assert hwx.to_bytes() == data
        # a known command's fields alone rebuild the bytes it keeps
        assert all(LAYOUTS[c.cmd].build(c.fields) == c.raw
                   for c in hwx.load_commands if c.fields is not None)
        program_from_hwx(hwx)
        hwx_to_anec(hwx)
    except ProgramFormatError as err:
        assert_one_line(err, name)


ANEC = {name: hwx_to_anec(read_hwx(data)) for name, data in list(FILES.items())[:4]}


@SETTINGS
@given(st.sampled_from(sorted(ANEC)), st.lists(st.tuples(st.integers(0, 0x17FF),
                                                          st.integers(0, 255)), max_size=6),
       st.one_of(st.none(), st.integers(0, 0x1800)))
def test_damaged_anec_reads_exactly_or_fails_in_one_line(name, flips, cut):
    data = bytearray(ANEC[name])
    for at, value in flips:
        if at < len(data):
            data[at] = value
    data = bytes(data if cut is None else data[:cut])
    try:
        anec = read_anec(data, file=name)
        assert anec.to_bytes() == data
        program_from_anec(anec)
    except ProgramFormatError as err:
        assert_one_line(err, name)


@SETTINGS
@given(st.binary(max_size=2048))
def test_random_bytes_as_a_raw_stream_fail_in_one_line(data):
    try:
        program_from_bytes(data, file="raw.bin", raw_target="h13")
    except ProgramFormatError as err:
        assert_one_line(err, "raw.bin")
