"""Run a classifier head's `linear` as a 1x1 convolution over the pooled channels.

    reduce_mean(x, axes (2, 3), keep_dims=False) -> linear          (MobileNetV2 head)
    t[N, K, 1, 1] -> reshape [N, K] -> linear                       (ResNet-18: pool, flatten)
becomes
    ... t[N, K, 1, 1] -> conv 1x1 (weight [O, K, 1, 1]) -> reshape [N, O]

Why: in Apple's 4-D view a [N, K] vector lies along W ([1, 1, 1, K], `ir.layout`; the flattened
reduce result is written along W, `reduce_probe_max_ax2_3_1x64x8x8_flat`), while a conv reads its
input features as channels.  Pooled into [N, K, 1, 1] the features already are channels, so the
GEMM becomes the 1x1 convolution Apple's compiler itself emits for one (tinygrad gemm.hwx:
KernelMode dense, ane-facts §5.4), whose output channels need not be a multiple of 16
(`target/h13/conv.py` rounds).  Only the final reshape [N, O, 1, 1] -> [N, O] is left: the same
element order, and the one data movement between the two views.
"""

from __future__ import annotations

import numpy as np

from coreml2hwx.ir.graph import Op, TensorInfo, constant_value
from coreml2hwx.passes import register

SPATIAL = (2, 3)


@register("linear_as_conv")
def linear_as_conv(graph):
    rewritten = 0
    for linear in [op for op in graph.ops if op.type == "linear"]:
        source = _pooled_source(graph, linear)
        if source is not None:
            _rewrite(graph, linear, source)
            rewritten += 1
    return f"{rewritten} linear(s) after a global pool run as 1x1 conv" if rewritten else None


def _pooled_source(graph, linear) -> str | None:
    """The [N, K, 1, 1] tensor that holds the linear's [N, K] input in channel order, or None.
    A keep_dims=False global mean that only this linear reads is switched to keep_dims."""
    name = linear.inputs[0]
    if len(graph.tensors[name].shape) != 2 or linear.attrs.get("fused_activation"):
        return None
    producer = graph.producers().get(name)
    if producer is None:
        return None
    if producer.type == "reshape":
        source = producer.inputs[0]
        shape = graph.tensors[source].shape
        return source if shape == (*graph.tensors[name].shape, 1, 1) else None
    sole_reader = (len(graph.consumers().get(name, [])) == 1 and name not in graph.output_names)
    x = graph.tensors[producer.inputs[0]] if producer.inputs else None
    if (producer.type == "reduce_mean" and sole_reader and x.rank == 4
            and tuple(sorted(producer.attrs["axes"])) == SPATIAL
            and not producer.attrs.get("keep_dims")):
        producer.attrs["keep_dims"] = True
        n, k = graph.tensors[name].shape
        graph.tensors[name] = TensorInfo(name, (n, k, 1, 1), graph.tensors[name].dtype)
        return name
    return None


def _rewrite(graph, linear, source: str) -> None:
    """linear -> conv 1x1 reading `source`, then a reshape to the linear's own output."""
    weight = np.asarray(constant_value(linear.attrs["weight"]))
    out = graph.tensors[linear.outputs[0]]
    n, k = graph.tensors[source].shape[:2]
    mid = graph.unique_tensor_name(f"{out.name}/conv")
    graph.tensors[mid] = TensorInfo(mid, (n, weight.shape[0], 1, 1), out.dtype)
    attrs = {key: v for key, v in linear.attrs.items() if key not in ("weight", "bias")}
    attrs.update(weight=weight.reshape(weight.shape[0], k, 1, 1), bias=linear.attrs.get("bias"),
                 strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0), groups=1)
    conv = Op("conv", [source], [mid], attrs, linear.name, linear.source)
    reshape = Op("reshape", [mid], [out.name], {"shape": out.shape},
                 graph.unique_op_name(f"{linear.name}/reshape"), linear.source)
    at = graph.ops.index(linear)
    graph.ops[at:at + 1] = [conv, reshape]
