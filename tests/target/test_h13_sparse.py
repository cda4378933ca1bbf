"""H13 stride-2 convolutions: Apple's zero-skipping ("sparse") kernel packing and its registers.

Ground truth: the six stride-2 programs in ../shared/oracles/h13 - the constant-section sha256 and
the KernelDMASrc chunk registers (CoeffBaseAddr / CoeffBfrSize) Apple's compiler wrote for the
weights the oracle README's rule rebuilds; whole-program equality is in test_h13_conv.py.  The
last tests compile stride-2 shapes no oracle shows and compare the simulated program with torch:
they check that the rule is applied consistently, not that Apple would agree.  Depthwise stride-2:
the sha256 and chunk sizes of four upstream Apple programs (tests/target/upstream_depthwise.py).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.ir import Graph
from coreml2hwx.sim import run_program
from coreml2hwx.target.h13 import lower
from coreml2hwx.target.h13.sparse import (depthwise_columns, pack_depthwise, pack_sparse,
                                          positions)
from tests.conftest import load_json, oracle_files
from tests.target.upstream_depthwise import DEPTHWISE, compiled_weights

STRIDE2 = [load_json(p) for p in oracle_files("h13")
           if load_json(p)["parameters"].get("stride") == 2 and not load_json(p)["error"]]
KDMA = "0x1f800"


def _id(case):
    return case["case"]


def _words(case) -> dict[int, int]:
    (td,) = case["task_descriptors"]
    return {int(a, 16): int(v, 16) for b in td["blocks"].values() for a, v in b["words"].items()}


def _compiled_weights(case):
    """The tensors Apple compiled (oracle README: the first elements of the 128-byte-header file
    followed by fp16 0.5 halfwords; a bias is the first Cout halfwords of the same file)."""
    p = case["parameters"]
    payload = b"\x00\x38" * (case["weights"]["payload_bytes"] // 2)
    head = bytearray(128)
    head[0:8] = np.array([1, 2], "<u4").tobytes()
    head[64:84] = (np.array([0xDEADBEEF], "<u4").tobytes()
                   + np.array([len(payload), 128], "<u8").tobytes())
    halves = np.frombuffer(bytes(head) + payload, np.float16)
    k, groups = p["kernel"], p.get("groups", 1)
    shape = (p["output_channels"], p["input_channels"] // groups, k, k)
    w = halves[:int(np.prod(shape))].reshape(shape)
    b = halves[:p["output_channels"]] if p["bias"] else None
    return w, b


def _lanes(case) -> int:
    return 1 << (_words(case)[0x1C] >> 10 & 7)  # ConvCfg.OCGSize


def test_every_stride_two_oracle_is_here():
    assert len(STRIDE2) == 6


@pytest.mark.parametrize("case", STRIDE2, ids=_id)
def test_packed_section_is_apples(case):
    w, b = _compiled_weights(case)
    data, _ = pack_sparse(w, b, lanes=_lanes(case), groups=case["parameters"].get("groups", 1))
    want = case["constant_section"]
    assert len(data) == want["size"]
    assert hashlib.sha256(data).hexdigest() == want["sha256"]


@pytest.mark.parametrize("case", STRIDE2, ids=_id)
def test_chunks_are_apples_back_to_back(case):
    w, b = _compiled_weights(case)
    _, chunks = pack_sparse(w, b, lanes=_lanes(case), groups=case["parameters"].get("groups", 1))
    words = _words(case)
    assert [o for o, _ in chunks] == [words[0x1F848 + 4 * i] for i in range(16)]
    assert [s for _, s in chunks] == [words[0x1F888 + 4 * i] for i in range(16)]


@pytest.mark.parametrize("case", STRIDE2, ids=_id)
def test_sparse_flags_are_set(case):
    words = _words(case)
    assert words[0xC800] >> 8 & 1 == 1  # NE.KernelCfg.SparseFmt (census: 0x182 on 6/6)
    assert words[0x1F800] == 0x60  # KDMA master: enable + sparse (census: 6/6)


def test_tap_positions_follow_the_stride_phases():
    """3x3: phase (0,0) taps 0, 2, 6, 8 at positions 0-3, phase (0,1) taps 1, 7 at 4 and 6,
    phase (1,0) taps 3, 5 at 8 and 9, tap 4 at 12 (pinned by env_conv_k3_c64_n64's 128-byte
    prefix hash and the full hashes above)."""
    assert positions(3) == ([0, 4, 1, 8, 12, 9, 2, 6, 3], 16)
    assert positions(1) == ([0], 4)


def test_both_zeros_are_skipped():
    w = np.full((64, 64, 1, 1), 0.5, np.float16)
    plus, minus = w.copy(), w.copy()
    plus[5, 7] = 0.0
    minus[5, 7] = -0.0
    dense, _ = pack_sparse(w, None, lanes=4)
    assert pack_sparse(plus, None, lanes=4) == pack_sparse(minus, None, lanes=4)
    assert len(pack_sparse(plus, None, lanes=4)[0]) <= len(dense)


# -- refusals ---------------------------------------------------------------------------------------

def _conv_graph(cin, cout, kernel, stride=2, groups=1, side=16, bias=False, seed=0):
    rng = np.random.default_rng(seed)
    g = Graph("t")
    g.add_input("x", (1, cin, side, side), "float16")
    w = rng.standard_normal((cout, cin // groups, kernel, kernel)).astype(np.float16)
    w[np.abs(w) < 0.3] = 0  # real zeros: the mask bits matter
    b = rng.standard_normal(cout).astype(np.float16) if bias else None
    out = -(-side // stride)
    total = max((out - 1) * stride + kernel - side, 0)
    pads = (total // 2, total - total // 2, total // 2, total - total // 2)
    g.add_op("conv", ["x"], ["y"], {"weight": w, "bias": b, "strides": (stride, stride),
                                   "dilations": (1, 1), "pads": pads, "groups": groups})
    g.set_outputs(["y"])
    return g, w, b, pads


def test_stride_three_is_refused():
    with pytest.raises(UnsupportedError, match="stride 3.*strides 1 and 2"):
        lower(_conv_graph(64, 64, 3, stride=3)[0])


def test_two_planes_per_chunk_are_refused():
    """48 outputs per group = planes of 2 lanes and of 1 lane on each chunk: no Apple program."""
    with pytest.raises(UnsupportedError, match="48 output channels per group is not a whole number"):
        lower(_conv_graph(96, 96, 3, groups=2)[0])


def test_body_past_the_16_bit_count_is_refused():
    with pytest.raises(UnsupportedError, match="16-bit count"):
        lower(_conv_graph(512, 256, 3, side=16)[0])


# -- shapes beyond the oracles: encoder and simulator against torch ------------------------------

SHAPES = [  # cin, cout, kernel, groups, side, bias
    (3, 32, 3, 1, 32, True),      # MobileNet stem: 2 lanes (slot columns 4: extrapolated)
    (64, 128, 3, 1, 16, False),   # ResNet downsample 3x3
    (64, 128, 1, 1, 16, True),    # ResNet downsample 1x1
    (64, 64, 3, 2, 16, True),     # grouped, 32 outputs per group
    (32, 48, 3, 1, 16, False),    # 48 outputs: two tasks of one plane each
    (64, 64, 3, 64, 32, True),    # depthwise: one zero-skipping record per channel (biased,
                                  # Hout 16: 2 slot columns under either reading)
    (32, 32, 1, 32, 16, False),   # depthwise 1x1
]


@pytest.mark.parametrize("cin,cout,kernel,groups,side,bias", SHAPES)
def test_other_shapes_compute_the_conv(cin, cout, kernel, groups, side, bias):
    g, w, b, pads = _conv_graph(cin, cout, kernel, groups=groups, side=side, bias=bias)
    program = lower(g)
    x = np.random.default_rng(1).standard_normal((1, cin, side, side)).astype(np.float16)
    (out,) = run_program(program, {"x": x}).values()
    xt = torch.nn.functional.pad(torch.tensor(x, dtype=torch.float64),
                                 (pads[2], pads[3], pads[0], pads[1]))
    ref = torch.nn.functional.conv2d(xt, torch.tensor(w, dtype=torch.float64),
                                     None if b is None else torch.tensor(b, dtype=torch.float64),
                                     stride=2, groups=groups).numpy()
    mag = torch.nn.functional.conv2d(xt.abs(), torch.tensor(np.abs(w), dtype=torch.float64),
                                     stride=2, groups=groups).numpy()
    got = np.asarray(out, np.float64).reshape(ref.shape)
    limit = np.abs(ref) * 2.0 ** -11 + w[0].size * 2.0 ** -24 * mag + 2.0 ** -24
    assert np.all(np.abs(got - ref) <= limit)


def test_two_by_two_stride_two_is_refused():
    """A 2x2 kernel fills all four phase positions; the last would fall past the stream's end."""
    with pytest.raises(UnsupportedError, match="2x2 stride-2 kernel"):
        lower(_conv_graph(64, 64, 2)[0])


# -- depthwise: four upstream Apple sections (tests/target/upstream_depthwise.py) ---------------



@pytest.mark.parametrize("name", sorted(DEPTHWISE))
def test_depthwise_section_is_apples(name):
    case = DEPTHWISE[name]
    w, b = compiled_weights(case)
    data, chunks = pack_sparse(w, b, lanes=1, groups=case["channels"], hout=case["hout"])
    assert len(data) == case["size"]
    assert hashlib.sha256(data).hexdigest() == case["sha256"]
    # CoeffBfrSize: 16 equal chunks, CoeffBaseAddr back to back (Apple's KernelDMASrc words)
    assert chunks == [(i * case["chunk"], case["chunk"]) for i in range(16)]


@pytest.mark.parametrize("name", sorted(DEPTHWISE))
def test_depthwise_columns_are_the_ones_apple_used(name):
    """The slot columns Apple used (4 at Hout 8, 2 at Hout 750): the other one misses the hash."""
    case = DEPTHWISE[name]
    w, b = compiled_weights(case)
    other = 6 - depthwise_columns(case["hout"], b is not None)
    data, _ = pack_depthwise(w, b, columns=other)
    assert hashlib.sha256(data).hexdigest() != case["sha256"]


def test_depthwise_shapes_the_evidence_does_not_settle_are_refused():
    """4 slot columns at Hout 8 (biased or not), 2 biased at Hout 750: a bias-free Hout-16 kernel
    would need to know whether Hout or the channel count sets them."""
    with pytest.raises(UnsupportedError, match="not pinned"):
        lower(_conv_graph(64, 64, 3, groups=64, side=32, bias=False)[0])


def test_biased_depthwise_at_height_8_packs_4_columns_like_apple():
    """Ground truth: upstream conv_probe_k1_c256_n256_s16_st2_g256_bias1_same (Apple's kernel DMA:
    16 chunks of 0xc0 bytes; 2 columns would make them 0x80).  The whole section's hash is checked
    in test_h13_conv_grid.py."""
    w, b = np.full((256, 1, 1, 1), np.float16(0.5)), np.full(256, np.float16(0.5))
    _, ranges = pack_sparse(w, b, lanes=1, groups=256, hout=8)
    assert [size for _, size in ranges] == [0xc0] * 16


def test_depthwise_pack_needs_the_output_height():
    w = np.ones((16, 1, 3, 3), np.float16)
    with pytest.raises(ValueError, match="output height"):
        pack_sparse(w, None, lanes=1, groups=16)


# Words of Apple's two depthwise probe programs (upstream JSON "task_descriptors"): Common.ConvCfg,
# GroupConvCfg (UnicastEn, UnicastCin 1), Cfg, NE.KernelCfg (SparseFmt), MACCfg, CoeffBfrSize[0].
APPLE_PROBE_WORDS = {
    "conv_probe_k1_c64_n64_s16_st2_g64_bias0_same": {
        0x1C: 0x50014021, 0x24: 0x14001, 0x34: 0x00244405, 0xC800: 0x182, 0xC804: 0x00101C00,
        0x1F888: 0x40},
    "conv_probe_k3_c64_n64_s16_st2_g64_bias0_same": {
        0x1C: 0x50014063, 0x24: 0x14001, 0x34: 0x00244405, 0xC800: 0x182, 0xC804: 0x00101C00,
        0x1F888: 0x80},
}


@pytest.mark.parametrize("name", sorted(APPLE_PROBE_WORDS))
def test_depthwise_probe_lowers_to_apples_program(name, monkeypatch):
    """With the refusal lifted (it waits for the simulator, see sparse.refusal), the encoder's
    program for Apple's probe has Apple's constant section and key words."""
    monkeypatch.setattr("coreml2hwx.target.h13.sparse.refusal", lambda *a, **k: None)
    case = DEPTHWISE[name]
    w, _ = compiled_weights(case)
    k = case["kernel"]
    g = Graph("t")
    g.add_input("x", (1, 64, 16, 16), "float16")
    pads = (0, 1, 0, 1) if k == 3 else (0, 0, 0, 0)  # MIL pad_type same at stride 2
    g.add_op("conv", ["x"], ["y"], {"weight": np.array(w), "bias": None, "strides": (2, 2),
                                   "dilations": (1, 1), "pads": pads, "groups": 64})
    g.set_outputs(["y"])
    program = lower(g)
    assert hashlib.sha256(bytes(program.constants)).hexdigest() == case["sha256"]
    got = program.tasks[0].writes()
    assert {a: got.get(a) for a in APPLE_PROBE_WORDS[name]} == APPLE_PROBE_WORDS[name]


@pytest.mark.parametrize("name", sorted(APPLE_PROBE_WORDS))
def test_simulator_runs_apples_depthwise_section(name, monkeypatch):
    """The program above holds Apple's exact constant bytes (sha256 checked there and here); the
    simulator, reading them with sim/sparse.read_depthwise, computes the depthwise convolution."""
    monkeypatch.setattr("coreml2hwx.target.h13.sparse.refusal", lambda *a, **k: None)
    case = DEPTHWISE[name]
    w, _ = compiled_weights(case)
    w = np.array(w)
    k = case["kernel"]
    pads = (0, 1, 0, 1) if k == 3 else (0, 0, 0, 0)
    g = Graph("t")
    g.add_input("x", (1, 64, 16, 16), "float16")
    g.add_op("conv", ["x"], ["y"], {"weight": w, "bias": None, "strides": (2, 2),
                                   "dilations": (1, 1), "pads": pads, "groups": 64})
    g.set_outputs(["y"])
    program = lower(g)
    assert hashlib.sha256(bytes(program.constants)).hexdigest() == case["sha256"]
    x = np.random.default_rng(3).standard_normal((1, 64, 16, 16)).astype(np.float16)
    (out,) = run_program(program, {"x": x}).values()
    xt = torch.nn.functional.pad(torch.tensor(x, dtype=torch.float64),
                                 (pads[2], pads[3], pads[0], pads[1]))
    wt = torch.tensor(w.astype(np.float64))
    ref = torch.nn.functional.conv2d(xt, wt, stride=2, groups=64).numpy()
    mag = torch.nn.functional.conv2d(xt.abs(), wt.abs(), stride=2, groups=64).numpy()
    got = np.asarray(out, np.float64).reshape(ref.shape)
    limit = np.abs(ref) * 2.0 ** -11 + k * k * 2.0 ** -24 * mag + 2.0 ** -24
    assert np.all(np.abs(got - ref) <= limit)
