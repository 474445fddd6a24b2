"""The orbital-tightening regressor: the paper's Table 1, exactly, plus an ONNX-exportable pool, or a
wider VGG-style network with the same input and output (`arch="wide"`, what ships since issue 10).

Table 1:

50x50 patch -> conv5(6) -> pool2 -> conv5(16) -> pool2 -> adaptive avg pool 5x5 -> 120 -> BN ->
ReLU -> dropout 0.25 -> 84 -> BN -> ReLU -> 1. For a 50x50 input the feature map before the
adaptive pool is 9x9; 9 is not a multiple of 5 and the TorchScript ONNX exporter refuses
AdaptiveAvgPool2d there. `MatmulAdaptiveAvgPool` computes the identical result as P @ X @ P^T with
fixed pooling matrices (tested against nn.AdaptiveAvgPool2d), which exports as two MatMuls.

Both: input "patch" float32 [N, 3, 50, 50], BGR, scaled to [0, 1]. Output: "score" float32 [N, 1]
(orbital tightening 0-9; not clamped in the graph, the pipeline clamps), or [N, 2] for a network
with the eye verifier (`with_verifier`): column 1 is then the logit of "this patch is centred on a
real eye". The segmenter's eye class also lights up on noses, dark fur and vent holes, and a second
output on the patch the regressor already sees is the cheapest second opinion; a device reading
only column 0 still works with either file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

PATCH_SIZE = 50


def adaptive_pool_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """Row i averages input cells [floor(i*in/out), ceil((i+1)*in/out)), as PyTorch defines it."""
    m = torch.zeros(out_size, in_size)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = math.ceil((i + 1) * in_size / out_size)
        m[i, start:end] = 1.0 / (end - start)
    return m


class MatmulAdaptiveAvgPool(nn.Module):
    def __init__(self, in_size: int, out_size: int) -> None:
        super().__init__()
        self.register_buffer("rows", adaptive_pool_matrix(in_size, out_size))
        self.register_buffer("cols", adaptive_pool_matrix(in_size, out_size).t().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.matmul(self.rows, x), self.cols)


def feature_size(patch: int = PATCH_SIZE) -> int:
    s = (patch - 4) // 2
    return (s - 4) // 2


ARCHITECTURES = ("paper", "wide")
#: Column of the eye-verifier logit in a two-output network's output.
VERIFIER_COLUMN = 1
#: Channels of the three stages of the "wide" network.
WIDE_CHANNELS = (16, 32, 64)


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class EyeRegressor(nn.Module):
    """The orbital-tightening regressor; `features` are the conv layers (CIFAR-10 pretraining
    transfers them, fine-tuning on a facility's eyes can freeze them).

    arch "paper": Table 1 exactly. arch "wide": three stages of two 3x3 conv-BN-ReLU layers
    (16, 32, 64 channels) with 2x2 max pooling, one more 64-channel layer, then 128 -> 1. On the
    domain-randomised eyes of issue 10 the paper's net underfits (training MSE 4.7 after 50 epochs,
    validation MAE 1.52); the wide one reached 1.27 on the same samples in 30 epochs, for about
    25 M multiply-adds per patch against the paper's 2 M (models/TRAINING.md).
    """

    def __init__(
        self,
        in_channels: int = 3,
        patch: int = PATCH_SIZE,
        outputs: int = 1,
        arch: str = "paper",
        eye_width: float = 0.0,
        channels: Sequence[int] | None = None,
    ) -> None:
        """`eye_width` > 0: the network is trained on and expects scale-normalised patches, an eye
        that many pixels wide whatever its size in the frame (device.eyes.patch_zooms); 0: the
        paper's fixed 50x50 crops. It changes no weight: it travels in `config` (and so in the
        ONNX file's metadata) so the device cuts the patches the network learned on. `channels`: the
        three stages' widths of the "wide" network (default WIDE_CHANNELS; `widened` grows them)."""
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown eye regressor architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
        self.config = {"in_channels": in_channels, "patch": patch, "outputs": outputs, "arch": arch}
        if eye_width > 0:
            self.config["eye_width"] = eye_width
        if channels is not None:
            if arch != "wide":
                raise ValueError(f"channels are a setting of the wide network, not of {arch!r}")
            if len(channels) != 3 or min(channels) < 1:
                raise ValueError(f"the wide network has three stages; channels {list(channels)} are not three widths")
            self.config["channels"] = [int(c) for c in channels]
        if arch == "wide":
            a, b, c = self.config.get("channels", WIDE_CHANNELS)
            self.features = nn.Sequential(
                *_conv_bn_relu(in_channels, a),
                *_conv_bn_relu(a, a),
                nn.MaxPool2d(2),
                *_conv_bn_relu(a, b),
                *_conv_bn_relu(b, b),
                nn.MaxPool2d(2),
                *_conv_bn_relu(b, c),
                *_conv_bn_relu(c, c),
                nn.MaxPool2d(2),
                *_conv_bn_relu(c, c),
            )
            side = patch // 8
            self.pool: nn.Module = nn.Identity()
            self.head = nn.Sequential(
                nn.Flatten(),
                nn.Linear(c * side * side, 128),
                nn.ReLU(inplace=True),
                nn.Dropout(0.25),
                nn.Linear(128, outputs),
            )
            return
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.pool = MatmulAdaptiveAvgPool(feature_size(patch), 5)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.BatchNorm1d(120),
            nn.ReLU(inplace=True),
            nn.Dropout(0.25),
            nn.Linear(120, 84),
            nn.BatchNorm1d(84),
            nn.ReLU(inplace=True),
            nn.Linear(84, outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


def with_verifier(module: EyeRegressor) -> EyeRegressor:
    """A copy of a one-output regressor with the eye-verifier output added (its logit starts at 0).

    Every trained weight is kept, so fine-tuning from the shipped regressor starts from its scores.
    """
    if module.config["outputs"] != 1:
        raise ValueError(f"a regressor with {module.config['outputs']} outputs cannot take a verifier")
    out = EyeRegressor(**{**module.config, "outputs": 2})
    state = module.state_dict()
    last = out.head[-1]
    prefix = f"head.{len(out.head) - 1}"
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.weight[:1] = state.pop(f"{prefix}.weight")
        last.bias[:1] = state.pop(f"{prefix}.bias")
    out.load_state_dict({**out.state_dict(), **state})
    return out.train(module.training)


def has_verifier(module: EyeRegressor) -> bool:
    return int(module.config["outputs"]) > VERIFIER_COLUMN


def _layers(module: EyeRegressor, kind: type[nn.Module]) -> list[nn.Module]:
    return [m for m in module.features if isinstance(m, kind)]


def widened(module: EyeRegressor, channels: Sequence[int], seed: int = 0, noise: float = 0.01) -> EyeRegressor:
    """A copy of a "wide" network with wider stages that starts out computing what `module` computes
    (Net2WiderNet, Chen et al. 2016): each new channel repeats an existing one, and the layer after
    it divides that channel's weights among its copies.

    Why: a network grown from the shipped one keeps everything it learned and adds capacity, so a
    few fine-tuning epochs can test whether the eye model is short of capacity, where one trained
    from random weights would first have to catch up with the shipped model's long training. The
    copies' incoming weights get Gaussian noise of `noise` times each layer's weight spread, or
    copies would receive the same gradients and stay copies.
    """
    if module.config.get("arch") != "wide":
        raise ValueError(f"only the wide network can be widened, not {module.config.get('arch', 'paper')!r}")
    out = EyeRegressor(**{**module.config, "channels": channels}).train(module.training)
    old, new = list(module.config.get("channels", WIDE_CHANNELS)), out.config["channels"]
    if any(n < o for n, o in zip(new, old, strict=True)):
        raise ValueError(f"channels {new} must each be at least the network's own {old}")
    rng = torch.Generator().manual_seed(seed)
    layers = zip(
        _layers(module, nn.Conv2d),
        _layers(module, nn.BatchNorm2d),
        _layers(out, nn.Conv2d),
        _layers(out, nn.BatchNorm2d),
        strict=True,
    )
    source_in = torch.arange(module.config["in_channels"])
    share_in = torch.ones(module.config["in_channels"])
    with torch.no_grad():
        for conv, norm, new_conv, new_norm in layers:
            width, grown = conv.out_channels, new_conv.out_channels
            extra = torch.randint(width, (grown - width,), generator=rng)
            source = torch.cat([torch.arange(width), extra])
            share = torch.bincount(source, minlength=width).float()
            weight = conv.weight[source][:, source_in] / share_in[None, :, None, None]
            copies = weight[width:]
            copies += torch.randn(copies.shape, generator=rng) * noise * conv.weight.std()
            new_conv.weight.copy_(weight)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(new_norm, name).copy_(getattr(norm, name)[source])
            new_norm.num_batches_tracked.copy_(norm.num_batches_tracked)
            source_in, share_in = source, share[source]
        first, new_first = module.head[1], out.head[1]
        side = module.config["patch"] // 8
        columns = (source_in[:, None] * side * side + torch.arange(side * side)[None, :]).reshape(-1)
        spread = share_in.repeat_interleave(side * side)
        new_first.weight.copy_(first.weight[:, columns] / spread[None, :])
        new_first.bias.copy_(first.bias)
        for old_layer, new_layer in zip(module.head[2:], out.head[2:], strict=True):
            new_layer.load_state_dict(old_layer.state_dict())
    return out
