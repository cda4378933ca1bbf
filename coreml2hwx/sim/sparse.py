"""Reading zero-skipping ("sparse") weight planes: the kernels of stride-2 convolutions
(NE.KernelCfg.SparseFmt).

The format, as Apple's six stride-2 oracle sections show it (their sha256 is reproduced by this
reading, tests/sim/test_sim_sparse.py; ane-facts §2.10 describes the 4-lane 1x1 case):

* a plane (one group's `lanes` output channels on one coefficient channel) is
  [lanes bias halfwords, when MACCfg.BiasMode] [u16 byte count of the body] [body], padded to
  64 bytes;
* the body is a run of 8-slot groups, each a mask byte (bit i: slot i holds a value) followed by
  the fp16 values of the marked slots, in slot order; unmarked slots are zero;
* slots: a K x K stride-2 kernel is split into its four stride phases (py, px), each an s x s
  sub-kernel (s = ceil(K / 2)), giving P = 4 s^2 positions; tap (ky, kx) is at position
  ((py * 2 + px) * s + ky // 2) * s + kx // 2 with py = ky % 2, px = kx % 2.  Input channel ci,
  position p, lane l is slot 8 + (ci * P + p) * E + l with E = max(lanes, 4); the body holds
  Cin * P * E slots, so its first 8 slots are empty and the last channel's final 8 are cut off.

Depthwise stride-2 kernels (`read_depthwise`) hold one record per channel instead: channel o on
coefficient channel o % 16, [bias halfword] [u16 = body bytes - 1] [body], the body one lane's
stream read to its end (8 empty lead slots, then P positions of E slots, E = 4 or 2 in Apple's
sections).  Four upstream Apple sections are read back to their compiled weights
(tests/sim/test_sim_sparse.py).

A value in any slot this reading leaves empty (the 8 lead slots, a position no tap uses, a lane past
the plane's width), a byte count the groups do not fill exactly, or a kernel that is not square
stops the run: the layout would not be understood.
"""

from __future__ import annotations

import numpy as np

LEAD = 8
GROUP = 8


def _positions(k: int) -> tuple[list[int], int]:
    s = (k + 1) // 2
    order = []
    for ky in range(k):
        for kx in range(k):
            phase = (ky % 2) * 2 + kx % 2
            order.append((phase * s + ky // 2) * s + kx // 2)
    return order, 4 * s * s


def _slots(f, body: bytes, count: int, where: str) -> np.ndarray:
    """The fp16 slot stream a body encodes (`count` slots)."""
    values = np.zeros(count, np.float16)
    at = 0
    for group in range(count // GROUP):
        if at >= len(body):
            raise f.fail(f"weights: {where}: the body ends after {group} of {count // GROUP} "
                         "slot groups: layout not understood")
        mask = body[at]
        at += 1
        hot = [i for i in range(GROUP) if mask >> i & 1]
        raw = body[at:at + 2 * len(hot)]
        if len(raw) != 2 * len(hot):
            raise f.fail(f"weights: {where}: slot group {group} runs past the body")
        values[group * GROUP + np.array(hot, int)] = np.frombuffer(raw, "<f2")
        at += len(raw)
    if at != len(body):
        raise f.fail(f"weights: {where}: the body declares {len(body)} bytes, its {count // GROUP} "
                     f"slot groups take {at}: layout not understood")
    return values


def read_plane(chunks, chunk: int, lanes: int, reduction: int, bias: bool, *, cin: int,
               kernel: tuple[int, int]):
    """(W[lanes][cin * kh * kw], bias[lanes] or None) of the next plane on coefficient channel
    `chunk` (fp32)."""
    f = chunks.f
    kh, kw = kernel
    where = f"sparse plane on coefficient channel {chunk}"
    if kh != kw or cin * kh * kw != reduction:
        raise f.fail(f"weights: {where}: a {kh}x{kw} kernel; the zero-skipping layout is known "
                     "for square kernels only")
    b = np.frombuffer(chunks.take(chunk, 2 * lanes), "<f2").astype(np.float32) if bias else None
    count = int.from_bytes(chunks.take(chunk, 2), "little")
    order, npos = _positions(kh)
    columns = max(lanes, 4)
    stream = _slots(f, chunks.take(chunk, count), cin * npos * columns, where)
    if np.any(stream[:LEAD] != 0):
        raise f.fail(f"weights: {where}: a value in the {LEAD} lead slots: layout not understood")
    grid = np.zeros(cin * npos * columns, np.float16)
    grid[:grid.size - LEAD] = stream[LEAD:]
    grid = grid.reshape(cin, npos, columns)
    used = np.zeros((npos, columns), bool)
    used[order, :lanes] = True
    if used.reshape(-1)[used.size - LEAD:].any():
        raise f.fail(f"weights: {where}: a {kh}x{kw} kernel puts taps in the slots the stream "
                     "cuts off: layout not understood")
    if np.any(grid[:, ~used] != 0):
        raise f.fail(f"weights: {where}: a value in a slot no tap or lane uses: layout not "
                     "understood")
    chunks.align(chunk)
    w = grid[:, order, :lanes].astype(np.float32)  # (cin, taps, lanes)
    return w.transpose(2, 0, 1).reshape(lanes, reduction), b


# -- depthwise: one record per channel ----------------------------------------------------------

def _groups(f, body: bytes, where: str) -> np.ndarray:
    """Every slot of a body that is read to its end (depthwise records carry no slot count)."""
    values, at = [], 0
    while at < len(body):
        mask = body[at]
        hot = [i for i in range(GROUP) if mask >> i & 1]
        raw = body[at + 1:at + 1 + 2 * len(hot)]
        if len(raw) != 2 * len(hot):
            raise f.fail(f"weights: {where}: a slot group runs past the record's byte count")
        group = np.zeros(GROUP, np.float16)
        group[np.array(hot, int)] = np.frombuffer(raw, "<f2")
        values.append(group)
        at += 1 + len(raw)
    return np.concatenate(values) if values else np.zeros(0, np.float16)


def read_depthwise(chunks, channels: int, kernel: tuple[int, int], bias: bool):
    """(W[channels][kh * kw], bias[channels] or None) of a depthwise stride-2 kernel (fp32).

    Channel o is a record on coefficient channel o % 16, records back to back:
    [bias halfword, with MACCfg.BiasMode] [u16 = body bytes - 1] [body].  The body is the slot
    stream of one lane: 8 empty lead slots, then P positions of E slots each, tap at column 0.
    E is whatever the body's length makes it (4 and 2 are the values Apple's sections show)."""
    f = chunks.f
    kh, kw = kernel
    if kh != kw:
        raise f.fail(f"weights: a {kh}x{kw} depthwise zero-skipping kernel; the layout is known "
                     "for square kernels only")
    order, npos = _positions(kh)
    w = np.zeros((channels, kh * kw), np.float32)
    b = np.zeros(channels, np.float32) if bias else None
    for o in range(channels):
        chunk, where = o % 16, f"depthwise sparse record of channel {o}"
        if bias:
            b[o] = np.frombuffer(chunks.take(chunk, 2), "<f2")[0]
        size = int.from_bytes(chunks.take(chunk, 2), "little") + 1
        stream = _groups(f, chunks.take(chunk, size), where)
        columns, extra = divmod(stream.size - LEAD, npos)
        if extra or columns not in (2, 4):
            raise f.fail(f"weights: {where}: {stream.size} slots are not {LEAD} lead slots and "
                         f"{npos} positions of 2 or 4 columns: layout not understood")
        grid = stream[LEAD:].reshape(npos, columns)
        used = np.zeros((npos, columns), bool)
        used[order, 0] = True
        if np.any(stream[:LEAD] != 0) or np.any(grid[~used] != 0):
            raise f.fail(f"weights: {where}: a value in a slot no tap uses: layout not understood")
        w[o] = grid[order, 0]
    for chunk in range(min(channels, 16)):
        chunks.align(chunk)
    return w, b
