"""The simulator's fast paths give exactly the bytes of the reference paths they replace.

Ground truth here is the simulator's own reference definition (kept beside each fast path), run on
Apple's data where there is some:
* lookup tables: `Lut.__call__` (sliced, grid only where inputs land) against `Lut.reference`
  (whole arrays), on every table in eiln's 36 Apple-compiled streams (../shared/artifacts/eiln_ane);
* depthwise convolution: `kernel.depthwise_sum` (plane multiply-adds) against
  `kernel.depthwise_reference` (one einsum) over kernel sizes, strides, padding, groups, depth;
* depthwise weight unpacking (one block per coefficient channel) against a channel-by-channel
  reading of the layout (kernel.py's rule: channel o on chunk o % 16, [bias] taps, back to back);
* clamp tables on fp16 bits (`Lut.fp16_clip`, relu6) against `Lut.reference` on every fp16 value;
* whole programs: compiled depthwise + relu6 / sigmoid programs run with the fast paths and with
  the reference paths swapped in give the same output bytes.
Comparisons are of bytes (`tobytes`), so -0 / +0 and every last bit count.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from coreml2hwx.errors import SimulationError
from coreml2hwx.ir import Graph
from coreml2hwx.sim import kernel, run_program
from coreml2hwx.sim.fields import TaskFields
from coreml2hwx.sim.lut import MODES, SLICE, TABLE_BYTES, Lut
from coreml2hwx.sim.memory import Memory
from coreml2hwx.target import lut as target_lut
from coreml2hwx.target.h13 import lower
from tests.sim.support import eiln_program, eiln_rows

F32 = np.float32


# -- lookup tables -------------------------------------------------------------------------------

def _apple_tables() -> dict[str, bytes]:
    """Every lookup table an eiln stream fetches, by stream and task."""
    found = {}
    for name in sorted(eiln_rows()):
        program = eiln_program(name)
        memory = Memory(program.constants)
        for index, (task, state) in enumerate(program.states()):
            f = TaskFields(index, task, state, "h13")
            if f.header("ENE") and f.get("ne.MACCfg.NonlinearMode") == 2:
                found[f"{name}#{index}"] = kernel.coefficients(f, memory, 0, TABLE_BYTES, "table")
    return found


def _probe_inputs(lut: Lut, rng) -> np.ndarray:
    """Random values at many scales, plus the table's own edges and grid points and neighbours
    (no NaN: the reference has no reading of it)."""
    parts = [rng.standard_normal(SLICE + 1000) * scale for scale in (1e-4, 0.1, 1, 8, 1e3)]
    origin = {"plain": -16 if lut.mode == 0x01 else -32, "odd": 0}.get(MODES[lut.mode], 0)
    edges = [lut.lo, lut.hi, 0.0, -0.0, np.inf, -np.inf, 65504.0, -65504.0, 6e-8, -6e-8]
    edges += [(origin + k) * lut.h for k in range(-2, 35)]
    edges = np.array([e for e in edges if np.isfinite(e) or np.isinf(e)], np.float64)
    near = [edges, np.nextafter(edges.astype(F32), F32(np.inf)),
            np.nextafter(edges.astype(F32), F32(-np.inf))]
    values = np.concatenate([np.concatenate(parts), np.concatenate(near)]).astype(F32)
    return values[~np.isnan(values)].reshape(1, 1, 1, 1, -1)


def test_every_apple_table_evaluates_as_the_reference(shared):
    tables = _apple_tables()
    sliced = {k: t for k, t in tables.items()
              if MODES.get(int(np.frombuffer(t, "<u2")[42])) in ("plain", "odd")}
    assert len(sliced) >= 10, sorted(tables)  # eiln: relu6, hardtanh, sign, sigmoid, tanh ...
    rng = np.random.default_rng(4)
    for name, table in sliced.items():
        lut = Lut(table, where=name)
        x = _probe_inputs(lut, rng)
        fast, reference = lut(x), lut.reference(x)
        assert fast.dtype == reference.dtype == F32
        assert fast.tobytes() == reference.tobytes(), name


# -- depthwise convolution -----------------------------------------------------------------------

GEOMETRIES = [(kh, kw, s) for kh, kw, s in itertools.product((1, 2, 3, 5), (1, 2, 3, 5), (1, 2))]


@pytest.mark.parametrize("kh,kw,stride", GEOMETRIES)
def test_depthwise_sum_is_the_einsum_bit_for_bit(kh, kw, stride):
    rng = np.random.default_rng(kh * 100 + kw * 10 + stride)
    for groups, depth, channels, side in ((1, 1, 144, 14), (2, 1, 16, 9), (1, 2, 3, 7)):
        x = rng.standard_normal((groups, depth, channels, side, side + 3)).astype(F32)
        taps = rng.standard_normal((channels, kh, kw)).astype(F32)
        py, px = kh // 2, kw // 2
        hout = (side + 2 * py - kh) // stride + 1
        wout = (side + 3 + 2 * px - kw) // stride + 1
        geometry = (kh, kw, stride, stride, px, py, hout, wout)
        fast = kernel.depthwise_sum(x, taps, geometry)
        reference = kernel.depthwise_reference(x, taps, geometry)
        assert fast.shape == reference.shape == (groups, depth, channels, hout, wout)
        assert fast.tobytes() == reference.tobytes()


# -- whole programs ------------------------------------------------------------------------------

def _depthwise_graph(channels: int, activation: str, rng) -> Graph:
    g = Graph("t")
    g.metadata["apple_mil_checks"] = False  # clip as a whole-model compile lowers it (relu6)
    g.add_input("x", (1, channels, 20, 20), "float16")
    w = (rng.standard_normal((channels, 1, 3, 3)) / 3).astype(np.float16)
    b = rng.standard_normal(channels).astype(np.float16)
    g.add_op("conv", ["x"], ["c"], {"weight": w, "bias": b, "strides": (1, 1),
                                   "dilations": (1, 1), "pads": (1, 1, 1, 1),
                                   "groups": channels})
    attrs = {"min": 0.0, "max": 6.0} if activation == "clip" else {}
    g.add_op(activation, ["c"], ["y"], attrs)
    g.set_outputs(["y"])
    return g


def _reading_channel_by_channel(program, channels: int):
    """Depthwise weights read one channel at a time (kernel.py's layout rule, spelled out)."""
    ((task, state),) = [(t, s) for t, s in program.states()
                        if TaskFields(0, t, s, "h13").get("common.GroupConvCfg.UnicastEn")]
    f = TaskFields(0, task, state, "h13")
    chunks = kernel.Chunks(f, Memory(program.constants))
    w, b = np.zeros((channels, 3, 3), F32), np.zeros(channels, F32)
    for o in range(channels):
        raw = chunks.take(o % kernel.CHANNELS, 2 * 10)  # bias, then 9 taps
        values = np.frombuffer(raw, "<f2").astype(F32)
        b[o], w[o] = values[0], values[1:].reshape(3, 3)
    chunks.check_consumed()
    return f, w, b


@pytest.mark.parametrize("channels", [32, 96])
def test_depthwise_weights_unpack_as_read_channel_by_channel(channels):
    program = lower(_depthwise_graph(channels, "relu", np.random.default_rng(channels)))
    f, w, b = _reading_channel_by_channel(program, channels)
    weight, bias = kernel.weights(f, Memory(program.constants), 1, channels, channels, 3, 3, True)
    assert weight[0, :, 0].tobytes() == w.tobytes()
    assert bias[0].tobytes() == b.tobytes()


@pytest.mark.parametrize("activation", ["clip", "sigmoid", "relu"])
def test_programs_give_the_reference_paths_bytes(activation, monkeypatch):
    rng = np.random.default_rng(7)
    program = lower(_depthwise_graph(48, activation, rng))
    x = {"x": (rng.standard_normal((1, 48, 20, 20)) * 4).astype(np.float16)}
    fast = run_program(program, x)["y"]
    monkeypatch.setattr(Lut, "__call__", Lut.reference)
    monkeypatch.setattr(Lut, "fp16_clip", lambda self: None)
    monkeypatch.setattr(kernel, "depthwise_sum", kernel.depthwise_reference)
    reference = run_program(program, x)["y"]
    assert fast.dtype == np.float16 and fast.shape == (1, 48, 20, 20)
    assert fast.tobytes() == reference.tobytes()


ALL_FP16 = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
NOT_NAN = ALL_FP16[~np.isnan(ALL_FP16)]


@pytest.mark.parametrize("low, high", [(0.0, 6.0), (0.5, 2.0), (0.0, 1.0)])
def test_fp16_clip_gives_the_tables_values_on_every_fp16_input(low, high):
    table = Lut(target_lut.clip(low, high))
    clip = table.fp16_clip()
    assert clip is not None
    assert clip(NOT_NAN.copy()).tobytes() == table.reference(NOT_NAN).astype(np.float16).tobytes()


def test_fp16_clip_is_only_for_clamps_at_or_above_zero():
    assert Lut(target_lut.clip(-1.0, 1.0)).fp16_clip() is None
    assert Lut(target_lut.sigmoid()).fp16_clip() is None


def test_fp16_clip_stops_at_nan_like_the_table():
    clip = Lut(target_lut.clip(0.0, 6.0)).fp16_clip()
    with pytest.raises(SimulationError, match="NaN"):
        clip(np.array([1.0, np.nan], np.float16))


def test_exponent_splitting_tables_give_their_bounds_at_infinity():
    """+-inf lies beyond every table's bounds (slots 0/1), so the table gives its bound outputs
    (slots 2/3) - the exp2 split has no fractional part to look up there (pow's log2 -> exp2
    chain feeds it +-inf for a zero or negative base)."""
    table = Lut(target_lut.exp2())
    x = np.array([np.inf, -np.inf], np.float32)
    assert table(x).tolist() == [table.out_hi, table.out_lo]
    assert table.reference(x).tolist() == [table.out_hi, table.out_lo]
