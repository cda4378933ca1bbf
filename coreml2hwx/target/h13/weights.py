"""Kernel (weight) packing for the 16 coefficient-DMA channels.

Dense, grouped and depthwise convolutions (constant-section sha256 equal to Apple's in all 12
stride-1 oracle convolutions, 1x1 to 3x3, 64 to 768 channels, groups 1 / 4 / depthwise):

* `lanes` = 2^OCGSize output channels are interleaved per plane (`ocg_lanes`);
* the output channels of each group go to the 16 chunks in stages: while channels remain, each
  chunk takes the next `g = min(lanes, pow2floor(remaining / 16))` channels (chunk c gets
  [base + g c, base + g c + g)), so 768 channels with lanes 32 give every chunk 32 + 16 channels
  (`env_conv_k1_c768_n768_s1_st1_g1_bias1`) and depthwise (lanes 1) deals channel o to chunk o % 16;
* a stage's plane is its bias values (if any) followed by the weights in reduction order
  (input channel, kernel row, kernel column), the plane's `g` channels interleaved per halfword;
* a grouped convolution pads every plane to 64 bytes; every chunk is padded to 64 bytes.

The interleave is capped at 32 output channels for an input of at most 8 pixels per side and at
16 otherwise (measured upstream with known-weight probes at 512 outputs, mil-hwx-compiler
`research/mint_conv_probes.py` `lane_cap`; the oracles here agree: 768 channels at 1x1 use 32).

Chunks are laid out back to back; every chunk has the same size (`CoeffBfrSize`), so
CoeffBaseAddr[i] = i x size (census §1.1, 20/20).
"""

from __future__ import annotations

import numpy as np

CHUNKS = 16


def pow2floor(value: int) -> int:
    return 1 << (value.bit_length() - 1) if value > 0 else 0


def ocg_lanes(cout_per_group: int, side: int) -> int:
    """Output channels interleaved per plane (2^OCGSize): pow2floor(Cout_g / 16), at most 32 for
    an output of <= 8 pixels per side, else 16 (census OCGSize rule, 98/98).  The side is the
    output's: a stride-2 conv from 16x16 to 8x8 interleaves 32 lanes (upstream
    `conv_probe_k1_c64_n512_s16_st2_g1_bias0_same`: OCGSize 5, one task); at stride 1 the two
    sides agree."""
    cap = 32 if side <= 8 else 16
    return max(1, min(pow2floor(cout_per_group // CHUNKS), cap))


def stages(channels: int, lanes: int):
    base, left = 0, channels
    while left:
        g = min(lanes, pow2floor(left // CHUNKS))
        if g == 0:
            raise ValueError(f"{channels} output channels do not split over {CHUNKS} chunks")
        yield base, g
        base += CHUNKS * g
        left -= CHUNKS * g


def _pad64(data: bytes) -> bytes:
    return data + bytes(-len(data) % 64)


def chunk_planes(chunk: int, groups: int, per_group: int, lanes: int):
    """The output channels of each plane coefficient chunk `chunk` holds, in chunk order: per
    group, each round of `stages` deals `g` lanes to every chunk in turn."""
    for group in range(groups):
        for base, g in stages(per_group, lanes):
            yield [group * per_group + base + g * chunk + lane for lane in range(g)]


def pack_dense(weight: np.ndarray, bias, *, lanes: int, groups: int = 1) -> tuple[bytes, int]:
    """Pack weight [O, I/groups, kh, kw] (and bias [O]) into 16 equal chunks: (bytes, chunk size)."""
    out_channels = weight.shape[0]
    per_group = out_channels // groups
    rows = weight.reshape(out_channels, -1).astype(np.float16)
    bias16 = None if bias is None else np.asarray(bias, np.float16).reshape(-1)
    chunks = []
    for c in range(CHUNKS):
        chunk = bytearray()
        for sub in chunk_planes(c, groups, per_group, lanes):
            plane = b"" if bias16 is None else bias16[sub].tobytes()
            plane += np.ascontiguousarray(rows[sub].T).tobytes()
            chunk += _pad64(plane) if groups > 1 else plane
        chunks.append(_pad64(bytes(chunk)))
    size = len(chunks[0])
    if any(len(c) != size for c in chunks):
        raise ValueError("kernel chunks differ in size")
    return b"".join(chunks), size


def pack_per_channel(weight: np.ndarray, bias) -> tuple[bytes, int]:
    """Fewer than 16 outputs: output o alone on chunk o, [bias, weights] padded to 64 bytes, every
    chunk the size of the largest (tinygrad conv.hwx: 3 outputs, 64-byte rows at 0, 0x40, 0x80)."""
    rows = weight.reshape(weight.shape[0], -1).astype(np.float16)
    bias16 = None if bias is None else np.asarray(bias, np.float16).reshape(-1)
    planes = [(b"" if bias16 is None else bias16[o:o + 1].tobytes()) + rows[o].tobytes()
              for o in range(len(rows))]
    size = max(len(_pad64(p)) for p in planes)
    return b"".join(p + bytes(size - len(p)) for p in planes), size
