"""Fold a batch_norm (or a per-channel scale/bias) that follows a conv or linear into its weights.

    y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta
      = conv'(x) with w' = w * s (per output channel), b' = (b - mean) * s + beta,  s = gamma / sqrt(var + eps)

Done in float64 and stored in the conv's weight dtype; only when the conv's result feeds nothing else.
"""

from __future__ import annotations

import numpy as np

from coreml2hwx.passes import register

FOLDABLE = {"conv": 0, "linear": 0}  # op type -> axis of the output channel in its weight


@register("fold_batchnorm")
def fold_batchnorm(graph):
    producers, consumers = graph.producers(), graph.consumers()
    folded = 0
    for bn in [op for op in graph.ops if op.type == "batch_norm"]:
        src = producers.get(bn.inputs[0])
        if (src is None or src.type not in FOLDABLE or len(consumers.get(bn.inputs[0], [])) != 1
                or bn.inputs[0] in graph.output_names or src.attrs.get("fused_activation")):
            continue
        if src.type == "linear" and len(graph.tensors[bn.inputs[0]].shape) != 2:
            continue  # batch_norm's channel axis 1 is the linear's feature axis only for rank 2
        a = bn.attrs
        scale = np.asarray(a["gamma"], np.float64) / np.sqrt(np.asarray(a["variance"], np.float64)
                                                             + a["epsilon"])
        weight = np.asarray(src.attrs["weight"])
        bias = src.attrs.get("bias")
        bias = np.zeros(weight.shape[0]) if bias is None else np.asarray(bias, np.float64)
        shape = (-1,) + (1,) * (weight.ndim - 1)
        src.attrs["weight"] = (weight.astype(np.float64) * scale.reshape(shape)).astype(weight.dtype)
        src.attrs["bias"] = ((bias - a["mean"]) * scale + a["beta"]).astype(weight.dtype)
        src.outputs[0] = bn.outputs[0]  # the result keeps the name the model gives it
        del graph.tensors[bn.inputs[0]]
        graph.ops.remove(bn)
        folded += 1
    return f"folded {folded} batch_norm into conv/linear" if folded else None
