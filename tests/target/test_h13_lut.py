"""Activation lookup tables (coreml2hwx.target.lut) against Apple's tables.

Ground truth: `prefix_128_sha256` of the constant sections of Apple-compiled oracles in
../shared/oracles/{h13,h14} (the first 128 bytes are the table), the eiln `activation/gelu.bin`
kernel section and the h14 oracles' decoded fp16 words (../shared, see lut-rules.md §4).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from coreml2hwx.target import lut
from tests.conftest import load_json, shared_files

EILN = "artifacts/eiln_ane/f182ece390b4/anec/kernels/activation/gelu.bin"

# oracle case -> the table Apple put first in its constant section
TABLES = {
    "unary_tanh_c512": lut.tanh, "unary_sigmoid_c64": lut.sigmoid, "unary_sqrt_c512": lut.sqrt,
    "unary_rsqrt_c64": lut.rsqrt, "binary_real_div_1x64x1x1": lut.reciprocal,
    "binary_pow_1x64x1x1": lut.log2, "norm_softmax_an1_1x1x1x64": lut.exp2,
    "unary_leaky_relu_c512": lambda: lut.leaky_relu(0.125),
    "binary_maximum_c512_constant_scalar": lambda: lut.clip(0.5, math.inf),
    "unary_gelu_c64": lambda: lut.GELU, "unary_gelu_c512": lambda: lut.GELU,
    "env_act_gelu_1x768x1x1_tanh_approximation": lambda: lut.table("gelu_tanh"),
    "env_act_gelu_1x768x1x1_sigmoid_approximation": lambda: lut.GELU_SIGMOID,
    "unary_silu_c512": lambda: lut.SILU, "env_act_silu_1x256x32x32": lambda: lut.SILU,
}
ORACLES = [(p.parent.name, load_json(p)) for t in ("h13", "h14")
           for p in shared_files(f"oracles/{t}/*.json")]
LUT_CASES = [(t, c) for t, c in ORACLES if c["case"] in TABLES and not c["error"]]


@pytest.mark.parametrize("target, case", LUT_CASES, ids=lambda v: v if isinstance(v, str) else v["case"])
def test_table_hash_equals_apples(target, case):
    table = TABLES[case["case"]]()
    assert len(table) == lut.TABLE_BYTES
    assert hashlib.sha256(table).hexdigest() == case["constant_section"]["prefix_128_sha256"]


def test_pow_second_table_is_exp2_at_0x800():
    """H13 pads each table to 2 KiB; pow's section is log2 then exp2 (binary_pow_1x64x1x1)."""
    (path,) = shared_files("oracles/h13/binary_pow_1x64x1x1.json")
    section = lut.log2() + bytes(0x800 - 128) + lut.exp2() + bytes(0x800 - 128)
    assert hashlib.sha256(section).hexdigest() == load_json(path)["constant_section"]["sha256"]


def test_gelu_copy_equals_the_eiln_kernel(shared):
    data = (shared / EILN).read_bytes()
    assert lut.GELU == data[len(data) - 0x80:]


@pytest.mark.parametrize("case, table", [
    ("env_act_gelu_1x768x1x1_sigmoid_approximation", lut.GELU_SIGMOID),
    ("env_act_silu_1x256x32x32", lut.SILU)])
def test_fitted_copies_equal_the_h14_words(shared, case, table):
    words = load_json(shared / f"oracles/h14/{case}.json")["constant_section"]["nonzero_fp16_words"]
    slots = np.zeros(64, np.float16)
    for w in words:
        slots[w["index"]] = {"+inf": np.inf, "-inf": -np.inf}.get(w["value"], w["value"])
    assert slots.tobytes() == table


def test_mode_byte():
    assert lut.mode(lut.reciprocal()) == lut.MODE_RECIPROCAL
    assert lut.mode(lut.exp2()) == lut.MODE_EXP2
