"""Training on a tiny generated dataset: losses fall, checkpoints resume exactly, weight files load."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from device.eyes import EyeConfig, find_eye_blobs
from export.cli import main as mgs_export
from export.dataset import combine_datasets, open_dataset
from export.label_mask import IGNORE
from export.synth.writer import write_dataset
from export.train.augment import (
    MIN_EYE_CONTRAST,
    SEG_FINE,
    Augment,
    random_convolution,
    restyle,
    seg_batch,
    seg_sample,
)
from export.train.eye import EyeRecipe, augment, centre_patches, train_eye
from export.train.samples import SegSamples, eye_samples, eye_width_px, fine_crops, region_zooms, resize_mask
from export.train.seg import (
    SegRecipe,
    distillation_loss,
    eye_instance_weights,
    to_tensor,
    train_seg,
    weighted_cross_entropy,
)
from export.train.weights import checkpoint_path, labels_fingerprint, load_network, read_record
from mgs_core.errors import MgsError
from models.eye_regressor import EyeRegressor, MatmulAdaptiveAvgPool, feature_size, widened
from models.unet import UNet

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "tiny", frames=3, seed=7, progress=False)


def test_matmul_pool_equals_adaptive_avg_pool() -> None:
    x = torch.randn(3, 16, 9, 9)
    assert torch.allclose(MatmulAdaptiveAvgPool(9, 5)(x), torch.nn.AdaptiveAvgPool2d(5)(x), atol=1e-6)
    net = EyeRegressor().eval()
    reference = torch.nn.Sequential(net.features, torch.nn.AdaptiveAvgPool2d(5), net.head)
    patch = torch.rand(4, 3, 50, 50)
    assert feature_size(50) == 9
    assert torch.allclose(net(patch), reference(patch), atol=1e-5)


def test_augmentation_keeps_the_eye_near_the_patch_centre() -> None:
    side = 90
    region = np.zeros((1, side, side, 3), np.uint8)
    region[0, 43:48, 43:48] = 255  # a bright 5x5 "eye" at the region centre
    rng = np.random.default_rng(0)
    for _ in range(20):
        patch = augment(region, rng, 30.0)[0, :, :, 0]
        ys, xs = np.nonzero(patch > 128)
        assert abs(xs.mean() - 24.5) <= 6 and abs(ys.mean() - 24.5) <= 6  # shift of at most 5 px (+ rounding)
    for _ in range(20):  # zoom and camera effects keep the eye there too (an occluder may sit at the patch edge)
        patch = augment(region, rng, 30.0, camera=True)[0].astype(float).mean(axis=2)
        assert patch[18:31, 18:31].max() > np.median(patch) + 30
    assert centre_patches(region)[0, 23:28, 23:28].min() == 255


def test_segmentation_augmentation_moves_image_and_mask_together() -> None:
    mask = np.zeros((96, 96), np.uint8)
    mask[20:60, 10:50], mask[70:90, 40:80], mask[30:40, 60:90] = 1, 2, 3
    palette = np.array([[0, 0, 0], [0, 255, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    geometry_only = Augment(
        scale=(0.6, 1.6),
        rotate_deg=30.0,
        shift=0.1,
        photometric_p=0,
        blur_p=0,
        motion_p=0,
        noise_p=0,
        jpeg_p=0,
        cutout_p=0,
    )
    rng = np.random.default_rng(1)
    moved = 0
    for _ in range(10):
        image, labels = seg_sample(palette[mask], mask, rng, geometry_only)
        recovered = np.argmin(
            ((image[:, :, None, :].astype(int) - palette[None, None].astype(int)) ** 2).sum(-1), axis=-1
        )
        assert (recovered == labels).mean() > 0.99
        moved += not np.array_equal(labels, mask)
    assert moved >= 9
    images, masks = seg_batch(np.stack([palette[mask]] * 4), np.stack([mask] * 4), np.random.default_rng(2), SEG_FINE)
    assert images.shape == (4, 96, 96, 3) and masks.shape == (4, 96, 96) and set(np.unique(masks)) <= {0, 1, 2, 3}
    assert not np.array_equal(images[0], images[1])  # every sample draws its own augmentation


def eye_gap(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean grey levels between the eye pixels and the fur within 3 px of them (as restyle measures it)."""
    eyes = mask == 3
    ring = cv2.dilate(eyes.view(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & (mask == 1)
    grey = image.astype(float).mean(axis=2)
    return float(np.abs(grey[eyes] - grey[ring].mean()).mean())


def crops_with_eyes(tiny: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images, masks) of the tiny set's fine crops that show an eye of more than 20 px in fur."""
    samples = fine_crops(open_dataset(tiny), 96, 2, np.random.default_rng(0))
    picked = [i for i in range(len(samples)) if (samples.masks[i] == 3).sum() > 20 and (samples.masks[i] == 1).any()]
    assert len(picked) >= 3
    return samples.images[picked], samples.masks[picked]


def assert_seg_sample_changes_the_image_only(image: np.ndarray, mask: np.ndarray, **step: float) -> None:
    """seg_sample with only this step on (e.g. restyle_p=1.0) against all steps off, from the same seed."""
    plain = Augment(photometric_p=0, blur_p=0, motion_p=0, noise_p=0, jpeg_p=0, cutout_p=0)
    before, before_mask = seg_sample(image, mask, np.random.default_rng(1), plain)
    after, after_mask = seg_sample(image, mask, np.random.default_rng(1), dataclasses.replace(plain, **step))
    assert np.array_equal(after_mask, before_mask) and not np.array_equal(after, before)


def test_restyle_redraws_coat_and_eyes_but_keeps_background_mask_and_visible_eyes(tiny: Path) -> None:
    images, masks = crops_with_eyes(tiny)
    rng = np.random.default_rng(3)
    changed_coat = changed_eyes = 0
    for image, mask in zip(images, masks):
        for _ in range(8):
            out = restyle(image, mask, rng)
            assert out.shape == image.shape and out.dtype == np.uint8
            far = cv2.dilate((mask > 0).view(np.uint8), np.ones((9, 9), np.uint8)) == 0
            assert np.array_equal(out[far], image[far])  # the background stays as drawn
            assert eye_gap(out, mask) >= min(eye_gap(image, mask), MIN_EYE_CONTRAST) - 1.0
            changed_coat += np.abs(out[mask == 1].astype(int) - image[mask == 1]).mean() > 3
            changed_eyes += np.abs(out[mask == 3].astype(int) - image[mask == 3]).mean() > 3
    assert changed_coat > len(images) * 4 and changed_eyes > len(images) * 2
    assert_seg_sample_changes_the_image_only(images[0], masks[0], restyle_p=1.0)
    with pytest.raises(MgsError, match="--restyle is a share"):
        SegRecipe(restyle=1.5)


def test_random_convolution_changes_colour_and_texture_but_keeps_mask_and_visible_eyes(tiny: Path) -> None:
    images, masks = crops_with_eyes(tiny)
    rng = np.random.default_rng(4)
    changed = 0
    for image, mask in zip(images, masks):
        for _ in range(8):
            out = random_convolution(image, mask, rng)
            assert out.shape == image.shape and out.dtype == np.uint8
            assert eye_gap(out, mask) >= min(eye_gap(image, mask), MIN_EYE_CONTRAST) - 1.0
            changed += np.abs(out.astype(int) - image).mean() > 3
    assert changed > len(images) * 3
    assert_seg_sample_changes_the_image_only(images[0], masks[0], randconv_p=1.0)
    with pytest.raises(MgsError, match="--randconv is a share"):
        SegRecipe(randconv=-0.1)


@pytest.mark.parametrize(("arch", "score_loss"), [("paper", "mse"), ("wide", "mse"), ("paper", "l1")])
def test_regressor_training_lowers_the_loss(tiny: Path, tmp_path: Path, arch: str, score_loss: str) -> None:
    samples = eye_samples(open_dataset(tiny))
    assert len(samples) >= 4 and samples.regions.shape[1:] == (90, 90, 3)
    recipe = EyeRecipe(epochs=8, batch=4, optimizer="adam", lr=0.01, arch=arch, score_loss=score_loss)  # type: ignore[arg-type]
    module, history = train_eye(samples, recipe, tmp_path / "eye.pt", CPU, progress=False)
    # Half the squared error is about 0.7 of the absolute one.
    assert history[-1]["loss"] < (0.5 if score_loss == "mse" else 0.7) * history[0]["loss"]
    assert module.config["arch"] == arch


def test_an_unknown_score_loss_is_refused_before_training() -> None:
    with pytest.raises(MgsError, match="--score-loss 'huber'"):
        EyeRecipe(score_loss="huber").check()  # type: ignore[arg-type]


@pytest.mark.parametrize("eye_instance_px", [0.0, 80.0])
def test_unet_training_lowers_the_loss(tiny: Path, tmp_path: Path, eye_instance_px: float) -> None:
    samples = fine_crops(open_dataset(tiny), 48, 2, np.random.default_rng(0))
    assert samples.images.shape[1:] == (48, 48, 3) and (samples.masks == 3).any()
    recipe = SegRecipe(epochs=4, batch=8, lr=0.01, eye_instance_px=eye_instance_px)
    _, history = train_seg(samples, recipe, tmp_path / "seg.pt", CPU, kind="fine", progress=False)
    assert history[-1]["loss"] < history[0]["loss"]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one thread for the test, as earlier CLI tests leave it (pick_device(threads=1)): a
    reduction's order changes with the thread count, and a three-epoch bf16 run carries that difference
    on, so without this the test's margin would depend on which tests ran before it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_bf16_training_follows_the_float32_run_and_returns_an_ordinary_network(tiny: Path, tmp_path: Path) -> None:
    samples = fine_crops(open_dataset(tiny), 48, 2, np.random.default_rng(0))
    runs = {}
    for precision in ("fp32", "bf16"):
        recipe = SegRecipe(epochs=3, batch=8, lr=0.01, seed=4, precision=precision)
        runs[precision] = train_seg(samples, recipe, tmp_path / f"{precision}.pt", CPU, kind="fine", progress=False)
    losses = {precision: [h["loss"] for h in history] for precision, (_, history) in runs.items()}
    assert losses["bf16"] != losses["fp32"]  # the convolutions really ran in bfloat16
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)
    assert losses["bf16"][-1] < losses["bf16"][0]
    module = runs["bf16"][0]
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in module.parameters())
    longer = SegRecipe(epochs=4, batch=8, lr=0.01, seed=4, precision="bf16")
    _, resumed = train_seg(samples, longer, tmp_path / "fp32.pt", CPU, kind="fine", resume=True, progress=False)
    assert [h["loss"] for h in resumed[:3]] == losses["fp32"] and len(resumed) == 4  # fp32 run carried on in bf16
    eyes = eye_samples(open_dataset(tiny))
    recipe = EyeRecipe(epochs=6, batch=4, optimizer="adam", lr=0.01, arch="wide", precision="bf16")
    _, history = train_eye(eyes, recipe, tmp_path / "eye.pt", CPU, progress=False)
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    with pytest.raises(MgsError, match="--precision must be one of fp32, bf16"):
        train_eye(eyes, dataclasses.replace(recipe, precision="fp16"), tmp_path / "x.pt", CPU, progress=False)


def test_augmenting_workers_give_the_same_training_as_the_trainer_alone(tiny: Path, tmp_path: Path) -> None:
    samples = fine_crops(open_dataset(tiny), 48, 2, np.random.default_rng(0))
    recipe = SegRecipe(epochs=2, batch=4, lr=0.01, seed=5)
    alone, alone_history = train_seg(samples, recipe, tmp_path / "a.pt", CPU, kind="fine", progress=False)
    pooled, pooled_history = train_seg(samples, recipe, tmp_path / "b.pt", CPU, kind="fine", progress=False, workers=2)
    assert [h["loss"] for h in pooled_history] == pytest.approx([h["loss"] for h in alone_history])
    for (k, a), b in zip(alone.state_dict().items(), pooled.state_dict().values()):
        assert torch.allclose(a, b), k
    with pytest.raises(MgsError, match="--workers"):
        train_seg(samples, recipe, tmp_path / "c.pt", CPU, kind="fine", progress=False, workers=-1)


def test_resume_continues_exactly_where_the_run_stopped(tiny: Path, tmp_path: Path) -> None:
    samples = eye_samples(open_dataset(tiny))
    recipe = EyeRecipe(epochs=3, batch=4, optimizer="adam", lr=0.005, seed=3)
    straight, straight_history = train_eye(samples, recipe, tmp_path / "a.pt", CPU, progress=False)
    short = EyeRecipe(epochs=2, batch=4, optimizer="adam", lr=0.005, seed=3)
    train_eye(samples, short, tmp_path / "b.pt", CPU, progress=False)
    assert checkpoint_path(tmp_path / "b.pt").is_file()
    resumed, resumed_history = train_eye(samples, recipe, tmp_path / "b.pt", CPU, resume=True, progress=False)
    assert [h["loss"] for h in resumed_history] == pytest.approx([h["loss"] for h in straight_history])
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b), k
    with pytest.raises(MgsError, match="no checkpoint"):
        train_eye(samples, recipe, tmp_path / "none.pt", CPU, resume=True, progress=False)


def test_train_commands_write_complete_weight_files(tiny: Path, tmp_path: Path) -> None:
    eye = tmp_path / "eye.pt"
    assert (
        mgs_export(
            [
                "train-eye",
                "--data",
                str(tiny),
                "--out",
                str(eye),
                "--epochs",
                "1",
                "--batch",
                "4",
                "--quiet",
                "--no-augment",
                "--threads",
                "1",
                "--arch",
                "wide",
            ]
        )
        == 0
    )
    coarse = tmp_path / "seg_coarse.pt"
    assert (
        mgs_export(
            [
                "train-seg",
                "--model",
                "coarse",
                "--data",
                str(tiny),
                "--out",
                str(coarse),
                "--epochs",
                "1",
                "--input-size",
                "64x48",
                "--quiet",
                "--ignore-unseen-eyes",
            ]
        )
        == 0
    )
    record = read_record(coarse)
    assert record["input_size"] == [64, 48] and record["kind"] == "seg_coarse" and record["training"]["augment"] is True
    assert record["training"]["ignore_unseen_eyes"] is True
    assert record["class_names"] == ["background", "animal", "ears", "eyes"]
    assert len(record["data_fingerprint"]) == 64 and "train-seg" in record["command"]
    assert record["normalisation"]["channel_order"] == "BGR"
    module, eye_record = load_network(eye)
    assert eye_record["training"]["optimizer"] == "sgd" and eye_record["training"]["epochs"] == 1
    assert eye_record["training"]["augment"] is False and eye_record["config"]["arch"] == "wide"
    assert eye_record["config"]["eye_width"] == 20.0  # scale-normalised patches from scratch
    assert module(torch.rand(2, 3, 50, 50)).shape == (2, 1)
    assert (
        mgs_export(
            ["train-seg", "--model", "fine", "--data", str(tiny), "--out", str(tmp_path / "f.pt"), "--crop", "50"]
        )
        == 2
    )


def test_training_on_several_datasets_reads_every_frame_where_it_lies(tiny: Path, tmp_path: Path) -> None:
    other = write_dataset(tmp_path / "second" / "other", frames=2, seed=8, progress=False)
    data = combine_datasets([open_dataset(tiny), open_dataset(other)])
    assert len(data.frames) == 5 and len(data.labels) == 5
    assert {data.read_image(f).shape for f in data.frames} == {(1080, 1920, 3)}
    assert all(data.read_mask(f) is not None for f in data.frames)
    assert len(eye_samples(data)) == len(eye_samples(open_dataset(tiny))) + len(eye_samples(open_dataset(other)))
    eye = tmp_path / "eye.pt"
    command = ["train-eye", "--data", str(tiny), str(other), "--frames", "1", "--out", str(eye)]
    options = ["--epochs", "1", "--batch", "4", "--quiet", "--no-augment", "--threads", "1", "--score-loss", "l1"]
    assert mgs_export(command + options) == 0
    record = read_record(eye)
    assert f"--data {tiny} {other}" in record["command"]
    assert record["training"]["loss"] == "l1" and "--score-loss l1" in record["command"]
    assert record["data_fingerprint"] == labels_fingerprint([tiny, other]) != labels_fingerprint([tiny])
    assert record["training"]["train_images"] == 2  # --frames 1 of each folder


def test_hard_crops_are_cut_around_points_inside_boxes_only(tiny: Path) -> None:
    data = open_dataset(tiny)
    last = len(data.frames) - 1
    box = data.frames[last].boxes[-1]
    x, y, w, h = box.roi
    inside, outside = (x + w / 2, y + h / 2), (x - 5.0, y - 5.0)
    plain = fine_crops(data, 48, 4, np.random.default_rng(3))
    again = fine_crops(data, 48, 4, np.random.default_rng(3), hard_centres={last: [outside]}, per_hard=3)
    np.testing.assert_array_equal(plain.images, again.images)  # a point in no box cuts nothing, draws nothing
    hard = fine_crops(data, 48, 4, np.random.default_rng(3), hard_centres={last: [inside]}, per_hard=3)
    assert len(hard) == len(plain) + 3
    np.testing.assert_array_equal(hard.images[: len(plain)], plain.images)  # the last box's crops come first
    image = data.read_image(data.frames[last])
    for crop in hard.images[-3:]:
        cx, cy = cv2.minMaxLoc(cv2.matchTemplate(image, crop, cv2.TM_SQDIFF))[2]
        np.testing.assert_array_equal(image[cy : cy + 48, cx : cx + 48], crop)
        assert max(abs(cx + 24 - inside[0]), abs(cy + 24 - inside[1])) <= 0.25 * 48 + 1


def test_a_segmenters_false_blobs_are_the_candidates_far_from_every_labelled_eye(tiny: Path) -> None:
    from device.inference import load_models
    from export.train.samples import NON_EYE_CLEARANCE, device_view, segmenter_false_blobs

    data = open_dataset(tiny)
    models = load_models(precision="int8")
    blobs = segmenter_false_blobs(data, models)
    assert sum(map(len, blobs.values())) == len(device_view(data, models).false_eyes) > 0
    for index, points in blobs.items():
        eyes = [(e.x, e.y) for b in data.frames[index].boxes for e in b.eyes]
        assert points and all(np.hypot(px - ex, py - ey) >= NON_EYE_CLEARANCE for px, py in points for ex, ey in eyes)
    assert segmenter_false_blobs(data, models, frames=0) == {}


def test_train_seg_records_its_hard_crops_and_refuses_them_for_the_coarse_net(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fine = tmp_path / "f.pt"
    base = ["train-seg", "--data", str(tiny), "--epochs", "1", "--quiet", "--threads", "1", "--hard-crops", "models"]
    command = [*base, "--model", "fine", "--crop", "48", "--crops-per-box", "2", "--hard-crops-per-blob", "3"]
    assert mgs_export([*command, "--out", str(fine)]) == 0
    record = read_record(fine)["training"]
    assert record["hard_crops"]["models"] == "models" and record["hard_crops"]["per_blob"] == 3
    assert record["hard_crops"]["false_blobs"] > 0
    assert mgs_export([*base, "--model", "coarse", "--out", str(tmp_path / "c.pt")]) == 2
    assert "--model fine" in capsys.readouterr().err and not (tmp_path / "c.pt").exists()
    assert mgs_export([*command, "--hard-crops", str(tmp_path / "none"), "--out", str(tmp_path / "g.pt")]) == 2
    assert str(tmp_path / "none") in capsys.readouterr().err and not (tmp_path / "g.pt").exists()


def test_eye_width_of_a_labelled_eye_is_its_mask_blob_as_the_device_measures_it(tiny: Path) -> None:
    data = open_dataset(tiny)
    frame = next(f for f in data.frames if any(e.visible and e.score is not None for b in f.boxes for e in b.eyes))
    mask = data.read_mask(frame)
    box = next(b for b in frame.boxes if any(e.visible and e.score is not None for e in b.eyes))
    eye = next(e for e in box.eyes if e.visible and e.score is not None)
    measured = eye_width_px(eye.x, eye.y, box, mask)
    assert measured is not None and measured >= 3
    blobs = find_eye_blobs(mask, EyeConfig(min_area_px=1, min_context_fraction=0.0))
    nearest = min(blobs, key=lambda b: np.hypot(b.x - eye.x, b.y - eye.y))
    assert measured == nearest.width_px
    # without a mask: the renderer's condition; without either: unknown, cut at zoom 1
    rendered = dataclasses.replace(box, conditions={"eye_width_px": 17.5})
    assert eye_width_px(eye.x, eye.y, rendered, None) == 17.5
    assert eye_width_px(eye.x, eye.y, dataclasses.replace(box, conditions={}), None) is None
    assert region_zooms([None, 40.0], 20.0) == [1.0, 0.5]
    normalised = eye_samples(data, eye_width=20.0)
    assert len(normalised) == len(eye_samples(data)) and normalised.regions.shape[1:] == (90, 90, 3)


def test_every_eye_blob_weighs_at_least_as_much_as_the_instance_size() -> None:
    """A slit of a shut eye gets its pixels up-weighted so it counts like an open eye in the loss."""
    labels = np.ones((1, 60, 60), np.uint8)
    labels[0, 10:20, 10:20] = 3  # open eye, 100 px: already large enough
    labels[0, 40:42, 30:40] = 3  # shut eye, 20 px
    labels[0, 50, 50] = 3  # one stray pixel: capped
    w = eye_instance_weights(labels, 80.0)
    assert w[0, 0, 0] == 1.0 and w[0, 15, 15] == 1.0
    assert w[0, 41, 35] == pytest.approx(4.0)
    assert w[0, 50, 50] == pytest.approx(8.0)
    assert w[0, 41, 35] * 20 == pytest.approx(80.0)


def test_weighted_cross_entropy_with_unit_pixels_is_plain_weighted_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, generator=g)
    labels = torch.randint(0, 4, (2, 8, 8), generator=g)
    cw = torch.tensor([0.5, 1.0, 1.5, 2.0])
    plain = torch.nn.CrossEntropyLoss(weight=cw)(logits, labels)
    ours = weighted_cross_entropy(cw)(logits, (labels, torch.ones(2, 8, 8)))
    assert float(ours) == pytest.approx(float(plain), rel=1e-5)
    heavy = torch.ones(2, 8, 8)
    heavy[labels == 3] = 5.0
    assert float(weighted_cross_entropy(cw)(logits, (labels, heavy))) != pytest.approx(float(plain), rel=1e-3)


@pytest.mark.parametrize("eye_instance_px", [0.0, 80.0])
def test_pixels_labelled_ignore_teach_nothing(eye_instance_px: float) -> None:
    """Whatever the network says on an IGNORE pixel, the loss and its gradient there do not change; the
    class weights are counted without them; a shrunk mask keeps an IGNORE majority as IGNORE."""
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 4, (2, 8, 8), generator=g)
    labels[0, 2:5, 2:5] = IGNORE
    cw = torch.tensor([0.5, 1.0, 1.5, 2.0])
    pixel = torch.from_numpy(eye_instance_weights(labels.numpy(), eye_instance_px))
    losses = {
        "plain": lambda x: torch.nn.CrossEntropyLoss(weight=cw, ignore_index=IGNORE)(x, labels),
        "weighted": lambda x: weighted_cross_entropy(cw)(x, (labels, pixel)),
        "distilled": lambda x: distillation_loss(cw, 0.5)(x, (labels, pixel, torch.softmax(x.detach() * 0.5, 1))),
    }
    for name, loss in losses.items():
        logits = torch.randn(2, 4, 8, 8, generator=g, requires_grad=True)
        before = loss(logits)
        before.backward()
        assert torch.isfinite(before), name
        assert float(logits.grad[0, :, 2:5, 2:5].abs().max()) == 0.0, name
        assert float(logits.grad.abs().sum()) > 0.0, name
        changed = logits.detach().clone()
        changed[0, :, 2:5, 2:5] = torch.randn(4, 3, 3, generator=g) * 10
        assert float(loss(changed)) == pytest.approx(before.item(), rel=1e-6), name
    masks = labels.numpy().astype(np.uint8)
    frequency = SegSamples(np.zeros((*masks.shape, 3), np.uint8), masks).class_frequency()
    assert frequency.shape == (4,) and frequency.sum() == pytest.approx(1.0)
    assert frequency[0] == pytest.approx((masks == 0).sum() / (masks != IGNORE).sum())
    assert resize_mask(np.full((8, 8), IGNORE, np.uint8), (4, 4)).tolist() == [[IGNORE] * 4] * 4


def test_distillation_is_the_label_loss_where_the_teacher_is_sure_and_nothing_where_it_agrees() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 8, 8, generator=g)
    labels = torch.randint(0, 4, (2, 8, 8), generator=g)
    cw = torch.tensor([0.5, 1.0, 1.5, 2.0])
    pixel = torch.ones(2, 8, 8)
    pixel[labels == 3] = 3.0
    hard = weighted_cross_entropy(cw)(logits, (labels, pixel))
    sure = torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    assert float(distillation_loss(cw, 0.7)(logits, (labels, pixel, sure))) == pytest.approx(float(hard), rel=1e-5)
    agreeing = torch.softmax(logits, dim=1)
    loss = distillation_loss(cw, 0.7)(logits, (labels, pixel, agreeing))
    assert float(loss) == pytest.approx(0.3 * float(hard), rel=1e-4)


def test_a_student_learns_its_teachers_probabilities_without_labels(tiny: Path, tmp_path: Path) -> None:
    samples = fine_crops(open_dataset(tiny), 48, 2, np.random.default_rng(0))
    x = to_tensor(samples.images, CPU)
    torch.manual_seed(11)
    teacher = UNet(base=4).eval()

    def divergence(student: torch.nn.Module) -> float:
        with torch.no_grad():
            log_p = torch.log_softmax(student.eval()(x), dim=1)
            return float(torch.nn.functional.kl_div(log_p, torch.softmax(teacher(x), dim=1), reduction="batchmean"))

    torch.manual_seed(12)
    student = UNet(base=4)
    before = divergence(student)
    recipe = SegRecipe(epochs=4, batch=8, lr=0.01, base=4, augment=False, distil=1.0)
    trained, _ = train_seg(
        samples, recipe, tmp_path / "s.pt", CPU, kind="fine", init=student, teacher=teacher, progress=False
    )
    assert divergence(trained) < 0.6 * before


def test_distillation_needs_a_teacher_and_a_weight(tiny: Path, tmp_path: Path) -> None:
    samples = fine_crops(open_dataset(tiny), 48, 2, np.random.default_rng(0))
    with pytest.raises(MgsError, match="--distil-weight must be between 0 and 1"):
        SegRecipe(distil=1.5)
    teacher = UNet(base=4).eval()
    for recipe, given in ((SegRecipe(epochs=1), teacher), (SegRecipe(epochs=1, distil=0.5), None)):
        with pytest.raises(MgsError, match="needs both a teacher"):
            train_seg(samples, recipe, tmp_path / "x.pt", CPU, kind="fine", teacher=given, progress=False)
    assert not (tmp_path / "x.pt").exists()


def test_widening_keeps_what_the_network_computes_and_refuses_to_shrink() -> None:
    torch.manual_seed(1)
    module = EyeRegressor(arch="wide", outputs=2, eye_width=20.0)
    for layer in module.modules():  # trained-looking normalisation, not the identity a fresh one has
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.running_mean.normal_()
            layer.running_var.uniform_(0.5, 2.0)
            layer.weight.data.normal_()
            layer.bias.data.normal_()
    module.eval()
    patches = torch.rand(5, 3, 50, 50)
    exact = widened(module, (24, 40, 100), noise=0.0).eval()
    noisy = widened(module, (24, 40, 100), seed=3).eval()
    with torch.no_grad():
        assert torch.allclose(exact(patches), module(patches), atol=1e-5)
        assert not torch.equal(noisy(patches), exact(patches))
    assert exact.config["channels"] == [24, 40, 100] and exact.config["eye_width"] == 20.0
    assert sum(p.numel() for p in exact.parameters()) > sum(p.numel() for p in module.parameters())
    with pytest.raises(ValueError, match="at least the network's own"):
        widened(module, (8, 32, 64))
    with pytest.raises(ValueError, match="only the wide network"):
        widened(EyeRegressor(arch="paper"), (24, 48, 96))
