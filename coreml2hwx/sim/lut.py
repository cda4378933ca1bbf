"""The NE's activation lookup table: 64 fp16 slots, a 33-point piecewise-linear function.

Slot layout (ane-facts §2.11 [A] for slots 4-36, the rest [H]; corrected by lut-rules.md §2, which
reproduced every Apple table bit for bit from these readings):

    0, 1    input bounds lo, hi: x <= lo gives slot 2, x >= hi gives slot 3
    4..36   33 samples on a uniform grid of step h = 2^-slot41 (slot 41 is a signed int16)
    37, 38  slope and intercept of the line used below the grid
    39, 40  slope and intercept of the line used above the grid
    42      mode: where the grid sits and how the exponent of x is handled

| mode | grid sample k is f at | evaluation |
|---|---|---|
| 0x01 | (k-16) h | plain |
| 0x02 | (k-32) h | plain |
| 0x60 | k h on abs(x) | odd: f(-x) = -f(x) |
| 0x0A | k/32 | exp2: x = n + f, 2^n * table(f) |
| 0x67 | 0.5 + k/64 | reciprocal, odd: abs(x) = m 2^e, table(m) 2^-e |
| 0xC9 | 0.5 + k/64 | log2: x = m 2^e, table(m) + e |
| 0xC5 / 0xC6 | k/16 (k >= 8) | sqrt / rsqrt: x = m 4^j, m in [0.5, 2), table(m) 2^(+-j) |

The exponent handling of the last four modes is this module's hypothesis [H]; the eiln exp, exp2,
inv, log, log2, log10, sqrt and rsqrt streams and the oracle real_div / rsqrt / softmax programs
check it (tests/sim).  A table in any other mode (eiln ceil uses 0x63 and 0x64) stops the run.

Why 0x63 / 0x64 stay unknown (eiln unary/ceil.bin, source op torch.ceil on fp16).  The program is
B = T64(fp16(T63(x))) rounded to fp16, then fp16(B + [x > 0]) by the PE (the third table, mode
0x01, is the step [x > 0]; test_sim_eiln probes this flow).  Both unknown tables are all zeros
(knots, tails) with bounds -inf/+inf; T63 has step h = 1 and bound outputs 0, 0; T64 has h = 2^-5
(exp2's grid) and bound outputs -inf, +inf.  So torch.ceil pins only the composition: B(x) must be
ceil(x) - 1 for x > 0 and ceil(x) for x <= 0 ("strict truncation").  No B is exact for the 512
positive fp16 x in (2048, 4096) with an odd last mantissa bit (x +- 1 are ties that round to even),
so "ceil within 2 there, exact elsewhere" is the best any reading can give.  Checked on every
finite fp16 (throwaway numpy, composing candidates for T63 x T64 from: identity, floor, trunc,
round-half-even, ceil, x - floor(x), x - trunc(x), fp16 next-below, x - 0.5, strict truncation):
* excluded: T63 any integer rounding (floor, trunc, round, or n + table(f) with a zero table): it
  maps 2 and 2.5 alike, but B(2) = 1, B(2.5) = 2 - wrong at every positive integer at best;
  T63 any fractional part (the integer part is lost); both modes read as plain odd tables of
  their zero knots (B = 0); the natural "n + table(f) on exp2's k/32 grid" for 0x64 (= trunc)
  after a T63 that passes x on (wrong at every positive integer) or moves it to the next fp16
  below (11 775 values wrong);
* still fitting, with only the 512 unavoidable misses: T63 = x (or ceil) with T64 = strict
  truncation, and T63 = strict truncation with T64 = x, floor, trunc, round or ceil.
One program cannot separate these, and none explains T63's bound outputs (0 at +-inf would make
ceil(+inf) = 1).  A second Apple program using either mode alone is needed before one is added.
"""

from __future__ import annotations

import numpy as np

from coreml2hwx.errors import SimulationError

SLOTS = 64
TABLE_BYTES = 2 * SLOTS
MODES = {0x01: "plain", 0x02: "plain", 0x60: "odd", 0x0A: "exp2", 0x67: "reciprocal",
         0xC9: "log2", 0xC5: "sqrt", 0xC6: "rsqrt"}
ORIGIN_STEPS = {0x01: -16, 0x02: -32, 0x60: 0}
SLICE = 1 << 15  # elements evaluated together (float64 temporaries stay in cache)


class Lut:
    def __init__(self, table: bytes, where: str = ""):
        if len(table) < TABLE_BYTES:
            raise SimulationError(f"lookup table of {len(table)} bytes, expected {TABLE_BYTES}",
                                  where=where)
        raw = np.frombuffer(table[:TABLE_BYTES], "<u2")
        slots = raw.view(np.float16).astype(np.float64)
        self.mode = int(raw[42])
        if self.mode not in MODES:
            raise SimulationError(f"lookup table mode (slot 42) = {self.mode:#x}: no evidence for "
                                  f"how it evaluates (known: "
                                  f"{', '.join(hex(m) for m in MODES)})", where=where)
        if raw[43:].any():
            raise SimulationError("lookup table slots 43..63 are not zero", where=where)
        self.lo, self.hi, self.out_lo, self.out_hi = slots[0:4]
        self.knots = slots[4:37]
        self.below = slots[37:39]
        self.above = slots[39:41]
        step = int(raw[41].astype(np.int16))
        self.h = 2.0 ** -step
        self.where = where

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind == "f" and np.isnan(x).any():
            raise SimulationError("a lookup-table input is NaN: no Apple program shows what the "
                                  "table does with NaN", where=self.where)
        kind = MODES[self.mode]
        with np.errstate(all="ignore"):
            span = self._clamp() if x.dtype in (np.float32, np.float16) else None
            if span is not None:
                return self._clamped(x, span)
            if kind in ("plain", "odd"):
                return self._sliced(x)
            return getattr(self, "_" + kind)(np.asarray(x, np.float64)).astype(np.float32)

    def reference(self, x: np.ndarray) -> np.ndarray:
        """The table evaluated on whole arrays (the definition `__call__` speeds up)."""
        x = np.asarray(x, np.float64)
        kind = MODES[self.mode]
        with np.errstate(all="ignore"):
            if kind == "plain":
                y = self._plain_reference(x, ORIGIN_STEPS[self.mode] * self.h)
            elif kind == "odd":
                y = np.copysign(self._plain_reference(np.abs(x), 0.0), x)
            else:
                y = getattr(self, "_" + kind)(x)
            return y.astype(np.float32)

    def _clamp(self) -> tuple[float, float] | None:
        """For a plain table that is y = x clamped to its bounds (relu6, hardtanh): the span of
        inputs on its grid.  Off the grid `reference` gives out_lo for x <= lo, out_hi for
        x >= hi, else x * 1 + 0 in float64 rounded to float32 - which, for float32 x, is
        clip(x, lo, hi) in float32 when out_lo = lo and out_hi = hi (no -0 among them; x = +-0 is
        on the grid).  With h in [2^-100, 2^20] the grid test t < 0 / t > 32 is exactly
        x < origin / x > origin + 32 h (x - origin is exact near those ends and neither under-
        nor overflows)."""
        if MODES[self.mode] != "plain" or not 2.0 ** -100 <= self.h <= 2.0 ** 20:
            return None
        if tuple(self.below) != (1.0, 0.0) or tuple(self.above) != (1.0, 0.0):
            return None
        bounds = np.array([self.lo, self.hi, self.out_lo, self.out_hi])
        if not (np.isfinite(bounds).all() and self.lo < self.hi and self.out_lo == self.lo
                and self.out_hi == self.hi and not np.signbit(bounds[bounds == 0]).any()):
            return None
        origin = ORIGIN_STEPS[self.mode] * self.h
        return origin, origin + 32 * self.h

    def fp16_clip(self):
        """For a `_clamp` table with lo >= +0 whose grid holds no fp16 value but +-0 (relu6's):
        a function of fp16 inputs giving `reference`'s values as fp16, computed on the bit
        patterns.  Non-negative fp16 values order as their int16 bits and every negative one (and
        -0) lies below +0, so clipping the bits to [bits(lo), bits(hi)] is the clamp; the result
        is always an input or a bound, so no rounding is involved.  The grid's only inputs, +-0,
        are checked against `reference` here.  None for any other table."""
        span = self._clamp()
        if span is None or self.lo < 0 or max(abs(span[0]), abs(span[1])) >= 2.0 ** -25:
            return None
        lo, hi = np.array([self.lo, self.hi], np.float16).view(np.int16)

        def clip(x16: np.ndarray) -> np.ndarray:
            bits = x16.view(np.int16)
            if bits.size and (bits & 0x7FFF).max() > 0x7C00:
                self(x16)  # a NaN: stops the run as the table does
            return np.clip(bits, lo, hi).view(np.float16)

        zeros = np.array([0.0, -0.0], np.float16)
        if clip(zeros).tobytes() != self.reference(zeros).astype(np.float16).tobytes():
            return None
        return clip

    def _clamped(self, x: np.ndarray, grid_span) -> np.ndarray:
        """`reference` of a `_clamp` table: float32 clip, the table itself on grid inputs."""
        x = np.asarray(x, np.float32)
        if np.isnan(x).any():
            return self.reference(x)
        y = np.clip(x, np.float32(self.lo), np.float32(self.hi))
        start, end = grid_span
        grid = (x >= np.float32(start)) & (x <= np.float32(end))
        if grid.any():
            y[grid] = self.reference(x[grid])
        return y

    def _sliced(self, x: np.ndarray) -> np.ndarray:
        """Plain and odd tables, element for element as `reference`, in cache-sized slices; the
        grid is interpolated only where an input falls on it (a clamp table's inputs miss it)."""
        flat = x.reshape(-1)
        out = np.empty(flat.shape, np.float32)
        plain = MODES[self.mode] == "plain"
        for start in range(0, flat.size, SLICE):
            part = flat[start:start + SLICE].astype(np.float64)
            if plain:
                out[start:start + SLICE] = self._plain(part, ORIGIN_STEPS[self.mode] * self.h)
            else:
                out[start:start + SLICE] = np.copysign(self._plain(np.abs(part), 0.0), part)
        return out.reshape(x.shape)

    # -- the piecewise-linear core -------------------------------------------------------------
    def _grid(self, t: np.ndarray) -> np.ndarray:
        """Interpolate the 33 knots at grid position t in [0, 32]."""
        k = np.clip(np.floor(t), 0, 31).astype(np.int64)
        frac = t - k
        return self.knots[k] + frac * (self.knots[k + 1] - self.knots[k])

    def _plain(self, x: np.ndarray, origin: float) -> np.ndarray:
        t = x - origin
        t /= self.h
        below, above = t < 0, t > 32
        if np.array_equal(self.below, self.above):  # one line both sides (relu6, hardtanh)
            y = self.below[0] * x
            y += self.below[1]
        else:
            y = np.where(below, self.below[0] * x + self.below[1],
                         self.above[0] * x + self.above[1])
        grid = ~(below | above)
        if grid.any():
            y[grid] = self._grid(np.clip(t[grid], 0, 32))
        np.putmask(y, x <= self.lo, self.out_lo)
        np.putmask(y, x >= self.hi, self.out_hi)
        return y

    def _plain_reference(self, x: np.ndarray, origin: float) -> np.ndarray:
        t = (x - origin) / self.h
        y = self._grid(np.clip(t, 0, 32))
        y = np.where(t < 0, self.below[0] * x + self.below[1], y)
        y = np.where(t > 32, self.above[0] * x + self.above[1], y)
        return self._bounded(x, y)

    def _bounded(self, x, y):
        y = np.where(x <= self.lo, self.out_lo, y)
        return np.where(x >= self.hi, self.out_hi, y)

    # -- exponent-splitting modes [H] ----------------------------------------------------------
    def _exp2(self, x):
        n = np.floor(x)
        # +-inf has no fractional part (inf - inf is NaN); its value comes from the bounds
        f = np.where(np.isfinite(x), x - n, 0.0)
        y = self._grid(np.clip(f / self.h, 0, 32)) * np.exp2(n)
        return self._bounded(x, y)

    def _mantissa(self, x):
        m, e = np.frexp(x)  # x = m 2^e, m in [0.5, 1)
        return m, e

    def _reciprocal(self, x):
        a = np.abs(x)
        m, e = self._mantissa(a)
        y = self._grid(np.clip((m - 0.5) / self.h, 0, 32)) * np.exp2(-e.astype(np.float64))
        return np.copysign(self._bounded(a, y), x)

    def _log2(self, x):
        m, e = self._mantissa(x)
        y = self._grid(np.clip((m - 0.5) / self.h, 0, 32)) + e
        return self._bounded(x, y)

    def _root(self, x, sign):
        m, e = self._mantissa(x)
        odd = e % 2 != 0
        m = np.where(odd, 2 * m, m)
        j = np.where(odd, e - 1, e) // 2
        y = self._grid(np.clip(m / self.h, 0, 32)) * np.exp2(sign * j.astype(np.float64))
        return self._bounded(x, y)

    def _sqrt(self, x):
        return self._root(x, 1)

    def _rsqrt(self, x):
        return self._root(x, -1)
