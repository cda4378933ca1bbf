"""tinygrad's Apple-compiled .hwx files run in the simulator against the net.plist they came from.

Ground truth: ../shared/artifacts/tinygrad_tinygrad (PROVENANCE.md): each .hwx was made by Apple's
ANECompiler from an Espresso net.plist; the plist (layer types, the weights file, offsets, kernel
types) and the weights files are in the same folder or commit.  The pairing here is the one
PROVENANCE gives, checked against the shapes the .hwx declares.  Files whose plist is missing or
does not match are listed in UNPAIRED and only run.
"""

from __future__ import annotations

import plistlib
from pathlib import Path

import numpy as np
import pytest

from coreml2hwx.hwx import load_program
from coreml2hwx.sim import run_program
from tests.conftest import shared_files
from tests.sim.tolerance import assert_close, assert_exact, fp16

ROOT = "artifacts/tinygrad_tinygrad"


def artifact(path: str) -> Path:
    (found,) = shared_files(f"{ROOT}/{path}")
    return found


def plist_net(path: str) -> dict:
    return plistlib.loads(artifact(path).read_bytes())["net"]


def weights(path: str, offset: int, count: int, kind: str) -> np.ndarray:
    dtype = {"Float16": "<f2", "Float32": "<f4"}[kind]
    data = artifact(path).read_bytes()
    return np.frombuffer(data, dtype, count=count, offset=offset).astype(np.float64)


def run(path, seed=0, scale=2.0):
    program = load_program(artifact(path))
    rng = np.random.default_rng(seed)
    inputs = {t.name: fp16(rng.standard_normal(t.shape) * scale) for t in program.inputs}
    return program, inputs, run_program(program, inputs)


# -- neurons and element-wise units --------------------------------------------------------------

@pytest.mark.parametrize("hwx,plist", [
    ("extra/accel/ane/ops/relu.hwx", "history/be41e73ad921/ane/2_compile/simple/neuron.plist"),
    ("history/f37fecddf4f6/ane/ops/relu.hwx",
     "history/abb7b7420886/ane/2_compile/simple/neuron.plist"),
])
def test_relu_neuron(hwx, plist):
    (unit,) = plist_net(plist)["Units"]
    assert plist_net(plist)[unit]["Params"]["Type"] == "ReLU"
    _, inputs, outputs = run(hwx)
    (x,), (y,) = inputs.values(), outputs.values()
    assert_exact(y, np.maximum(x.astype(np.float32), 0), hwx)


def test_sigmoid_neuron():
    """The table is the 33-point sigmoid on [-8, 8] step 1/2 (lut-rules §3: the newer compiler's
    table, already in this file): |f''| <= 0.097 -> 3e-3, + output rounding: atol 4e-3."""
    net = plist_net("extra/accel/ane/2_compile/simple/neuron.plist")
    assert net["my_layer"]["Params"]["Type"] == "Sigmoid"
    _, inputs, outputs = run("extra/accel/ane/ops/sigmoid.hwx", scale=4.0)
    (x,), (y,) = inputs.values(), outputs.values()
    assert_close(y, 1 / (1 + np.exp(-x.astype(np.float64))), atol=4e-3, what="sigmoid")


def test_scaled_elementwise_add():
    """ScaledElementWise Add with Scale 15360 = fp16 1.0: a + b, rounded once."""
    params = plist_net("extra/accel/ane/2_compile/plists/sum.plist")["probs"]["Params"]
    assert params == {"Scale": 15360, "Type": "Add"}
    _, inputs, outputs = run("extra/accel/ane/ops/sum.hwx")
    a, b = (v.astype(np.float32) for v in inputs.values())
    assert_exact(outputs["probs"], a + b, "sum")


@pytest.mark.parametrize("hwx,plist", [
    ("extra/accel/ane/ops/concat.hwx", "extra/accel/ane/2_compile/simple/concat.plist"),
    ("history/e03759f01d32/ane/ops/concat.hwx",
     "history/e03759f01d32/ane/2_compile/simple/concat.plist"),
])
def test_channel_concat(hwx, plist):
    """Two NE copy tasks, the second writing at channel offset 16384 (or 16)."""
    order = plist_net(plist)["output"]["Bottom"]
    _, inputs, outputs = run(hwx)
    want = np.concatenate([inputs[name] for name in order], axis=1)
    assert np.array_equal(outputs["output"], want)


# -- convolutions with their weights files -------------------------------------------------------

# hwx -> (plist, conv unit, weights file for KernelIndex 0, GOC bias file or None)
CONVS = {
    "extra/accel/ane/ops/conv.hwx": ("extra/accel/ane/2_compile/simple/conv.plist", "my_layer",
                                     "extra/accel/ane/2_compile/twos.weights", None),
    "history/ff52f832dc06/ane/ops/conv.hwx": (
        "history/ff52f832dc06/ane/2_compile/simple/conv.plist", "my_layer",
        "extra/accel/ane/2_compile/min.weights", None),
    "history/e2184c20ad8f/ane/2_compile/model.hwx.golden": (
        "history/e2184c20ad8f/ane/2_compile/min.plist", "conv_layer",
        "history/e2184c20ad8f/ane/2_compile/min.weights", None),
    "history/d4d8bd0337ca/ane/2_compile/model.hwx.golden": (
        "history/d4d8bd0337ca/ane/2_compile/min.plist", "conv_layer",
        "extra/accel/ane/2_compile/model.espresso.weights", None),
    "history/f459291c1567/ane/2_compile/model.hwx.golden": (
        "extra/accel/ane/2_compile/net.plist", "probs_tmp_0",
        "extra/accel/ane/2_compile/model.espresso.weights",
        "extra/accel/ane/2_compile/net.additional.weights"),
    "history/a42df9a4a0b9/ane/compiled/model.hwx.signed": (
        "extra/accel/ane/2_compile/net.plist", "probs_tmp_0",
        "extra/accel/ane/2_compile/model.espresso.weights",
        "extra/accel/ane/2_compile/net.additional.weights"),
    "history/73536a753947/ane/compiled/model.hwx": (
        "history/73536a753947/ane/compiled/net.plist", "probs_tmp_0",
        "history/268880d5edde/ane/compiled/model.espresso.weights",
        "extra/accel/ane/2_compile/net.additional.weights"),
    # weights file "/tmp/zero": all zero (tinygrad's compile script), so the output is zero
    "extra/accel/ane/ops/gemm.hwx": ("extra/accel/ane/2_compile/simple/gemm.plist", "probs",
                                     None, None),
}


def conv_reference(plist, unit, weight_file, bias_file, x):
    net = plist_net(plist)
    layer = net[unit]
    params = layer["Params"]
    cout, cin = layer["OutputChannels"], x.shape[1]
    assert (params["KernelWidth"], params["KernelHeight"], params["Step"]) == (1, 1, [1, 1])
    if weight_file is None:
        w = np.zeros((cout, cin))
    else:
        w = weights(weight_file, params.get("KernelOffset", 0), cout * cin,
                    params["KernelType"]).reshape(cout, cin)
    y = np.einsum("oc,nchw->nohw", w, x.astype(np.float64))
    if bias_file is not None:  # the GOC unit: BiasScaleGroupData, bias from file BiasIndex 1
        goc = next(net[u]["Params"]["BiasScaleGroupData"] for u in net["Units"]
                   if net[u]["Type"] == "GOC")
        bias = weights(bias_file, goc["BiasOffset"], goc["BiasCount"], goc["BiasType"])
        y = y + bias[None, :, None, None]
    return y, np.einsum("oc,nchw->nohw", np.abs(w), np.abs(x.astype(np.float64)))


@pytest.mark.parametrize("hwx", sorted(CONVS))
def test_conv_matches_its_plist_and_weights(hwx):
    """fp32 accumulation rounded once: half an fp16 ulp, plus fp32 rounding of the sum
    (Cin * 2^-24 * sum |w x|)."""
    plist, unit, weight_file, bias_file = CONVS[hwx]
    program, inputs, outputs = run(hwx)
    (x,), (y,) = inputs.values(), outputs.values()
    ref, magnitude = conv_reference(plist, unit, weight_file, bias_file, x)
    assert_close(y, ref, atol=x.shape[1] * 2.0 ** -24 * magnitude, ulps=0.5, what=hwx)


UNPAIRED = {
    "extra/accel/ane/2_compile/model.hwx.golden": "PROVENANCE: source plist unverified",
    "history/73ae6d78211e/ane/ops/gemm.hwx": "its gemm.plist declares 128 channels, the hwx 64",
    "history/ddd6778423fe/ane/2_compile/model.hwx.golden": "its neuron.plist says Exp2, the task "
                                                            "is a plain NE copy",
}


@pytest.mark.parametrize("hwx", sorted(UNPAIRED))
def test_unpaired_files_run(hwx):
    program, inputs, outputs = run(hwx)
    assert [o.shape for o in outputs.values()] == [tuple(t.shape) for t in program.outputs]


def test_every_apple_hwx_is_covered(shared):
    covered = {"extra/accel/ane/ops/relu.hwx", "history/f37fecddf4f6/ane/ops/relu.hwx",
               "extra/accel/ane/ops/sigmoid.hwx", "extra/accel/ane/ops/sum.hwx",
               "extra/accel/ane/ops/concat.hwx", "history/e03759f01d32/ane/ops/concat.hwx"}
    covered |= set(CONVS) | set(UNPAIRED)
    root = shared / ROOT
    found = {str(p.relative_to(root)) for p in root.rglob("*")
             if p.is_file() and p.read_bytes()[:4] == b"\xce\xfa\xef\xbe"}
    assert found == covered
