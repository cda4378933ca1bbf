"""Textual MIL: the oracle corpus (Apple compiler inputs), .mlmodelc folders and bare .mil files.

Ground truth: the oracle JSON (../shared/oracles: MIL text, tensor descriptors of Apple's output,
which programs Apple refused), weight files written by coremltools' own MILBlob writer, and torch.
"""

import json
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from coremltools.libmilstoragepython import _BlobStorageWriter as BlobWriter

from tests.conftest import oracle_files, shared_files
from coreml2hwx.errors import ModelError, UnsupportedError
from coreml2hwx.frontend import load, parse_mil_program, parse_mil_text
from coreml2hwx.ir import BlobRef, ane_shape, evaluate
from tests.models.zoo import max_relative_error

ORACLES = oracle_files("h13") + oracle_files("h14")
RNG = np.random.default_rng(5)


def _oracle(path):
    return json.loads(path.read_text())


def test_oracle_corpus_is_complete():
    assert len(ORACLES) == 106


@pytest.mark.parametrize("path", ORACLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_oracle_mil_parses(path):
    """Every oracle program parses; every one Apple compiled also becomes an IR graph."""
    case = _oracle(path)
    program = parse_mil_program(case["mil"])
    assert list(program.functions) == ["main"]
    if case["task_descriptors"] or case["case"] != "f2_reduce_sum_1x16x128_ax1_kd1":
        graph = parse_mil_text(case["mil"])
        assert graph.input_names == [v.name for v in program.main().inputs]
    else:
        # Apple refused it: the op declares [1, 16, 128] where reducing axis 1 gives [1, 1, 128].
        with pytest.raises(ModelError, match=r"declared \[1, 16, 128\]"):
            parse_mil_text(case["mil"])


@pytest.mark.parametrize("path", [p for p in ORACLES if _oracle(p)["task_descriptors"]],
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_ane_shape_matches_apple_tensor_descriptors(path):
    """Apple's descriptors: inputs (in name order), then outputs, each as [N, C, H, W]."""
    case = _oracle(path)
    graph = parse_mil_text(case["mil"])
    tensors = sorted(graph.inputs, key=lambda t: t.name) + graph.outputs
    assert [list(ane_shape(t.shape)) for t in tensors] == \
        [d["shape"] for d in case["tensor_descriptors"]]


def _oracle_case(name):
    return _oracle(shared_files(f"oracles/h13/{name}.json")[0])


def _quirk_weights(payload_bytes):
    """weights.bin exactly as the oracle README describes upstream's generator."""
    payload = b"\x00\x38" * (payload_bytes // 2)
    header = bytearray(128)
    header[0:8] = struct.pack("<II", 1, 2)
    header[64:84] = struct.pack("<IQQ", 0xDEADBEEF, len(payload), 128)
    return bytes(header) + payload


def _well_formed(data: np.ndarray):
    """A well-formed MILBlob file: record at 64, fp16 data at 128 (what the parity harness writes)."""
    raw = data.astype(np.float16).tobytes()
    header = bytearray(128)
    header[0:8] = struct.pack("<II", 1, 2)
    header[64:88] = struct.pack("<IIQQ", 0xDEADBEEF, 1, len(raw), 128)
    return bytes(header) + raw


def test_oracle_quirk_weight_file_is_rejected(tmp_path):
    case = _oracle_case("conv_k3_c64_n64_s8_bias0")
    (tmp_path / "weights.bin").write_bytes(_quirk_weights(case["weights"]["payload_bytes"]))
    (tmp_path / "model.mil").write_text(case["mil"])
    with pytest.raises(ModelError) as info:
        load(tmp_path / "model.mil")
    message = str(info.value)
    assert "weights.bin" in message and "offset 0x40" in message and "corrupt" in message


def test_oracle_conv_with_rebuilt_weights(tmp_path):
    """The tensor Apple compiled (first elements*2 bytes of the quirk file) in a well-formed file."""
    case = _oracle_case("conv_k3_c64_n64_s8_bias0")
    elements = case["weights"]["payload_bytes"] // 2
    compiled = np.frombuffer(_quirk_weights(elements * 2)[: elements * 2], np.float16)
    (tmp_path / "weights.bin").write_bytes(_well_formed(compiled))
    (tmp_path / "model.mil").write_text(case["mil"])
    graph = load(tmp_path / "model.mil")
    conv = graph.ops[0]
    np.testing.assert_array_equal(conv.attrs["weight"].reshape(-1), compiled)
    x = RNG.standard_normal((1, 64, 8, 8)).astype(np.float16)
    want = F.conv2d(torch.from_numpy(x).float(), torch.from_numpy(compiled.astype(np.float32))
                    .reshape(64, 64, 3, 3), padding=1).numpy()
    got = evaluate(graph, {"x": x})["y"]
    assert max_relative_error(got, want) <= 1e-5


def test_oracle_without_weights_keeps_blob_references():
    case = _oracle_case("matmul_m8_k512_n1024_ty1")
    graph = parse_mil_text(case["mil"])
    weight = graph.constants["w"]
    assert isinstance(weight, BlobRef)
    assert (weight.path, weight.offset, weight.dtype, weight.shape) == \
        ("@model_path/weights.bin", 64, "fp16", (1024, 512))
    with pytest.raises(ModelError, match="weight file not found"):
        evaluate(graph, {"x": np.zeros((8, 512), np.float32)})


# -- hand-written MIL text with weights from coremltools' MILBlob writer ---------------------------

CONV_W = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32)
CONV_B = RNG.standard_normal(8).astype(np.float32)
FC_W = RNG.standard_normal((5, 8)).astype(np.float16)

IOS18_TEXT = """program(1.3)
[buildInfo = dict<string, string>({{"coremlc-component-MIL", "3510.2.1"}, {"coremlc-version", "3505.4.1"}})]
{
    func main<ios18>(tensor<fp32, [1, 3, 10, 10]> x) {
        string pt = const()[name = string("pt"), val = string("same")];
        tensor<int32, [2]> st = const()[name = string("st"), val = tensor<int32, [2]>([2, 2])];
        tensor<int32, [2]> dl = const()[name = string("dl"), val = tensor<int32, [2]>([1, 1])];
        int32 gp = const()[name = string("gp"), val = int32(1)];
        tensor<fp32, [8, 3, 3, 3]> w = const()[name = string("w"), val = tensor<fp32, [8, 3, 3, 3]>(BLOBFILE(path = string("@model_path/weights/weight.bin"), offset = uint64({w})))];
        tensor<fp32, [8]> b = const()[name = string("b"), val = tensor<fp32, [8]>(BLOBFILE(path = string("@model_path/weights/weight.bin"), offset = uint64({b})))];
        tensor<fp32, [1, 8, 5, 5]> c = conv(bias = b, dilations = dl, groups = gp, pad_type = pt, strides = st, weight = w, x = x)[name = string("conv")];
        fp32 slope = const()[name = string("slope"), val = fp32(0x1.99999ap-4)];
        tensor<fp32, [1, 8, 5, 5]> r = leaky_relu(alpha = slope, x = c)[name = string("act")];
        tensor<int32, [2]> axes = const()[name = string("axes"), val = tensor<int32, [2]>([-2, -1])];
        tensor<fp32, [1, 8]> m = reduce_mean(axes = axes, keep_dims = bool(false), x = r)[name = string("pool")];
        string to16 = const()[name = string("to16"), val = string("fp16")];
        tensor<fp16, [1, 8]> m16 = cast(dtype = to16, x = m)[name = string("cast16")];
        tensor<fp16, [5, 8]> fw = const()[name = string("fw"), val = tensor<fp16, [5, 8]>(BLOBFILE(path = string("@model_path/weights/weight.bin"), offset = uint64({fw})))];
        tensor<fp16, [1, 5]> y16 = matmul(transpose_x = bool(false), transpose_y = bool(true), x = m16, y = fw)[name = string("fc")];
        string to32 = const()[name = string("to32"), val = string("fp32")];
        tensor<fp32, [1, 5]> y = cast(dtype = to32, x = y16)[name = string("cast32")];
    } -> (y);
}
"""

IOS16_TEXT = """program(1.0)
[buildInfo = dict<tensor<string, []>, tensor<string, []>>({{"coremlc-component-MIL", "3520.4.1"}, {"coremlc-version", "3520.5.1"}})]
{
    func main<ios16>(tensor<fp32, [1, 3, 10, 10]> x) {
        tensor<string, []> pt = const()[name = tensor<string, []>("pt"), val = tensor<string, []>("same")];
        tensor<int32, [2]> st = const()[name = tensor<string, []>("st"), val = tensor<int32, [2]>([2, 2])];
        tensor<int32, [2]> dl = const()[name = tensor<string, []>("dl"), val = tensor<int32, [2]>([1, 1])];
        tensor<int32, []> gp = const()[name = tensor<string, []>("gp"), val = tensor<int32, []>(1)];
        tensor<fp32, [8, 3, 3, 3]> w = const()[name = tensor<string, []>("w"), val = tensor<fp32, [8, 3, 3, 3]>(BLOBFILE(path = tensor<string, []>("@model_path/weights/weight.bin"), offset = tensor<uint64, []>({w})))];
        tensor<fp32, [8]> b = const()[name = tensor<string, []>("b"), val = tensor<fp32, [8]>(BLOBFILE(path = tensor<string, []>("@model_path/weights/weight.bin"), offset = tensor<uint64, []>({b})))];
        tensor<fp32, [1, 8, 5, 5]> c = conv(bias = b, dilations = dl, groups = gp, pad_type = pt, strides = st, weight = w, x = x)[name = tensor<string, []>("conv")];
        tensor<fp32, []> slope = const()[name = tensor<string, []>("slope"), val = tensor<fp32, []>(0x1.99999ap-4)];
        tensor<fp32, [1, 8, 5, 5]> r = leaky_relu(alpha = slope, x = c)[name = tensor<string, []>("act")];
        tensor<int32, [2]> axes = const()[name = tensor<string, []>("axes"), val = tensor<int32, [2]>([-2, -1])];
        tensor<bool, []> kd = const()[name = tensor<string, []>("kd"), val = tensor<bool, []>(false)];
        tensor<fp32, [1, 8]> m = reduce_mean(axes = axes, keep_dims = kd, x = r)[name = tensor<string, []>("pool")];
        tensor<string, []> to16 = const()[name = tensor<string, []>("to16"), val = tensor<string, []>("fp16")];
        tensor<fp16, [1, 8]> m16 = cast(dtype = to16, x = m)[name = tensor<string, []>("cast16")];
        tensor<fp16, [5, 8]> fw = const()[name = tensor<string, []>("fw"), val = tensor<fp16, [5, 8]>(BLOBFILE(path = tensor<string, []>("@model_path/weights/weight.bin"), offset = tensor<uint64, []>({fw})))];
        tensor<bool, []> no = const()[name = tensor<string, []>("no"), val = tensor<bool, []>(false)];
        tensor<bool, []> yes = const()[name = tensor<string, []>("yes"), val = tensor<bool, []>(true)];
        tensor<fp16, [1, 5]> y16 = matmul(transpose_x = no, transpose_y = yes, x = m16, y = fw)[name = tensor<string, []>("fc")];
        tensor<string, []> to32 = const()[name = tensor<string, []>("to32"), val = tensor<string, []>("fp32")];
        tensor<fp32, [1, 5]> y = cast(dtype = to32, x = y16)[name = tensor<string, []>("cast32")];
    } -> (y);
}
"""


def _write_model_folder(folder, template):
    (folder / "weights").mkdir(parents=True)
    writer = BlobWriter(str(folder / "weights" / "weight.bin"))
    offsets = {
        "w": writer.write_float_data(CONV_W.reshape(-1)),
        "b": writer.write_float_data(CONV_B),
        "fw": writer.write_fp16_data(np.frombuffer(FC_W.tobytes(), np.uint16)),
    }
    del writer  # flushes the file
    (folder / "model.mil").write_text(_fill(template, offsets))
    return folder


def _fill(template, offsets):
    for key, value in offsets.items():
        template = template.replace("{" + key + "}", str(value))
    return template


def _expected_small_net(x):
    # MIL "same" padding of 10 by a 3-tap, stride-2 window: 0 before, 1 after (TF rule)
    padded = F.pad(torch.from_numpy(x), (0, 1, 0, 1))
    y = F.leaky_relu(F.conv2d(padded, torch.from_numpy(CONV_W), torch.from_numpy(CONV_B), stride=2), 0.1)
    return (y.mean(dim=(2, 3)) @ torch.from_numpy(FC_W.astype(np.float32)).T).numpy()


@pytest.mark.parametrize("syntax", ["ios16", "ios18"])
@pytest.mark.parametrize("form", ["mlmodelc", "mil"])
def test_compiled_model_folder_and_bare_mil(tmp_path, syntax, form):
    folder = _write_model_folder(tmp_path / "net.mlmodelc", IOS16_TEXT if syntax == "ios16" else IOS18_TEXT)
    graph = load(folder if form == "mlmodelc" else folder / "model.mil")
    assert graph.op_types() == ["cast", "conv", "leaky_relu", "matmul", "reduce_mean"]
    x = RNG.standard_normal((1, 3, 10, 10)).astype(np.float32)
    got = evaluate(graph, {"x": x})["y"]
    # fp32 mode: the fp16 casts keep values, the fp16 weights are exact in fp32.
    assert max_relative_error(got, _expected_small_net(x)) <= 1e-5


OFFSETS = {"w": 64, "b": 1024, "fw": 2048}


def test_mil_text_errors_name_the_line(tmp_path):
    text = _fill(IOS18_TEXT, OFFSETS).replace("leaky_relu(alpha = slope, x = c)", "leaky_relu(alpha = slope, x = c(")
    with pytest.raises(ModelError, match=r"line 13: MIL text is corrupt"):
        parse_mil_text(text)
    with pytest.raises(ModelError, match="unknown element type 'fp13'"):
        parse_mil_text(_fill(IOS18_TEXT, OFFSETS).replace("tensor<fp32, [1, 8, 5, 5]> r", "tensor<fp13, [1, 8, 5, 5]> r"))


def test_mil_text_unsupported_op_and_dynamic_shape():
    text = _fill(IOS18_TEXT, OFFSETS).replace("leaky_relu(alpha = slope, x = c)", "sinh(x = c)")
    with pytest.raises(UnsupportedError, match=r"'act' of type 'sinh'.*not supported"):
        parse_mil_text(text)
    dynamic = _fill(IOS18_TEXT, OFFSETS).replace("func main<ios18>(tensor<fp32, [1, 3, 10, 10]> x)",
                                 "func main<ios18>(tensor<fp32, [is0, 3, 10, 10]> x)")
    with pytest.raises(UnsupportedError, match="flexible shape"):
        parse_mil_text(dynamic)


def test_inline_tensor_constants_are_marked():
    """Apple refuses inline tensor operands and biases (oracle README); the frontend marks them."""
    inline_operand = parse_mil_text(_oracle_case("binary_add_c64_constant_inline")["mil"])
    assert inline_operand.metadata["inline_constants"] == ["z"]
    inline_bias = parse_mil_text(_oracle_case("conv_k1_c512_n1024_s1_bias1")["mil"])
    assert inline_bias.ops[0].attrs["inline"] == ("bias",)
    for accepted in ("binary_add_c64_constant_scalar", "binary_add_c512_constant_blob",
                     "env_conv_k1_c256_n256_s8_st1_g1_bias1"):
        graph = parse_mil_text(_oracle_case(accepted)["mil"])
        assert "inline_constants" not in graph.metadata
        assert all("inline" not in op.attrs for op in graph.ops)
