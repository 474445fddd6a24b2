"""Compact U-Net for the four-class region proposal of the paper (background, animal, ears, eyes).

Width (`base`) and depth are configurable because speed on a 2-core edge box is the constraint
(docs/export.md has the measured speed of the shipped base 8 / depth 4 and of base 16). Upsampling is nearest +
conv rather than ConvTranspose so the INT8 graph stays on well-supported operators.

Input: "image" float32 [N, 3, H, W], BGR channel order (OpenCV's), scaled to [0, 1];
H and W must be multiples of 2**(depth-1). Output: "logits" float32 [N, 4, H, W].
`UNetEnsemble` has the same input and output and runs several U-Nets trained apart.
"""

from __future__ import annotations

import torch
from torch import nn

CLASS_NAMES = ("background", "animal", "ears", "eyes")


class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    def __init__(self, in_channels: int = 3, n_classes: int = len(CLASS_NAMES), base: int = 8, depth: int = 4) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError("depth must be at least 2")
        self.config = {"in_channels": in_channels, "n_classes": n_classes, "base": base, "depth": depth}
        widths = [base * 2**i for i in range(depth)]
        self.downs = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.downs.append(DoubleConv(cin, w))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.ups = nn.ModuleList()
        for w_skip, w_in in zip(reversed(widths[:-1]), reversed(widths[1:])):
            self.ups.append(DoubleConv(w_in + w_skip, w_skip))
        self.head = nn.Conv2d(widths[0], n_classes, 1)

    @property
    def multiple(self) -> int:
        """Input sides must be divisible by this."""
        return 2 ** (self.config["depth"] - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, down in enumerate(self.downs):
            if i:
                x = self.pool(x)
            x = down(x)
            skips.append(x)
        for up, skip in zip(self.ups, reversed(skips[:-1])):
            x = up(torch.cat([self.up(x), skip], dim=1))
        return self.head(x)


class UNetEnsemble(nn.Module):
    """U-Nets trained apart (other seeds, other frames) run on one input; the output is their mean logits.

    Single training runs of the fine U-Net scatter on frames unlike their training frames, and networks
    trained apart miss different eyes; the mean of their outputs is steadier than any one of them (deep
    ensembles, Lakshminarayanan et al. 2017). It costs one U-Net pass per member on the device, which is
    what the speed headroom is for. Members may differ in width; `mgs-export ensemble` builds one.
    """

    def __init__(self, members: list[dict]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two member U-Nets")
        self.config = {"members": [dict(m) for m in members]}
        self.members = nn.ModuleList(UNet(**m) for m in members)

    @property
    def multiple(self) -> int:
        """Every member's multiple is a power of two, so the largest is divisible by all of them."""
        return max(m.multiple for m in self.members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.members[0](x)
        for member in self.members[1:]:
            total = total + member(x)
        return total / len(self.members)
