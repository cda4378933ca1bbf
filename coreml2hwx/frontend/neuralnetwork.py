"""NeuralNetwork models (`.mlmodel` with a neuralNetwork / classifier / regressor spec) -> IR graph.

Tensors keep the ranks the model gives them, with one rule for the legacy rank-5 mapping: a
multi-array input of rank 1 or 3 ([C] or [C, H, W]) under RANK5_ARRAY_MAPPING, and every image, is
read as [1, C, H, W].  Layers that name a channel / height / width axis (legacy concat, slice,
softmax, reduce, padding, upsample, ...) use the last three axes.

Image inputs carry the model's preprocessing as IR ops: `x * channelScale + bias` with the bias per
channel in the image's channel order (RGB: red, green, blue; BGR: blue, green, red), or the mean
image subtracted.  Weights come as float32, float16, or 1-8 bit linear / look-up-table quantized
values (bits packed most significant first, scale and bias per output channel); they are expanded
to float32.
"""

from __future__ import annotations

import math

import numpy as np

from coreml2hwx.errors import ModelError, UnsupportedError
from coreml2hwx.frontend.milgraph import same_pads
from coreml2hwx.ir.dtypes import unpack_bits
from coreml2hwx.ir.graph import Graph

_ARRAY_TYPES = {65568: "float32", 65600: "float32", 131104: "int32", 131080: "int8",
                65552: "float16"}
_COLOR_CHANNELS = {10: 1, 20: 3, 30: 3, 40: 1}
_COLOR_NAMES = {10: "GRAYSCALE", 20: "RGB", 30: "BGR", 40: "GRAYSCALE_FLOAT16"}


class NNTranslator:
    def __init__(self, spec, file=None, name="model"):
        self.spec = spec
        self.file = None if file is None else str(file)
        kind = spec.WhichOneof("Type")
        self.kind = kind
        self.nn = getattr(spec, kind)
        self.graph = Graph(name, source=self.file)
        self.rename: dict[str, str] = {}  # model feature name -> IR tensor name
        self.layer = None

    # -- errors and helpers -----------------------------------------------------------------------
    def unsupported(self, what):
        layer = self.layer
        return UnsupportedError(f"layer {layer.name!r} of type {layer.WhichOneof('layer')!r}: {what}",
                                file=self.file, where=layer.name)

    def corrupt(self, what):
        layer = self.layer
        return ModelError(f"layer {layer.name!r} of type {layer.WhichOneof('layer')!r}: {what}",
                          file=self.file, where=layer.name)

    def inp(self, i=0):
        if i >= len(self.layer.input):
            raise self.corrupt(f"needs input #{i}")
        name = self.layer.input[i]
        name = self.rename.get(name, name)
        if name not in self.graph.tensors:
            raise self.corrupt(f"reads {name!r}, which no earlier layer produces")
        return name

    def info(self, i=0):
        return self.graph.tensors[self.inp(i)]

    def out(self, i=0):
        return self.layer.output[i]

    def emit(self, ir_type, inputs, attrs=None, outputs=None, suffix=None):
        outs = outputs or list(self.layer.output)
        name = self.layer.name if suffix is None else f"{self.layer.name}/{suffix}"
        return self.graph.add_op(ir_type, inputs, outs, attrs or {}, name=name, source=self.layer.name)

    def temp(self, suffix):
        return self.graph.unique_tensor_name(f"{self.layer.output[0]}__{suffix}")

    def constant(self, suffix, value):
        name = self.graph.unique_tensor_name(f"{self.layer.name}__{suffix}")
        self.graph.add_constant(name, np.asarray(value, np.float32))
        return name

    def chain(self, steps, inputs):
        """Emit ops in sequence; the last one writes the layer output.  steps: [(type, attrs, extra)]."""
        current = inputs
        for i, (ir_type, attrs, extra) in enumerate(steps):
            last = i == len(steps) - 1
            outs = None if last else [self.temp(ir_type)]
            self.emit(ir_type, current + extra, attrs, outputs=outs, suffix=None if last else ir_type)
            current = [self.out()] if last else outs

    def weights(self, wp, shape, axis=0, what="weights"):
        try:
            return weight_values(wp, shape, axis)
        except ValueError as err:
            raise self.corrupt(f"{what}: {err}") from None

    def chw_axis(self, rank, which):
        """Axis of C (-3), H (-2) or W (-1) for legacy layers."""
        axis = rank + which
        if axis < 0:
            raise self.unsupported(f"needs a rank >= {-which} input, got rank {rank}")
        return axis

    # -- driver -----------------------------------------------------------------------------------
    def translate(self) -> Graph:
        bad = [l for l in self.nn.layers if l.WhichOneof("layer") not in LAYERS]
        if bad:
            kinds = sorted({l.WhichOneof("layer") or "empty" for l in bad})
            more = f" ({len(bad)} unsupported layers in all: {', '.join(kinds)})" if len(bad) > 1 else ""
            raise UnsupportedError(f"layer {bad[0].name!r} of type {bad[0].WhichOneof('layer')!r} is "
                                   f"not supported{more}", file=self.file, where=bad[0].name)
        self.add_inputs()
        for layer in self.nn.layers:
            self.layer = layer
            which = layer.WhichOneof("layer")
            try:
                LAYERS[which](self, getattr(layer, which))
            except (KeyError, ValueError, IndexError, TypeError, ZeroDivisionError) as err:  # malformed
                raise self.corrupt(f"cannot be read ({type(err).__name__}: {err})") from err
        self.layer = None
        self.set_outputs()
        return self.graph

    def add_inputs(self):
        exact = getattr(self.nn, "arrayInputShapeMapping", 0) == 1
        images = {}
        for feature in self.spec.description.input:
            ftype = feature.type
            which = ftype.WhichOneof("Type")
            if which == "multiArrayType":
                shape = tuple(ftype.multiArrayType.shape)
                if not shape:
                    raise UnsupportedError(f"input {feature.name!r} has no default shape",
                                           file=self.file, where=feature.name)
                if not exact and len(shape) in (1, 3):
                    shape = (1,) + shape + (1, 1) if len(shape) == 1 else (1,) + shape
                dtype = _ARRAY_TYPES.get(ftype.multiArrayType.dataType, "float32")
                self.graph.add_input(feature.name, shape, dtype)
            elif which == "imageType":
                img = ftype.imageType
                channels = _COLOR_CHANNELS.get(img.colorSpace)
                if channels is None or not img.width or not img.height:
                    raise UnsupportedError(f"image input {feature.name!r}: color space or size is "
                                           "missing", file=self.file, where=feature.name)
                self.graph.add_input(feature.name, (1, channels, img.height, img.width), "float32")
                images[feature.name] = _COLOR_NAMES[img.colorSpace]
            else:
                raise UnsupportedError(f"input {feature.name!r} of type {which} is not supported",
                                       file=self.file, where=feature.name)
        self.graph.metadata["image_inputs"] = images
        for pre in self.nn.preprocessing:
            self.add_preprocessing(pre, images)

    def add_preprocessing(self, pre, images):
        name = pre.featureName or (self.graph.input_names[0] if len(self.graph.inputs) == 1 else "")
        if name not in images:
            raise ModelError(f"preprocessing names {name!r}, which is not an image input",
                             file=self.file, where=name)
        info = self.graph.tensors[name]
        out = self.graph.unique_tensor_name(f"{name}__preprocessed")
        kind = pre.WhichOneof("preprocessor")
        if kind == "scaler":
            s = pre.scaler
            bias = {"RGB": [s.redBias, s.greenBias, s.blueBias],
                    "BGR": [s.blueBias, s.greenBias, s.redBias]}.get(images[name], [s.grayBias])
            scale = s.channelScale
            scaled = self.graph.unique_tensor_name(f"{name}__scaled")
            scale_c = self.graph.unique_tensor_name(f"{name}__scale")
            bias_c = self.graph.unique_tensor_name(f"{name}__bias")
            self.graph.add_constant(scale_c, np.float32(scale))
            self.graph.add_constant(bias_c, np.asarray(bias, np.float32).reshape(1, -1, 1, 1))
            self.graph.add_op("mul", [name, scale_c], [scaled], name=f"{name}/preprocess_scale",
                              source=f"preprocessing of {name}")
            self.graph.add_op("add", [scaled, bias_c], [out], name=f"{name}/preprocess_bias",
                              source=f"preprocessing of {name}")
            self.graph.metadata.setdefault("preprocessing", {})[name] = {
                "channel_scale": float(scale), "bias": [float(b) for b in bias]}
        elif kind == "meanImage":
            mean = np.asarray(pre.meanImage.meanImage, np.float32)
            if mean.size != info.size:
                raise ModelError(f"mean image has {mean.size} values, the image {info.size}",
                                 file=self.file, where=name)
            mean_c = self.graph.unique_tensor_name(f"{name}__mean")
            self.graph.add_constant(mean_c, mean.reshape(info.shape))
            self.graph.add_op("sub", [name, mean_c], [out], name=f"{name}/preprocess_mean",
                              source=f"preprocessing of {name}")
        else:
            return
        self.rename[name] = out

    def set_outputs(self):
        names = []
        declared = self.graph.metadata.setdefault("declared_output_shapes", {})
        for feature in self.spec.description.output:
            if feature.type.WhichOneof("Type") == "multiArrayType" and feature.type.multiArrayType.shape:
                declared[feature.name] = list(feature.type.multiArrayType.shape)
            name = self.rename.get(feature.name, feature.name)
            if self.kind == "neuralNetworkClassifier" and name not in self.graph.tensors:
                continue  # the class label: written from the probabilities, not a tensor
            if name not in self.graph.tensors:
                raise ModelError(f"output {feature.name!r} is produced by no layer", file=self.file,
                                 where=feature.name)
            names.append(name)
        if self.kind == "neuralNetworkClassifier":
            names = self.classifier_outputs(names)
        self.graph.set_outputs(names)

    def classifier_outputs(self, names):
        nn, desc = self.nn, self.spec.description
        labels = list(nn.stringClassLabels.vector) if nn.HasField("stringClassLabels") \
            else list(nn.int64ClassLabels.vector)
        probs_layer = nn.labelProbabilityLayerName or (nn.layers[-1].output[0] if nn.layers else "")
        probs = self.rename.get(probs_layer, probs_layer)
        target = desc.predictedProbabilitiesName or probs
        if target not in self.graph.tensors:
            self.graph.add_op("identity", [probs], [target], name=f"{target}/probabilities",
                              source="classifier")
        self.graph.metadata["classifier"] = {
            "labels": labels, "probabilities": target, "label_output": desc.predictedFeatureName}
        return [target] + [n for n in names if n != target]


# -- weights --------------------------------------------------------------------------------------

def weight_values(wp, shape, axis=0) -> np.ndarray:
    """float32 array of a WeightParams message, `shape` being the layer's weight shape.

    Quantized values (`rawValue` / `int8RawValue` + `quantization`) use per-output-channel scale
    and bias (or a look-up table); the output channel is `axis` of `shape`.
    """
    count = math.prod(shape)
    if len(wp.floatValue):
        values = np.array(wp.floatValue, dtype=np.float32)
    elif len(wp.float16Value):
        values = np.frombuffer(wp.float16Value, dtype=np.float16).astype(np.float32)
    elif len(wp.rawValue) or len(wp.int8RawValue):
        values = _dequantize(wp, shape, axis)
    else:
        values = np.zeros(0, np.float32)
    if values.size != count:
        raise ValueError(f"{values.size} values, expected {count} for shape {list(shape)}")
    return values.reshape(shape)


def _dequantize(wp, shape, axis):
    q = wp.quantization
    nbits = q.numberOfBits or 8
    count = math.prod(shape)
    if len(wp.int8RawValue):
        codes = np.frombuffer(wp.int8RawValue, dtype=np.int8).astype(np.float32)
    elif q.WhichOneof("QuantizationType") is None and len(wp.rawValue) == 4 * count:
        return np.frombuffer(wp.rawValue, dtype=np.float32).copy()
    elif nbits == 8:
        codes = np.frombuffer(wp.rawValue, dtype=np.uint8).astype(np.float32)
    else:
        codes = unpack_bits(wp.rawValue, nbits, count, msb_first=True).astype(np.float32)
    codes = codes[:count]
    kind = q.WhichOneof("QuantizationType")
    if kind == "linearQuantization":
        scale = np.asarray(q.linearQuantization.scale, np.float32)
        bias = np.asarray(q.linearQuantization.bias, np.float32) if len(q.linearQuantization.bias) \
            else np.zeros(1, np.float32)
        channel_shape = [1] * len(shape)
        channel_shape[axis] = -1
        codes = codes.reshape(shape)
        scale = scale.reshape(channel_shape) if scale.size > 1 else scale.reshape(())
        bias = bias.reshape(channel_shape) if bias.size > 1 else bias.reshape(())
        return (codes * scale + bias).reshape(-1)
    if kind == "lookupTableQuantization":
        lut = np.asarray(q.lookupTableQuantization.floatValue, np.float32)
        return lut[codes.astype(np.intp)]
    if len(wp.int8RawValue):
        raise ValueError("int8 weights without quantization parameters")
    raise ValueError("quantized weights without linear or look-up-table parameters")


# -- layer handlers -------------------------------------------------------------------------------

def _padding_amounts(border, n=2):
    amounts = list(border.borderAmounts)
    if not amounts:
        return (0,) * (2 * n)
    if len(amounts) != n:
        raise ValueError(f"{len(amounts)} border amounts for {n} spatial dims")
    return tuple(v for edge in amounts for v in (edge.startEdgeSize, edge.endEdgeSize))


def _conv_geometry(p):
    kernel = tuple(p.kernelSize) or (3, 3)
    strides = tuple(p.stride) or (1, 1)
    dilations = tuple(p.dilationFactor) or (1, 1)
    return kernel, strides, dilations


def _convolution(t, p):
    if len(t.layer.input) > 1:
        raise t.unsupported("weights given as a second input")
    x = t.info()
    if len(x.shape) != 4:
        raise t.unsupported(f"rank-{len(x.shape)} input (expects [N, C, H, W])")
    kernel, strides, dilations = _conv_geometry(p)
    groups = p.nGroups or 1
    if p.isDeconvolution:
        return _deconvolution(t, p, x, kernel, strides, dilations, groups)
    shape = (p.outputChannels, p.kernelChannels, *kernel)
    weight = t.weights(p.weights, shape)
    bias = t.weights(p.bias, (p.outputChannels,), what="bias") if p.hasBias else None
    if p.WhichOneof("ConvolutionPaddingType") == "same":
        pads = same_pads(x.shape[2:], kernel, strides, dilations, lower=p.same.asymmetryMode == 1)
    else:
        pads = _padding_amounts(p.valid.paddingAmounts)
    t.emit("conv", [x.name], {"weight": weight, "bias": bias, "strides": strides,
                              "dilations": dilations, "pads": pads, "groups": groups})


def _deconvolution(t, p, x, kernel, strides, dilations, groups):
    shape = (p.kernelChannels, p.outputChannels // groups, *kernel)
    weight = t.weights(p.weights, shape, axis=1)
    bias = t.weights(p.bias, (p.outputChannels,), what="bias") if p.hasBias else None
    full = [(d - 1) * s + (k - 1) * dl + 1 for d, s, k, dl in zip(x.shape[2:], strides, kernel, dilations)]
    if p.WhichOneof("ConvolutionPaddingType") == "same":
        size = tuple(d * s for d, s in zip(x.shape[2:], strides))
        pads = tuple(v for f, o in zip(full, size) for v in ((f - o) // 2, f - o - (f - o) // 2))
    else:
        pads = _padding_amounts(p.valid.paddingAmounts)
        size = tuple(f - pads[2 * i] - pads[2 * i + 1] for i, f in enumerate(full))
    if len(p.outputShape):
        size = tuple(p.outputShape)
    t.emit("conv_transpose", [x.name], {"weight": weight, "bias": bias, "strides": strides,
                                        "dilations": dilations, "pads": pads, "groups": groups,
                                        "output_size": size})


def _pooling(t, p):
    x = t.info()
    if len(x.shape) != 4:
        raise t.unsupported(f"rank-{len(x.shape)} input (expects [N, C, H, W])")
    kind = {0: "max_pool", 1: "avg_pool"}.get(p.type)
    if kind is None:
        raise t.unsupported("L2 pooling")
    attrs = {"ceil_mode": False}
    if p.globalPooling:
        kernel, strides, pads = tuple(x.shape[2:]), (1, 1), (0, 0, 0, 0)
    else:
        kernel, strides = tuple(p.kernelSize) or (3, 3), tuple(p.stride) or (1, 1)
        padding = p.WhichOneof("PoolingPaddingType")
        if padding == "same":
            pads = same_pads(x.shape[2:], kernel, strides, (1, 1), lower=p.same.asymmetryMode == 1)
        elif padding == "includeLastPixel":
            amounts = tuple(p.includeLastPixel.paddingAmounts) or (0, 0)
            pads = (amounts[0], amounts[0], amounts[1], amounts[1])
            attrs["ceil_mode"] = True
        else:
            pads = _padding_amounts(p.valid.paddingAmounts)
    attrs.update(kernel=kernel, strides=strides, pads=pads)
    if kind == "avg_pool":
        attrs["exclude_padding"] = bool(p.avgPoolExcludePadding)
    t.emit(kind, [x.name], attrs)


def _activation(t, p):
    kind = p.WhichOneof("NonlinearityType")
    x = t.info()
    simple = {"ReLU": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "softsign": "softsign",
              "softplus": "softplus"}
    if kind in simple:
        return t.emit(simple[kind], [x.name])
    if kind == "linear":
        return t.emit("affine", [x.name], {"alpha": p.linear.alpha, "beta": p.linear.beta})
    if kind == "leakyReLU":
        return t.emit("leaky_relu", [x.name], {"alpha": p.leakyReLU.alpha})
    if kind == "thresholdedReLU":
        return t.emit("thresholded_relu", [x.name], {"alpha": p.thresholdedReLU.alpha})
    if kind == "ELU":
        return t.emit("elu", [x.name], {"alpha": p.ELU.alpha})
    if kind == "scaledTanh":
        return t.emit("scaled_tanh", [x.name], {"alpha": p.scaledTanh.alpha, "beta": p.scaledTanh.beta})
    if kind == "sigmoidHard":
        return t.emit("hard_sigmoid", [x.name], {"alpha": p.sigmoidHard.alpha,
                                                 "beta": p.sigmoidHard.beta})
    if kind == "PReLU":
        axis = t.chw_axis(len(x.shape), -3)
        count = len(p.PReLU.alpha.floatValue) or len(p.PReLU.alpha.float16Value) // 2 or 1
        alpha = t.weights(p.PReLU.alpha, (count,), what="alpha")
        return t.emit("prelu", [x.name], {"alpha": alpha, "axis": axis})
    raise t.unsupported(f"activation {kind!r}")


def _inner_product(t, p):
    x = t.info()
    weight = t.weights(p.weights, (p.outputChannels, p.inputChannels))
    bias = t.weights(p.bias, (p.outputChannels,), what="bias") if p.hasBias else None
    attrs = {"weight": weight, "bias": bias}
    if x.shape[-1] == p.inputChannels:
        return t.emit("linear", [x.name], attrs)
    if len(x.shape) >= 3 and x.shape[-3:] == (p.inputChannels, 1, 1):  # legacy [.., C, 1, 1]
        flat = t.temp("flat")
        t.emit("reshape", [x.name], {"shape": x.shape[:-3] + (p.inputChannels,)}, outputs=[flat],
               suffix="flatten")
        lin = t.temp("linear")
        t.emit("linear", [flat], attrs, outputs=[lin], suffix="linear")
        return t.emit("reshape", [lin], {"shape": x.shape[:-3] + (p.outputChannels, 1, 1)})
    raise t.corrupt(f"input {list(x.shape)} does not have {p.inputChannels} input channels")


def _batched_matmul(t, p):
    if len(t.layer.input) == 2:
        return t.emit("matmul", [t.inp(0), t.inp(1)],
                      {"transpose_x": p.transposeA, "transpose_y": p.transposeB})
    if p.transposeA:
        raise t.unsupported("transposeA with constant weights")
    rows, cols = p.weightMatrixFirstDimension, p.weightMatrixSecondDimension
    # Stored as the transpose of the (rows x cols) matrix (coremltools builder), i.e. [out, in].
    weight = t.weights(p.weights, (cols, rows))
    bias = t.weights(p.bias, (cols,), what="bias") if p.hasBias else None
    t.emit("linear", [t.inp()], {"weight": weight, "bias": bias})


def _batchnorm(t, p):
    x = t.info()
    if len(x.shape) != 4:
        raise t.unsupported(f"rank-{len(x.shape)} input (expects [N, C, H, W])")
    c = p.channels
    gamma = t.weights(p.gamma, (c,), what="gamma")
    beta = t.weights(p.beta, (c,), what="beta")
    if p.computeMeanVar or p.instanceNormalization:
        if not p.instanceNormalization:
            raise t.unsupported("computeMeanVar across the batch")
        return t.emit("instance_norm", [x.name], {"gamma": gamma, "beta": beta, "epsilon": p.epsilon})
    attrs = {"mean": t.weights(p.mean, (c,), what="mean"),
             "variance": t.weights(p.variance, (c,), what="variance"),
             "gamma": gamma, "beta": beta, "epsilon": p.epsilon}
    t.emit("batch_norm", [x.name], attrs)


def _softmax(t, p):
    x = t.info()
    t.emit("softmax", [x.name], {"axis": t.chw_axis(len(x.shape), -3)})


def _softmax_nd(t, p):
    x = t.info()
    t.emit("softmax", [x.name], {"axis": p.axis % len(x.shape)})


def _padding(t, p):
    x = t.info()
    h, w = _padding_amounts(p.paddingAmounts)[:2], _padding_amounts(p.paddingAmounts)[2:]
    pads = ((0, 0),) * (len(x.shape) - 2) + (tuple(h), tuple(w))
    kind = p.WhichOneof("PaddingType")
    mode = {"constant": "constant", "reflection": "reflect", "replication": "replicate"}[kind]
    value = p.constant.value if kind == "constant" else 0.0
    t.emit("pad", [x.name], {"pads": pads, "mode": mode, "value": value})


def _constant_pad(t, p):
    x = t.info()
    if p.padToGivenOutputSizeMode or len(t.layer.input) > 1:
        raise t.unsupported("padding to a given output size / dynamic pads")
    flat = list(p.padAmounts)
    rank = len(x.shape)
    if len(flat) % 2 or len(flat) // 2 > rank:
        raise t.corrupt(f"{len(flat)} pad amounts for rank {rank}")
    pairs = [(0, 0)] * (rank - len(flat) // 2) + [(flat[2 * i], flat[2 * i + 1])
                                                  for i in range(len(flat) // 2)]
    t.emit("pad", [x.name], {"pads": tuple(pairs), "mode": "constant", "value": p.value})


def _upsample(t, p):
    x = t.info()
    if len(p.fractionalScalingFactor):
        sh, sw = p.fractionalScalingFactor
    else:
        sh, sw = tuple(p.scalingFactor) or (1, 1)
    size = (int(math.floor(x.shape[-2] * sh)), int(math.floor(x.shape[-1] * sw)))
    if p.mode == 0:
        attrs = {"mode": "nearest", "output_size": size, "coordinates": "asymmetric"}
    else:
        coords = {0: "asymmetric", 1: "align_corners", 2: "half_pixel"}[p.linearUpsampleMode]
        attrs = {"mode": "bilinear", "output_size": size, "coordinates": coords}
    t.emit("upsample", [x.name], attrs)


def _resize_bilinear(t, p):
    x = t.info()
    method = p.mode.samplingMethod
    coords = {0: "align_corners", 1: "align_corners", 2: "asymmetric"}.get(method)
    if coords is None:
        raise t.unsupported("ROI_ALIGN sampling")
    size = tuple(p.targetSize) or (1, 1)
    t.emit("upsample", [x.name], {"mode": "bilinear", "output_size": size, "coordinates": coords})


_UNARY_KINDS = {0: "sqrt", 1: "rsqrt", 2: "reciprocal", 3: "pow", 4: "exp", 5: "log", 6: "abs",
                7: "threshold"}


def _unary(t, p):
    """f(scale * x + shift); rsqrt / inverse / log add `epsilon` inside the function."""
    kind = _UNARY_KINDS.get(p.type)
    steps = []
    if p.scale != 1.0 or p.shift != 0.0:
        steps.append(("affine", {"alpha": p.scale, "beta": p.shift}, []))
    if kind in ("rsqrt", "reciprocal", "log"):
        steps.append((kind, {"epsilon": p.epsilon}, []))
    elif kind == "pow":
        steps.append(("pow", {}, [t.constant("exponent", p.alpha)]))
    elif kind == "threshold":
        steps.append(("threshold", {"alpha": p.alpha}, []))
    else:
        steps.append((kind, {}, []))
    t.chain(steps, [t.inp()])


def _elementwise(ir_type):
    """Legacy add / multiply / max / min of one or more inputs (one input: op with `alpha`)."""
    def handler(t, p):
        names = [t.inp(i) for i in range(len(t.layer.input))]
        if len(names) == 1:
            if ir_type in ("add", "mul"):
                return t.emit(ir_type, [names[0], t.constant("alpha", p.alpha)])
            return t.emit("identity", names)
        current = names[0]
        for i, other in enumerate(names[1:]):
            last = i == len(names) - 2
            outs = None if last else [t.temp(f"{ir_type}{i}")]
            t.emit(ir_type, [current, other], outputs=outs, suffix=None if last else f"{ir_type}{i}")
            current = outs[0] if outs else current
    return handler


def _average(t, p):
    names = [t.inp(i) for i in range(len(t.layer.input))]
    total = names[0]
    for i, other in enumerate(names[1:]):
        out = t.temp(f"sum{i}")
        t.emit("add", [total, other], outputs=[out], suffix=f"sum{i}")
        total = out
    t.emit("mul", [total, t.constant("inv_count", 1.0 / len(names))])


def _broadcastable(ir_type):
    def handler(t, p):
        if len(t.layer.input) != 2:
            raise t.corrupt(f"{ir_type} needs two inputs")
        t.emit(ir_type, [t.inp(0), t.inp(1)])
    return handler


def _channel_const(t, wp, shape, x, what):
    shape = tuple(shape) or (1,)
    values = t.weights(wp, shape, what=what)
    if len(shape) == 1 and shape[0] > 1:
        values = values.reshape(shape[0], 1, 1)
    if len(values.shape) > len(x.shape):
        raise t.corrupt(f"{what} of shape {list(shape)} for a rank-{len(x.shape)} input")
    return t.constant(what, values)


def _scale(t, p):
    x = t.info()
    steps = [("mul", {}, [_channel_const(t, p.scale, p.shapeScale, x, "scale")])]
    if p.hasBias:
        steps.append(("add", {}, [_channel_const(t, p.bias, p.shapeBias, x, "bias")]))
    t.chain(steps, [x.name])


def _bias(t, p):
    x = t.info()
    t.emit("add", [x.name, _channel_const(t, p.bias, p.shape, x, "bias")])


def _load_constant(t, p):
    shape = tuple(p.shape)
    values = t.weights(p.data, shape)
    t.graph.add_constant(t.out(), values)


def _reshape_static(t, p):
    x = t.info()
    shape = list(p.targetShape)
    if -1 in shape:
        known = math.prod(d for d in shape if d != -1)
        shape[shape.index(-1)] = x.size // known if known else 0
    t.emit("reshape", [x.name], {"shape": tuple(shape)})


def _rank_preserving_reshape(t, p):
    x = t.info()
    shape = [x.shape[i] if d == 0 else d for i, d in enumerate(p.targetShape)]
    if -1 in shape:
        shape[shape.index(-1)] = x.size // math.prod(d for d in shape if d != -1)
    t.emit("reshape", [x.name], {"shape": tuple(shape)})


def _reshape_legacy(t, p):
    x = t.info()
    if p.mode != 0:
        raise t.unsupported("CHANNEL_LAST reshape")
    target = tuple(p.targetShape)[-3:]
    t.emit("reshape", [x.name], {"shape": x.shape[:1] + target})


def _flatten(t, p):
    x = t.info()
    if p.mode != 0 and x.shape[-2:] != (1, 1):
        raise t.unsupported("CHANNEL_LAST flatten")
    lead = x.shape[:-3] if len(x.shape) >= 3 else ()
    t.emit("reshape", [x.name], {"shape": lead + (math.prod(x.shape[len(lead):]), 1, 1)})


def _flatten_to_2d(t, p):
    x = t.info()
    axis = p.axis % len(x.shape) if p.axis else 0
    t.emit("reshape", [x.name], {"shape": (math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))})


def _squeeze(t, p):
    x = t.info()
    rank = len(x.shape)
    axes = set(range(rank)) if p.squeezeAll else {a % rank for a in p.axes}
    shape = tuple(d for i, d in enumerate(x.shape) if not (i in axes and d == 1))
    t.emit("reshape", [x.name], {"shape": shape})


def _expand_dims(t, p):
    x = t.info()
    rank = len(x.shape) + len(p.axes)
    axes = sorted(a % rank for a in p.axes)
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    t.emit("reshape", [x.name], {"shape": tuple(shape)})


def _permute(t, p):
    x = t.info()
    perm = tuple(p.axis)
    if len(x.shape) != 4 or sorted(perm) != [0, 1, 2, 3]:
        raise t.unsupported(f"permute {list(perm)} of a rank-{len(x.shape)} input")
    t.emit("transpose", [x.name], {"perm": perm})


def _transpose(t, p):
    x = t.info()
    t.emit("transpose", [x.name], {"perm": tuple(a % len(x.shape) for a in p.axes)})


def _concat(t, p):
    names = [t.inp(i) for i in range(len(t.layer.input))]
    if p.sequenceConcat:
        raise t.unsupported("sequence concat")
    rank = len(t.graph.tensors[names[0]].shape)
    t.emit("concat", names, {"axis": t.chw_axis(rank, -3)})


def _concat_nd(t, p):
    if p.interleave:
        raise t.unsupported("interleaved concat")
    names = [t.inp(i) for i in range(len(t.layer.input))]
    t.emit("concat", names, {"axis": p.axis % len(t.graph.tensors[names[0]].shape)})


def _split(t, p):
    x = t.info()
    axis = t.chw_axis(len(x.shape), -3)
    n = p.nOutputs or len(t.layer.output)
    if x.shape[axis] % n:
        raise t.corrupt(f"{x.shape[axis]} channels do not split into {n}")
    t.emit("split", [x.name], {"axis": axis, "sizes": (x.shape[axis] // n,) * n})


def _split_nd(t, p):
    x = t.info()
    axis = p.axis % len(x.shape)
    sizes = tuple(p.splitSizes)
    if not sizes:
        n = p.numSplits or len(t.layer.output)
        sizes = (x.shape[axis] // n,) * n
    t.emit("split", [x.name], {"axis": axis, "sizes": sizes})


def _slice_legacy(t, p):
    x = t.info()
    axis = t.chw_axis(len(x.shape), {0: -3, 1: -2, 2: -1}[p.axis])
    size = x.shape[axis]
    # [startIndex, endIndex) with negative indices counted from the end (-1 is N-1)
    start, stop, step = slice(p.startIndex, p.endIndex, p.stride or 1).indices(size)
    begin, end, strides = [0] * len(x.shape), list(x.shape), [1] * len(x.shape)
    begin[axis], end[axis], strides[axis] = start, stop, step
    t.emit("slice", [x.name], {"begin": tuple(begin), "end": tuple(end), "strides": tuple(strides)})


def _slice_static(t, p):
    x = t.info()
    rank = len(x.shape)
    begin, end, stride = list(p.beginIds), list(p.endIds), list(p.strides) or [1] * rank
    bmask, emask = list(p.beginMasks) or [False] * rank, list(p.endMasks) or [False] * rank
    squeeze = list(p.squeezeMasks) or [False] * rank
    starts, stops = [], []
    for i, size in enumerate(x.shape):
        start, stop, _ = slice(None if bmask[i] else begin[i], None if emask[i] else end[i],
                               stride[i]).indices(size)
        if squeeze[i]:
            start = begin[i] % size
            stop = start + 1 if stride[i] > 0 else start - 1
        starts.append(start)
        stops.append(stop)
    attrs = {"begin": tuple(starts), "end": tuple(stops), "strides": tuple(stride)}
    if any(squeeze):
        mid = t.temp("slice")
        t.emit("slice", [x.name], attrs, outputs=[mid], suffix="slice")
        shape = tuple(d for d, s in zip(t.graph.tensors[mid].shape, squeeze) if not s)
        return t.emit("reshape", [mid], {"shape": shape})
    t.emit("slice", [x.name], attrs)


_LEGACY_REDUCE = {0: "reduce_sum", 1: "reduce_mean", 2: "reduce_prod", 3: "reduce_log_sum",
                  4: "reduce_sum_square", 5: "reduce_l1_norm", 6: "reduce_l2_norm", 7: "reduce_max",
                  8: "reduce_min"}
_LEGACY_AXES = {0: (-3, -2, -1), 1: (-2, -1), 2: (-3,), 3: (-2,), 4: (-1,)}


def _reduce_legacy(t, p):
    x = t.info()
    kind = _LEGACY_REDUCE.get(p.mode)
    if kind is None:
        raise t.unsupported("ARGMAX reduce")
    axes = tuple(t.chw_axis(len(x.shape), a) for a in _LEGACY_AXES[p.axis])
    t.emit(kind, [x.name], {"axes": axes, "keep_dims": True})


def _reduce_nd(ir_type):
    def handler(t, p):
        x = t.info()
        rank = len(x.shape)
        axes = tuple(range(rank)) if p.reduceAll else tuple(sorted({a % rank for a in p.axes}))
        t.emit(ir_type, [x.name], {"axes": axes, "keep_dims": bool(p.keepDims)})
    return handler


def _layer_norm(t, p):
    x = t.info()
    norm = tuple(p.normalizedShape)
    if tuple(x.shape[len(x.shape) - len(norm):]) != norm:
        raise t.corrupt(f"normalized shape {list(norm)} is not the tail of {list(x.shape)}")
    axes = tuple(range(len(x.shape) - len(norm), len(x.shape)))
    attrs = {"axes": axes, "gamma": t.weights(p.gamma, norm, what="gamma"),
             "beta": t.weights(p.beta, norm, what="beta"), "epsilon": p.eps}
    t.emit("layer_norm", [x.name], attrs)


def _mvn(t, p):
    x = t.info()
    rank = len(x.shape)
    axes = tuple(t.chw_axis(rank, a) for a in ((-3, -2, -1) if p.acrossChannels else (-2, -1)))
    if not p.normalizeVariance:
        mean = t.temp("mean")
        t.emit("reduce_mean", [x.name], {"axes": axes, "keep_dims": True}, outputs=[mean],
               suffix="mean")
        return t.emit("sub", [x.name, mean])
    t.emit("layer_norm", [x.name], {"axes": axes, "gamma": None, "beta": None, "epsilon": p.epsilon})


def _gelu(t, p):
    t.emit("gelu", [t.inp()], {"mode": {0: "exact", 1: "tanh", 2: "sigmoid"}[p.mode]})


def _clip(t, p):
    t.emit("clip", [t.inp()], {"min": p.minVal, "max": p.maxVal})


def _clamped_relu(t, p):
    # min(max(x, 0), beta) + alpha * min(x, 0): leaky_relu then clip at beta
    x = t.inp()
    t.chain([("leaky_relu", {"alpha": p.alpha}, []), ("clip", {"min": -np.inf, "max": p.beta}, [])], [x])


def _simple(ir_type):
    return lambda t, p: t.emit(ir_type, [t.inp()])


def _tile(t, p):
    x = t.info()
    reps = tuple(p.reps)
    if len(reps) < len(x.shape):
        reps = (1,) * (len(x.shape) - len(reps)) + reps
    t.emit("tile", [x.name], {"reps": reps})


LAYERS = {
    "convolution": _convolution,
    "pooling": _pooling,
    "activation": _activation,
    "innerProduct": _inner_product,
    "batchedMatmul": _batched_matmul,
    "batchnorm": _batchnorm,
    "softmax": _softmax,
    "softmaxND": _softmax_nd,
    "padding": _padding,
    "constantPad": _constant_pad,
    "upsample": _upsample,
    "resizeBilinear": _resize_bilinear,
    "unary": _unary,
    "add": _elementwise("add"),
    "multiply": _elementwise("mul"),
    "max": _elementwise("maximum"),
    "min": _elementwise("minimum"),
    "average": _average,
    "addBroadcastable": _broadcastable("add"),
    "subtractBroadcastable": _broadcastable("sub"),
    "multiplyBroadcastable": _broadcastable("mul"),
    "divideBroadcastable": _broadcastable("real_div"),
    "maxBroadcastable": _broadcastable("maximum"),
    "minBroadcastable": _broadcastable("minimum"),
    "powBroadcastable": _broadcastable("pow"),
    "floorDivBroadcastable": _broadcastable("floor_div"),
    "scale": _scale,
    "bias": _bias,
    "loadConstant": _load_constant,
    "loadConstantND": _load_constant,
    "reshape": _reshape_legacy,
    "reshapeStatic": _reshape_static,
    "rankPreservingReshape": _rank_preserving_reshape,
    "flatten": _flatten,
    "flattenTo2D": _flatten_to_2d,
    "squeeze": _squeeze,
    "expandDims": _expand_dims,
    "permute": _permute,
    "transpose": _transpose,
    "concat": _concat,
    "concatND": _concat_nd,
    "split": _split,
    "splitND": _split_nd,
    "slice": _slice_legacy,
    "sliceStatic": _slice_static,
    "reduce": _reduce_legacy,
    "reduceSum": _reduce_nd("reduce_sum"),
    "reduceMean": _reduce_nd("reduce_mean"),
    "reduceMax": _reduce_nd("reduce_max"),
    "reduceMin": _reduce_nd("reduce_min"),
    "reduceProd": _reduce_nd("reduce_prod"),
    "reduceL1": _reduce_nd("reduce_l1_norm"),
    "reduceL2": _reduce_nd("reduce_l2_norm"),
    "reduceLogSum": _reduce_nd("reduce_log_sum"),
    "reduceSumSquare": _reduce_nd("reduce_sum_square"),
    "reduceLogSumExp": _reduce_nd("reduce_log_sum_exp"),
    "layerNormalization": _layer_norm,
    "mvn": _mvn,
    "gelu": _gelu,
    "clip": _clip,
    "clampedReLU": _clamped_relu,
    "erf": _simple("erf"),
    "ceil": _simple("ceil"),
    "floor": _simple("floor"),
    "round": _simple("round"),
    "sign": _simple("sign"),
    "sin": _simple("sin"),
    "cos": _simple("cos"),
    "exp2": _simple("exp2"),
    "tanh": _simple("tanh"),
    "copy": _simple("identity"),
    "tile": _tile,
}

SUPPORTED_LAYERS = frozenset(LAYERS)


def nn_to_graph(spec, file=None, name="model") -> Graph:
    return NNTranslator(spec, file, name).translate()
