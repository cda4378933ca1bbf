"""Task-stream codecs against Apple's own streams.

Ground truth: the oracle task descriptors (../shared/oracles, Apple's compiler, macOS 26.6.2), eiln's
36 raw H13 task streams and their metadata CSV, and allbilly's raw TD dumps (../shared/artifacts).
"""

from __future__ import annotations

import csv

import pytest

from coreml2hwx.errors import ProgramFormatError
from coreml2hwx.program import Record, Task
from coreml2hwx.report.jsonview import task_from_json
from coreml2hwx.target import generation
from tests.conftest import load_json, oracle_files, shared_files

COMPILED = [p for t in ("h13", "h14") for p in oracle_files(t) if load_json(p)["task_descriptors"]]
EILN_CSV = "artifacts/eiln_ane/f182ece390b4/anec/kernels_metadata_from_ab8475b_headers.csv"


def oracle_tasks(path):
    case = load_json(path)
    gen = generation(case["target"])
    return case, gen, [task_from_json(td, gen) for td in case["task_descriptors"]]


@pytest.mark.parametrize("path", COMPILED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_oracle_records_reencode_exactly(path):
    case, gen, tasks = oracle_tasks(path)
    for td, task in zip(case["task_descriptors"], tasks):
        assert [f"0x{h:08x}" for h in gen.record_headers(task)] == [r["header"] for r in td["records"]]
        assert 4 * task.size_words == td["size_bytes"]


@pytest.mark.parametrize("path", COMPILED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_oracle_layout_reproduces_chaining_and_stream_length(path):
    """Laying the tasks out again gives Apple's chaining header words and stream length."""
    case, gen, tasks = oracle_tasks(path)
    original = [list(t.header) for t in tasks]
    for task in tasks:  # forget what the layout must recompute
        if case["target"] == "h13":
            task.header[1] &= ~(0x1FF << 16)
            task.header[7] = 0
        else:
            task.header[0] &= 0xFFFF
    gen.layout(tasks)
    assert [t.header for t in tasks] == original
    stream = gen.encode_stream(tasks)
    desc = case["program_descriptor"]
    if case["target"] == "h13":
        assert desc["task_words_minus_one"] == tasks[0].size_words - 1
        text_to_const = int(desc["constant_address"], 16) - int(desc["text_address"], 16)
        assert -(-len(stream) // 64) * 64 == text_to_const
    else:
        assert len(stream) == 4 * desc["text_words"]
    decoded = gen.decode_stream(stream, task_count=len(tasks), first_task_words=tasks[0].size_words)
    assert decoded == tasks


def eiln_rows():
    (csv_path,) = shared_files(EILN_CSV)
    return list(csv.DictReader(csv_path.open()))


@pytest.mark.parametrize("row", eiln_rows(), ids=lambda r: r["name"])
def test_eiln_streams_decode_with_their_metadata(row, shared):
    data = (shared / EILN_CSV).parent.joinpath("kernels", row["file"]).read_bytes()
    tsk_size, td_size, td_count = (int(row[k], 16) for k in ("tsk_size", "td_size", "td_count"))
    gen = generation("h13")
    tasks = gen.decode_stream(data[:tsk_size], task_count=int(row["td_count"]),
                              first_task_words=td_size // 4)
    assert len(tasks) == td_count
    end = tasks[-1].offset + 4 * tasks[-1].size_words
    # tsk_size is the chain's end, except softmin, whose header row carries norm's 0x1774 while
    # its six-task chain ends at 0xf00 + 0x274: a slip in eiln's header, not in the stream.
    assert end == tsk_size or (row["name"] == "softmin" and end == 0xF00 + 0x274)
    assert all(4 * t.size_words == td_size for t in tasks)  # old compiler: fixed 157-word TDs
    # Without the sizes, the chain alone finds the same tasks.
    assert gen.decode_stream(data) == tasks
    assert gen.encode_stream(tasks) == data[:end]


def test_allbilly_task_dump_decodes(shared):
    (dump,) = shared_files("artifacts/allbilly_ANETools/*/ANEDisassembler/inst0.dump")
    data = dump.read_bytes()
    (task,) = generation("h13").decode_stream(data)
    assert 4 * task.size_words == len(data)
    assert generation("h13").encode_stream([task]) == data


def _two_task_stream():
    gen = generation("h13")
    tasks = [Task([0] * 10, [Record(0x4800, [1, 2])]), Task([0] * 10, [Record(0x8800, [3])])]
    tasks[0].header[0], tasks[1].header[0] = 0, 1 << 25 | 1  # EON on the last
    gen.layout(tasks)
    return gen, tasks, bytearray(gen.encode_stream(tasks))


def test_bad_streams_name_the_offset():
    gen, tasks, data = _two_task_stream()
    looped = bytearray(data)
    looped[0x100:0x104] = (1).to_bytes(4, "little")  # task 1 loses EON ...
    looped[0x100 + 28:0x100 + 32] = (0x100).to_bytes(4, "little")  # ... and points at itself
    with pytest.raises(ProgramFormatError, match=r"offset 0x100: task chain loops"):
        gen.decode_stream(bytes(looped), first_task_words=tasks[0].size_words)
    with pytest.raises(ProgramFormatError, match=r"offset 0x100: task stream ends"):
        gen.decode_stream(bytes(data[:0x104]), first_task_words=tasks[0].size_words)
    overrun = bytearray(data)
    overrun[40:44] = (5 << 26 | 0x4800).to_bytes(4, "little")  # claims 6 words
    with pytest.raises(ProgramFormatError, match=r"offset 0x28: .*overruns its task"):
        gen.decode_stream(bytes(overrun), first_task_words=tasks[0].size_words, task_count=2)
    with pytest.raises(ProgramFormatError, match="declares 3"):
        gen.decode_stream(bytes(data), first_task_words=tasks[0].size_words, task_count=3)


def _fuzz_source(kind, shared):
    if kind == "h13":  # eiln softmax: 5 tasks as Apple's old compiler wrote them
        data = (shared / EILN_CSV).parent.joinpath("kernels", "activation", "softmax.bin").read_bytes()
        return generation("h13"), data
    # No raw H14 stream is stored; the layer_norm oracle's 3 tasks are re-encoded from Apple's words.
    case, gen, tasks = oracle_tasks(shared / "oracles/h14/layer_norm_1x512x1x1.json")
    gen.layout(tasks)
    return gen, gen.encode_stream(tasks)


@pytest.mark.parametrize("kind", ["h13", "h14"])
def test_fuzzed_streams_fail_with_one_clear_error(kind, shared):
    """Mutated and truncated copies of a real stream: decoding either succeeds or raises
    ProgramFormatError naming an offset, never another exception or a hang."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    gen, data = _fuzz_source(kind, shared)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), max_size=8),
           st.integers(1, len(data)), st.sampled_from([None, 157, 3, 600]),
           st.sampled_from([None, 1, 5]))
    def check(edits, length, first_words, count):
        mutated = bytearray(data)
        for pos, value in edits:
            mutated[pos] = value
        try:
            gen.decode_stream(bytes(mutated[:length]), first_task_words=first_words,
                              task_count=count)
        except ProgramFormatError as err:
            assert "offset 0x" in str(err)

    check()
