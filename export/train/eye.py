"""Training of the orbital-tightening regressor with the paper's recipe (section 2.3).

Default = the paper: rotation +-30 deg, 60x60 sub-image at the eye centre, random 50x50 patch
(shift up to 5 px, standing in for eye localisation error), sampling inversely proportional to the
frequency of the sample's integer score, batch 32, 35 epochs, SGD lr 0.001 momentum 0.9, MSE.
`score_loss="l1"` trains for the median instead of the mean: where a patch could be several scores
(a blurred or tiny eye), the mean lands between them and the median on the likelier one.
`optimizer="adam"` and `schedule="cosine"` are the measured alternatives in models/TRAINING.md.
On top of the paper (`augment`, on by default): zoom 0.6-1.5 about the eye, since a camera further
away or closer changes the eye's size in pixels but not its score, and the camera effects of
export/train/augment.py, since a facility's camera is neither the generator nor the paper's.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from torch import nn

from export.metrics import mae
from export.train.augment import EYE_SCALE, eye_patch
from export.train.loop import run_epochs, scheduled_lr, set_lr
from export.train.samples import EYE_REGION_HALF, EyeSamples
from export.train.weights import seed_everything
from mgs_core.errors import MgsError
from models.eye_regressor import PATCH_SIZE, VERIFIER_COLUMN, EyeRegressor, has_verifier, with_verifier

SUBIMAGE = 60
SCORE_BINS = 10
SCORE_LOSSES = {"mse": nn.MSELoss, "l1": nn.L1Loss}  # --score-loss


@dataclass
class EyeRecipe:
    epochs: int = 35
    batch: int = 32
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.001
    momentum: float = 0.9
    rotation_deg: float = 30.0
    balance: bool = True
    schedule: Literal["constant", "cosine"] = "constant"
    seed: int = 0
    augment: bool = True  # zoom and camera effects on top of the paper's rotation and shift
    freeze_features: bool = False  # keep the conv layers as they are (fine-tuning a few hundred eyes)
    arch: str = "paper"  # models.eye_regressor.ARCHITECTURES; ignored with `init`
    negatives_per_box: int = 0  # > 0: train the eye verifier output on that many non-eye patches per box
    verifier_weight: float = 1.0  # weight of the verifier's cross-entropy against the score's error
    eye_width: float = 0.0  # > 0: scale-normalised patches, the eye this many px wide (models.eye_regressor)
    score_loss: Literal["mse", "l1"] = "mse"  # paper: mse; l1 aims at the median, the figure MAE measures
    precision: Literal["fp32", "bf16"] = "fp32"  # export.train.options.PRECISIONS

    def __post_init__(self) -> None:
        self.check()  # a recipe that exists is a valid one: refused where it is built, before any data work

    def check(self) -> None:
        if self.epochs < 1 or self.batch < 1 or self.lr <= 0:
            raise MgsError("--epochs and --batch must be at least 1 and --lr positive")
        if self.negatives_per_box < 0:
            raise MgsError("--negatives-per-box must be 0 (no eye verifier) or more")
        if self.score_loss not in SCORE_LOSSES:
            raise MgsError(f"--score-loss {self.score_loss!r}: choose {' or '.join(SCORE_LOSSES)}")
        if not 0 <= self.eye_width <= PATCH_SIZE:
            raise MgsError(f"--eye-width must be 0 (fixed crops) or up to the patch size ({PATCH_SIZE} px)")


def score_bins(scores: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(scores), 0, SCORE_BINS - 1).astype(int)


def balanced_weights(scores: np.ndarray) -> np.ndarray:
    """Sampling probability per sample, inversely proportional to its integer score's frequency."""
    bins = score_bins(scores)
    counts = np.bincount(bins, minlength=SCORE_BINS).astype(np.float64)
    w = 1.0 / counts[bins]
    return w / w.sum()


def augment(regions: np.ndarray, rng: np.random.Generator, rotation_deg: float, camera: bool = False) -> np.ndarray:
    """Rotate (and with `camera`, zoom) about the eye centre, cut the 60x60 sub-image, then a random
    50x50 inside it; with `camera`, the camera effects of augment.eye_patch on the patch.

    One warpAffine per sample does the geometric steps: the rotation matrix is shifted so its 50x50
    output window is the chosen patch of the rotated 60x60 sub-image.
    """
    centre = float(EYE_REGION_HALF)
    margin = SUBIMAGE - PATCH_SIZE
    out = np.empty((len(regions), PATCH_SIZE, PATCH_SIZE, 3), np.uint8)
    for i, region in enumerate(regions):
        zoom = float(rng.uniform(*EYE_SCALE)) if camera else 1.0
        m = cv2.getRotationMatrix2D((centre, centre), float(rng.uniform(-rotation_deg, rotation_deg)), zoom)
        ox, oy = rng.integers(0, margin + 1, 2)
        m[0, 2] -= centre - SUBIMAGE / 2 + ox
        m[1, 2] -= centre - SUBIMAGE / 2 + oy
        out[i] = cv2.warpAffine(
            region, m, (PATCH_SIZE, PATCH_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        if camera:
            out[i] = eye_patch(out[i], rng)
    return out


def centre_patches(regions: np.ndarray) -> np.ndarray:
    """The 50x50 patch centred on the eye: what the pipeline cuts at a perfectly found eye."""
    a = EYE_REGION_HALF - PATCH_SIZE // 2
    return regions[:, a : a + PATCH_SIZE, a : a + PATCH_SIZE]


def to_tensor(patches: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(patches.transpose(0, 3, 1, 2))).to(device, torch.float32).div_(255.0)


@torch.no_grad()
def predict(
    module: nn.Module, patches: np.ndarray, device: torch.device, batch: int = 512, column: int = 0
) -> np.ndarray:
    """One output column for every patch: 0 the score, VERIFIER_COLUMN the eye logit."""
    module.eval()
    out = [
        module(to_tensor(patches[i : i + batch], device))[:, column].cpu().numpy()
        for i in range(0, len(patches), batch)
    ]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def verifier_accuracy(module: nn.Module, eyes: np.ndarray, non_eyes: np.ndarray, device: torch.device) -> float:
    """Share of centred eye and non-eye patches the verifier gets right at logit 0, each kind weighted half."""
    hits = [
        float(np.mean((predict(module, centre_patches(r), device, column=VERIFIER_COLUMN) > 0) == label))
        for r, label in ((eyes, True), (non_eyes, False))
        if len(r)
    ]
    return float(np.mean(hits))


def new_regressor(
    arch: str = "paper", pretrained_features: dict[str, torch.Tensor] | None = None, verifier: bool = False
) -> EyeRegressor:
    """A fresh regressor; with CIFAR-10 pre-trained conv layers when given (the head starts fresh)."""
    module = EyeRegressor(arch=arch, outputs=2 if verifier else 1)
    if pretrained_features is not None:
        module.features.load_state_dict(pretrained_features)
    return module


def make_optimizer(module: nn.Module, recipe: EyeRecipe) -> torch.optim.Optimizer:
    params = [p for p in module.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum)
    return torch.optim.Adam(params, lr=recipe.lr)


def train_eye(
    samples: EyeSamples,
    recipe: EyeRecipe,
    out: Path,
    device: torch.device,
    *,
    resume: bool = False,
    pretrained_features: dict[str, torch.Tensor] | None = None,
    init: EyeRegressor | None = None,
    val: EyeSamples | None = None,
    non_eyes: np.ndarray | None = None,
    val_non_eyes: np.ndarray | None = None,
    hard_non_eyes: np.ndarray | None = None,
    progress: bool = True,
) -> tuple[EyeRegressor, list[dict[str, float]]]:
    """Train on `samples`; per-epoch checkpoint at OUT.ckpt; `val` adds a regressor-only MAE per epoch.

    `init` (a loaded regressor) is fine-tuned instead of a fresh network; `recipe.freeze_features`
    then keeps its conv layers fixed, so a small set only re-fits the head. With `non_eyes`
    (regions from `samples.non_eye_regions`) and `recipe.negatives_per_box` the network's verifier
    output learns eye against non-eye: every batch then holds as many non-eye patches as eyes, and
    the loss adds the verifier's binary cross-entropy to the score's MSE (which only eyes have).
    Without `negatives_per_box`, a verifier network fine-tuned on `non_eyes` and eyes learns its
    starting self's verdict on both instead. `hard_non_eyes`
    (`samples.false_eye_regions`, the segmenter's own mistakes) then make half of each batch's
    non-eye patches, however few they are.
    """
    if len(samples) < 2:
        raise MgsError(
            f"only {len(samples)} scored visible eyes in the training data; the regressor needs labelled eyes"
        )
    seed_everything(recipe.seed)
    labelled = recipe.negatives_per_box > 0
    if labelled and (non_eyes is None or not len(non_eyes)):
        raise MgsError("the eye verifier needs non-eye patches; the training data gave none")
    if init is not None and labelled and not has_verifier(init):
        init = with_verifier(init)
    module = (init if init is not None else new_regressor(recipe.arch, pretrained_features, labelled)).to(device)
    if recipe.eye_width > 0:
        module.config["eye_width"] = recipe.eye_width
    else:
        module.config.pop("eye_width", None)
    # Fine-tuning a verifier network without verifier labels (a facility's reviewed eyes) would let
    # the shared head drift the verifier's output unsupervised: the starting network's own verdict
    # on the same eye and non-eye patches keeps it where it was.
    teacher = copy.deepcopy(module).eval().requires_grad_(False) if not labelled and has_verifier(module) else None
    mixed = non_eyes is not None and len(non_eyes) > 0 and (labelled or teacher is not None)
    if recipe.freeze_features:
        for p in module.features.parameters():
            p.requires_grad_(False)
    optimizer = make_optimizer(module, recipe)
    probs = balanced_weights(samples.scores) if recipe.balance else np.full(len(samples), 1.0 / len(samples))
    targets = torch.from_numpy(samples.scores)
    score_error = SCORE_LOSSES[recipe.score_loss]()
    bce = nn.BCEWithLogitsLoss()

    def pick_non_eyes(n: int, rng: np.random.Generator) -> np.ndarray:
        assert non_eyes is not None
        hard = n // 2 if hard_non_eyes is not None and len(hard_non_eyes) else 0
        picked = non_eyes[rng.integers(len(non_eyes), size=n - hard)]
        if hard:
            assert hard_non_eyes is not None
            picked = np.concatenate([picked, hard_non_eyes[rng.integers(len(hard_non_eyes), size=hard)]])
        return augment(picked, rng, recipe.rotation_deg, recipe.augment)

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if recipe.freeze_features:
            # Runs after the loop's module.train(): frozen conv layers also keep their BatchNorm
            # statistics (the wide network has them), or a few hundred eyes would shift them.
            module.features.eval()
        rng = np.random.default_rng([recipe.seed, epoch])
        set_lr(optimizer, scheduled_lr(recipe.lr, recipe.schedule, epoch, recipe.epochs))
        order = rng.choice(len(samples), size=len(samples), replace=True, p=probs)
        for i in range(0, len(order) - 1, recipe.batch):
            idx = order[i : i + recipe.batch]
            if len(idx) < 2:  # BatchNorm1d needs two samples in training mode
                continue
            patches = augment(samples.regions[idx], rng, recipe.rotation_deg, recipe.augment)
            if mixed:
                patches = np.concatenate([patches, pick_non_eyes(len(idx), rng)])
            x = to_tensor(patches, device)
            if not labelled and teacher is None:
                yield x, targets[idx].to(device)
                continue
            target = torch.full((len(patches), 2), float("nan"))  # non-eyes have no score
            target[: len(idx), 0] = targets[idx]
            if teacher is not None:
                with torch.no_grad():
                    target[:, 1] = torch.sigmoid(teacher(x)[:, VERIFIER_COLUMN]).cpu()
            else:
                target[:, 1] = 0.0
                target[: len(idx), 1] = 1.0
            yield x, target.to(device)

    def loss_fn(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Score error over the eyes (non-eyes have no score: NaN); with a verifier, plus its cross-entropy."""
        if target.ndim == 1:
            return score_error(prediction[:, 0], target)
        scored = ~torch.isnan(target[:, 0])
        return score_error(prediction[scored, 0], target[scored, 0]) + recipe.verifier_weight * bce(
            prediction[:, VERIFIER_COLUMN], target[:, 1]
        )

    def validate(_epoch: int) -> dict[str, float]:
        if val is None:
            return {}
        out = {"val_mae": mae(np.clip(predict(module, centre_patches(val.regions), device), 0, 9), val.scores)}
        if has_verifier(module) and val_non_eyes is not None and len(val_non_eyes):
            out["val_verifier_accuracy"] = verifier_accuracy(module, val.regions, val_non_eyes, device)
        return out

    history = run_epochs(
        kind="eye",
        module=module,
        optimizer=optimizer,
        epochs=recipe.epochs,
        batches=batches,
        loss_fn=loss_fn,
        out=out,
        resume=resume,
        after_epoch=validate if val is not None else None,
        progress=progress,
        precision=recipe.precision,
    )
    return module.eval(), history


def recipe_record(recipe: EyeRecipe, n_samples: int, n_images: int, hard_negatives: int = 0) -> dict[str, Any]:
    return {
        **asdict(recipe),
        "subimage": SUBIMAGE,
        "patch": PATCH_SIZE,
        "loss": f"{recipe.score_loss} + verifier binary cross-entropy"
        if recipe.negatives_per_box
        else recipe.score_loss,
        "train_eyes": n_samples,
        "train_images": n_images,
        "hard_negatives": hard_negatives,
    }
