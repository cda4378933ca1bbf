"""Whole-model lowering on H13: chained intermediates, output-channel rounds, clip, fused relu.

Ground truth: numpy / torch for the values (the simulator runs our programs; it is validated on
Apple's programs in tests/sim), tinygrad's Apple-compiled conv.hwx (../shared/artifacts) for the
register form of a conv with fewer than 16 outputs, eiln's kernels (via the fact sheet) for the
scratch write's DMA configuration.
"""

from __future__ import annotations

import numpy as np
import pytest

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.hwx import load_program
from coreml2hwx.ir import Graph
from coreml2hwx.passes import run_pipeline
from coreml2hwx.sim import run_program
from coreml2hwx.sim.fields import TaskFields
from coreml2hwx.target.h13 import lower
from tests.conftest import shared_files


def fields(program, index):
    (task, state) = list(program.states())[index]
    return TaskFields(index, task, state, "h13")


def fp16(a):
    return np.asarray(a, np.float32).astype(np.float16).astype(np.float32)


def torch_conv(x, w, b, pad=0, relu=False):
    import torch

    y = torch.nn.functional.conv2d(torch.from_numpy(fp16(x)), torch.from_numpy(fp16(w)),
                                   None if b is None else torch.from_numpy(fp16(b)), padding=pad)
    y = y.numpy()
    return np.maximum(y, 0) if relu else y


def conv_graph(cin, cout, size, kernel=1, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    g = Graph("t")
    g.add_input("x", (1, cin, size, size), "float16")
    w = (rng.standard_normal((cout, cin, kernel, kernel)) / np.sqrt(cin * kernel ** 2))
    b = rng.standard_normal(cout) if bias else None
    pad = (kernel - 1) // 2
    g.add_op("conv", ["x"], ["y"], {"weight": w.astype(np.float16),
                                   "bias": None if b is None else b.astype(np.float16),
                                   "strides": (1, 1), "dilations": (1, 1),
                                   "pads": (pad,) * 4, "groups": 1})
    g.set_outputs(["y"])
    return g, w, b, pad


def close(got, expected):
    """fp16 result of an fp16 computation: one rounding of the output plus accumulation order."""
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(got, expected, rtol=4e-3, atol=4e-3 * scale)


# -- chaining ----------------------------------------------------------------------------------------

def test_intermediate_goes_through_the_scratch_slot():
    """add -> abs: the add writes `a` to BAR slot 3 with the intermediate DMA configuration eiln's
    kernels use (0x040003C1, ane-facts §2.7.6), the abs reads it back from slot 3."""
    g = Graph("t")
    g.add_input("x", (1, 32, 8, 8), "float16")
    g.add_input("z", (1, 32, 8, 8), "float16")
    g.add_op("add", ["x", "z"], ["a"])
    g.add_op("abs", ["a"], ["y"])
    g.set_outputs(["y"])
    program = lower(g)
    assert [t.role for t in program.tensors] == ["input", "input", "output", "intermediate"]
    scratch = program.tensors[-1]
    assert scratch.slot == 3 and scratch.size >= 32 * 8 * 64
    first, second = fields(program, 0), fields(program, 1)
    assert first.header("WBase") == 3 and first.bytes("tile_dma_dst.DMAConfig.En") == 1
    assert first.get("tile_dma_dst.DMAConfig.CacheHint") == 15
    assert second.header("RBase0") == 3
    rng = np.random.default_rng(3)
    x, z = (rng.standard_normal((1, 32, 8, 8)).astype(np.float16) for _ in range(2))
    got = run_program(program, {"x": x, "z": z})["y"]
    np.testing.assert_array_equal(got, np.abs(fp16(fp16(x) + fp16(z))).astype(np.float16))


def test_scratch_ranges_are_reused_after_their_last_reader():
    """A chain of five element-wise ops: at most two intermediates are alive at once, so the scratch
    holds two tensors, not four; the result still equals numpy's."""
    shape = (1, 16, 8, 8)
    g = Graph("t")
    g.add_input("x", shape, "float16")
    names = ["x", "t1", "t2", "t3", "t4", "y"]
    for i in range(5):
        g.add_op("add", [names[i], "x"], [names[i + 1]])
    g.set_outputs(["y"])
    program = lower(g)
    tensor_bytes = 16 * 8 * 64
    assert program.tensors[-1].size == 2 * tensor_bytes
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float16)
    expected = fp16(x)
    for _ in range(5):
        expected = fp16(expected + fp16(x))
    np.testing.assert_array_equal(run_program(program, {"x": x})["y"], expected.astype(np.float16))


def test_matmul_and_scratch_chain_are_not_combined():
    """The tx=0 matvec writes its transposed copy to slot 3 itself (census §3.2,
    `rrmm_r2rr_m16_k64_n64_tx0_ty0`): an intermediate there would overlap it."""
    g = Graph("t")
    g.add_input("x", (16, 64), "float16")
    g.add_input("w", (64, 64), "float16")
    g.add_op("abs", ["x"], ["a"])
    g.add_op("matmul", ["a", "w"], ["y"], {"transpose_x": False, "transpose_y": False})
    g.set_outputs(["y"])
    with pytest.raises(UnsupportedError, match="scratch slot 3"):
        lower(g)


# -- output-channel rounds ---------------------------------------------------------------------------

def test_three_outputs_take_three_chunks_like_tinygrad_conv_hwx():
    """tinygrad's conv.hwx (Apple-compiled, Cin = Cout = 3, 1x1): coefficient channels 0-2 fetch
    one 64-byte row each at 0, 0x40, 0x80, OCGSize 0 (ane-facts §2.10)."""
    (apple_path,) = [p for p in shared_files("artifacts/tinygrad_tinygrad/extra/accel/ane/ops/conv.hwx")]
    apple = fields(load_program(apple_path), 0)
    ours = fields(lower(conv_graph(3, 3, 1, bias=False)[0]), 0)
    for f in (apple, ours):
        assert f.get("common.ConvCfg.OCGSize") == 0
    for i in range(16):
        key = f"kernel_dma_src.CoeffDMAConfig[{i}].En"
        assert ours.get(key) == apple.get(key) == (i < 3)
    for i in range(3):
        for key in (f"kernel_dma_src.CoeffBaseAddr[{i}].Addr",
                    f"kernel_dma_src.CoeffBfrSize[{i}].MemBfrSize"):
            assert ours.bytes(key) == apple.bytes(key)


@pytest.mark.parametrize("cin,cout,size,kernel,tasks", [
    # 64 (4 lanes) + 32 (2 lanes) in one task, planes of 136 and 68 bytes back to back as Apple
    # packs groups-1 planes (upstream conv_probe_k1_c64_n512_s16_st1_g1_bias1_same)
    (16, 96, 8, 1, 1),
    # 128 (8 lanes, 400-byte planes) + 16
    (24, 144, 8, 1, 1),
    (8, 24, 8, 3, 2),     # 16 + 8 left over, one per chunk
    (11, 2, 8, 1, 1),     # the U-Net head: 2 outputs on chunks 0 and 1
    (32, 64, 8, 3, 1),    # one round: one task, as Apple's oracles
])
def test_output_channel_rounds_match_torch(cin, cout, size, kernel, tasks):
    g, w, b, pad = conv_graph(cin, cout, size, kernel)
    program = lower(g)
    assert len(program.tasks) == tasks
    x = np.random.default_rng(5).standard_normal((1, cin, size, size)).astype(np.float16)
    got = run_program(program, {"x": x})["y"].astype(np.float32)
    close(got, torch_conv(x, w, b, pad))


# -- clip and fused relu through the whole-model passes ------------------------------------------------

def clip_graph():
    g = Graph("t")
    g.add_input("x", (1, 32, 8, 8), "float16")
    g.add_op("clip", ["x"], ["y"], {"min": 0.0, "max": 6.0})
    g.set_outputs(["y"])
    return g


def test_clip_is_refused_for_apple_mil_parity():
    with pytest.raises(UnsupportedError, match="clip"):
        lower(clip_graph())


def test_clip_after_the_whole_model_passes_is_one_lut_task():
    """relu6 as eiln compiles it: one NE bypass task with a two-line table (lut-rules.md)."""
    g = clip_graph()
    run_pipeline(g)
    program = lower(g)
    assert len(program.tasks) == 1
    f = fields(program, 0)
    assert f.get("ne.MACCfg.OpMode") == 4 and f.get("ne.MACCfg.NonlinearMode") == 2
    x = (np.random.default_rng(6).standard_normal((1, 32, 8, 8)) * 5).astype(np.float16)
    got = run_program(program, {"x": x})["y"]
    np.testing.assert_array_equal(got, np.clip(x, 0, 6))


def test_fused_relu_is_applied_by_the_conv_task():
    g, w, b, pad = conv_graph(16, 32, 8, 3)
    g.ops[0].outputs[0] = "c"
    g.tensors["c"] = g.tensors.pop("y")
    g.add_op("relu", ["c"], ["y"])
    g.set_outputs(["y"])
    log = dict(run_pipeline(g))
    assert "fused 1" in (log["fuse_activation"] or "")
    program = lower(g)
    assert len(program.tasks) == 1
    assert fields(program, 0).get("ne.MACCfg.NonlinearMode") == 1
    x = np.random.default_rng(7).standard_normal((1, 16, 8, 8)).astype(np.float16)
    close(run_program(program, {"x": x})["y"].astype(np.float32), torch_conv(x, w, b, pad, True))


def test_fused_relu_on_an_op_that_cannot_fuse_it_is_refused():
    g = Graph("t")
    g.add_input("x", (1, 16, 8, 8), "float16")
    g.add_op("mul", ["x", "x"], ["y"], {"fused_activation": "sigmoid"})
    g.set_outputs(["y"])
    with pytest.raises(UnsupportedError, match="fused sigmoid"):
        lower(g)


def test_mil_checks_pass_drops_inline_marks():
    g, *_ = conv_graph(16, 16, 4)
    g.ops[0].attrs["inline"] = ("bias",)
    with pytest.raises(UnsupportedError, match="inline bias"):
        lower(g)
    run_pipeline(g, ["mil_checks"])
    assert len(lower(g).tasks) == 1


def test_channel_concat_is_one_copy_per_input_like_tinygrad_concat_hwx():
    """tinygrad's concat.hwx (Apple-compiled): one NE bypass copy per input, the second writing
    at TileDMADst.BaseAddr = its first channel x the plane bytes.  Values: numpy's concatenate
    (a copy is exact in fp16)."""
    (apple_path,) = shared_files("artifacts/tinygrad_tinygrad/extra/accel/ane/ops/concat.hwx")
    apple = load_program(apple_path)
    g = Graph("t")
    g.add_input("a", (1, 16, 8, 8), "float16")
    g.add_input("b", (1, 8, 8, 8), "float16")
    g.add_op("concat", ["a", "b"], ["y"], {"axis": 1})
    g.set_outputs(["y"])
    program = lower(g)
    assert len(program.tasks) == len(apple.tasks) == 2
    for index in range(2):
        ours, theirs = fields(program, index), fields(apple, index)
        for key in ("ne.MACCfg.OpMode", "ne.MACCfg.KernelMode", "ne.MACCfg.NonlinearMode"):
            assert ours.get(key) == theirs.get(key)
    second = fields(apple, 1)
    assert second.bytes("tile_dma_dst.BaseAddr.Addr") == (
        fields(apple, 0).get("common.Cin.Cin") * second.bytes("tile_dma_dst.PlaneStride.PlaneStride"))
    assert fields(program, 1).bytes("tile_dma_dst.BaseAddr.Addr") == 16 * 8 * 64
    rng = np.random.default_rng(8)
    a = rng.standard_normal((1, 16, 8, 8)).astype(np.float16)
    b = rng.standard_normal((1, 8, 8, 8)).astype(np.float16)
    got = run_program(program, {"a": a, "b": b})["y"]
    np.testing.assert_array_equal(got, np.concatenate([a, b], axis=1))


# -- L2 capacity -------------------------------------------------------------------------------------

def test_a_plane_too_big_for_l2_is_tiled_like_eilns_add():
    """1600 x 2560 fp16 add (eiln's `add` kernel, Apple-compiled; ane-facts §2.9): two sources
    and the result do not fit the 2 MiB L2 whole, Apple streams 32 rows per tile with src2 at
    0x8040 and the result at 0x10040.  The values must not depend on the tiling."""
    g = Graph("t")
    g.add_input("x", (1, 1, 2560, 1600), "float16")
    g.add_input("z", (1, 1, 2560, 1600), "float16")
    g.add_op("add", ["x", "z"], ["y"])
    g.set_outputs(["y"])
    program = lower(g)
    f = fields(program, 0)
    assert f.get("common.TileCfg.TileHeight") == 32
    assert f.get("l2.Src2Base.Value") == 0x8040 and f.bytes("l2.ResultBase.Addr") == 0x10040
    rng = np.random.default_rng(9)
    x, z = (rng.standard_normal((1, 1, 2560, 1600)).astype(np.float16) for _ in range(2))
    got = run_program(program, {"x": x, "z": z})["y"]
    np.testing.assert_array_equal(got, (fp16(x) + fp16(z)).astype(np.float16))


def test_a_plane_that_fits_keeps_one_tile():
    g, *_ = conv_graph(64, 64, 16, 3)
    assert fields(lower(g), 0).get("common.TileCfg.TileHeight") == 16
