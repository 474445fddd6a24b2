"""Training of the segmentation U-Nets: `fine` on full-resolution crops, `coarse` on whole ROIs.

Eyes cover well under 1 % of a box, so plain cross-entropy learns "never eye". Classes are weighted
by inverse square-root frequency (plain inverse frequency over-weights eyes so much that the eye
blobs bloat and merge with the ears). Adam with a cosine learning-rate decay (a constant rate left
the last epoch's weights noticeably worse than the best epoch's). Augmentation (`augment`, on by
default): zoom, rotation, shift and flips of image and mask together, and the camera effects and
occluders of export/train/augment.py; the fine net zooms 0.6-1.6x so it sees eyes of every box
size the device meets, the coarse net less (its input is always a whole box). Without it: light
photometric jitter and horizontal flips only.

Class weights alone let an eye count by its pixels, and a shut eye is a slit of a third of an open
eye's area: the segmenter learned to miss exactly the eyes of animals in pain (issue 10, sixth step:
recall 0.61 for scores 6-9 against 0.85 below on the hardest choice set). `eye_instance_px` > 0
weighs every eye blob of a crop as if it had at least that many pixels (`eye_instance_weights`).
Pixels labelled IGNORE (eyes the frame does not show, `train-seg --ignore-unseen-eyes`) are left out
of every loss and of the class frequencies.

Distillation (`teacher`): the student learns, beside the labels, the class probabilities of another
network on the same augmented crop, e.g. one U-Net learning the shipped two-U-Net ensemble so that
the device runs one fine pass instead of two. The teacher's probabilities carry what hard labels do
not: where the ensemble's members disagree, the mean marks few eye pixels, and that is what kept its
false eyes down (models/TRAINING.md, "Twenty-fifth step").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional

from device.eyes import EYES
from export.label_mask import IGNORE
from export.metrics import confusion_matrix, iou_from_confusion
from export.train.augment import SEG_COARSE, SEG_FINE, Augment, seg_batch
from export.train.loop import forward, run_epochs, scheduled_lr, set_lr, set_memory_format
from export.train.samples import N_CLASSES, SegSamples
from export.train.weights import seed_everything
from export.train.workers import Arrays, Run, batch_workers
from mgs_core.errors import MgsError
from models.unet import UNet


@dataclass
class SegRecipe:
    epochs: int = 12
    batch: int = 16
    lr: float = 0.002
    base: int = 8
    depth: int = 4
    schedule: Literal["constant", "cosine"] = "cosine"
    seed: int = 0
    augment: bool = True
    eye_instance_px: float = 0.0
    precision: Literal["fp32", "bf16"] = "fp32"  # export.train.options.PRECISIONS
    distil: float = 0.0  # weight of the teacher's probabilities in the loss (0 = labels only)
    restyle: float = 0.0  # share of augmented samples whose coat and eyes are redrawn (augment.restyle)
    randconv: float = 0.0  # share of augmented samples seen through a random convolution (augment.random_convolution)

    def __post_init__(self) -> None:
        self.check()  # a recipe that exists is a valid one: refused where it is built, before any data work

    def check(self) -> None:
        if self.epochs < 1 or self.batch < 1 or self.lr <= 0 or self.base < 1 or self.depth < 2:
            raise MgsError("--epochs, --batch, --base must be at least 1, --depth at least 2 and --lr positive")
        if self.eye_instance_px < 0:
            raise MgsError("--eye-instance-px must be 0 (off) or a positive pixel count")
        if not 0.0 <= self.distil <= 1.0:
            raise MgsError(f"--distil-weight must be between 0 and 1, got {self.distil:g}")
        if not 0.0 <= self.restyle <= 1.0:
            raise MgsError(f"--restyle is a share of the samples, between 0 and 1, got {self.restyle:g}")
        if not 0.0 <= self.randconv <= 1.0:
            raise MgsError(f"--randconv is a share of the samples, between 0 and 1, got {self.randconv:g}")


def check_distillation(has_teacher: bool, distil: float) -> None:
    """A teacher without a weight, or a weight without a teacher; train-seg asks before it cuts crops (minutes)."""
    if has_teacher == (distil > 0.0):
        return
    unused = "; --distil-weight 0 would leave the --teacher unused: give a weight above 0 or leave out --teacher"
    raise MgsError(
        "distillation needs both a teacher (--teacher) and a weight above 0 (--distil-weight)"
        + (unused if has_teacher else "")
    )


MAX_EYE_GAIN = 8.0  # a 1-px speck of eye class must not outweigh the rest of its crop


def eye_instance_weights(labels: np.ndarray, instance_px: float) -> np.ndarray:
    """[N, H, W] float32 pixel weights: 1, except the pixels of each eye blob smaller than
    `instance_px`, which get instance_px / area (at most MAX_EYE_GAIN), so that blob weighs like
    an eye of instance_px pixels whether it is open, shut or far away."""
    weights = np.ones(labels.shape, np.float32)
    for sample, out in zip(labels, weights):
        n, component, stats, _ = cv2.connectedComponentsWithStats((sample == EYES).view(np.uint8), connectivity=8)
        if n <= 1:
            continue
        gain = np.ones(n, np.float32)
        gain[1:] = np.clip(instance_px / np.maximum(stats[1:, cv2.CC_STAT_AREA], 1), 1.0, MAX_EYE_GAIN)
        out[:] = gain[component]
    return weights


def taught(labels: torch.Tensor, pixel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels with IGNORE read as class 0, pixel weights with 0 on IGNORE): a loss computed on these
    needs no special case for the pixels that teach nothing."""
    keep = labels != IGNORE
    return torch.where(keep, labels, 0), pixel * keep


def _pixel_weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, pixel: torch.Tensor, class_weight: torch.Tensor
) -> torch.Tensor:
    """The weighted cross-entropy on labels and pixel weights already passed through `taught`."""
    per_pixel = functional.cross_entropy(logits, labels, weight=class_weight, reduction="none")
    return (per_pixel * pixel).sum() / (class_weight[labels] * pixel).sum()


def weighted_cross_entropy(class_weight: torch.Tensor) -> Callable[[torch.Tensor, tuple], torch.Tensor]:
    """Cross-entropy with class weights and per-pixel weights; target = (labels, pixel weights)."""

    def loss(logits: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return _pixel_weighted_cross_entropy(logits, *taught(*target), class_weight)

    return loss


def distillation_loss(
    class_weight: torch.Tensor, weight: float
) -> Callable[[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]], torch.Tensor]:
    """(1 - weight) x the weighted cross-entropy on the labels + weight x the KL divergence from the
    teacher's class probabilities, each pixel weighted alike (class weight of its label x pixel weight),
    so eye pixels keep their say in both terms; target = (labels, pixel weights, teacher probabilities)."""

    def loss(logits: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        labels, pixel = taught(*target[:2])
        hard = _pixel_weighted_cross_entropy(logits, labels, pixel, class_weight)
        per_pixel = functional.kl_div(functional.log_softmax(logits, dim=1), target[2], reduction="none").sum(1)
        w = class_weight[labels] * pixel
        return (1.0 - weight) * hard + weight * (per_pixel * w).sum() / w.sum()

    return loss


def class_weights(frequency: np.ndarray) -> torch.Tensor:
    """Inverse square-root frequency, mean 1; an absent class gets the largest weight present."""
    freq = np.asarray(frequency, np.float64)
    w = np.where(freq > 0, 1.0 / np.sqrt(np.maximum(freq, 1e-12)), 0.0)
    w[freq <= 0] = w.max() if w.max() > 0 else 1.0
    return torch.tensor(w / w.mean(), dtype=torch.float32)


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device, torch.float32).div_(255.0)


def jitter(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample gain/offset (lighting differs between tents and hours) and horizontal flip."""
    n = x.shape[0]
    gain = torch.empty(n, 1, 1, 1).uniform_(0.8, 1.2, generator=gen).to(x.device)
    offset = torch.empty(n, 1, 1, 1).uniform_(-0.08, 0.08, generator=gen).to(x.device)
    x = (x * gain + offset).clamp_(0.0, 1.0)
    flip = torch.rand(n, generator=gen) < 0.5
    if flip.any():
        x[flip] = x[flip].flip(-1)
        y[flip] = y[flip].flip(-1)
    return x, y


@torch.no_grad()
def predict_classes(module: nn.Module, images: np.ndarray, device: torch.device, batch: int = 16) -> np.ndarray:
    module.eval()
    out = [
        module(to_tensor(images[i : i + batch], device)).argmax(1).to(torch.uint8).cpu().numpy()
        for i in range(0, len(images), batch)
    ]
    return np.concatenate(out) if out else np.zeros((0, *images.shape[1:3]), np.uint8)


def samples_iou(module: nn.Module, samples: SegSamples, device: torch.device) -> list[float | None]:
    cm = confusion_matrix(predict_classes(module, samples.images, device), samples.masks, N_CLASSES)
    return iou_from_confusion(cm)


def augmented_batch(
    arrays: Arrays, idx: np.ndarray, seed: int, epoch: int, number: int, augment: Augment
) -> tuple[np.ndarray, np.ndarray]:
    """Batch `number` of an epoch, augmented from its own random stream (so any worker may make it)."""
    rng = np.random.default_rng([seed, epoch, 0xA6, number])
    return seg_batch(arrays["images"][idx], arrays["masks"][idx], rng, augment)


def train_seg(
    samples: SegSamples,
    recipe: SegRecipe,
    out: Path,
    device: torch.device,
    *,
    kind: str,
    resume: bool = False,
    init: UNet | None = None,
    teacher: nn.Module | None = None,
    val: SegSamples | None = None,
    progress: bool = True,
    workers: int = 0,
) -> tuple[UNet, list[dict[str, float]]]:
    """Train on `samples` from random weights, or fine-tune `init` (a loaded U-Net of the recipe's shape);
    with `teacher` (a loaded seg network of the same kind) and `recipe.distil` > 0, also learn its class
    probabilities; `workers` processes augment the batches (export/train/workers.py), same batches for
    any number."""
    check_distillation(teacher is not None, recipe.distil)
    if len(samples) == 0:
        raise MgsError("no training crops: the dataset needs masks/ (class masks) and boxes with ROIs")
    multiple = 2 ** (recipe.depth - 1)
    if samples.images.shape[1] % multiple or samples.images.shape[2] % multiple:
        raise MgsError(
            f"input size {samples.images.shape[1:3]} is not a multiple of {multiple} (the U-Net depth needs it)"
        )
    seed_everything(recipe.seed)
    module = (init if init is not None else UNet(base=recipe.base, depth=recipe.depth)).to(device)
    optimizer = torch.optim.Adam(module.parameters(), lr=recipe.lr)
    class_weight = class_weights(samples.class_frequency()).to(device)
    balanced = recipe.eye_instance_px > 0
    loss_fn: Callable[[torch.Tensor, Any], torch.Tensor]
    if teacher is not None:
        loss_fn = distillation_loss(class_weight, recipe.distil)
        teacher = teacher.to(device).eval().requires_grad_(False)
        set_memory_format(teacher, recipe.precision)
    elif balanced:
        loss_fn = weighted_cross_entropy(class_weight)
    else:
        loss_fn = nn.CrossEntropyLoss(weight=class_weight, ignore_index=IGNORE)

    def target(x: torch.Tensor, labels: torch.Tensor) -> Any:
        """The class ids, with the eye-instance pixel weights when the recipe asks for them and the
        teacher's class probabilities of `x` when there is one."""
        if not balanced and teacher is None:
            return labels
        pixel = (
            torch.from_numpy(eye_instance_weights(labels.cpu().numpy(), recipe.eye_instance_px)).to(device)
            if balanced
            else torch.ones(labels.shape, device=device)
        )
        if teacher is None:
            return labels, pixel
        with torch.no_grad():
            return labels, pixel, functional.softmax(forward(teacher, x, recipe.precision), dim=1)

    augmentation = replace(
        SEG_FINE if kind == "fine" else SEG_COARSE, restyle_p=recipe.restyle, randconv_p=recipe.randconv
    )

    def batches(epoch: int, run: Run) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(recipe.seed * 1000 + epoch)
        set_lr(optimizer, scheduled_lr(recipe.lr, recipe.schedule, epoch, recipe.epochs))
        order = torch.randperm(len(samples), generator=gen).numpy()
        chunks = [order[i : i + recipe.batch] for i in range(0, len(order), recipe.batch)]
        if not recipe.augment:
            for idx in chunks:
                labels = torch.from_numpy(samples.masks[idx].astype(np.int64)).to(device)
                x, y = jitter(to_tensor(samples.images[idx], device), labels, gen)
                yield x, target(x, y)
            return
        jobs = [(idx, recipe.seed, epoch, number, augmentation) for number, idx in enumerate(chunks)]
        for images, labels in run(augmented_batch, jobs):
            x = to_tensor(images, device)
            yield x, target(x, torch.from_numpy(labels.astype(np.int64)).to(device))

    def validate(_epoch: int) -> dict[str, float]:
        iou = samples_iou(module, val, device)
        return {f"val_iou_{c}": v for c, v in zip(("bg", "animal", "ears", "eyes"), iou) if v is not None}

    arrays = {"images": samples.images, "masks": samples.masks}
    with batch_workers(workers if recipe.augment else 0, arrays) as run:
        history = run_epochs(
            kind=f"seg_{kind}",
            module=module,
            optimizer=optimizer,
            epochs=recipe.epochs,
            batches=lambda epoch: batches(epoch, run),
            loss_fn=loss_fn,
            out=out,
            resume=resume,
            after_epoch=validate if val is not None else None,
            progress=progress,
            precision=recipe.precision,
        )
    return module.eval(), history


def recipe_record(recipe: SegRecipe, samples: SegSamples, n_images: int, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        **asdict(recipe),
        "optimizer": "adam",
        "loss": "cross-entropy, inverse sqrt class frequency weights"
        + (f", eye blobs weighted as >= {recipe.eye_instance_px:g} px" if recipe.eye_instance_px > 0 else "")
        + (f"; {recipe.distil:g} of it KL divergence from the teacher's probabilities" if recipe.distil > 0 else ""),
        "class_weights": [round(float(v), 4) for v in class_weights(samples.class_frequency())],
        "train_samples": len(samples),
        "train_images": n_images,
        **extra,
    }
