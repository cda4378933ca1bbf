"""Four depthwise stride-2 programs Apple's H13 compiler produced (upstream
joshuaswarren/mil-hwx-compiler, research/oracles/h13/<name>.json): the constant-section sha256,
size and per-chunk CoeffBfrSize Apple wrote, and how to rebuild the weights each case compiled.
The hashes are copied from those files as facts; no upstream data is stored here.

Weights: the two `conv_probe_*` cases follow the oracle README rule (every constant reads the
blob file from byte 0: a 128-byte header, then fp16 0.5); the two `encoder_conv_idx*` cases use a
well-formed blob whose payload is uint16(i + 1) over the weights and then the bias ("weight then
bias"), the `idxb` one XORed with 0x4b1d (the JSON's "xor_mask": 19229).
"""

from __future__ import annotations

import struct

import numpy as np

DEPTHWISE = {
    "conv_probe_k1_c64_n64_s16_st2_g64_bias0_same": dict(
        kernel=1, channels=64, hout=8, bias=False, weights=("readme", 64), size=1024, chunk=0x40,
        sha256="22a4c517f5e59fe1cbaa1407b6baa0680297a018bbcf9da6be0046a726a234c7"),
    "conv_probe_k3_c64_n64_s16_st2_g64_bias0_same": dict(
        kernel=3, channels=64, hout=8, bias=False, weights=("readme", 576), size=2048, chunk=0x80,
        sha256="72c39c85606d3d747e980d0ad4c83466305a52e66a9cedc1d53ec5e7915afd73"),
    "encoder_conv_idx_c256_n256_k3x3_s2_g256_bias1_same_x1500x64": dict(
        kernel=3, channels=256, hout=750, bias=True, weights=("index", 0), size=7168, chunk=0x1C0,
        sha256="10f89c21b5d325d80a8e7e7286ea6f4447b99134284d7d3ee369fd6c5430f1c7"),
    "encoder_conv_idxb_c256_n256_k3x3_s2_g256_bias1_same": dict(
        kernel=3, channels=256, hout=750, bias=True, weights=("index", 0x4B1D), size=7168,
        chunk=0x1C0, sha256="5e11080a62b1a3d29a1de064bfaca4236b0393f14a10138c1c7700800363019f"),
}


def compiled_weights(case: dict):
    """(weight [C, 1, K, K], bias [C] or None) as fp16, the tensors Apple compiled."""
    c, k = case["channels"], case["kernel"]
    rule, arg = case["weights"]
    if rule == "readme":
        head = bytearray(128)
        head[0:8] = struct.pack("<II", 1, 2)
        head[64:84] = struct.pack("<IQQ", 0xDEADBEEF, 2 * arg, 128)
        halves = np.frombuffer((bytes(head) + b"\x00\x38" * arg)[:2 * arg], np.float16)
        return halves[:c * k * k].reshape(c, 1, k, k), (halves[:c] if case["bias"] else None)
    count = c * k * k + (c if case["bias"] else 0)
    bits = ((np.arange(count) + 1) & 0xFFFF).astype(np.uint16) ^ np.uint16(arg)
    halves = bits.view(np.float16)
    return (halves[:c * k * k].reshape(c, 1, k, k),
            halves[c * k * k:] if case["bias"] else None)
