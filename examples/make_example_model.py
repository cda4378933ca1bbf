"""Make the bundled example model: coreml2hwx/examples/MobileNetV2.mlmodel.

MobileNetV2 with width multiplier 0.5 (the paper's "0.5, 224" variant), 1000 classes, 224x224
input `image`, random weights from a fixed seed (batch-norm statistics too), converted by
coremltools to a NeuralNetwork .mlmodel with fp16 weights.  Needs torch==2.13.0 and coremltools:

    python3 examples/make_example_model.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

from tests.models.zoo import _randomize_bn, convert, mobilenet_v2  # noqa: E402

OUT = ROOT / "coreml2hwx" / "examples" / "MobileNetV2.mlmodel"


def main():
    import coremltools as ct
    import torch
    from coremltools.models.neural_network import quantization_utils

    torch.manual_seed(2018)
    module = _randomize_bn(mobilenet_v2(width=0.5), 2019).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = convert(module, {"image": (1, 3, 224, 224)}, Path(tmp) / "m.mlmodel", "mlmodel")
        model = quantization_utils.quantize_weights(ct.models.MLModel(str(path)), nbits=16)
        model.short_description = ("MobileNetV2 0.5x224 with random weights (seeded): the "
                                   "coreml2hwx example model")
        model.save(str(OUT))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
