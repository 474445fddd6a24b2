"""CIFAR-10 pre-training of the regressor's conv layers (paper, section 2.3).

The paper pre-trained on CIFAR-10 with the last layer replaced by ten outputs and categorical
cross-entropy, then transferred the conv weights. Our net is the same Table 1 net built for 32x32
input (its adaptive pool then sees 5x5 and is the identity), so `features` transfer unchanged.
Reads the "python version" batches as distributed (data_batch_1..5 pickles: b'data' uint8
[N, 3072] as R, G, B planes of 32x32, b'labels'); nothing is downloaded.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from export.train.weights import seed_everything
from mgs_core.errors import MgsError
from models.eye_regressor import EyeRegressor

CIFAR_SIDE = 32
CIFAR_CLASSES = 10


def batch_files(path: Path) -> list[Path]:
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("data_batch_*"))
    if not files:
        raise MgsError(
            f"no CIFAR-10 batches at {path}: pass the cifar-10-batches-py folder (with data_batch_1..5) or one batch file"
        )
    return files


def load_cifar(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 32, 32, 3] uint8 in BGR (our networks' channel order) and labels [N] int64."""
    images, labels = [], []
    for f in batch_files(path):
        try:
            with open(f, "rb") as fh:
                d = pickle.load(fh, encoding="bytes")
            data = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE)
            lab = np.asarray(d[b"labels"], dtype=np.int64)
        except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as exc:
            raise MgsError(
                f"{f} is not a CIFAR-10 python batch ({exc}); use the 'python version' of CIFAR-10"
            ) from None
        if len(lab) != len(data) or (len(lab) and (lab.min() < 0 or lab.max() >= CIFAR_CLASSES)):
            raise MgsError(f"{f}: labels do not match the images or are outside 0-9")
        images.append(data[:, ::-1].transpose(0, 2, 3, 1))
        labels.append(lab)
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def pretrain_features(
    path: Path,
    device: torch.device,
    epochs: int = 5,
    batch: int = 64,
    lr: float = 0.001,
    seed: int = 0,
    progress: bool = True,
    arch: str = "paper",
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Classify CIFAR-10 with the regressor's conv layers (`arch`); return their weights and per-epoch loss."""
    images, labels = load_cifar(path)
    seed_everything(seed)
    net = EyeRegressor(patch=CIFAR_SIDE, outputs=CIFAR_CLASSES, arch=arch).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    x_all = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    y_all = torch.from_numpy(labels)
    gen = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(labels), generator=gen)
        total, count = 0.0, 0
        for i in tqdm(
            range(0, len(order) - 1, batch), desc=f"cifar epoch {epoch + 1}/{epochs}", disable=not progress, leave=False
        ):
            idx = order[i : i + batch]
            if len(idx) < 2:
                continue
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(x_all[idx].to(device, torch.float32) / 255.0), y_all[idx].to(device))
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            count += 1
        history.append(total / max(count, 1))
    return {k: v.detach().cpu().clone() for k, v in net.features.state_dict().items()}, history
