"""H13 convolutions: dense, grouped and depthwise, 1x1 and 3x3, with bias and fused relu.

Ground truth: Apple's programs in ../shared/oracles/h13 (convolution, conv_probe, env_conv, and the
conv+relu chain); the constant sections (packed weights) must hash like Apple's.
"""

from __future__ import annotations

import numpy as np
import pytest

from coreml2hwx.errors import UnsupportedError
from coreml2hwx.target.h13 import weights
from tests.target.h13_oracles import case_id, cases_of, compile_case, differences

FAMILIES = ("convolution", "conv_probe", "env_conv", "chain")
CONVS = [c for c in cases_of(*FAMILIES) if "conv" in c["case"]]


@pytest.mark.parametrize("case", [c for c in CONVS if not c["error"]], ids=case_id)
def test_program_equals_apples(case):
    """Stride 1 and stride 2 (zero-skipping kernels, test_h13_sparse.py) alike."""
    assert differences(case) == []


@pytest.mark.parametrize("case", [c for c in CONVS if c["error"]], ids=case_id)
def test_refuses_inline_bias_like_apple(case):
    with pytest.raises(UnsupportedError, match="inline bias"):
        compile_case(case)


def test_chunks_split_768_channels_32_then_16():
    """env_conv_k1_c768_n768_s1_st1_g1_bias1 (sha-verified in the oracle test): each chunk holds
    32 channels of the first 512 and 16 of the last 256."""
    assert list(weights.stages(768, 32)) == [(0, 32), (512, 16)]


def test_packing_interleaves_lanes_per_halfword():
    w = np.arange(32 * 2, dtype=np.float16).reshape(32, 2, 1, 1)  # 32 outputs, 2 inputs
    data, size = weights.pack_dense(w, None, lanes=2)
    chunk0 = np.frombuffer(data[:size], np.float16)
    # chunk 0 holds outputs 0 and 1: input 0 of both, then input 1 of both, then padding
    assert list(chunk0[:4]) == [w[0, 0, 0, 0], w[1, 0, 0, 0], w[0, 1, 0, 0], w[1, 1, 0, 0]]
    assert size == 64 and not chunk0[4:].any()
