"""Damaged inputs raise our own errors (file + location + rule), never a Python exception.

Inputs: oracle MIL texts (../shared/oracles) and zoo models converted by coremltools, damaged by
seeded random edits.
"""

import json
import random

import pytest

from coreml2hwx.errors import Coreml2hwxError
from coreml2hwx.frontend import load, parse_mil_text
from tests.conftest import shared_files

CASES = ["env_conv_k3_c64_n64_s16_st2_g4_bias1", "norm_softmax_an1_1x1x1x64",
         "binary_add_c64_constant_inline", "env_mm_r2rb_m1_k2048_n2048_tx1_ty1",
         "reduce_probe_max_ax2_3_1x64x8x8_flat", "layer_norm_1x512x1x1"]
SNIPPETS = ["1", "-1", "0", "fp16", "tensor<fp32, []>", '"a"', "0x1p-1", "[1,2]", "[]", "(a, b)",
            "BLOBFILE(", "}"]


def _damage_text(text, rnd):
    for _ in range(rnd.randrange(1, 3)):
        p = rnd.randrange(len(text))
        kind = rnd.randrange(4)
        if kind == 0:
            text = text[:p]
        elif kind == 1:
            text = text[:p] + rnd.choice('()[]{}<>,=;"-x0 ') + text[p + 1:]
        elif kind == 2:
            text = text[:p] + text[p + rnd.randrange(1, 20):]
        else:
            text = text[:p] + rnd.choice(SNIPPETS) + text[p:]
        if len(text) < 2:
            break
    return text


@pytest.mark.parametrize("seed", range(4))
def test_damaged_mil_text(seed):
    texts = [json.loads(shared_files(f"oracles/h13/{c}.json")[0].read_text())["mil"] for c in CASES]
    rnd = random.Random(seed)
    for _ in range(200):
        try:
            parse_mil_text(_damage_text(rnd.choice(texts), rnd))
        except Coreml2hwxError:
            pass


@pytest.mark.parametrize("fmt", ["mlmodel", "mlpackage"])
def test_damaged_model_protobuf(zoo, tmp_path, fmt):
    source = zoo.path("ops", fmt)
    spec_file = source if fmt == "mlmodel" else source / "Data" / "com.apple.CoreML" / "model.mlmodel"
    data = spec_file.read_bytes()
    rnd = random.Random(fmt)
    target = tmp_path / "damaged.mlmodel"
    for _ in range(150):
        damaged = bytearray(data)
        for _ in range(rnd.randrange(1, 4)):
            damaged[rnd.randrange(len(damaged))] = rnd.randrange(256)
        if rnd.random() < 0.2:
            damaged = damaged[: rnd.randrange(len(damaged))]
        target.write_bytes(bytes(damaged))
        try:
            load(target)
        except Coreml2hwxError as err:
            assert err.file == str(target)
