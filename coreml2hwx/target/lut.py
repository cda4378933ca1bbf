"""Activation lookup tables (H13/H14): 128 bytes = 64 fp16 slots, generated from each function's
definition by the rules of ../shared/docs/lut-rules.md (checked there against every Apple table).

Slot layout (ane-facts §2.11, lut-rules §2):
  0, 1   input bounds (the grid origin is implied by the mode, not slot 0)
  2, 3   output bounds
  4..36  33 samples of f on a uniform grid of step h = 2^-step
  37, 38 slope and offset below the grid; 39, 40 slope and offset above it (y = slope*x + offset)
  41     the step code (signed 16-bit; 0x40 means "no grid": all samples are f(+0))
  42     the mode byte: 0x01 grid centred on 0, 0x02 grid ending at 0, 0x60 odd mirror of x >= 0,
         0x0A exp2 mantissa, 0x67 reciprocal, 0xC9 log2, 0xC5 sqrt, 0xC6 rsqrt (inputs on
         [0.5, 2) after the exponent is split off)

Samples are fp16(f(x)) computed in float64 and rounded once (round-half-even).  Three tables are
Apple's fitted least-squares tables that no rule reproduces (lut-rules §4); they are data here,
copied from Apple's output: gelu (the eiln `activation/gelu.bin` kernel section) and
gelu-sigmoid-approximation / silu (`nonzero_fp16_words` of the h14 oracles
`env_act_gelu_1x768x1x1_sigmoid_approximation`, `env_act_silu_1x256x32x32`).  A test checks
these copies against the shared files.
"""

from __future__ import annotations

import math

import numpy as np

from coreml2hwx.errors import UnsupportedError

TABLE_BYTES = 128
INF = math.inf
NO_GRID = 0x40

MODE_CENTRED = 0x01
MODE_ENDS_AT_ZERO = 0x02
MODE_ODD = 0x60
MODE_EXP2 = 0x0A
MODE_RECIPROCAL = 0x67
MODE_LOG2 = 0xC9
MODE_SQRT = 0xC5
MODE_RSQRT = 0xC6


def f16(value: float) -> float:
    with np.errstate(over="ignore"):
        return float(np.float16(value))


def _bits(value: float) -> int:
    with np.errstate(over="ignore"):
        return int(np.array([value], np.float16).view(np.uint16)[0])


def _pack(bounds, samples, below, above, step: int, mode: int) -> bytes:
    slots = np.zeros(64, np.uint16)
    for i, v in enumerate(list(bounds) + list(samples) + list(below) + list(above)):
        slots[i] = _bits(v)
    slots[41] = step & 0xFFFF
    slots[42] = mode
    return slots.astype("<u2").tobytes()


def _line_to_bound(xe: float, ye16: float, xb: float, yb: float) -> tuple[float, float]:
    """Tail from the end knot to where f reaches its bound (lut-rules §2 "line-to-bound")."""
    slope = f16((yb - ye16) / (xb - xe))
    return slope, f16(yb - slope * xb)


def _grid(fn, origin: float, step: int) -> list[float]:
    h = 2.0 ** -step
    return [f16(fn(origin + k * h)) for k in range(33)]


# -- tables from the definition ---------------------------------------------------------------------
def tanh() -> bytes:
    return _pack([0, 4, 0, 1], _grid(math.tanh, 0, 3), [0, 0], [0, 1], 3, MODE_ODD)


def sigmoid() -> bytes:
    def sig(x):
        return 1 / (1 + math.exp(-x))
    samples = _grid(sig, -8, 1)
    x_lo, x_hi = -9.9375, f16(math.log(4095))  # slot 0 is a constant copied from Apple (lut-rules §3)
    below = _line_to_bound(-8, samples[0], x_lo, 0)
    above = _line_to_bound(8, samples[-1], x_hi, 1)
    return _pack([x_lo, x_hi, 0, 1], samples, below, above, 1, MODE_CENTRED)


def exp2() -> bytes:
    return _pack([-25, 16, 0, INF], _grid(lambda x: 2.0 ** x, 0, 5), [0, 0], [0, 0], 5, MODE_EXP2)


def reciprocal() -> bytes:
    return _pack([0, INF, INF, 0], _grid(lambda x: 1 / x, 0.5, 6), [0, 0], [0, 0], 6,
                 MODE_RECIPROCAL)


def log2() -> bytes:
    return _pack([0, INF, -INF, 0], _grid(math.log2, 0.5, 6), [0, 0], [0, 0], 6, MODE_LOG2)


def _root_table(fn, bounds, mode) -> bytes:
    samples = [0.0 if k < 8 else f16(fn(k / 16)) for k in range(33)]  # x < 0.5 stored as 0
    return _pack(bounds, samples, [0, 0], [0, 0], 4, mode)


def sqrt() -> bytes:
    return _root_table(math.sqrt, [0, INF, 0, INF], MODE_SQRT)


def rsqrt() -> bytes:
    return _root_table(lambda x: 1 / math.sqrt(x), [0, INF, INF, 0], MODE_RSQRT)


def selu(alpha: float = 1.6732632, scale: float = 1.0507010) -> bytes:
    a16, l16 = f16(alpha), f16(scale)
    samples = [f16(f16(a16 * (math.exp(-8 + k / 4) - 1)) * l16) for k in range(33)]
    low = f16(-a16 * l16)
    return _pack([-8, INF, low, INF], samples, [0, low], [l16, 0], 2, MODE_ENDS_AT_ZERO)


def elu(alpha: float) -> bytes:
    """Inferred from selu without the lambda step (lut-rules §5; not checked against a table)."""
    a16 = f16(alpha)
    samples = [f16(a16 * (math.exp(-8 + k / 4) - 1)) for k in range(33)]
    return _pack([-8, INF, -a16, INF], samples, [0, -a16], [1, 0], 2, MODE_ENDS_AT_ZERO)


def two_lines(fn, bounds, below, above) -> bytes:
    """A piecewise-linear function with no grid: 33 copies of f(+0) (step code 0x40)."""
    return _pack(bounds, [f16(fn(0.0))] * 33, below, above, NO_GRID, MODE_CENTRED)


def leaky_relu(alpha: float) -> bytes:
    return two_lines(lambda x: x if x >= 0 else alpha * x, [-INF, INF, -INF, INF],
                     [f16(alpha), 0], [1, 0])


def clip(low: float, high: float) -> bytes:
    """clip(x, low, high); maximum(x, c) is clip(c, +inf), minimum(x, c) clip(-inf, c)."""
    return two_lines(lambda x: min(max(x, low), high), [low, high, low, high], [1, 0], [1, 0])


# -- Apple's fitted tables (data; see the module docstring) -----------------------------------------
def _verbatim(words: str) -> bytes:
    values = [int(w, 16) for w in words.split()]
    return np.array(values + [0] * (64 - len(values)), "<u2").tobytes()


GELU = _verbatim(
    "c466 7c00 0000 7c00 0000 8e8a 9230 9757 9bf0 a011 a3bf a6ec a9bf ac75 ae67 b03d b11e b184 "
    "b104 aecf 922d 3098 357e 389f 3ab8 3c78 3d9a 3eb9 3fd2 4072 40f8 417c 41fe 427f 4300 4380 "
    "4400 0000 0000 3c00 0000 0002 0001")
GELU_SIGMOID = _verbatim(
    "c500 7c00 0000 7c00 9c5b 9e7b a095 a281 a495 a66b a872 aa16 ac18 ad67 aeed b044 b0f7 b14e "
    "b0dd aebb 9296 30a2 3592 38ad 3ac2 3c77 3d91 3eaa 3fbe 4068 40ee 4173 41f7 427a 42fb 437d "
    "43fe 9c5b a572 3c00 9c00 0002 0001")
SILU = _verbatim(
    "c91a 7c00 0000 7c00 98cd 9c5e 9e65 a0ef a37b a5a9 a83b aa45 ac8e ae85 b088 b210 b3a9 b470 "
    "b460 b284 96fb 34be 39d0 3ce4 3f0b 409f 41b7 42cc 43dc 4473 44f8 457a 45fc 467e 46fe 477f "
    "47ff 945d a191 3c00 9c00 0001 0001")

_TABLES = {
    "tanh": tanh, "sigmoid": sigmoid, "exp2": exp2, "reciprocal": reciprocal, "log2": log2,
    "sqrt": sqrt, "rsqrt": rsqrt,
    "gelu": lambda: GELU, "gelu_tanh": lambda: GELU,  # H13 uses the EXACT table for tanh mode
    "gelu_sigmoid": lambda: GELU_SIGMOID, "silu": lambda: SILU,
}


def table(name: str, **params) -> bytes:
    """The 128-byte table of an activation by name ("tanh", "leaky_relu" with alpha=, ...)."""
    if name == "leaky_relu":
        return leaky_relu(params["alpha"])
    if name == "clip":
        return clip(params["low"], params["high"])
    if name == "selu":
        return selu()
    if name == "elu":
        return elu(params["alpha"])
    try:
        return _TABLES[name]()
    except KeyError:
        raise UnsupportedError(f"no lookup-table rule for activation {name!r}") from None


def mode(data: bytes) -> int:
    """The mode byte (slot 42) of a table."""
    return int(np.frombuffer(data, "<u2")[42])
