"""The simulator on Apple's stride-2 convolutions: zero-skipping ("sparse") weight planes.

Ground truth: the six stride-2 oracles in ../shared/oracles/h13 - Apple's registers, and the sha256
of Apple's constant section.  The section is rebuilt from the weights Apple compiled (oracle README,
"Regenerating the weights") and used only once its sha256 equals Apple's, so the simulator reads
Apple's bytes (which code produced them does not matter once the hash matches; the simulator's
reader, coreml2hwx/sim/sparse.py, shares no code with the encoder's packer).  The reference is the
MIL conv computed by torch in float64.

Tolerance (CONV): fp32 accumulation rounded once to fp16 - half an ulp + K * 2^-24 * sum |w x|.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from coreml2hwx.errors import SimulationError
from coreml2hwx.sim import run_program
from coreml2hwx.sim.sparse import read_depthwise
from coreml2hwx.target.h13.sparse import pack_sparse
from tests.sim.support import compiled_tensor, mil_inputs, oracle, oracle_program
from tests.sim.tolerance import assert_close, fp16
from tests.target.upstream_depthwise import DEPTHWISE
from tests.target.upstream_depthwise import compiled_weights as depthwise_weights

STRIDE2 = [
    "conv_probe_k1_c128_n256_s16_st2_g1_bias0_valid",
    "conv_probe_k1_c512_n512_s16_st2_g4_bias0_same",
    "env_conv_k1_c64_n64_s16_st2_g1_bias0",
    "env_conv_k3_c128_n128_s16_st2_g1_bias1",
    "env_conv_k3_c64_n64_s16_st2_g1_bias0",
    "env_conv_k3_c64_n64_s16_st2_g4_bias1",
]


def compiled_weights(case):
    p = case["parameters"]
    groups, k = p.get("groups", 1), p["kernel"]
    w = compiled_tensor(case, (p["output_channels"], p["input_channels"] // groups, k, k))
    b = compiled_tensor(case, (p["output_channels"],)) if p["bias"] else None
    return w, b


def lanes_of(case) -> int:
    td = case["task_descriptors"][0]
    conv_cfg = int(td["blocks"]["0x00000"]["words"]["0x0001c"], 16)
    return 1 << (conv_cfg >> 10 & 7)  # ConvCfg.OCGSize


def apple_section(case) -> bytes:
    w, b = compiled_weights(case)
    data, _ = pack_sparse(w, b, lanes=lanes_of(case), groups=case["parameters"].get("groups", 1))
    want = case["constant_section"]
    assert len(data) == want["size"] and hashlib.sha256(data).hexdigest() == want["sha256"], \
        "the rebuilt constant section is not Apple's"
    return data


def conv_reference(case, x):
    """torch conv2d in float64 (MIL pad_type same: the extra pad row/column at the end), and the
    magnitude sum |w| |x| for the accumulation bound."""
    w, b = compiled_weights(case)
    p = case["parameters"]
    k, stride = p["kernel"], p["stride"]
    xt = torch.tensor(np.asarray(x, np.float64))
    if p.get("pad_type", "same") == "same":
        h = x.shape[2]
        total = max((-(-h // stride) - 1) * stride + k - h, 0)
        xt = torch.nn.functional.pad(xt, (total // 2, total - total // 2) * 2)
    args = dict(stride=stride, groups=p.get("groups", 1))
    wt = torch.tensor(np.asarray(w, np.float64))
    bt = None if b is None else torch.tensor(np.asarray(b, np.float64))
    y = torch.nn.functional.conv2d(xt, wt, bt, **args).numpy()
    mag = torch.nn.functional.conv2d(xt.abs(), wt.abs(), **args).numpy()
    return y, w[0].size * mag


def run(case, section, seed=0):
    program = oracle_program(case, section)
    ((name, shape),) = mil_inputs(case["mil"])
    x = fp16(np.random.default_rng(seed).standard_normal(shape))
    (out,) = run_program(program, {name: x}).values()
    return x, out


@pytest.mark.parametrize("name", STRIDE2)
def test_apple_stride2_program_computes_its_conv(name, shared):
    case = oracle(name)
    x, out = run(case, apple_section(case))
    ref, bound = conv_reference(case, x)
    assert_close(out, ref.reshape(out.shape), ulps=0.5,
                 atol=2.0 ** -24 * bound.reshape(out.shape), what=name)


def test_header_values_reach_their_taps(shared):
    """The weights are mostly 0.5; the weight file's header halfwords (1, 2, 0xBEEF, 0xDEAD, the
    length, 128, zeros) sit in output channel 0's first taps.  Feeding a one-hot input picks single
    taps, so a slot read into the wrong tap or lane shows up even where 0.5 would hide it."""
    case = oracle("env_conv_k3_c64_n64_s16_st2_g1_bias0")
    program = oracle_program(case, apple_section(case))
    w, _ = compiled_weights(case)
    ((name, shape),) = mil_inputs(case["mil"])
    for ci, ky, kx in [(0, 0, 0), (0, 0, 2), (3, 1, 1), (3, 2, 0), (3, 2, 2), (4, 0, 0)]:
        x = np.zeros(shape, np.float16)
        x[0, ci, 2 + ky, 2 + kx] = 1.0  # output pixel (1, 1) reads input (2 + ky, 2 + kx)
        (out,) = run_program(program, {name: x}).values()
        got = np.asarray(out, np.float64).reshape(1, 64, 8, 8)[0, :, 1, 1]
        assert np.array_equal(got, np.asarray(w[:, ci, ky, kx], np.float64)), (ci, ky, kx)


def _corrupt(section: bytes, offset: int, value: int) -> bytes:
    data = bytearray(section)
    data[offset] = value
    return bytes(data)


def _with_extra_value(section: bytes, mask_at: int, mask: int) -> bytes:
    """Chunk 0 with the mask byte at `mask_at` replaced and one more value (1.0) after it; the
    body count grows by 2 and the section keeps its length (chunk 0 and 15 end in padding)."""
    data = bytearray(section)
    data[mask_at] = mask
    data[mask_at + 1:mask_at + 1] = b"\x00\x3c"
    data[0:2] = (int.from_bytes(section[:2], "little") + 2).to_bytes(2, "little")
    return bytes(data[:len(section)])


def test_a_value_in_the_lead_slots_stops_the_run(shared):
    case = oracle("env_conv_k1_c64_n64_s16_st2_g1_bias0")
    section = apple_section(case)
    assert section[2] == 0  # chunk 0: u16 count, then the lead group's mask (Apple's byte: 0)
    with pytest.raises(SimulationError, match="lead slots"):
        run(case, _with_extra_value(section, 2, 0x01))


def test_a_wrong_byte_count_stops_the_run(shared):
    case = oracle("env_conv_k3_c64_n64_s16_st2_g1_bias0")
    section = apple_section(case)
    count = int.from_bytes(section[:2], "little")
    with pytest.raises(SimulationError, match="declares|runs past|ends after"):
        run(case, _corrupt(section, 0, (count - 2) & 0xFF))


def test_an_unused_position_holding_a_value_stops_the_run(shared):
    """1x1 at 4 lanes: each input channel has 16 slots, the real lanes at slots 8..11 of its
    window; setting bit 4 of the second mask (slot 12: an empty phase) must be refused."""
    case = oracle("env_conv_k1_c64_n64_s16_st2_g1_bias0")
    section = apple_section(case)
    assert section[3] == 0x0F
    with pytest.raises(SimulationError, match="no tap or lane uses"):
        run(case, _with_extra_value(section, 3, 0x1F))


def test_oracle_accounting_lists_these_cases():
    from tests.sim.test_sim_oracles import RUN_IN_TEST_SIM_SPARSE
    assert RUN_IN_TEST_SIM_SPARSE <= set(STRIDE2)


# -- a result kept in L2 channel-dense (Common 0x30 = 0x400 with ResultType 0) -------------------
# Ground truth: upstream oracle norm_softmax_an1_1x8x1x64 (joshuaswarren/mil-hwx-compiler,
# research/oracles/h13/norm_softmax_an1_1x8x1x64.json at 9cb58d571cd7, Apple's compiler on the MIL
# below; not in ../shared).  These are its words that carry the layout; our encoder emits them,
# so the program below is Apple's in every word listed, and the simulator must compute softmax.
SOFTMAX_MIL = """program(1.3)
[buildInfo = dict<string, string>({})]
{
  func main<ios18>(tensor<fp16, [1, 8, 1, 64]> x) {
    int32 axis = const()[name = string("axis"), val = int32(-1)];
    tensor<fp16, [1, 8, 1, 64]> y = softmax(x = x, axis = axis)[name = string("y")];
  } -> (y);
}
"""
APPLE_SOFTMAX_WORDS = [  # per task: Common 0x30 / Cfg, L2 source + result config and bases, PE
    {"0x00030": 0x400, "0x00034": 0x51, "0x04800": 0x4, "0x04830": 0x00500170, "0x04834": 0,
     "0x08800": 0x2, "0x17800": 0xC0},
    {"0x00030": 0x210, "0x00034": 0x31, "0x04820": 0x10, "0x04830": 0x140, "0x04834": 0x10,
     "0x08800": 0x000C0000},
    {"0x00030": 0, "0x00034": 0x00191101, "0x04830": 0x140, "0x04834": 0x10},
    {"0x00030": 0x400, "0x00034": 0x51, "0x04830": 0x140, "0x04834": 0, "0x08800": 0x1000},
    {"0x00030": 0x101, "0x00034": 0x31, "0x04800": 0, "0x0481c": 0x10, "0x04830": 0x14A,
     "0x08800": 0x00080004, "0x17800": 0x040000C1},
]


def test_softmax_keeping_channel_dense_results_in_l2():
    from coreml2hwx.frontend import parse_mil_text
    from coreml2hwx.report.jsonview import task_to_json
    from coreml2hwx.target import generation
    from coreml2hwx.target.h13 import lower

    program = lower(parse_mil_text(SOFTMAX_MIL, None))
    gen = generation("h13")
    assert len(program.tasks) == len(APPLE_SOFTMAX_WORDS)
    for task, apple in zip(program.tasks, APPLE_SOFTMAX_WORDS):
        blocks = task_to_json(task, gen)["blocks"].values()
        words = {a: int(v, 16) for b in blocks for a, v in b["words"].items()}
        assert {a: words.get(a) for a in apple} == apple
    x = fp16(np.random.default_rng(3).standard_normal((1, 8, 1, 64)) * 3)
    (out,) = run_program(program, {"x": x}).values()
    e = np.exp(np.float64(x) - np.float64(x).max(-1, keepdims=True))
    # exp2 table and fp16(log2 e) as in test_sim_oracles' SOFTMAX_TOL
    assert_close(out, (e / e.sum(-1, keepdims=True)).reshape(out.shape), atol=1e-6, rtol=5e-3,
                 what="softmax 1x8x1x64")


# -- depthwise stride-2: four upstream Apple sections (tests/target/upstream_depthwise.py) ------
# Apple's bytes are rebuilt and used only once their sha256 equals the one Apple's compiler
# produced; the reader (sim/sparse.read_depthwise) is then checked against the weights compiled.

class _Fetch:
    """The reader's view of the coefficient channels (kernel.Chunks' take / align / f.fail)."""

    class _F:
        @staticmethod
        def fail(message):
            return SimulationError(message)

    def __init__(self, data: bytes, ranges):
        self.f = self._F()
        self.data = {i: data[o:o + s] for i, (o, s) in enumerate(ranges)}
        self.pos = {i: 0 for i in self.data}

    def take(self, chunk, nbytes):
        start = self.pos[chunk]
        if start + nbytes > len(self.data[chunk]):
            raise SimulationError(f"channel {chunk} ends")
        self.pos[chunk] = start + nbytes
        return self.data[chunk][start:start + nbytes]

    def align(self, chunk):
        self.pos[chunk] = -(-self.pos[chunk] // 64) * 64


def _apple_depthwise(name):
    case = DEPTHWISE[name]
    w, b = depthwise_weights(case)
    data, ranges = pack_sparse(w, b, lanes=1, groups=case["channels"], hout=case["hout"])
    assert hashlib.sha256(data).hexdigest() == case["sha256"], "not Apple's section"
    return case, w, b, data, ranges


@pytest.mark.parametrize("name", sorted(DEPTHWISE))
def test_depthwise_reader_gives_the_compiled_weights(name):
    case, w, b, data, ranges = _apple_depthwise(name)
    fetch = _Fetch(data, ranges)
    k = case["kernel"]
    got_w, got_b = read_depthwise(fetch, case["channels"], (k, k), case["bias"])
    assert np.array_equal(got_w, w.reshape(case["channels"], k * k).astype(np.float32))
    if b is None:
        assert got_b is None
    else:
        assert np.array_equal(got_b, b.astype(np.float32))
    assert all(fetch.pos[i] == len(fetch.data[i]) for i in fetch.data)  # every byte accounted for


def test_depthwise_value_in_the_lead_slots_stops_the_reader():
    case, _, _, data, ranges = _apple_depthwise("conv_probe_k3_c64_n64_s16_st2_g64_bias0_same")
    assert data[2] == 0  # channel 0: u16 count, then the lead group's mask (Apple's byte: 0)
    bad = bytearray(data)
    bad[2] = 0x01  # claims a value in lead slot 0
    with pytest.raises(SimulationError, match="layout not understood|runs past"):
        read_depthwise(_Fetch(bytes(bad), ranges), 64, (3, 3), False)


def test_depthwise_record_of_unknown_length_stops_the_reader():
    name = "encoder_conv_idx_c256_n256_k3x3_s2_g256_bias1_same_x1500x64"
    case, _, _, data, ranges = _apple_depthwise(name)
    bad = bytearray(data)
    bad[2:4] = (int.from_bytes(data[2:4], "little") - 3).to_bytes(2, "little")  # [bias] [count]
    with pytest.raises(SimulationError):
        read_depthwise(_Fetch(bytes(bad), ranges), 256, (3, 3), True)
