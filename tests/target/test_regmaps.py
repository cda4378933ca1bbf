"""Register maps against Apple's own data.

Ground truth, per test: the oracle task descriptors and their MIL / parameters (../shared/oracles,
Apple's compiler on macOS 26.6.2); Apple's H13 register printer as probed by tinygrad
(`aneregs.json`: TD byte offset, bit, width of every field the printer knows) and its dump of one
task (`aneregs`); the Apple-compiled tinygrad `.hwx` files and eiln's raw H13 task streams
(../shared/artifacts); the fixed 157-word H13 TD layout of ane-facts.md §2.1.
"""

from __future__ import annotations

import csv
import json
import math
import re

import pytest

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.report.jsonview import task_from_json
from coreml2hwx.target import generation
from coreml2hwx.target import maps
from coreml2hwx.target.maps import h13, h14
from coreml2hwx.target.regmap import GRADES
from tests.conftest import load_json, oracle_files, shared_files

TG = "artifacts/tinygrad_tinygrad/extra/accel/ane/"
EILN = "artifacts/eiln_ane/f182ece390b4/anec/"
COMPILED = [p for t in ("h13", "h14") for p in oracle_files(t) if load_json(p)["task_descriptors"]]
CASE_ID = dict(ids=lambda p: f"{p.parent.name}/{p.stem}")
MAP_OF = {"h13": h13, "h14": h14}

# ane-facts §2.1 [A]: the fixed H13 TD, (TD offset of the record header, block, base, words).
FIXED_TD = [(0x028, "kernel_dma_src", 0x1F800, 62), (0x124, "common", 0x00000, 16),
            (0x168, "tile_dma_src", 0x13800, 28), (0x1DC, "l2", 0x04800, 18),
            (0x228, "pe", 0x08800, 4), (0x23C, "ne", 0x0C800, 5),
            (0x254, "tile_dma_dst", 0x17800, 7)]
PRINTER_BLOCKS = {"KernelDMASrc": "kernel_dma_src", "Common": "common", "L2": "l2", "NE": "ne",
                  "TileDMASrc": "tile_dma_src", "TileDMADst": "tile_dma_dst"}


def td_address(td_offset: int) -> int:
    """Register address of a byte offset of the fixed 157-word TD (past the 10-word header)."""
    for record, _, base, words in FIXED_TD:
        if record < td_offset < record + 4 + 4 * words:
            return base + td_offset - record - 4
    raise AssertionError(f"TD offset {td_offset:#x} is no register of the fixed layout")


def oracle_tasks(path):
    case = load_json(path)
    gen = generation(case["target"])
    return case, [task_from_json(td, gen) for td in case["task_descriptors"]]


def states(tasks):
    state = {}
    for task in tasks:
        state = {**state, **task.writes()}
        yield task, state


def fixed_td(data: bytes):
    """The one task of a tinygrad .hwx: __text at file offset 0x4000, 157 words (ane-facts §1.7)."""
    (task,) = generation("h13").decode_stream(data[0x4000:0x4000 + 0x274], task_count=1,
                                              first_task_words=157)
    return task


# -- coverage: every word Apple writes has a register ----------------------------------------

@pytest.mark.parametrize("path", COMPILED, **CASE_ID)
def test_every_oracle_write_has_a_declared_register(path):
    case = load_json(path)
    regs = MAP_OF[case["target"]].REGISTERS
    for td in case["task_descriptors"]:
        for base, block in td["blocks"].items():
            for address in block["words"]:
                found = regs.lookup(int(address, 16))
                assert found is not None, f"{address} lies in no block"
                blk, register = found
                assert (blk.name, blk.base) == (block["name"], int(base, 16))
                assert register.grade != "-", f"{address} is in {blk.name} but no source names it"


def eiln_streams():
    (csv_path,) = shared_files(EILN + "kernels_metadata_from_ab8475b_headers.csv")
    return [(r["name"], csv_path.parent / "kernels" / r["file"], r)
            for r in csv.DictReader(csv_path.open())]


@pytest.mark.parametrize("name, path, row", eiln_streams(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_every_old_compiler_write_has_a_declared_register(name, path, row):
    """eiln's 36 Apple-compiled H13 streams (old compiler, all seven blocks in full)."""
    data = path.read_bytes()[:int(row["tsk_size"], 16)]
    tasks = generation("h13").decode_stream(data, task_count=int(row["td_count"]),
                                            first_task_words=int(row["td_size"], 16) // 4)
    for task in tasks:
        assert len(task.header) == h13.HEADER.size_words
        for address in task.writes():
            found = h13.REGISTERS.lookup(address)
            assert found is not None and found[1].grade != "-", f"{name}: {address:#x}"


def test_allbilly_dumps_have_declared_registers(shared):
    """Two raw new-compiler H13 TDs dumped by ANEDisassembler (126 and 29 words)."""
    fmt = generation("h13").stream
    for dump in sorted((shared / "artifacts/allbilly_ANETools").rglob("inst*.dump")):
        data = dump.read_bytes()
        task = fmt.decode_task(data, 0, len(data) // 4)
        for address in task.writes():
            found = h13.REGISTERS.lookup(address)
            assert found is not None and found[1].grade != "-", f"{dump.name}: {address:#x}"


# -- Apple's register printer --------------------------------------------------------------

def test_h13_field_positions_match_apples_printer(shared):
    """Every field of aneregs.json (byte offset in the TD, bit, width), converted to a register
    address with the fixed layout, is a field of our map with the same name and bit range."""
    probe = json.loads((shared / TG / "lib/aneregs.json").read_text())
    assert len(probe) == 258
    for name, (offset, bit, width) in probe:
        first = 8 * offset + bit
        word, lo = divmod(first, 32)
        hi = lo + width - 1
        assert hi < 32, name
        parts = re.fullmatch(r"(aneTD|aneRegs)\.(.+)\.(\w+)", name)
        kind, register_name, field_name = parts.groups()
        if kind == "aneTD":
            register = h13.HEADER.words[word]
            assert register.name == register_name, name
        else:
            block_name, register_name = register_name.split(".", 1)
            block, register = h13.REGISTERS.lookup(td_address(4 * word))
            assert (block.name, register.name) == (PRINTER_BLOCKS[block_name], register_name), name
        f = register.field(field_name)
        assert (f.hi, f.lo, f.grade) == (hi, lo, "A"), name


# The dump's header says LNID = 1 on a one-task program, which no tinygrad .hwx holds: the printer
# was run on the compiler's task object rather than on the file's bytes.  These twelve printed
# values differ from sigmoid.hwx; the other 168 printed fields agree with its bytes.
DUMP_DIFFERS = {"Header[0].LNID", "Header[6].SPL", "Header[6].TSR", "Header[6].TSE",
                *(f"L2.{r}.Alias{a}" for r in ("SourceCfg", "ResultCfg")
                  for a in ("ConvSrc", "ConvRslt", "PlanarSrc", "PlanarRslt"))}


def test_h13_decode_matches_apples_printer_dump_of_sigmoid(shared):
    task = fixed_td((shared / TG / "ops/sigmoid.hwx").read_bytes())
    writes = task.writes()
    compared, differ = 0, set()
    for line in (shared / TG / "aneregs").read_text().splitlines():
        m = re.fullmatch(r"\s*(aneTD|aneRegs)\.(\S+)\s*=\s*(\d+)\s*", line)
        if not m or ".Spare" in m.group(2):  # Spare words: the printer probe gives them no bits
            continue
        kind, name, printed = m.group(1), m.group(2), int(m.group(3))
        if kind == "aneTD":
            index, f = h13.HEADER.field(name)
            ours = f.bits(task.header[index])
        else:
            block, rest = name.split(".", 1)
            address, f = h13.REGISTERS.field(f"{PRINTER_BLOCKS[block]}.{rest}")
            ours = f.bits(writes[address])
        compared += 1
        if ours != printed:
            differ.add(name)
    assert compared == 180
    assert differ == DUMP_DIFFERS


def test_h13_relu_maccfg_from_eiln_stream(shared):
    """ane-facts §5.3: eiln's relu MACCfg 0x00111C0C is bypass, KernelMode 1, ReLU, binary
    point 28."""
    data = (shared / EILN / "kernels/activation/relu.bin").read_bytes()
    (task,) = generation("h13").decode_stream(data[:0x274], task_count=1, first_task_words=157)
    word = task.writes()[0x0C804]
    assert word == 0x00111C0C
    values = {f.name: v for f, v in h13.REGISTERS.decode(0x0C804, word)}
    assert values["OpMode"] == 4 and values["KernelMode"] is True
    assert values["NonlinearMode"] == 1 and values["BinaryPoint"] == 28 and values["Bit20"] is True
    assert h13.REGISTERS.field("ne.MACCfg.NonlinearMode")[1].meaning(1) == "relu"


# -- every oracle word survives decode -> encode -----------------------------------------------

@pytest.mark.parametrize("path", COMPILED, **CASE_ID)
def test_oracle_words_round_trip_through_named_fields(path):
    case = load_json(path)
    mod = MAP_OF[case["target"]]
    for td in case["task_descriptors"]:
        for block in td["blocks"].values():
            for address, value in block["words"].items():
                address, value = int(address, 16), int(value, 16)
                named = {mod.REGISTERS.path(address, f): v
                         for f, v in mod.REGISTERS.decode(address, value)}
                assert mod.REGISTERS.encode(named) == {address: value}
        header = [int(w, 16) for w in td["header_words"]]
        assert len(header) == mod.HEADER.size_words + mod.HEADER.extension_words(header)
        named = {mod.HEADER.path(i, f): v for i, f, v in mod.HEADER.decode(header)}
        assert mod.HEADER.encode(named) == header


@pytest.mark.parametrize("gen", maps.GENERATIONS)
def test_fields_tile_each_register_without_overlap(gen):
    mod = maps.load(gen)
    registers = [r for b in mod.REGISTERS.blocks for r in b.registers] + list(mod.HEADER.words)
    for register in registers:
        covered = 0
        for f in register.layout:
            assert 0 <= f.lo <= f.hi <= 31 and f.grade in GRADES, (register.name, f.name)
            mask = ((1 << (f.hi - f.lo + 1)) - 1) << f.lo
            assert covered & mask == 0, (register.name, f.name)
            covered |= mask
        assert covered == 0xFFFFFFFF, register.name


@pytest.mark.parametrize("gen", ["h11", "h13", "h14", "h15", "h16", "h17", "h18"])
def test_header_word_count_agrees_with_the_stream_codec(gen):
    assert maps.load(gen).HEADER.size_words == generation(gen).stream.header_words


# -- spot checks of named fields against what the oracle's MIL asked for ------------------------

def test_h13_header_fields_chain_the_tasks():
    """Census §1.1 [obs], all 98 tasks: TID = index, LNID iff not first, EON iff last,
    NextSize = next size - 1, ENE = ActiveNE + 1 on NE tasks (MACCfg other than bit 20 alone)."""
    checked = 0
    for path in oracle_files("h13"):
        case, tasks = oracle_tasks(path)
        for i, (task, state) in enumerate(states(tasks)):
            get = lambda name: h13.HEADER.get(task.header, name)  # noqa: E731
            last = i == len(tasks) - 1
            assert (get("TID"), get("LNID"), get("EON")) == (i, i > 0, last)
            assert get("NextSize") == (0 if last else tasks[i + 1].size_words - 1)
            ne_task = state[0x0C804] != 0x00100000
            active = h13.REGISTERS.get(state, "common.Cfg.ActiveNE")
            assert get("ENE") == (active + 1 if ne_task else 0)
            checked += 1
    assert checked == 98


def test_h14_header_holds_task_size_and_index():
    for path in oracle_files("h14"):
        case, tasks = oracle_tasks(path)
        for i, (task, td) in enumerate(zip(tasks, case["task_descriptors"])):
            assert h14.HEADER.get(task.header, "TID") == i
            assert h14.HEADER.get(task.header, "TaskSize") == td["size_bytes"] // 4


def single_task_convs(target):
    for path in oracle_files(target):
        case = load_json(path)
        if "kernel" in case["parameters"] and len(case["task_descriptors"]) == 1:
            yield path


@pytest.mark.parametrize("path", list(single_task_convs("h13")) + list(single_task_convs("h14")),
                         **CASE_ID)
def test_conv_fields_hold_the_mil_convolution(path):
    """Kernel, stride, spatial sizes and TF-'same' left/top pad (census §1.1: 98/98 on H13)."""
    case, (task,) = oracle_tasks(path)
    mod = MAP_OF[case["target"]]
    p = case["parameters"]
    k, s, w = p["kernel"], p.get("stride", 1), p["spatial"]
    out = -(-w // s)
    pad = max((out - 1) * s + k - w, 0) // 2 if p.get("pad_type", "same") == "same" else 0
    state = task.writes()
    get = lambda name: mod.REGISTERS.get(state, f"common.{name}", default=None)  # noqa: E731
    dims = [get(n) for n in ("InDim.Win", "InDim.Hin", "OutDim.Wout", "OutDim.Hout")]
    assert dims == [w, w, out, out]
    expected = dict(Kw=k, Kh=k, Sx=s, Sy=s, Px=pad, Py=pad, Ox=1, Oy=1)
    if case["target"] == "h14" and get("ConvCfg.Kw") is None:
        # H14 writes only non-default registers: an unwritten ConvCfg is the 1x1 stride-1 one.
        assert (k, s, pad) == (1, 1, 0)
        return
    assert {n: get(f"ConvCfg.{n}") for n in expected} == expected


SCALAR_ADD_MUL = [p for p in COMPILED if "scalar" in p.stem
                  and load_json(p)["parameters"]["operation"] in ("add", "mul")]


@pytest.mark.parametrize("path", SCALAR_ADD_MUL, **CASE_ID)
def test_scalar_operand_lands_in_pe_bias_or_scale(path):
    case, tasks = oracle_tasks(path)
    mod = MAP_OF[case["target"]]
    (hexfloat,) = re.findall(r"val = fp16\(([^)]+)\)", case["mil"])
    value = float.fromhex(hexfloat)
    op = case["parameters"]["operation"]
    (task,) = tasks
    state = task.writes()
    # H14 omits BiasScale words equal to the default; H13 writes Scale 1.0 / Bias 0 explicitly.
    bias = mod.REGISTERS.get(state, "pe.BiasScale.Bias")
    scale = mod.REGISTERS.get(state, "pe.BiasScale.Scale")
    assert (bias, scale) == ((value, 1.0) if op == "add" else (0.0, value))


@pytest.mark.parametrize("path", [p for p in oracle_files("h13") if "reduce_mean" in p.stem
                                  or "layer_norm" in p.stem], **CASE_ID)
def test_mean_divisor_is_pe_final_scale(path):
    """Census §1.1 [H] 41/41: FinalScale = 1/N in the reducing PE task of a mean or layer_norm."""
    case, tasks = oracle_tasks(path)
    shape = case["parameters"]["shape"]
    axes = case["parameters"].get("axes", [1, 2, 3])
    n = math.prod(shape[a] for a in axes)
    scales = {h13.REGISTERS.get(t.writes(), "pe.FinalScale.FinalScale") for t in tasks}
    assert 1.0 / n in scales


def test_every_h13_task_is_fp16():
    for path in oracle_files("h13"):
        case, tasks = oracle_tasks(path)
        for task in tasks:
            state = task.writes()
            assert h13.REGISTERS.field("common.ChCfg.InFmt")[1].meaning(
                h13.REGISTERS.get(state, "common.ChCfg.InFmt")) == "fp16"


# Census §4: registers whose H14 words equal the paired H13 task's in every pair that writes them.
SAME_AS_H13 = ["common.InDim.Win", "common.InDim.Hin", "common.Cin.Cin", "common.Cout.Cout",
               "common.OutDim.Wout", "common.OutDim.Hout", "common.TileCfg.TileHeight",
               "common.Unk2C.Log2Width", "common.Unk2C.Log2TileHeight", "common.Unk30.Value",
               "common.TaskInfo.NID", "common.DPE.Category", "common.ConvCfg.Kw",
               "common.ConvCfg.Kh", "common.ConvCfg.Sx", "common.ConvCfg.Px",
               "l2.SourceCfg.SourceType", "l2.SourceCfg.Bit24", "l2.SourceChannelStride.Stride",
               "l2.Src1DepthStride.Value", "l2.Src2Base.Value", "l2.ResultBase.Addr",
               "pe.Cfg.OpMode", "pe.Cfg.SecSrc", "pe.BiasScale.Scale", "pe.FinalScale.FinalScale",
               "ne.MACCfg.OpMode", "ne.MACCfg.NonlinearMode", "ne.MACCfg.BinaryPoint",
               "ne.PostScale.PostScale", "tile_dma_dst.Fmt.ZeroPadFirst",
               ("tile_dma_src.Src1Fmt.MemFmt", "tile_dma_src.Fmt.MemFmt"),
               ("tile_dma_src.Src1PlaneStride.PlaneStride", "tile_dma_src.PlaneStride.PlaneStride"),
               "kernel_dma_src.CoeffBfrSize[3].MemBfrSize"]
# ...except these pairs, listed in the census: reduce_max over C (ResultBase differs).
SAME_EXCEPT = {("reduce_max_axes_1", 0, "l2.ResultBase.Addr")}


def paired_tasks():
    for path in oracle_files("h14"):
        twin = path.parent.parent / "h13" / path.name
        if not twin.exists():
            continue
        case14, tasks14 = oracle_tasks(path)
        case13, tasks13 = oracle_tasks(twin)
        if tasks14 and len(tasks14) == len(tasks13):
            yield path.stem, list(states(tasks13)), tasks14


def test_h14_rebased_registers_read_the_same_values_as_h13():
    """The H14 map's offsets (H13 Common shifted past the ConvCfg split, L2/PE/NE re-based) read
    the same field values out of Apple's H14 words as the H13 map reads out of the twin task."""
    compared = 0
    for case, h13_states, tasks14 in paired_tasks():
        for i, ((_, state13), task14) in enumerate(zip(h13_states, tasks14)):
            writes14 = task14.writes()
            for entry in SAME_AS_H13:
                path14, path13 = (entry, entry) if isinstance(entry, str) else entry
                address, _ = h14.REGISTERS.field(path14)
                if address not in writes14 or (case, i, path14) in SAME_EXCEPT:
                    continue
                assert h14.REGISTERS.get(writes14, path14) == h13.REGISTERS.get(state13, path13), \
                    (case, i, path14)
                compared += 1
    assert compared > 300


def test_listing_shows_the_state_a_task_runs_with():
    """H14 writes only what changes, so task 1 of real_div runs with task 0's Common.Cin (64)
    although it writes Cin itself too, and with task 0's NE.MACCfg (LUT) which it never writes."""
    path = next(p for p in oracle_files("h14") if p.stem == "binary_real_div_1x64x1x1")
    case, tasks = oracle_tasks(path)
    (_, state0), (task1, state1) = states(tasks)
    rows = {row.address: row for row in h14.REGISTERS.listing(state1, written=task1.writes())}
    assert set(rows) == set(state0) | set(task1.writes())
    mac = rows[h14.REGISTERS.field("ne.MACCfg.NonlinearMode")[0]]
    assert 0xD04 not in task1.writes() and not mac.written
    assert dict((f.name, v) for f, v in mac.fields)["NonlinearMode"] == 2  # the reciprocal LUT
    assert rows[0x00C].written and h14.REGISTERS.get(state1, "common.Cin.Cin") == 64


# -- encoding by name -------------------------------------------------------------------------

def test_encode_sets_fields_by_name_and_keeps_other_bits():
    regs = h13.REGISTERS
    state = regs.encode({"ne.MACCfg.OpMode": "bypass", "ne.MACCfg.KernelMode": True,
                         "ne.MACCfg.BinaryPoint": 28, "ne.MACCfg.NonlinearMode": "relu",
                         "ne.MACCfg.Bit20": 1})
    assert state == {0x0C804: 0x00111C0C}  # eiln's relu word (ane-facts §5.3)
    state = regs.encode({"ne.MACCfg.NonlinearMode": "lut"}, base=state)
    assert state == {0x0C804: 0x00121C0C}  # its LUT sibling
    half_scale = regs.encode({"pe.BiasScale.Scale": 0.5, "pe.BiasScale.Bias": 0.0})
    assert half_scale == {0x08804: 0x38000000}
    assert regs.encode({"pe.PreScale.PreScale": -1.0}) == {0x08808: 0xBC000000}  # old sub (§2.7.3)
    assert regs.get({0x0880C: 0x3C800000}, "pe.FinalScale.FinalScale") == 1 / 64


@pytest.mark.parametrize("path, value", [
    ("common.ConvCfg.Kw", 32),            # 5 bits
    ("common.ConvCfg.Kw", -1),
    ("ne.MACCfg.NonlinearMode", "tanh"),  # no such encoding
    ("ne.PostScale.PostScale", 1e6),      # overflows fp16
    ("pe.BiasScale.Bias", "0.5"),
    ("common.NoSuch.Field", 1),
    ("common.ConvCfg", 1),
    ("nosuch.ConvCfg.Kw", 1),
])
def test_encode_rejects_what_does_not_fit(path, value):
    with pytest.raises(UnsupportedError) as err:
        h13.REGISTERS.encode({path: value})
    assert str(err.value).startswith(f"{path}: ")  # one line: where, then the rule broken


def test_decode_and_get_refuse_unknown_addresses_and_unwritten_registers():
    with pytest.raises(UnsupportedError, match="no register block"):
        h13.REGISTERS.decode(0x30000, 0)
    with pytest.raises(UnsupportedError, match="never written"):
        h13.REGISTERS.get({}, "common.InDim.Win")
    assert h13.REGISTERS.get({}, "common.InDim.Win", default=None) is None
    assert h13.REGISTERS.lookup(0x30000) is None


def test_h11_blocks_have_no_address_and_h12_has_no_map():
    h11 = maps.load("h11")
    assert all(b.base is None for b in h11.REGISTERS.blocks)
    with pytest.raises(UnsupportedError, match="address"):
        h11.REGISTERS.field("common.ConvCfg.Kh")
    with pytest.raises(UnsupportedError, match="h12"):
        maps.load("h12")
