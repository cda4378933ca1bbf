"""H13 matmul / linear beyond the ../shared oracles: x runtime [M, K] times a constant w [N, K]
with M up to 64 (two tasks: transposed copy of x into L2, then a 1x1 convolution over K
channels), `linear` with and without a bias, runtime x runtime products with M = 32, 64 (a PE
copy of x into kernel layout first), and the refusals around them.

The register rules come from upstream Apple oracles (joshuaswarren/mil-hwx-compiler
research/oracles/h13: `rrmm_r2rb_m32_k256_n{64,256}_tx0_ty1`, `matmul_m64_k{256,1024}_*`,
`rrmm_r2rr_m{32,64}_k64_n64_tx0_ty0`, `env_mm_r3rr_m64_k64_n64_tx0_ty1_b1`,
`env_mm_r2rb_m16_k2048_n2048_tx0_ty1`, `rrmm_r2rb_m64_k2048_n2048_tx0_ty1`), which are not part
of ../shared; our programs for all but the last two (which we refuse) are byte-identical to
Apple's (`python3 bench/parity.py` on copies of them).  Committed ground truth here is therefore:
* numpy, for what the programs compute, run in the simulator (validated on Apple's programs,
  tests/sim): x @ w^T (+ bias) on the same fp16 values, with the conv tolerance of
  tests/sim/test_sim_oracles.py (half an fp16 ulp of the result plus fp32 accumulation,
  K * 2^-24 * sum |x w|);
* a few words of the upstream oracles, quoted below with their source, for the runtime x runtime
  forms at M = 32, 64, which the simulator also runs: its reading of their interleaved DMA write
  is the one under which these programs compute x @ w (the other readings are checked to fail),
  and Apple's own H14 twin of env_mm_r3rr_m64_k64_n64_tx0_ty1_b1 in ../shared computes x @ w^T
  under it (tests/sim/test_sim_h14.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from coreml2hwx.errors import SimulationError, UnsupportedError
from coreml2hwx.hwx import write_hwx
from coreml2hwx.ir import Graph
from coreml2hwx.sim import run_program
from coreml2hwx.sim import machine
from coreml2hwx.target.h13 import lower
from tests.sim.tolerance import assert_close
from tests.target.test_h13_coverage2 import _words


def sample(shape, rng, scale=1.0) -> np.ndarray:
    return (scale * rng.standard_normal(shape)).astype(np.float16)


def matmul_graph(m, k, n, *, rank=2, seed=0):
    """x [M, K] (or [1, M, K]) @ w^T with w [N, K] a constant (transpose_y)."""
    rng = np.random.default_rng(seed)
    w = sample((n, k), rng, 1 / np.sqrt(k))
    g = Graph("t")
    lead = (1,) * (rank - 2)
    g.add_input("x", (*lead, m, k), "float16")
    g.add_constant("w", w)
    g.add_op("matmul", ["x", "w"], ["y"], {"transpose_x": False, "transpose_y": True})
    g.set_outputs(["y"])
    return g, w, None


def linear_graph(m, k, n, *, bias=True, seed=0):
    """linear(x [1, M, K], weight [N, K], bias [N]) - the transformer block's form."""
    rng = np.random.default_rng(seed)
    w = sample((n, k), rng, 1 / np.sqrt(k))
    b = sample((n,), rng) if bias else None
    g = Graph("t")
    g.add_input("x", (1, m, k), "float16")
    g.add_op("linear", ["x"], ["y"], {"weight": w, "bias": b})
    g.set_outputs(["y"])
    return g, w, b


def simulate(graph, m, k, seed=1):
    x = sample((m, k), np.random.default_rng(seed))
    program = lower(graph)
    out = run_program(program, {"x": x.reshape(graph.tensors["x"].shape)})["y"]
    return program, x, np.asarray(out, np.float64)


def check(out, x, w, b):
    """The conv tolerance (tests/sim/test_sim_oracles.py) on x @ w^T + b in float64."""
    x64, w64 = x.astype(np.float64), w.astype(np.float64).T
    ref = x64 @ w64 + (0 if b is None else b.astype(np.float64))
    bound = x64.shape[1] * (np.abs(x64) @ np.abs(w64))
    assert_close(out.reshape(ref.shape), ref, ulps=0.5, atol=2.0 ** -24 * bound, what="matmul")


# -- what the programs compute ---------------------------------------------------------------------
# M = 32 and 64 are Apple's own programs (upstream, byte-identical); 9..63 take the same rules
# (the odd channel-stride rule of `transposed_channel_stride`, SmallSourceMode by the L2 bytes).
@pytest.mark.parametrize("m,k,n", [(32, 256, 64), (32, 256, 256), (64, 256, 256),
                                   (16, 64, 192), (16, 128, 64), (12, 96, 32), (48, 512, 128)])
def test_constant_weight_rows_compute_x_times_w_transposed(m, k, n):
    graph, w, b = matmul_graph(m, k, n)
    program, x, out = simulate(graph, m, k)
    assert len(program.tasks) == 2
    check(out, x, w, b)


def test_rank3_leading_one_is_the_same_program():
    """[1, M, K] and [M, K] are the same bytes in Apple's 4-D view (env_mm_r3rb_*_b1 vs r2rb)."""
    a = write_hwx(lower(matmul_graph(32, 128, 64, rank=3)[0]))
    b = write_hwx(lower(matmul_graph(32, 128, 64, rank=2)[0]))
    assert a == b


@pytest.mark.parametrize("m,k,n", [(16, 64, 192), (16, 64, 64), (16, 64, 128), (16, 128, 64)])
def test_linear_with_bias_computes_x_w_transposed_plus_bias(m, k, n):
    """The transformer block's four linears (tests/models/zoo.py transformer_block)."""
    graph, w, b = linear_graph(m, k, n)
    program, x, out = simulate(graph, m, k)
    assert len(program.tasks) == 2
    check(out, x, w, b)


def test_linear_without_bias_is_the_matmul_program():
    g_lin, w, _ = linear_graph(32, 256, 64, bias=False)
    g_mm, w2, _ = matmul_graph(32, 256, 64)
    assert np.array_equal(w, w2)
    assert write_hwx(lower(g_lin)) == write_hwx(lower(g_mm))


def test_bias_changes_only_the_convolution_task():
    """Bias in the weight planes (BiasMode 1): the transposed copy is the same task, the
    convolution's constant section grows by one halfword per output channel (and padding)."""
    with_bias = lower(linear_graph(16, 64, 64)[0])
    without = lower(linear_graph(16, 64, 64, bias=False)[0])
    assert with_bias.tasks[0].writes() == without.tasks[0].writes()
    assert with_bias.tasks[1].writes() != without.tasks[1].writes()
    assert len(with_bias.constants) > len(without.constants)


# -- refusals --------------------------------------------------------------------------------------
@pytest.mark.parametrize("m,k", [(16, 2048), (64, 2048), (32, 4096)])
def test_refuses_rows_apple_blocks_at_large_k(m, k):
    """Apple compiles M > 8 at K = 2048 in three tasks (upstream env_mm_r2rb_m16_k2048_n2048,
    rrmm_r2rb_m64_k2048_n2048: x in 8-row blocks); that form is not implemented."""
    with pytest.raises(UnsupportedError, match="8-row blocks"):
        lower(matmul_graph(m, k, 64)[0])


def test_refuses_more_rows_than_seen():
    with pytest.raises(UnsupportedError, match="M <= 64"):
        lower(matmul_graph(96, 256, 64)[0])


def test_refuses_linear_with_batched_input():
    g = Graph("t")
    g.add_input("x", (2, 16, 64), "float16")
    g.add_op("linear", ["x"], ["y"], {"weight": np.ones((64, 64), np.float16), "bias": None})
    g.set_outputs(["y"])
    with pytest.raises(UnsupportedError, match="batched linear"):
        lower(g)


def test_small_rows_keep_their_rules():
    """M <= 8 programs are unchanged by the M > 8 rules (../shared matmul_m8_k512_n1024_ty1 is
    checked byte for byte in test_h13_matmul.py); here: still two tasks and still computing."""
    graph, w, b = matmul_graph(8, 512, 256)
    program, x, out = simulate(graph, 8, 512)
    assert len(program.tasks) == 2
    check(out, x, w, b)


# -- determinism -----------------------------------------------------------------------------------
def test_same_input_gives_identical_bytes():
    one = write_hwx(lower(linear_graph(16, 64, 192, seed=4)[0]))
    two = write_hwx(lower(linear_graph(16, 64, 192, seed=4)[0]))
    assert one == two


# -- runtime x runtime -----------------------------------------------------------------------------
def runtime_graph(m, k, n, *, ty=False, rank=2):
    g = Graph("t")
    lead = (1,) * (rank - 2)
    g.add_input("x", (*lead, m, k), "float16")
    g.add_input("w", (*lead, *((n, k) if ty else (k, n))), "float16")
    g.add_op("matmul", ["x", "w"], ["y"], {"transpose_x": False, "transpose_y": ty})
    g.set_outputs(["y"])
    return g


@pytest.mark.parametrize("k,n", [(32, 48), (64, 64), (128, 16)])
def test_sixteen_rows_runtime_product_computes_x_times_w(k, n):
    """Form 3 (one task, x's rows the coefficients) at K, N besides ../shared's 64 x 64."""
    rng = np.random.default_rng(5)
    x, w = sample((16, k), rng), sample((k, n), rng)
    program = lower(runtime_graph(16, k, n))
    out = np.asarray(run_program(program, {"x": x, "w": w})["y"], np.float64)
    assert len(program.tasks) == 1
    check(out, x, w.T, None)


# Quoted from upstream rrmm_r2rr_m32_k64_n64_tx0_ty0 / rrmm_r2rr_m64_k64_n64_tx0_ty0 (Apple):
# task 0 writes x with the DMA interleaving L = M / 16 rows (Fmt 0x0L302031, rows of L x K
# halfwords), task 1 interleaves L output channels (ConvCfg OCGSize) and fetches 16 coefficient
# chunks of L x K halfwords from BAR slot 3 with one header extension word.
APPLE_RUNTIME_WORDS = {
    32: {0: {"0x17818": 0x02302031, "0x17808": 0x100, "0x04830": 0x0050027A, "0x0002c": 6},
         1: {"0x0001c": 0x5000A421, "0x1f84c": 0x100, "0x1f888": 0x100, "0x04804": 0x00400172}},
    64: {0: {"0x17818": 0x04302031, "0x17808": 0x200, "0x04830": 0x0050047A, "0x0002c": 6},
         1: {"0x0001c": 0x5000A821, "0x1f84c": 0x200, "0x1f888": 0x200, "0x04804": 0x00100172}},
}


@pytest.mark.parametrize("m", [32, 64])
def test_runtime_rows_take_apples_kernel_layout(m):
    program = lower(runtime_graph(m, 64, 64))
    assert len(program.tasks) == 2
    for index, words in APPLE_RUNTIME_WORDS[m].items():
        got = _words(program.tasks[index])
        assert {a: got[a] for a in words} == words
    conv = program.tasks[1]
    assert conv.header[6] == 0x31009800 and conv.header[9] == 0x23 and conv.extension == [0]


@pytest.mark.parametrize("k,n", [(64, 64), (16, 16), (32, 48), (128, 32)])
def test_sixteen_rows_times_runtime_w_transposed(k, n):
    """x [16, K] @ w^T, w [N, K] runtime - one head of the transformer's q @ k^T: w^T through L2,
    x's rows the kernels (upstream rrmm_r2rr_m16_k64_n64_tx0_ty1, byte-identical)."""
    rng = np.random.default_rng(7)
    x, w = sample((16, k), rng), sample((n, k), rng)
    program = lower(runtime_graph(16, k, n, ty=True))
    out = np.asarray(run_program(program, {"x": x, "w": w})["y"], np.float64)
    assert len(program.tasks) == 2
    check(out, x, w, None)


@pytest.mark.parametrize("m", [32, 64])
def test_transposed_runtime_w_takes_three_tasks(m):
    """Upstream rrmm_r2rr_m32_k64_n64_tx0_ty1, env_mm_r3rr_m64_k64_n64_tx0_ty1_b1 (Apple): copy,
    w^T into L2 (no destination, header word 6 0x10000800), convolution from L2 (header word 6
    0x21009000, 11 words)."""
    program = lower(runtime_graph(m, 64, 64, ty=True, rank=3))
    assert len(program.tasks) == 3
    assert [t.header[6] for t in program.tasks] == [0x30009800, 0x10000800, 0x21009000]
    assert _words(program.tasks[1])["0x04838"] == 0x90  # w^T: 64 values a channel, odd units
    assert _words(program.tasks[2])["0x04804"] == 0x120
    assert program.tasks[2].extension == [0]


def runtime_product(m, k, n, ty, rank=2, seed=6):
    """(x [M, K], w as given - [N, K] with ty, else [K, N] -, the simulated product)."""
    rng = np.random.default_rng(seed)
    x, w = sample((m, k), rng), sample((n, k) if ty else (k, n), rng)
    graph = runtime_graph(m, k, n, ty=ty, rank=rank)
    lead = (1,) * (rank - 2)
    inputs = {"x": x.reshape(*lead, *x.shape), "w": w.reshape(*lead, *w.shape)}
    out = np.asarray(run_program(lower(graph), inputs)["y"], np.float64)
    return x, w, out


# Apple's own programs (upstream rrmm_r2rr_m32_k64_n64_tx0_ty{0,1}, rrmm_r2rr_m64_k64_n64_tx0_ty0,
# env_mm_r3rr_m64_k64_n64_tx0_ty1_b1; ours are byte-identical): x written with the interleaved
# DMA format, then read back as the convolution's kernels (TDE, one extension word).  These are
# what pin the simulator's reading of Fmt.Interleave (coreml2hwx/sim/machine.py).
@pytest.mark.parametrize("m,ty,rank", [(32, False, 2), (64, False, 2), (32, True, 2),
                                       (64, True, 3)])
def test_runtime_rows_compute_x_times_w(m, ty, rank):
    x, w, out = runtime_product(m, 64, 64, ty, rank)
    check(out, x, w if ty else w.T, None)


# The same rules at other K, N (K a multiple of 32: whole 64-byte coefficient chunks at L = 2).
@pytest.mark.parametrize("m,k,n,ty", [(32, 128, 64, False), (64, 32, 48, False),
                                      (32, 256, 16, False), (32, 96, 80, True),
                                      (64, 128, 32, True)])
def test_runtime_rows_compute_x_times_w_at_other_sizes(m, k, n, ty):
    x, w, out = runtime_product(m, k, n, ty)
    check(out, x, w if ty else w.T, None)


def _lane_major(self, out, lanes, dense):
    g, d, c, h, w = out.shape
    return out.reshape(g, d, c // lanes, h, w * lanes)  # lane l's row at halfword K l + w


def _lanes_a_plane_apart(self, out, lanes, dense):
    g, d, c, h, w = out.shape
    planes = out.reshape(g, d, lanes, c // lanes, h, w)  # channel c = p + (C / L) l
    return np.ascontiguousarray(planes.transpose(0, 1, 3, 4, 5, 2)).reshape(
        g, d, c // lanes, h, w * lanes)


@pytest.mark.parametrize("reading", [_lane_major, _lanes_a_plane_apart])
@pytest.mark.parametrize("m", [32, 64])
def test_other_interleave_readings_do_not_compute_the_product(monkeypatch, reading, m):
    """Of the layouts an interleaved write could have, only the simulator's makes Apple's program
    x @ w: the others hand the convolution other kernels."""
    monkeypatch.setattr(machine.Task, "interleaved", reading)
    x, w, out = runtime_product(m, 64, 64, False)
    ref = x.astype(np.float64) @ w.astype(np.float64)
    assert np.abs(out.reshape(ref.shape) - ref).max() > 1.0


def test_interleaved_write_of_several_rows_stops():
    """Interleave is seen only on one row per channel, whole planes of lanes: other results stop
    naming the field instead of guessing where a second row or a lone channel goes."""
    task = object.__new__(machine.Task)
    task.f = type("Fields", (), {"fail": lambda self, why: SimulationError(why)})()
    for shape in [(1, 1, 32, 2, 64), (1, 1, 33, 1, 64)]:
        with pytest.raises(SimulationError, match="tile_dma_dst.Fmt.Interleave = 2"):
            task.interleaved(np.zeros(shape, np.float16), 2, False)


@pytest.mark.parametrize("m,ty", [(48, False), (128, False), (48, True), (128, True)])
def test_refuses_runtime_rows_outside_the_evidence(m, ty):
    with pytest.raises(UnsupportedError, match="runtime x runtime"):
        lower(runtime_graph(m, 64, 64, ty=ty))


def test_refuses_a_batched_runtime_product():
    """The transformer's 1x4x16x16 @ 1x4x16x16: Apple's batched programs (upstream
    batched/bmm_r3rr_m375_*: 52 tasks at batch 2) are not derived into rules yet."""
    g = Graph("t")
    g.add_input("x", (1, 4, 16, 16), "float16")
    g.add_input("w", (1, 4, 16, 16), "float16")
    g.add_op("matmul", ["x", "w"], ["y"], {"transpose_x": False, "transpose_y": False})
    g.set_outputs(["y"])
    with pytest.raises(UnsupportedError, match="batched"):
        lower(g)


def test_runtime_program_is_deterministic():
    one = write_hwx(lower(runtime_graph(64, 64, 64, ty=True, rank=3)))
    two = write_hwx(lower(runtime_graph(64, 64, 64, ty=True, rank=3)))
    assert one == two
