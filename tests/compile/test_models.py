"""Whole models: torch -> coremltools (.mlmodel and .mlpackage) -> compile -> run -> equals torch.

Ground truth: torch's own output for the same seeded model and input (tests/models/zoo.py).  The
compiled output folder runs as a whole (`execute.run_compiled`): ANE programs in the simulator
(which is validated against Apple's programs in tests/sim), host segments in the reference
evaluator.

Accuracy budget.  The ANE computes in fp16: every task rounds its result to fp16 (unit roundoff
u = 2^-11 ~ 4.9e-4) and the weights are rounded to fp16 once.  With D layers on the longest path
the first-order relative error bound is ~ (2 D) u: ResNet-18 / MobileNetV2 have D <= 60 ANE tasks
on a path, so 2 x 60 x 4.9e-4 ~ 6%.  Random rounding errors add in quadrature, not linearly, so
we allow max |got - torch| <= 2% of max |torch| (between the random-walk and the worst-case
figure) and ask the cosine similarity to be >= 0.999 (the issue's figure).
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from coreml2hwx.cli import main
from coreml2hwx.compiler import compile_model, write_outputs
from coreml2hwx.execute import run_compiled
from coreml2hwx.ir.graph import constant_value
from tests.models.zoo import session_zoo

MODELS = ["mobilenet_v2", "resnet18", "unet", "transformer_block"]
FORMATS = ["mlmodel", "mlpackage"]
RELATIVE_BUDGET = 0.02
MIN_COSINE = 0.999


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return session_zoo(tmp_path_factory)


@pytest.fixture(scope="module")
def compiled(zoo, tmp_path_factory):
    """(model, format) -> (Compiled, output folder); each model compiled once per module."""
    cache = {}

    def get(name, fmt):
        if (name, fmt) not in cache:
            result = compile_model(zoo.path(name, fmt))
            out = tmp_path_factory.mktemp(f"{name}_{fmt}")
            write_outputs(result, out, formats=("hwx", "anec"))
            cache[name, fmt] = result, out
        return cache[name, fmt]

    return get


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", MODELS)
def test_model_runs_and_matches_torch(zoo, compiled, name, fmt):
    result, out = compiled(name, fmt)
    _, inputs = zoo.torch_model(name)
    expected = zoo.expected(name)[0]
    got = run_compiled(out, inputs)
    (value,) = got.values()
    value = np.asarray(value, np.float32).reshape(expected.shape)
    assert cosine(value, expected) >= MIN_COSINE
    budget = RELATIVE_BUDGET * float(np.abs(expected).max())
    assert float(np.abs(value - expected).max()) <= budget


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", MODELS)
def test_manifest_names_every_host_layer_with_a_reason(compiled, name, fmt):
    result, out = compiled(name, fmt)
    manifest = json.loads((out / "manifest.json").read_text())
    host_ops = {op for s in manifest["segments"] if s["device"] == "host" for op in s["ops"]}
    expected_host = {op.name for op in result.graph.ops
                     if result.placement[op.name].device == "host"}
    assert host_ops == expected_host
    for seg in manifest["segments"]:
        if seg["device"] == "host":  # each host layer with the rule the target refused
            assert sorted(seg["reasons"]) == sorted(seg["ops"]) and all(seg["reasons"].values())
    assert any(s["device"] == "ane" for s in manifest["segments"])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18", "unet"])
def test_stride1_convolutions_run_on_the_ane(compiled, name, fmt):
    """Stride-1 convolutions up to 3x3 (dense, depthwise) are what Apple's H13 oracles show
    (conv_k1/k3, env_conv_*, depthwise g64): none of them may fall back to the host."""
    result, _ = compiled(name, fmt)
    convs = [op for op in result.graph.ops if op.type == "conv"
             and tuple(op.attrs["strides"]) == (1, 1)
             and max(np.shape(constant_value(op.attrs["weight"]))[2:]) <= 3]
    assert convs
    host = [(op.name, result.placement[op.name].reason) for op in convs
            if result.placement[op.name].device != "ane"]
    assert host == []


@pytest.mark.parametrize("name", MODELS)
def test_every_program_passes_inspect(compiled, name, capsys):
    result, out = compiled(name, "mlpackage")
    programs = sorted(out.glob("*.hwx")) + sorted(out.glob("*.anec"))
    assert programs
    for path in programs:
        assert main(["inspect", str(path)]) == 0, path
    capsys.readouterr()


ANEC_HEADER = 0x1000  # anecc's HEADER_SIZE: the payload starts here (ane-facts §4.1)


def anec_fields(data: bytes) -> dict:
    """`struct anec` as ane-facts §4.1 lays it out (libane ane.h / anecc), read with struct."""
    size, td_size, td_count, tsk_size, krn_size, src_count, dst_count = struct.unpack_from(
        "<QIIQQII", data, 0)
    tiles = struct.unpack_from("<32I", data, 0x28)
    nchw = [struct.unpack_from("<6Q", data, 0xA8 + 48 * slot) for slot in range(32)]
    return dict(size=size, td_size=td_size, td_count=td_count, tsk_size=tsk_size,
                krn_size=krn_size, src_count=src_count, dst_count=dst_count, tiles=tiles,
                nchw=nchw)


def test_anec_header_is_what_the_asahi_driver_expects(zoo, tmp_path, capsys):
    """`--format both` on a whole model; every .anec passes `inspect`, its header follows the fact
    sheet's §4.1 (payload = TD stream + constants at 0x1000, tiles in 16 KiB pages: slot 0 the
    command buffer, slot 3 the intermediate, outputs from slot 4 then inputs with their NCHW and
    strides) and, run in the simulator with the driver's slots, it equals the .hwx."""
    from coreml2hwx.hwx import load_program
    from coreml2hwx.sim import run_program

    out = tmp_path / "out"
    assert main([str(zoo.path("resnet18", "mlpackage")), "-o", str(out), "--format", "both"]) == 0
    anecs = sorted(out.glob("*.anec"))
    assert anecs and any(load_program(p.with_suffix(".hwx")).tensors[-1].role == "intermediate"
                         for p in anecs)
    for path in anecs:
        assert main(["inspect", str(path)]) == 0
        capsys.readouterr()
        data = path.read_bytes()
        h = anec_fields(data)
        program = load_program(path.with_suffix(".hwx"))
        text = data[ANEC_HEADER:ANEC_HEADER + h["tsk_size"]]
        assert len(data) == ANEC_HEADER + h["size"]
        assert h["size"] == -(-h["tsk_size"] // 16) * 16 + h["krn_size"]
        assert h["td_count"] == len(program.tasks) and h["krn_size"] == len(program.constants)
        assert data[-h["krn_size"]:] == program.constants
        assert text[:h["td_size"]] and h["td_size"] % 4 == 0
        assert h["tiles"][0] == -(-h["size"] // 0x4000)
        outputs = [t for t in program.tensors if t.role == "output"]
        inputs = [t for t in program.tensors if t.role == "input"]
        scratch = [t for t in program.tensors if t.role == "intermediate"]
        assert (h["src_count"], h["dst_count"]) == (len(inputs), len(outputs))
        assert h["tiles"][3] == (-(-scratch[0].size // 0x4000) if scratch else 0)
        for slot, t in enumerate(outputs + inputs, start=4):
            n, c, hh, w = t.shape
            assert h["nchw"][slot] == (n, c, hh, w, t.strides[1], t.strides[2])
            assert h["tiles"][slot] == -(-n * t.strides[0] // 0x4000)
        rng = np.random.default_rng(2)
        feed = {t.name: rng.standard_normal(t.shape).astype(np.float16) for t in inputs}
        expected = run_program(program, feed)
        driver = load_program(path)
        got = run_program(driver, {f"src{i}": feed[t.name] for i, t in enumerate(inputs)})
        for i, t in enumerate(outputs):
            np.testing.assert_array_equal(got[f"dst{i}"], expected[t.name])


@pytest.mark.parametrize("kind", ["int8", "palettized6"])
def test_compressed_weights_are_expanded_to_fp16(zoo, tmp_path, kind):
    """int8-quantized and 6-bit palettized Core ML weights (coremltools.optimize) compile with
    their weights expanded to fp16: H13's KernelCfg has palette fields but no Apple H13 program
    uses them (ane-facts §2.10), so the form the evidence covers is fp16.  Against torch's fp32
    model the budget adds the compression error: a 6-bit uniform palette or an int8 step is
    <= 1/63 of a channel's weight range, well under the 0.999 cosine the test asks."""
    import warnings

    import coremltools as ct
    import coremltools.optimize.coreml as cto

    model = ct.models.MLModel(str(zoo.path("unet", "mlpackage")), skip_model_load=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "int8":
            config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", weight_threshold=0)
            model = cto.linear_quantize_weights(model, cto.OptimizationConfig(config))
        else:
            config = cto.OpPalettizerConfig(nbits=6, mode="uniform", weight_threshold=0)
            model = cto.palettize_weights(model, cto.OptimizationConfig(config))
    path = tmp_path / f"unet_{kind}.mlpackage"
    model.save(str(path))
    result = compile_model(path)
    assert sum(op.type == "conv" for s in result.segments if s.device == "ane" for op in s.ops) >= 5
    out = tmp_path / "out"
    write_outputs(result, out)
    _, inputs = zoo.torch_model("unet")
    (value,) = run_compiled(out, inputs).values()
    assert cosine(np.asarray(value, np.float32), zoo.expected("unet")[0]) >= MIN_COSINE


def test_a_segment_the_target_cannot_chain_is_cut_into_the_longest_runs():
    """abs -> matmul -> relu: H13 does not combine a matmul with scratch intermediates, so the
    target refuses the three as one program; the compiler cuts them into runs that each lower,
    and the runs, simulated one after another, give numpy's relu(|x| @ w)."""
    from coreml2hwx.compiler import lowerable_runs
    from coreml2hwx.errors import UnsupportedError
    from coreml2hwx.ir import Graph
    from coreml2hwx.sim import run_program
    from coreml2hwx.target import h13

    g = Graph("t")
    g.add_input("x", (16, 64), "float16")
    g.add_input("w", (64, 64), "float16")
    g.add_op("abs", ["x"], ["a"])
    g.add_op("matmul", ["a", "w"], ["m"], {"transpose_x": False, "transpose_y": False})
    g.add_op("relu", ["m"], ["y"])
    g.set_outputs(["y"])
    with pytest.raises(UnsupportedError):
        h13.lower(g)
    runs = lowerable_runs(g, g.ops, h13)
    assert len(runs) >= 2 and [op for ops, _ in runs for op in ops] == g.ops
    rng = np.random.default_rng(3)
    values = {"x": rng.standard_normal((16, 64)).astype(np.float16),
              "w": (rng.standard_normal((64, 64)) / 8).astype(np.float16)}
    for _, program in runs:
        feed = {t.name: values[t.name].reshape(t.shape) for t in program.inputs}
        for name, value in run_program(program, feed).items():
            values[name] = value.reshape(g.tensors[name].shape)
    expected = np.maximum(np.abs(values["x"].astype(np.float32)) @ values["w"].astype(np.float32), 0)
    np.testing.assert_allclose(values["y"].astype(np.float32), expected, rtol=4e-3,
                               atol=4e-3 * float(np.abs(expected).max()))
