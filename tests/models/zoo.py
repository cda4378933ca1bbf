"""A seeded model zoo written in torch, converted by coremltools; reusable by any test.

    from tests.models.zoo import session_zoo
    zoo = session_zoo(tmp_path_factory)          # one cache folder per pytest session
    path = zoo.path("mobilenet_v2", "mlmodel")   # .mlmodel (NeuralNetwork) or "mlpackage"
    module, inputs = zoo.torch_model("mobilenet_v2")
    expected = zoo.expected("mobilenet_v2")      # {output index: numpy array}, torch's own output

Every model has random weights from a fixed seed (batch-norm statistics too, so no layer is an
identity) and fixed example inputs.  Converted files are cached per session; conversions use
`compute_precision=FLOAT32` for ML Programs unless `precision="fp16"` is asked for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZES = {"mobilenet_v2": 64, "resnet18": 64, "unet": 32, "mobilenet_v3_block": 16}


def _torch():
    import torch

    return torch


def _randomize_bn(module, seed):
    torch = _torch()
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return module


# -- architectures --------------------------------------------------------------------------------

def _conv_bn(cin, cout, k=3, stride=1, groups=1, act="relu6"):
    nn = _torch().nn
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act == "relu6":
        layers.append(nn.ReLU6())
    elif act == "relu":
        layers.append(nn.ReLU())
    elif act == "hardswish":
        layers.append(nn.Hardswish())
    return nn.Sequential(*layers)


def _mobilenet_v2_class():
    nn = _torch().nn

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            layers = [] if expand == 1 else [_conv_bn(cin, hidden, 1)]
            layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden),
                       _conv_bn(hidden, cout, 1, act=None)]
            self.block = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.block(x)
            return x + y if self.residual else y

    class MobileNetV2(nn.Module):
        """MobileNetV2 (Sandler et al. 2018), 1000 classes; `width` scales the channels as the
        paper's width multiplier does (rounded to multiples of 8; the last layer keeps 1280)."""

        def __init__(self, classes=1000, width=1.0):
            super().__init__()
            setting = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]
            scaled = lambda c: max(8, int(c * width + 4) // 8 * 8)  # noqa: E731
            cin = scaled(32)
            layers = [_conv_bn(3, cin, 3, 2)]
            for t, c, n, s in setting:
                for i in range(n):
                    layers.append(InvertedResidual(cin, scaled(c), s if i == 0 else 1, t))
                    cin = scaled(c)
            layers.append(_conv_bn(cin, 1280, 1))
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Linear(1280, classes)

        def forward(self, x):
            x = self.features(x)
            x = x.mean(dim=(2, 3))
            return self.classifier(x)

    return MobileNetV2


def mobilenet_v2(width=1.0):
    return _mobilenet_v2_class()(width=width)


def resnet18():
    nn = _torch().nn

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

        def forward(self, x):
            y = nn.functional.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return nn.functional.relu(y + (x if self.down is None else self.down(x)))

    class ResNet18(nn.Module):
        """ResNet-18 (He et al. 2016), 1000 classes."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                      nn.ReLU(), nn.MaxPool2d(3, 2, 1))
            blocks, cin = [], 64
            for cout, stride in [(64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1),
                                 (512, 2), (512, 1)]:
                blocks.append(BasicBlock(cin, cout, stride))
                cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, 1000)

        def forward(self, x):
            x = self.pool(self.blocks(self.stem(x)))
            return self.fc(x.flatten(1))

    return ResNet18()


def transformer_block():
    torch = _torch()
    nn = torch.nn

    class EncoderBlock(nn.Module):
        """Pre-norm transformer encoder block: multi-head self-attention and a GELU MLP."""

        def __init__(self, dim=64, heads=4, hidden=128):
            super().__init__()
            self.heads = heads
            self.norm1 = nn.LayerNorm(dim)
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
            self.norm2 = nn.LayerNorm(dim)
            self.fc1 = nn.Linear(dim, hidden)
            self.fc2 = nn.Linear(hidden, dim)

        def forward(self, x):
            b, n, d, h = 1, 16, 64, self.heads  # static: the model is converted for [1, 16, 64]
            q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
            att = torch.softmax(q @ k.transpose(-2, -1) * (d // h) ** -0.5, dim=-1)
            y = (att @ v).transpose(1, 2).reshape(b, n, d)
            x = x + self.proj(y)
            return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))

    block = EncoderBlock()
    with torch.no_grad():  # non-trivial layer-norm affine parameters
        for norm in (block.norm1, block.norm2):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0, 0.1)
    return block


def unet():
    torch = _torch()
    nn = torch.nn

    class UNet(nn.Module):
        """A small U-Net: max-pool down, transposed-conv and nearest/bilinear upsampling, skips."""

        def __init__(self):
            super().__init__()
            self.enc1 = _conv_bn(3, 8, act="relu")
            self.enc2 = _conv_bn(8, 16, act="relu")
            self.enc3 = _conv_bn(16, 32, act="relu")
            self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
            self.dec2 = _conv_bn(32, 16, act="relu")
            self.dec1 = _conv_bn(16 + 8, 8, act="relu")
            self.head = nn.Conv2d(8 + 3, 2, 1)

        def forward(self, x):
            e1 = self.enc1(x)
            e2 = self.enc2(nn.functional.max_pool2d(e1, 2))
            e3 = self.enc3(nn.functional.max_pool2d(e2, 2))
            d2 = self.dec2(torch.cat([self.up2(e3), e2], dim=1))
            d1 = self.dec1(torch.cat([nn.functional.interpolate(d2, scale_factor=2, mode="nearest"),
                                      e1], dim=1))
            up = nn.functional.interpolate(nn.functional.avg_pool2d(x, 2), scale_factor=2,
                                           mode="bilinear", align_corners=False)
            return self.head(torch.cat([d1, up], dim=1))

    return UNet()


def mobilenet_v3_block():
    torch = _torch()
    nn = torch.nn

    class V3Block(nn.Module):
        """MobileNetV3 bottleneck: expand, depthwise, squeeze-excite (hard-sigmoid), project."""

        def __init__(self, cin=16, hidden=64, cout=16, se=16):
            super().__init__()
            self.expand = _conv_bn(cin, hidden, 1, act="hardswish")
            self.depthwise = _conv_bn(hidden, hidden, 5, groups=hidden, act="hardswish")
            self.se_reduce = nn.Conv2d(hidden, se, 1)
            self.se_expand = nn.Conv2d(se, hidden, 1)
            self.project = _conv_bn(hidden, cout, 1, act=None)

        def forward(self, x):
            y = self.depthwise(self.expand(x))
            s = nn.functional.adaptive_avg_pool2d(y, 1)
            s = nn.functional.hardsigmoid(self.se_expand(nn.functional.relu(self.se_reduce(s))))
            return x + self.project(y * s)

    return V3Block()


def activations():
    torch = _torch()
    nn = torch.nn
    F = nn.functional

    class Activations(nn.Module):
        """Every common activation, each on its own channels of a 1x1 convolution."""

        fns = [F.relu, F.relu6, lambda v: F.leaky_relu(v, 0.1), None, F.elu, torch.sigmoid,
               F.hardsigmoid, F.hardswish, torch.tanh, F.gelu, lambda v: F.gelu(v, approximate="tanh"),
               F.silu, F.softplus, lambda v: torch.clamp(v, -0.5, 0.75)]

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4 * len(self.fns), 1)
            self.prelu = nn.PReLU(4, init=0.2)
            with torch.no_grad():
                self.prelu.weight.copy_(torch.linspace(0.05, 0.5, 4))

        def forward(self, x):
            parts = torch.split(self.conv(x) * 3.0, 4, dim=1)
            outs = [self.prelu(p) if fn is None else fn(p) for fn, p in zip(self.fns, parts)]
            return torch.cat(outs, dim=1)

    return Activations()


def ops():
    torch = _torch()
    nn = torch.nn
    F = nn.functional

    class Ops(nn.Module):
        """Broadcasting arithmetic, padding, pooling, reductions, slicing, reshapes."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)
            self.fc = nn.Linear(8, 5)

        def forward(self, x, y):
            a = self.conv(x)                                           # [1,8,12,12]
            m = a.mean(dim=(2, 3), keepdim=True)                       # [1,8,1,1]
            b = (a - m) * y + torch.maximum(a, y) / (1.5 + torch.abs(a))
            b = torch.minimum(b, torch.pow(torch.abs(a) + 1.0, 1.5))
            p1 = F.pad(b, (1, 1, 1, 1), mode="reflect")                # [1,8,14,14]
            p2 = F.pad(b, (2, 0, 0, 2), mode="replicate")
            p3 = F.pad(b, (1, 1, 1, 1), value=0.5)
            c = F.avg_pool2d(p1, 3, 2, padding=1, count_include_pad=False) \
                + F.avg_pool2d(p2, 3, 2, padding=1) + F.max_pool2d(p3, 3, 2, ceil_mode=True)  # 7x7
            s1, s2 = torch.split(c, [3, 5], dim=1)
            d = torch.cat([s2[:, :, ::2, 1:-1].permute(0, 1, 3, 2).flatten(2),            # [1,5,20]
                           s1[:, :, 1:5, 2:7].flatten(2)], dim=1)                        # [1,3,20]
            e = torch.softmax(d, dim=-1) + d.amax(dim=1, keepdim=True) - d.amin(dim=-1, keepdim=True)
            g = F.adaptive_max_pool2d(b, 1).flatten(1)                 # [1,8]
            r = s1.sum(dim=(2, 3)).mean(dim=1, keepdim=True)           # [1,1]
            return self.fc(g) + e.mean(dim=(1, 2)).unsqueeze(1) + r, e.squeeze(0)

    return Ops()


BUILDERS = {
    "mobilenet_v2": (mobilenet_v2, lambda s: {"x": (1, 3, s, s)}),
    "resnet18": (resnet18, lambda s: {"x": (1, 3, s, s)}),
    "transformer_block": (transformer_block, lambda s: {"x": (1, 16, 64)}),
    "unet": (unet, lambda s: {"x": (1, 3, s, s)}),
    "mobilenet_v3_block": (mobilenet_v3_block, lambda s: {"x": (1, 16, s, s)}),
    "activations": (activations, lambda s: {"x": (1, 4, 6, 6)}),
    "ops": (ops, lambda s: {"x": (1, 8, 12, 12), "y": (1, 8, 1, 1)}),
}


def build(name: str, size: int | None = None):
    """(torch module in eval mode, {input name: shape}) for a zoo model, seeded by its name."""
    torch = _torch()
    make, shapes = BUILDERS[name]
    seed = sum(map(ord, name))
    torch.manual_seed(seed)
    module = _randomize_bn(make(), seed + 1).eval()
    return module, shapes(size or SIZES.get(name, 0))


def example_inputs(shapes: dict, seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def run_torch(module, inputs: dict) -> list[np.ndarray]:
    torch = _torch()
    with torch.no_grad():
        out = module(*[torch.from_numpy(v) for v in inputs.values()])
    outs = out if isinstance(out, (tuple, list)) else [out]
    return [o.numpy() for o in outs]


def convert(module, shapes: dict, path: Path, fmt: str, precision: str = "fp32",
            target=None) -> Path:
    """Trace and convert with coremltools; `fmt` is "mlmodel" or "mlpackage"."""
    import warnings

    with warnings.catch_warnings():  # tracer and converter chatter, not test results
        warnings.simplefilter("ignore")
        return _convert(module, shapes, path, fmt, precision, target)


def _convert(module, shapes, path, fmt, precision, target):
    import coremltools as ct

    torch = _torch()
    example = [torch.zeros(s) for s in shapes.values()]
    traced = torch.jit.trace(module, tuple(example) if len(example) > 1 else example[0])
    inputs = [ct.TensorType(name=n, shape=s) for n, s in shapes.items()]
    kwargs = {}
    if fmt == "mlmodel":
        kwargs["convert_to"] = "neuralnetwork"
    else:
        kwargs["convert_to"] = "mlprogram"
        kwargs["compute_precision"] = ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16
        if target is not None:
            kwargs["minimum_deployment_target"] = target
    model = ct.convert(traced, inputs=inputs, **kwargs)
    model.save(str(path))
    return path


class Zoo:
    """Converted zoo models cached in one folder."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._modules = {}

    def torch_model(self, name: str, size: int | None = None):
        key = (name, size)
        if key not in self._modules:
            module, shapes = build(name, size)
            self._modules[key] = (module, example_inputs(shapes))
        return self._modules[key]

    def expected(self, name: str, size: int | None = None) -> list[np.ndarray]:
        module, inputs = self.torch_model(name, size)
        return run_torch(module, inputs)

    def path(self, name: str, fmt: str, precision: str = "fp32", size: int | None = None) -> Path:
        suffix = ".mlmodel" if fmt == "mlmodel" else ".mlpackage"
        tag = f"{name}_{size or SIZES.get(name, 0)}_{precision}"
        path = self.folder / f"{tag}{suffix}"
        if not path.exists():
            module, inputs = self.torch_model(name, size)
            convert(module, {n: v.shape for n, v in inputs.items()}, path, fmt, precision)
        return path


_SESSIONS: dict[str, Zoo] = {}


def session_zoo(tmp_path_factory) -> Zoo:
    """The session's zoo (one cache folder under pytest's base temp, shared by all conftests)."""
    key = str(tmp_path_factory.getbasetemp())
    if key not in _SESSIONS:
        _SESSIONS[key] = Zoo(tmp_path_factory.getbasetemp() / "model-zoo")
    return _SESSIONS[key]


def max_relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| divided by the output scale max |expected| (1 when that is 0)."""
    scale = float(np.max(np.abs(expected))) or 1.0
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {actual.shape} != expected {expected.shape}")
    return float(np.max(np.abs(actual.astype(np.float64) - expected))) / scale if expected.size else 0.0


__all__ = ["Zoo", "session_zoo", "build", "example_inputs", "run_torch", "convert",
           "max_relative_error"]
