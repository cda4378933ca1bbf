"""`coreml2hwx inspect` on Apple's programs.

Ground truth: the oracle JSON files (Apple's compiler, decoded upstream), tinygrad's Apple-compiled
.hwx files with the net.plist they were compiled from, eiln's raw H13 streams.
"""

from __future__ import annotations

import json
import plistlib
import subprocess
import sys

import pytest

from coreml2hwx.cli import main
from coreml2hwx.hwx import load_program
from coreml2hwx.report.jsonview import program_from_json, program_to_json
from coreml2hwx.target import generation
from tests.conftest import PLIST_PAIRS, load_json, oracle_files, shared_files

COMPILED = [p for t in ("h13", "h14") for p in oracle_files(t) if load_json(p)["task_descriptors"]]
TINYGRAD = "artifacts/tinygrad_tinygrad"



@pytest.mark.parametrize("path", COMPILED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_json_view_reproduces_every_oracle_task(path):
    """Oracle -> Program -> oracle-shaped JSON gives back Apple's task descriptors exactly,
    block names and bases included (they come from our register maps)."""
    case = load_json(path)
    gen = generation(case["target"])
    ours = program_to_json(program_from_json(case, gen), gen)
    assert ours["task_descriptors"] == [{k: td[k] for k in ("blocks", "header_words", "records",
                                                              "size_bytes")}
                                        for td in case["task_descriptors"]]
    assert [{k: d[k] for k in ("binding", "element_code", "shape", "strides", "total_bytes")}
            for d in ours["tensor_descriptors"]] == case["tensor_descriptors"]


@pytest.mark.parametrize("hwx_path", sorted(PLIST_PAIRS))
def test_common_dims_agree_with_net_plist(hwx_path, shared):
    program = load_program(shared / TINYGRAD / hwx_path)
    net_plist = plistlib.loads((shared / TINYGRAD / PLIST_PAIRS[hwx_path]).read_bytes())
    net = net_plist[net_plist["Networks"][0]]
    regs = generation("h13").maps.REGISTERS
    inputs = [net[name] for name in net["Inputs"]]
    units = [net[name] for name in net["Units"]]
    for task, state in program.states():
        win, hin = regs.get(state, "common.InDim.Win"), regs.get(state, "common.InDim.Hin")
        cin = regs.get(state, "common.Cin.Cin")
        assert (win, hin) in {(i["InputWidth"], i["InputHeight"]) for i in inputs}
        # concat copies one input per task; every other program has one task over its inputs
        assert cin in {i["InputChannels"] for i in inputs}
        declared_out = [u["OutputChannels"] for u in units if "OutputChannels" in u]
        if declared_out:  # a conv: Cout as the plist declares (GOC bias units add none)
            assert regs.get(state, "common.Cout.Cout") == declared_out[0]
    if net["Units"] and units[0]["Type"] == "Concat":
        assert len(program.tasks) == len(inputs)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "coreml2hwx", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_inspect_lists_every_apple_hwx(shared):
    programs = [p for p in shared_files(f"{TINYGRAD}/**/*.hwx*") if "debug" not in p.parts]
    assert len(programs) >= 17
    for path in programs:
        assert main(["inspect", str(path)]) == 0


def test_inspect_json_of_an_apple_hwx(shared, capsys):
    path = shared / TINYGRAD / "extra/accel/ane/ops/sigmoid.hwx"
    assert main(["inspect", "--json", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["target"] == "h13" and len(data["task_descriptors"]) == 1
    assert data["program_descriptor"]["task_count"] == 1
    assert data["inputs"] == [{"name": "image", "shape": [1, 1, 1, 77], "dtype": "float16"}]
    # the sigmoid LUT is the whole 128-byte constant section (lut-rules.md §1)
    assert data["constant_section"]["size"] == 128


def test_inspect_raw_stream_and_state(shared, capsys):
    stream = shared / "artifacts/eiln_ane/f182ece390b4/anec/kernels/activation/softmax.bin"
    assert main(["inspect", "--raw", "--target", "h13", "--state", str(stream)]) == 0
    out = capsys.readouterr().out
    assert out.count("\ntask ") == 5


def test_diff_names_registers_and_fields(shared):
    a = shared / "oracles/h13/binary_add_1x64x8x8.json"
    b = shared / "oracles/h13/binary_sub_1x4096x1x1.json"
    same = run_cli("inspect", "--diff", a, a)
    assert same.returncode == 0 and same.stdout.strip() == "no differences"
    diff = run_cli("inspect", "--diff", a, b)
    assert diff.returncode == 1
    # add -> sub: PE.Cfg SecSrc 2 -> 3 (census: sub is PE.Cfg 0xC0000); channels 64 -> 4096
    assert "pe.Cfg: 0x00080000 -> 0x000c0000 (SecSrc 2->3)" in diff.stdout
    assert "common.Cin: 0x00000040 -> 0x00001000 (Cin 64->4096)" in diff.stdout


@pytest.mark.parametrize("content", [b"", b"\xce\xfa\xef\xbe" + bytes(8), b"not a program at all"])
def test_bad_files_give_one_line(tmp_path, content):
    bad = tmp_path / "bad.hwx"
    bad.write_bytes(content)
    result = run_cli("inspect", bad)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize("case", ["env_mm_r2rr_m16_k2048_n2048_tx0_ty0", "unary_relu_c64",
                                  "layer_norm_1x512x1x1", "conv_k3_c64_n64_s8_bias0"])
def test_h14_summary_reads_left_out_registers_as_their_h13_twins(shared, case):
    """An H14 task leaves registers at their reset values out (env_mm_r2rr leaves out Cout = 16);
    the plain-words summary must give the dimensions Apple's H13 twin of the same MIL states."""
    from coreml2hwx.report.summary import describe

    lines = {}
    for target in ("h13", "h14"):
        gen = generation(target)
        program = program_from_json(load_json(shared / f"oracles/{target}/{case}.json"), gen)
        # the engine and the dimensions (H14 never writes ChCfg, so no "fp16 -> fp16" part)
        lines[target] = [[part for part in describe(gen, task, state)[0].split("; ")
                          if "fp16" not in part] for task, state in program.states()]
    assert lines["h14"] == lines["h13"]
