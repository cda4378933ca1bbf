"""Bad input gives one clear exception (file, location, rule), never a traceback.

Ground truth: files written by coremltools (builder, MILBlob writer) and then damaged on purpose.
"""

import json
import shutil
import struct
import warnings

import numpy as np
import pytest
import coremltools as ct
from coremltools.libmilstoragepython import _BlobStorageWriter as BlobWriter
from coremltools.models import datatypes
from coremltools.models.neural_network import NeuralNetworkBuilder

from coreml2hwx.cli import main
from coreml2hwx.errors import ModelError, UnsupportedError
from coreml2hwx.frontend import load
from coreml2hwx.frontend.milblob import read_blob


def _nn_with_unsupported_layers(path):
    b = NeuralNetworkBuilder([("x", datatypes.Array(4, 3, 3))], [("y", None)])
    b.add_activation("relu", "RELU", "x", "r")
    b.add_lrn("local_norm", "r", "n", alpha=1e-4, beta=0.75, local_size=3)
    b.add_l2_normalize("l2", "n", "y")
    ct.utils.save_spec(b.spec, str(path))
    return path


def test_unsupported_layer_names_file_layer_and_type(tmp_path):
    path = _nn_with_unsupported_layers(tmp_path / "lrn.mlmodel")
    with pytest.raises(UnsupportedError) as info:
        load(path)
    err = info.value
    assert err.file == str(path)
    assert err.where == "local_norm"
    assert str(err) == (f"{path}: local_norm: layer 'local_norm' of type 'lrn' is not supported "
                        "(2 unsupported layers in all: l2normalize, lrn)")


def test_cli_prints_one_line_for_unsupported_layer(tmp_path, capsys):
    path = _nn_with_unsupported_layers(tmp_path / "lrn.mlmodel")
    code = main(["reference", str(path), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "lrn.mlmodel" in err and "'local_norm'" in err and "'lrn'" in err and "not supported" in err


@pytest.mark.parametrize("content", [b"", b"\x00" * 16, b"this is not a protobuf \xff\xfe" * 8,
                                     bytes(range(256))])
def test_corrupt_mlmodel(tmp_path, content):
    path = tmp_path / "broken.mlmodel"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="corrupt") as info:
        load(path)
    assert info.value.file == str(path)


def test_truncated_mlmodel(tmp_path):
    b = NeuralNetworkBuilder([("x", datatypes.Array(8))], [("y", None)])
    b.add_inner_product("fc", W=np.ones((8, 8), np.float32), b=None, input_channels=8,
                        output_channels=8, has_bias=False, input_name="x", output_name="y")
    data = b.spec.SerializeToString()
    path = tmp_path / "cut.mlmodel"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="corrupt"):
        load(path)


def _tiny_package(tmp_path):
    from coremltools.converters.mil.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 64))])
    def prog(x):
        return mb.add(x=x, y=np.linspace(-1, 1, 64).astype(np.float32).reshape(1, 64), name="y")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ct.convert(prog, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32)
    path = tmp_path / "tiny.mlpackage"
    model.save(str(path))
    return path


def test_package_with_broken_manifest(tmp_path):
    path = _tiny_package(tmp_path)
    (path / "Manifest.json").write_text("{ not json")
    with pytest.raises(ModelError, match="Manifest.json is corrupt"):
        load(path)
    manifest = {"fileFormatVersion": "1.0.0", "itemInfoEntries": {"A": {"path": "com.apple.CoreML/missing.mlmodel"}},
                "rootModelIdentifier": "A"}
    (path / "Manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="missing"):
        load(path)


def _weight_file(path, array):
    writer = BlobWriter(str(path))
    offset = writer.write_float_data(array)
    del writer
    return offset


def test_package_with_damaged_weight_record(tmp_path):
    path = _tiny_package(tmp_path)
    weights = path / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = bytearray(weights.read_bytes())
    data[64:68] = struct.pack("<I", 0xCAFEBABE)
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError) as info:
        load(path)
    assert "weight.bin" in str(info.value)
    assert "sentinel is 0xcafebabe, expected 0xdeadbeef" in str(info.value)


@pytest.mark.parametrize("field, value, rule", [
    ("dtype", 99, "data type code 99 is unknown"),
    ("size", 12, "size is 12 bytes"),
    ("offset", 1 << 20, "lies outside the file"),
])
def test_malformed_blob_record(tmp_path, field, value, rule):
    path = tmp_path / "weight.bin"
    offset = _weight_file(path, np.arange(16, dtype=np.float32))
    np.testing.assert_array_equal(read_blob(path, offset, "fp32", (16,)), np.arange(16))
    data = bytearray(path.read_bytes())
    at = {"dtype": offset + 4, "size": offset + 8, "offset": offset + 16}[field]
    data[at:at + (4 if field == "dtype" else 8)] = struct.pack("<I" if field == "dtype" else "<Q", value)
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=rule) as info:
        read_blob(path, offset, "fp32", (16,))
    assert info.value.where == f"offset {offset:#x}"


def test_blob_type_mismatch_and_record_outside_file(tmp_path):
    path = tmp_path / "weight.bin"
    offset = _weight_file(path, np.arange(16, dtype=np.float32))
    with pytest.raises(ModelError, match="holds fp32 data but the model declares fp16"):
        read_blob(path, offset, "fp16", (16,))
    with pytest.raises(ModelError, match="outside the file"):
        read_blob(path, 4096, "fp32", (16,))
    path.write_bytes(b"\x01\x00")
    with pytest.raises(ModelError, match="shorter than the 64-byte MILBlob header"):
        read_blob(path, 64, "fp32", (16,))


def test_missing_model_and_unknown_folder(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        load(tmp_path / "nothing.mlmodel")
    (tmp_path / "empty.mlpackage").mkdir()
    with pytest.raises(ModelError, match="neither an .mlpackage"):
        load(tmp_path / "empty.mlpackage")
    folder = tmp_path / "old.mlmodelc"
    folder.mkdir()
    (folder / "model.espresso.net").write_text("{}")
    with pytest.raises(UnsupportedError, match="without model.mil"):
        load(folder)


def test_package_copy_keeps_working(tmp_path):
    """A package read from a different folder still finds its weights (paths are relative)."""
    path = _tiny_package(tmp_path)
    moved = tmp_path / "elsewhere" / "tiny.mlpackage"
    shutil.copytree(path, moved)
    shutil.rmtree(path)
    graph = load(moved)
    (const,) = [n for n in graph.constants]
    np.testing.assert_allclose(graph.constant(const).reshape(-1), np.linspace(-1, 1, 64), rtol=1e-6)


def test_real_mlmodels_from_the_artifacts(shared):
    """tinygrad's hand-made .mlmodel files (legacy rank-5 NeuralNetworks) load and evaluate."""
    from coreml2hwx.frontend import load_spec
    from coreml2hwx.frontend.neuralnetwork import weight_values
    from coreml2hwx.ir import evaluate, random_inputs

    paths = sorted(shared.glob("artifacts/**/*.mlmodel"))
    assert len(paths) >= 7
    for path in paths:
        graph = load(path)
        spec = load_spec(path)
        x = random_inputs(graph, 0)
        out = evaluate(graph, x)
        for feature in spec.description.output:
            assert out[feature.name].size == int(np.prod(feature.type.multiArrayType.shape))
        layers = list(spec.neuralNetwork.layers)
        if layers[0].WhichOneof("layer") == "innerProduct":  # y = W x (+ b), from the spec itself
            ip = layers[0].innerProduct
            w = weight_values(ip.weights, (ip.outputChannels, ip.inputChannels))
            first = w @ x[graph.input_names[0]].reshape(-1)
            if ip.hasBias:
                first = first + np.array(ip.bias.floatValue)
            got = evaluate(graph, x, all_tensors=True)[layers[0].output[0]]
            np.testing.assert_allclose(got.reshape(-1), first, rtol=1e-6, atol=1e-6)
