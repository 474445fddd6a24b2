"""Training samples cut from a dataset in the docs/dataset.md format, held in memory as uint8 arrays.

Decoding a 1080x1920 PNG costs far more than a training step on a 50x50 patch or a 128x128 crop,
so every frame is read once and what training needs is cut out up front:
- eye regions: (2 * EYE_REGION_HALF)^2 px around each scored visible eye, large enough to rotate
  by 30 degrees and still cut the paper's 60x60 sub-image;
- fine crops: full-resolution square crops, mostly around eyes and the animal, some anywhere in
  the box, with their class masks;
- coarse ROIs: each whole box ROI resized to the coarse net's fixed input, with its class mask.
The image id of every sample is kept so cross-validation can split by image, never by eye.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from device.eyes import EyeBlob, EyeConfig, crop_patches, patch_zoom, patch_zooms
from export.discernible import hide_unseen_eyes
from export.label_mask import IGNORE, eye_component
from models.unet import CLASS_NAMES

if TYPE_CHECKING:
    from device.inference import Models
    from export.dataset import Box, Dataset, Frame

log = logging.getLogger(__name__)

EYE_REGION_HALF = 45
N_CLASSES = len(CLASS_NAMES)


@dataclass
class EyeSamples:
    regions: np.ndarray  # [N, 90, 90, 3] uint8 BGR, eye centre at (45, 45)
    scores: np.ndarray  # [N] float32
    image_ids: np.ndarray  # [N] int, index of the frame in the dataset

    def __len__(self) -> int:
        return len(self.scores)

    def subset(self, index: np.ndarray) -> EyeSamples:
        return EyeSamples(self.regions[index], self.scores[index], self.image_ids[index])


@dataclass
class SegSamples:
    images: np.ndarray  # [N, H, W, 3] uint8 BGR
    masks: np.ndarray  # [N, H, W] uint8 class ids

    def __len__(self) -> int:
        return len(self.images)

    def class_frequency(self) -> np.ndarray:
        """Share of each class among the pixels that teach (IGNORE left out)."""
        counts = np.bincount(self.masks.ravel(), minlength=N_CLASSES)[:N_CLASSES].astype(np.float64)
        return counts / counts.sum()


def scored_eyes(frame: Frame) -> Iterator[tuple[float, float, float, Box]]:
    """(x, y, score, box) of every visible eye with a score; unscored eyes cannot teach the regressor."""
    for box in frame.boxes:
        for eye in box.eyes:
            if eye.visible and eye.score is not None:
                yield eye.x, eye.y, float(eye.score), box


def eye_width_px(x: float, y: float, box: Box, mask: np.ndarray | None) -> float | None:
    """How wide the eye at (x, y) is in the frame, measured as the device measures a blob
    (`device.eyes.blob_width`) on the labelled class mask; without a
    mask (or no eye pixels there) the renderer's `eye_width_px` condition of the box; else None."""
    component = eye_component(x, y, mask) if mask is not None else None
    if component is not None:
        return component.width
    width = box.conditions.get("eye_width_px")
    return float(width) if isinstance(width, int | float) and width > 0 else None


def region_zooms(widths: Sequence[float | None], eye_width: float) -> list[float] | None:
    """The device's zoom (`device.eyes.patch_zooms`) per eye of known width, 1 (a plain crop) where unknown."""
    if eye_width <= 0:
        return None
    return [1.0 if w is None else patch_zoom(w, eye_width) for w in widths]


def eye_samples(dataset: Dataset, eye_width: float = 0.0) -> EyeSamples:
    return eye_training_samples(dataset, eye_width=eye_width)[0]


#: A non-eye sample lies at least this many pixels from every labelled eye, hidden ones included
#: (the pipeline's match radius is 12 px: closer than that, the patch IS the eye, slightly off).
NON_EYE_CLEARANCE = 16.0
#: "Near the head": within this share of the box width of a visible eye (nose, cheek, ear, fur).
HEAD_REACH = 0.2


def non_eye_regions(dataset: Dataset, per_box: int, rng: np.random.Generator, eye_width: float = 0.0) -> np.ndarray:
    """[N, 90, 90, 3] regions centred where there is no eye, for the eye verifier's negatives (`_non_eye_centres`)."""
    return eye_training_samples(dataset, per_box, rng, eye_width)[1]


def eye_training_samples(
    dataset: Dataset,
    non_eyes_per_box: int = 0,
    rng: np.random.Generator | None = None,
    eye_width: float = 0.0,
    device_widths: dict[tuple[int, int], float] | None = None,
) -> tuple[EyeSamples, np.ndarray]:
    """The eye regions and, with `non_eyes_per_box`, the non-eye regions ([N, 90, 90, 3]) of a
    dataset, reading every frame once (decoding the frames is the slow part).

    With `eye_width` > 0 every region is cut as the device cuts a scale-normalised patch: the eye
    `eye_width` px wide (`eye_width_px`, `region_zooms`); non-eye regions at the zoom of the
    frame's eyes, since the device cuts a false eye at the zoom its blob asks for. `device_widths`
    (`DeviceView.widths`) replace the labelled width of the eyes the device found.
    """
    device_widths = device_widths or {}
    regions, scores, ids, non_eyes = [], [], [], []
    for index, frame in enumerate(dataset.frames):
        eyes = list(scored_eyes(frame))
        cut_non_eyes = non_eyes_per_box > 0 and any(box.eyes for box in frame.boxes)
        if not eyes and not cut_non_eyes:
            continue
        image = dataset.read_image(frame)
        mask = dataset.read_mask(frame) if frame.mask is not None and (eye_width > 0 or cut_non_eyes) else None
        widths = [
            device_widths.get((index, n)) or eye_width_px(x, y, box, mask) for n, (x, y, _, box) in enumerate(eyes)
        ]
        zooms = region_zooms(widths, eye_width)
        if eyes:
            patches, _ = crop_patches(image, [(x, y) for x, y, _, _ in eyes], 2 * EYE_REGION_HALF, zooms)
            regions.append(patches)
            scores.extend(s for _, _, s, _ in eyes)
            ids.extend([index] * len(eyes))
        if cut_non_eyes:
            assert rng is not None, "non-eye regions are drawn at random: pass rng"
            centres = _non_eye_centres(image, mask, frame.boxes, non_eyes_per_box, rng)
            if centres:
                non_eyes.append(
                    crop_patches(image, centres, 2 * EYE_REGION_HALF, _zooms_like_eyes(zooms, len(centres), rng))[0]
                )
    empty = np.zeros((0, 2 * EYE_REGION_HALF, 2 * EYE_REGION_HALF, 3), np.uint8)
    samples = (
        EyeSamples(np.concatenate(regions), np.asarray(scores, np.float32), np.asarray(ids))
        if scores
        else EyeSamples(empty, np.zeros(0, np.float32), np.zeros(0, int))
    )
    return samples, np.concatenate(non_eyes) if non_eyes else empty


def _zooms_like_eyes(zooms: list[float] | None, n: int, rng: np.random.Generator) -> list[float] | None:
    """n zooms drawn from a frame's eye zooms (1 where the frame has none): non-eyes cut at eye scale."""
    if zooms is None:
        return None
    return list(rng.choice(zooms, n)) if zooms else [1.0] * n


def _non_eye_centres(
    image: np.ndarray, mask: np.ndarray | None, boxes: list[Box], per_box: int, rng: np.random.Generator
) -> list[tuple[float, float]]:
    """`per_box` points per box where there is no eye, cycling through three kinds, the places the
    segmenter mistakes for eyes: a head pixel near a visible eye (nose, whisker pads, ears, cheek;
    needs the frame's class mask, else anywhere), one of the darkest spots of the box (black fur,
    vent holes, droppings, shadows, decoys), and anywhere in the box."""
    grey = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (9, 9), 0)
    centres = []
    for box in boxes:
        x, y, w, h = (int(round(v)) for v in box.roi)
        x, y = max(x, 0), max(y, 0)
        w, h = min(w, image.shape[1] - x), min(h, image.shape[0] - y)
        if w <= 0 or h <= 0:
            continue
        yy, xx = np.mgrid[y : y + h, x : x + w]
        clear = np.ones((h, w), bool)
        near_head = np.zeros((h, w), bool)
        for e in box.eyes:
            d = np.hypot(xx - e.x, yy - e.y)
            clear &= d >= NON_EYE_CLEARANCE
            if e.visible:
                near_head |= d <= HEAD_REACH * w
        head = clear & near_head & (mask[y : y + h, x : x + w] > 0) if mask is not None else clear
        dark_grey = grey[y : y + h, x : x + w]
        dark = clear & (dark_grey <= np.percentile(dark_grey[clear], 3)) if clear.any() else clear
        for k in range(per_box):
            pool = (head, dark, clear)[k % 3]
            if not pool.any():
                pool = clear
            if not pool.any():
                continue
            py, px = np.argwhere(pool)[rng.integers(int(np.count_nonzero(pool)))]
            centres.append((float(x + px), float(y + py)))
    return centres


#: Mining logs its progress every this many frames (a few thousand frames take minutes).
MINING_LOG_EVERY = 500

#: A device blob within this many pixels of a labelled eye is that eye (`mgs-export evaluate`'s match radius).
MATCH_PX = 8.0


@dataclass
class DeviceView:
    """What a model set's device pipeline makes of training frames (`device_view`)."""

    false_eyes: np.ndarray  # [N, 90, 90, 3] regions at candidates where no eye is labelled
    widths: dict[tuple[int, int], float]  # (frame index, n-th scored eye of the frame) -> width of its blob


def _pipeline_blobs(
    dataset: Dataset, models: Models, frames: int | None
) -> Iterator[tuple[int, Frame, np.ndarray, list[tuple[EyeBlob, Box]]]]:
    """(frame index, frame, image, [(blob, its box)]) for a model set's fast pipeline over the first
    `frames` frames, every filter after the segmenter opened (one fresh pipeline per frame, as in
    `mgs-export evaluate`): everything the segmenter offers as an eye."""
    from device.pipeline import FastPipeline, PipelineConfig
    from device.rois import Roi

    config = PipelineConfig(eyes=EyeConfig(max_candidates_per_box=16))
    chosen = dataset.frames[:frames]
    for index, frame in enumerate(chosen):
        if index and index % MINING_LOG_EVERY == 0:
            log.info("the pipeline has read %d of %d frames", index, len(chosen))
        if not frame.boxes:
            continue
        image = dataset.read_image(frame)
        rois = [Roi(*(int(round(v)) for v in box.roi)) for box in frame.boxes]
        blobs_per_box, _ = FastPipeline(models, rois, config).eye_blobs(image)
        yield index, frame, image, [(blob, box) for box, blobs in zip(frame.boxes, blobs_per_box) for blob in blobs]


def _false_blobs(found: list[tuple[EyeBlob, Box]]) -> list[EyeBlob]:
    """The blobs with no labelled eye (seen or not) within NON_EYE_CLEARANCE of them."""
    return [b for b, box in found if all(np.hypot(b.x - e.x, b.y - e.y) >= NON_EYE_CLEARANCE for e in box.eyes)]


def device_view(dataset: Dataset, models: Models, frames: int | None = None, eye_width: float = 0.0) -> DeviceView:
    """What a model set's fast pipeline (`_pipeline_blobs`) makes of the first `frames` frames.

    The candidates where no eye is labelled are hard negatives for the eye verifier: exactly what
    the segmenter mistakes for eyes. The blobs it finds at labelled eyes say how wide the device
    will measure those eyes: a scale-normalised eye model trained at those widths learns the
    device's own view, errors of the width estimate included. With `eye_width`, the false eyes are
    cut at the zoom their own blob asks for, as the device cuts them.
    """
    regions, widths = [], {}
    for index, frame, image, found in _pipeline_blobs(dataset, models, frames):
        for n, (x, y, _, _) in enumerate(scored_eyes(frame)):
            near = [(np.hypot(b.x - x, b.y - y), b.width_px) for b, _ in found]
            near = [t for t in near if t[0] <= MATCH_PX]
            if near:
                widths[(index, n)] = min(near)[1]
        false = _false_blobs(found)
        if false:
            zooms = patch_zooms([b.width_px for b in false], eye_width)
            regions.append(crop_patches(image, [(b.x, b.y) for b in false], 2 * EYE_REGION_HALF, zooms)[0])
    empty = np.zeros((0, 2 * EYE_REGION_HALF, 2 * EYE_REGION_HALF, 3), np.uint8)
    return DeviceView(np.concatenate(regions) if regions else empty, widths)


def segmenter_false_blobs(
    dataset: Dataset, models: Models, frames: int | None = None
) -> dict[int, list[tuple[float, float]]]:
    """Frame index -> centres of the blobs a model set's segmenter takes for eyes where none is
    labelled: the places `fine_crops(hard_centres=...)` centres crops on, so the U-Net is taught
    its own mistakes (dark spots, patches, bedding) as what they are."""
    return {
        index: [(b.x, b.y) for b in false]
        for index, _, _, found in _pipeline_blobs(dataset, models, frames)
        if (false := _false_blobs(found))
    }


def _crop(image: np.ndarray, mask: np.ndarray, cx: int, cy: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = mask.shape
    x0 = int(np.clip(cx - size // 2, 0, max(0, w - size)))
    y0 = int(np.clip(cy - size // 2, 0, max(0, h - size)))
    return image[y0 : y0 + size, x0 : x0 + size], mask[y0 : y0 + size, x0 : x0 + size]


#: A hard crop's centre lands up to this share of the crop side away from its blob, on either axis.
HARD_CROP_JITTER = 0.25


def fine_crops(
    dataset: Dataset,
    size: int,
    per_box: int,
    rng: np.random.Generator,
    ignore_unseen_eyes: bool = False,
    hard_centres: Mapping[int, Sequence[tuple[float, float]]] | None = None,
    per_hard: int = 2,
) -> SegSamples:
    """Full-resolution crops: half around eyes (jittered so eyes land anywhere in the crop),
    a quarter on random animal pixels, a quarter anywhere in the box (teaches the background).
    With `hard_centres` (frame index -> points, `segmenter_false_blobs`), `per_hard` more crops
    around each point that lies in a box: the spots a segmenter took for eyes, taught as what the
    mask says they are."""
    images, masks = [], []

    def keep(image: np.ndarray, mask: np.ndarray, cx: float, cy: float) -> None:
        ci, cm = _crop(image, mask, int(cx), int(cy), size)
        if ci.shape[:2] == (size, size):  # copies: a view would keep its whole frame in memory until the end
            images.append(ci.copy())
            masks.append(cm.copy())

    for index, image, mask, box in _masked_boxes(dataset, ignore_unseen_eyes):
        x, y, w, h = (int(round(v)) for v in box.roi)
        eyes = [(e.x, e.y) for e in box.eyes if e.visible]
        animal = np.argwhere(mask[y : y + h, x : x + w] > 0)
        for k in range(per_box):
            kind = k % 4
            if kind in (0, 1) and eyes:
                ex, ey = eyes[rng.integers(len(eyes))]
                jitter = rng.uniform(-0.4, 0.4, 2) * size
                keep(image, mask, ex + jitter[0], ey + jitter[1])
            elif kind == 2 and len(animal):
                py, px = animal[rng.integers(len(animal))]
                keep(image, mask, x + px, y + py)
            else:
                keep(image, mask, x + rng.uniform(0, w), y + rng.uniform(0, h))
        for hx, hy in (hard_centres or {}).get(index, ()):
            if x <= hx < x + w and y <= hy < y + h:
                for _ in range(per_hard):
                    jitter = rng.uniform(-HARD_CROP_JITTER, HARD_CROP_JITTER, 2) * size
                    keep(image, mask, hx + jitter[0], hy + jitter[1])
    return _stack(images, masks, (size, size))


def _masked_boxes(dataset: Dataset, ignore_unseen_eyes: bool) -> Iterator[tuple[int, np.ndarray, np.ndarray, Box]]:
    """(frame index, image, mask, box) for every box of every frame that has a mask; frames without one teach no
    segmentation. With `ignore_unseen_eyes`, the labelled eyes the frame does not show are IGNORE in the mask
    (`export.discernible.hide_unseen_eyes`)."""
    for index, frame in enumerate(dataset.frames):
        if frame.mask is None:
            continue
        image = dataset.read_image(frame)
        mask = dataset.read_mask(frame)
        if ignore_unseen_eyes:
            mask = hide_unseen_eyes(image, mask, [(e.x, e.y) for box in frame.boxes for e in box.eyes if e.visible])
        for box in frame.boxes:
            yield index, image, mask, box


LABELS = np.array([*range(N_CLASSES), IGNORE], np.uint8)


def resize_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Majority label per output pixel (area-weighted), so small eyes survive better than with nearest."""
    h, w = hw
    area = [cv2.resize((mask == c).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) for c in LABELS]
    return LABELS[np.argmax(area, axis=0)]


def coarse_rois(dataset: Dataset, hw: tuple[int, int], ignore_unseen_eyes: bool = False) -> SegSamples:
    """Each box ROI scaled to the coarse net's fixed input, as the device does (INTER_AREA)."""
    h, w = hw
    images, masks = [], []
    for _, image, mask, box in _masked_boxes(dataset, ignore_unseen_eyes):
        x, y, bw, bh = (int(round(v)) for v in box.roi)
        images.append(cv2.resize(image[y : y + bh, x : x + bw], (w, h), interpolation=cv2.INTER_AREA))
        masks.append(resize_mask(mask[y : y + bh, x : x + bw], hw))
    return _stack(images, masks, hw)


def _stack(images: list[np.ndarray], masks: list[np.ndarray], hw: tuple[int, int]) -> SegSamples:
    if not images:
        return SegSamples(np.zeros((0, *hw, 3), np.uint8), np.zeros((0, *hw), np.uint8))
    return SegSamples(np.stack(images), np.stack(masks))
