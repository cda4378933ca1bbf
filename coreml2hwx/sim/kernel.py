"""Coefficients: what the kernel DMA fetches (lookup tables, weights) and the NE's convolution.

Channel i of KernelDMASrc fetches CoeffBfrSize[i] bytes at CoeffBaseAddr[i] of the buffer in BAR
slot KBase0 (the constant section, slot 1) when CoeffDMAConfig[i].En is set (ane-facts §2.7.7).

Weight layout.  The rule below rebuilds Apple's constant section byte for byte (sha256 of the
oracle sections: conv_k1/k3 dense, with and without bias, env_conv_k1_c768 with two plane sizes,
grouped env_conv_*_g4, depthwise env_conv_k3_*_g64 and conv_probe_*_g128 with bias, every
matmul_* and env_mm_*_ty1; tests/sim/test_oracles.py rebuilds them the same way and checks the
hashes):

* Output channels are dealt to the 16 coefficient channels ("chunks") in *planes* of L lanes,
  round robin: plane j of a round goes to chunk j.  A round takes 16 planes of
  L = min(2^OCGSize, pow2floor(remaining / 16)) lanes while at least 16 outputs remain, then one
  1-lane plane per remaining output (tinygrad conv.hwx: 3 outputs on chunks 0-2).
* A plane is [the L biases, when MACCfg.BiasMode] then, for each reduction index
  k = (ci, kh, kw) in that order, the L lanes' weights; fp16.  The planes of a chunk follow each
  other unpadded (upstream conv_probe_k1_c64_n512_s16_st1_g1_bias1_same); grouped convs pad
  each plane to 64 bytes; the chunk ends on a 64-byte boundary.
* Grouped convs (NumGroups G): a chunk holds its plane of group 0, then of group 1, ...
* Depthwise (GroupConvCfg.UnicastEn with weights): channel o is on chunk o % 16 as
  [bias] + its Kh*Kw taps, the channels of a chunk back to back, the chunk padded to 64 bytes.
* Stride-2 convs (KernelCfg.SparseFmt) skip zero weights: the plane layout is in `sparse`
  (all six stride-2 oracle sections; a plane whose bytes do not parse exactly stops the run).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from coreml2hwx.sim import sparse as zero_skipping
from coreml2hwx.sim.memory import KERNEL_SLOT


CHANNELS = 16
F32 = np.float32


def coefficients(f, memory, channel: int, size: int | None, what: str) -> bytes:
    """The bytes coefficient channel `channel` fetches (`size` bytes, or its whole buffer)."""
    if not f.header("KBE0"):
        raise f.fail(f"{what}: the task fetches no coefficients (header KBE0 = 0)")
    if not f.get(f"kernel_dma_src.CoeffDMAConfig[{channel}].En"):
        raise f.fail(f"{what}: coefficient channel {channel} is not enabled")
    slot = f.header("KBase0")
    base = f.bytes(f"kernel_dma_src.CoeffBaseAddr[{channel}].Addr")
    buffer_size = f.bytes(f"kernel_dma_src.CoeffBfrSize[{channel}].MemBfrSize")
    size = buffer_size if size is None else size
    if size > buffer_size:
        raise f.fail(f"{what}: needs {size} bytes, coefficient channel {channel} fetches "
                     f"{buffer_size}")
    buf = memory.buffers.get(slot)
    if buf is None or base + size > len(buf):
        have = 0 if buf is None else len(buf)
        raise f.fail(f"{what}: coefficient channel {channel} reads bytes "
                     f"{base:#x}..{base + size:#x} of BAR slot {slot}, which holds {have:#x} bytes")
    return bytes(buf[base:base + size])


# -- the plane schedule --------------------------------------------------------------------------

def pow2floor(n: int) -> int:
    return 1 << (n.bit_length() - 1) if n > 0 else 0


def planes(cout: int, max_lanes: int) -> list[tuple[int, int, int]]:
    """(chunk, first output, lanes) of every plane, in the order a chunk stores them."""
    out, start = [], 0
    while start < cout:
        remaining = cout - start
        if remaining >= CHANNELS:
            lanes = min(max_lanes, pow2floor(remaining // CHANNELS))
            out += [(j, start + j * lanes, lanes) for j in range(CHANNELS)]
            start += CHANNELS * lanes
        else:
            out += [(j, start + j, 1) for j in range(remaining)]
            start = cout
    return out


def round64(n: int) -> int:
    return -(-n // 64) * 64


class Chunks:
    """The bytes of each enabled coefficient channel, read sequentially."""

    def __init__(self, f, memory):
        self.f = f
        self.data = {}
        for i in range(CHANNELS):
            if f.get(f"kernel_dma_src.CoeffDMAConfig[{i}].En"):
                self.data[i] = coefficients(f, memory, i, None, "weights")
        self.pos = {i: 0 for i in self.data}
        self._halves: dict[int, np.ndarray] = {}

    def take_halves(self, chunk: int, count: int) -> np.ndarray:
        """The next `count` fp16 values of a channel as fp32 (`take`; one conversion a channel)."""
        start = self.pos.get(chunk, 0)
        raw = self.take(chunk, 2 * count)
        if start % 2:
            return _halves(raw)
        if chunk not in self._halves:
            data = self.data[chunk]
            self._halves[chunk] = np.frombuffer(data, "<f2", len(data) // 2).astype(F32)
        return self._halves[chunk][start // 2:start // 2 + count]

    def take(self, chunk: int, nbytes: int) -> bytes:
        if chunk not in self.data:
            raise self.f.fail(f"weights: the layout puts a plane on coefficient channel {chunk}, "
                              "which is not enabled")
        start = self.pos[chunk]
        if start + nbytes > len(self.data[chunk]):
            raise self.f.fail(f"weights: coefficient channel {chunk} holds "
                              f"{len(self.data[chunk])} bytes, the layout needs more")
        self.pos[chunk] = start + nbytes
        return self.data[chunk][start:start + nbytes]

    def align(self, chunk: int) -> None:
        self.pos[chunk] = round64(self.pos[chunk])

    def check_consumed(self) -> None:
        for i, data in self.data.items():
            if round64(self.pos[i]) != len(data):
                raise self.f.fail(f"weights: coefficient channel {i} fetches {len(data)} bytes, "
                                  f"the layout rule accounts for {round64(self.pos[i])}")


def _halves(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, "<f2").astype(F32)


def dense_plane(chunks: Chunks, chunk: int, lanes: int, reduction: int, bias: bool,
                pad: bool = True):
    b = chunks.take_halves(chunk, lanes) if bias else None
    w = chunks.take_halves(chunk, lanes * reduction).reshape(reduction, lanes).T
    if pad:
        chunks.align(chunk)
    return w, b


def weights(f, memory, groups: int, cin: int, cout: int, kh: int, kw: int, depthwise: bool):
    """(W[g][o][ci][kh][kw], bias[g][o] or None) as fp32, read through the layout rule."""
    if f.get("ne.KernelCfg.KernelFmt") != 2:
        raise f.fail(f"ne.KernelCfg.KernelFmt = {f.get('ne.KernelCfg.KernelFmt')}: only fp16 "
                     "weights (2) are known")
    return from_constants(f, "weights", lambda: _unpack(f, Chunks(f, memory), groups, cin, cout,
                                                        kh, kw, depthwise))


def from_constants(f, key: str, make):
    """`make()`, kept with the task when its coefficients come from the constant section (BAR
    slot 1, which no task writes: the same bytes every run); made anew when they come from a
    tensor (a runtime x runtime matmul: an input at M = 16, or at M = 32, 64 the scratch slot an
    earlier task of the same run wrote with an interleaved DMA write, machine.Task.interleaved)."""
    if f.header("KBase0") != KERNEL_SLOT:
        return make()
    if key not in f.memo:
        f.memo[key] = make()
    return f.memo[key]


def _unpack(f, chunks, groups, cin, cout, kh, kw, depthwise):
    bias = bool(f.get("ne.MACCfg.BiasMode"))
    sparse = bool(f.get("ne.KernelCfg.SparseFmt"))
    if depthwise:
        if groups != 1 or cin != cout:
            raise f.fail("weights: depthwise layout seen only with one group, Cin = Cout")
        if sparse:  # one zero-skipping record per channel (sim/sparse.read_depthwise: four
            # upstream Apple stride-2 depthwise sections rebuilt byte for byte)
            w, b = zero_skipping.read_depthwise(chunks, cout, (kh, kw), bias)
            chunks.check_consumed()
            return w.reshape(1, cout, 1, kh, kw), (None if b is None else b[None])
        w = np.zeros((1, cout, 1, kh, kw), F32)
        b = np.zeros((1, cout), F32) if bias else None
        entry = int(bias) + kh * kw  # halves per channel: [bias] taps
        for chunk in range(min(cout, CHANNELS)):
            mine = range(chunk, cout, CHANNELS)  # channels of this chunk, back to back
            values = chunks.take_halves(chunk, entry * len(mine)).reshape(len(mine), entry)
            if bias:
                b[0, mine] = values[:, 0]
            w[0, mine, 0] = values[:, int(bias):].reshape(len(mine), kh, kw)
        chunks.check_consumed()
        return w, b
    reduction = cin * kh * kw
    # Planes of one group follow each other unpadded; a grouped conv pads each plane to 64
    # bytes (upstream conv_probe_k1_c64_n512_s16_st1_g1_bias1_same: 16-lane planes of 2080
    # bytes - 16 biases, 64 x 16 weights - back to back, the section's sha256 equal to
    # Apple's; grouped: env_conv_*_g4).
    read_plane = (partial(zero_skipping.read_plane, cin=cin, kernel=(kh, kw)) if sparse
                  else partial(dense_plane, pad=groups > 1))
    schedule = planes(cout, 1 << f.get("common.ConvCfg.OCGSize"))
    w = np.zeros((groups, cout, reduction), F32)
    b = np.zeros((groups, cout), F32) if bias else None
    for chunk in sorted({c for c, _, _ in schedule}):
        mine = [(first, lanes) for c, first, lanes in schedule if c == chunk]
        for g in range(groups):
            for first, lanes in mine:
                pw, pb = read_plane(chunks, chunk, lanes, reduction, bias)
                w[g, first:first + lanes] = pw
                if bias:
                    b[g, first:first + lanes] = pb
    chunks.check_consumed()
    return w.reshape(groups, cout, cin, kh, kw), b


# -- the convolution --------------------------------------------------------------------------

def convolve(f, memory, x: np.ndarray, out_shape) -> np.ndarray:
    g, d, cin, h, w = x.shape
    _, _, cout, hout, wout = out_shape
    kw, kh = f.get("common.ConvCfg.Kw"), f.get("common.ConvCfg.Kh")
    sx, sy = f.get("common.ConvCfg.Sx"), f.get("common.ConvCfg.Sy")
    px, py = f.get("common.ConvCfg.Px"), f.get("common.ConvCfg.Py")
    depthwise = bool(f.get("common.GroupConvCfg.UnicastEn"))
    if f.get("common.GroupConvCfg.ElemMultMode"):
        raise f.fail("GroupConvCfg.ElemMultMode in a task with weights: never seen")
    weight, bias = weights(f, memory, 1 if depthwise else g, cin, cout, kh, kw, depthwise)
    if depthwise:
        out = depthwise_sum(x, weight[0, :, 0], (kh, kw, sx, sy, px, py, hout, wout))
        if bias is not None:
            out += bias[0][None, None, :, None, None]
        return out
    # one fp32 matrix product per group: (cout, cin*kh*kw) @ (cin*kh*kw, pixels)
    if (kh, kw, sx, sy, px, py, hout, wout) == (1, 1, 1, 1, 0, 0, h, w):
        cols = x.reshape(g, d, cin, h * w)
    else:
        cols = _windows(x, kh, kw, sx, sy, px, py, hout, wout).transpose(0, 1, 2, 5, 6, 3, 4)
        cols = cols.reshape(g, d, cin * kh * kw, hout * wout)
    out = np.matmul(weight.reshape(g, 1, cout, -1), cols)
    if bias is not None:
        out += bias[:, None, :, None]
    return out.reshape(g, d, cout, hout, wout)


def depthwise_reference(x, taps, geometry) -> np.ndarray:
    """Each channel's taps summed over its windows: one fp32 einsum (g, d, c, Hout, Wout)."""
    return np.einsum("gdcyxij,cij->gdcyx", _windows(x, *geometry), taps, dtype=F32)


DEPTHWISE_BLOCK = 1 << 17  # output elements summed together (their temporaries stay in cache)


def depthwise_sum(x, taps, geometry) -> np.ndarray:
    """`depthwise_reference`, bit for bit, as whole-plane multiply-adds over blocks of channels.
    For kernels up to 3 wide, einsum sums each kernel row's products left to right and adds the
    row sums to a zeroed output, row by row; this repeats that order.  Wider kernels keep the
    einsum (its inner sum then goes through SIMD partial sums whose order depends on the CPU)."""
    kh, kw, sx, sy, px, py, hout, wout = geometry
    if kw > 3:
        return depthwise_reference(x, taps, geometry)
    g, d, c = x.shape[:3]
    out = np.empty((g, d, c, hout, wout), F32)
    step = max(1, DEPTHWISE_BLOCK // max(1, g * d * hout * wout))
    for first in range(0, c, step):
        block = slice(first, first + step)
        _depthwise_block(x[:, :, block], taps[block], geometry, out[:, :, block])
    return out


def _depthwise_block(x, taps, geometry, out):
    kh, kw, sx, sy, px, py, hout, wout = geometry
    padded = _padded(x, *geometry)
    row_sum, tap = np.empty_like(out), np.empty_like(out)
    out[...] = 0
    for i in range(kh):
        rows = padded[:, :, :, i:i + (hout - 1) * sy + 1:sy]
        for j in range(kw):
            product = row_sum if j == 0 else tap
            np.multiply(rows[..., j:j + (wout - 1) * sx + 1:sx], taps[:, i, j, None, None],
                        out=product)
            if j:
                row_sum += tap
        out += row_sum


def _padded(x, kh, kw, sx, sy, px, py, hout, wout):
    """x zero padded: Px/Py left/top, and right/bottom as far as the last window reaches."""
    h, w = x.shape[3:]
    bottom = max(0, (hout - 1) * sy + kh - py - h)
    right = max(0, (wout - 1) * sx + kw - px - w)
    return np.pad(x, ((0, 0), (0, 0), (0, 0), (py, bottom), (px, right)))


def _windows(x, kh, kw, sx, sy, px, py, hout, wout):
    """(g, d, c, y, x, i, j): the input under each kernel tap, zero padded (left/top Px/Py)."""
    padded = _padded(x, kh, kw, sx, sy, px, py, hout, wout)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(3, 4))
    return windows[:, :, :, ::sy, ::sx][:, :, :, :hout, :wout]
