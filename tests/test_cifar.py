"""CIFAR-10 pre-training reads the python batch format and hands its conv weights to the regressor."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from export.cifar import load_cifar, pretrain_features
from export.train.eye import EyeRecipe, new_regressor, train_eye
from export.train.samples import EYE_REGION_HALF, EyeSamples
from mgs_core.errors import MgsError


def write_fake_batch(path: Path, n: int = 64, seed: int = 0) -> None:
    """Same layout as CIFAR-10's data_batch_N: b'data' uint8 [N, 3072] (R, G, B planes), b'labels'."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    data = rng.integers(0, 60, (n, 3, 32, 32)).astype(np.uint8)
    data[np.arange(n), labels % 3] += 150  # learnable: the label picks the bright channel
    with open(path, "wb") as fh:
        pickle.dump({b"data": data.reshape(n, 3072), b"labels": labels.tolist(), b"batch_label": b"fake"}, fh)


def test_load_cifar_converts_rgb_planes_to_bgr_images(tmp_path: Path) -> None:
    write_fake_batch(tmp_path / "data_batch_1", n=4)
    raw = pickle.loads((tmp_path / "data_batch_1").read_bytes())
    images, labels = load_cifar(tmp_path)
    assert images.shape == (4, 32, 32, 3) and labels.shape == (4,)
    red_plane = raw[b"data"][0, :1024].reshape(32, 32)
    assert np.array_equal(images[0, :, :, 2], red_plane)


def test_pretraining_transfers_conv_weights_into_the_regressor(tmp_path: Path) -> None:
    write_fake_batch(tmp_path / "data_batch_1")
    features, history = pretrain_features(tmp_path, torch.device("cpu"), epochs=3, batch=16, lr=0.01, progress=False)
    assert history[-1] < history[0]
    assert set(features) == {"0.weight", "0.bias", "3.weight", "3.bias"}
    regressor = new_regressor(pretrained_features=features)
    for key, value in features.items():
        assert torch.equal(regressor.features.state_dict()[key], value)
    assert regressor.head[-1].out_features == 1
    rng = np.random.default_rng(1)
    side = 2 * EYE_REGION_HALF
    samples = EyeSamples(
        rng.integers(0, 255, (8, side, side, 3)).astype(np.uint8), rng.uniform(0, 9, 8).astype(np.float32), np.arange(8)
    )
    trained, _ = train_eye(
        samples,
        EyeRecipe(epochs=1, batch=4, lr=1e-6),
        tmp_path / "eye.pt",
        torch.device("cpu"),
        pretrained_features=features,
        progress=False,
    )
    assert torch.allclose(trained.features[0].weight, features["0.weight"], atol=1e-3)
    assert not torch.allclose(new_regressor().features[0].weight, features["0.weight"], atol=1e-3)


def test_not_a_cifar_batch_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(MgsError, match="not a CIFAR-10 python batch"):
        load_cifar(tmp_path)
    with pytest.raises(MgsError, match="no CIFAR-10 batches"):
        load_cifar(tmp_path / "empty")
