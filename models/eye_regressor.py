"""The orbital-tightening regressor of the paper's Table 1, exactly, plus an ONNX-exportable pool.

50x50 patch -> conv5(6) -> pool2 -> conv5(16) -> pool2 -> adaptive avg pool 5x5 -> 120 -> BN ->
ReLU -> dropout 0.25 -> 84 -> BN -> ReLU -> 1. For a 50x50 input the feature map before the
adaptive pool is 9x9; 9 is not a multiple of 5 and the TorchScript ONNX exporter refuses
AdaptiveAvgPool2d there. `MatmulAdaptiveAvgPool` computes the identical result as P @ X @ P^T with
fixed pooling matrices (tested against nn.AdaptiveAvgPool2d), which exports as two MatMuls.

Input: "patch" float32 [N, 3, 50, 50], BGR, scaled to [0, 1]. Output: "score" float32 [N, 1]
(orbital tightening 0-9; not clamped in the graph, the pipeline clamps).
"""

from __future__ import annotations

import math

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


class EyeRegressor(nn.Module):
    """Paper Table 1. `features` are the conv layers that CIFAR-10 pretraining transfers."""

    def __init__(self, in_channels: int = 3, patch: int = PATCH_SIZE, outputs: int = 1) -> None:
        super().__init__()
        self.config = {"in_channels": in_channels, "patch": patch, "outputs": outputs}
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
