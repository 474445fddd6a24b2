"""Frame -> FrameResult: segmentation as region proposal, eye patches, batched regressor.

Two pipelines share every step after segmentation (device.eyes):

* `FullResolutionPipeline` runs seg_fine over each whole ROI at full resolution. Eyes are 15-25 px
  at 1080p, so this sees them best, but four ROIs take hundreds of milliseconds on a 2-core CPU. It
  is the accuracy reference for `mgs-device bench` and `mgs-export evaluate`.
* `FastPipeline` is what the device runs. Measurements (docs/device-pipeline.md) showed that one U-Net pass over four
  ROIs cannot be both fast and fine enough, so it splits the work: a coarse pass (seg_coarse on the
  ROIs shrunk to its small fixed input, batched) finds the heads; a fine pass (seg_fine, batched)
  looks only at small full-resolution crops around them; between coarse passes each head is
  tracked by re-centring its crop on the eyes found in the previous frame. The coarse pass runs
  every `coarse_every` frames, and sooner for a box whose track was lost.

Neither pipeline knows about threads, cameras or MQTT.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Literal

import cv2
import numpy as np

from device.eyes import (
    ANIMAL,
    EARS,
    EYES,
    EyeBlob,
    EyeConfig,
    animal_found,
    find_eye_blobs,
    in_fur,
    map_to_frame,
    score_blobs,
)
from device.inference import Models
from device.results import BoxResult, EyeScore, FrameResult
from device.rois import Roi, check_inside
from mgs_core.tomlconfig import MultipleOf, Range, fail

FINE_MULTIPLE = 8
# Two candidates closer than this (full-frame px) are the same eye seen by two overlapping crops.
SAME_EYE_PX = 8.0
# Box width (px) that fine_crop is meant for; a box seen from closer gets a proportionally larger
# crop, so both eyes of its larger head still fit one crop.
REFERENCE_BOX_W = 430


@dataclass
class PipelineConfig:
    """`[pipeline]`: how the device finds and scores eyes."""

    SECTION: ClassVar[str] = "pipeline"

    kind: Literal["fast", "full"] = field(
        default="fast",
        metadata={
            "doc": "fast (coarse search + fine crops + tracking; what a CPU box needs) or full (full-resolution U-Net over each whole box; accuracy reference, slow)"
        },
    )
    fine_crop: Annotated[int, Range(48), MultipleOf(FINE_MULTIPLE)] = field(
        default=96,
        metadata={
            "doc": f"side in full-resolution pixels of the square crop around each head for the fine pass, for boxes up to {REFERENCE_BOX_W} px wide (wider boxes get a proportionally larger crop); a multiple of 8"
        },
    )
    coarse_every: Annotated[int, Range(1)] = field(
        default=15, metadata={"doc": "run the coarse head search on every box at least every this many frames"}
    )
    lost_retry: Annotated[int, Range(1)] = field(
        default=3, metadata={"doc": "a box whose head was lost gets a new coarse search after this many frames"}
    )
    max_heads_per_box: Annotated[int, Range(1, 4)] = field(
        default=2, metadata={"doc": "most fine crops per box (one head; two when the coarse pass is unsure)"}
    )
    fine_zoom_max: Annotated[float, Range(1.0, 3.0)] = field(
        default=1.6,
        metadata={
            "doc": f"a box narrower than {REFERENCE_BOX_W} px (a far camera) has its fine crops magnified, by {REFERENCE_BOX_W} / box width but at most this factor, so the fine U-Net sees its small head closer to the size it finds best; the crop covers the same frame pixels and costs up to the square of this factor (1 = never magnify)"
        },
    )
    eyes: EyeConfig = field(default_factory=EyeConfig)

    def check(self) -> None:
        if self.lost_retry > self.coarse_every:
            raise fail("lost_retry", self.lost_retry, f"must be at most coarse_every ({self.coarse_every})")


def crop_side(fine_crop: int, roi_w: int) -> int:
    """The fine crop side for a box: fine_crop, grown with boxes wider than REFERENCE_BOX_W."""
    grown = -(-fine_crop * roi_w // REFERENCE_BOX_W)
    return max(fine_crop, -(-grown // FINE_MULTIPLE) * FINE_MULTIPLE)


def fine_zoom(zoom_max: float, roi_w: int) -> float:
    """How much a box's fine crops are magnified: REFERENCE_BOX_W / its width, from 1 to zoom_max."""
    return min(zoom_max, max(1.0, REFERENCE_BOX_W / roi_w))


def fine_view(config: PipelineConfig, roi_w: int) -> tuple[int, int]:
    """(map side, frame side) of a box's fine crops: the frame square of `frame side` pixels is
    resampled to `map side` for the fine U-Net, so the head of a box seen from far reaches it about
    as large as in a REFERENCE_BOX_W box: small eyes were its largest loss (docs/device-pipeline.md)."""
    region = crop_side(config.fine_crop, roi_w)
    zoom = fine_zoom(config.fine_zoom_max, roi_w)
    side = max(FINE_MULTIPLE, int(round(region * zoom / FINE_MULTIPLE)) * FINE_MULTIPLE)
    return side, region


def images_to_batch(images: Sequence[np.ndarray]) -> np.ndarray:
    """HxWx3 uint8 BGR images of one size -> the U-Net's "image" input, float32 [N, 3, H, W] in [0, 1]."""
    stack = np.stack(images) if len(images) > 1 else images[0][None]
    return np.ascontiguousarray(stack.transpose(0, 3, 1, 2), dtype=np.float32) * np.float32(1.0 / 255.0)


def class_maps(output: np.ndarray) -> np.ndarray:
    """The U-Net's output as [N, H, W] uint8 class ids (argmax is in the graph; logits still accepted)."""
    if output.ndim == 4:
        output = output.argmax(axis=1)
    return output.astype(np.uint8, copy=False)


def resize_for_coarse(roi_image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A box image shrunk (stretched) to seg_coarse's fixed (H, W) input, as training does.

    INTER_AREA (like export.train.samples) is far slower than INTER_LINEAR (docs/device-pipeline.md),
    but it runs only on coarse frames, and a 6 px eye survives area averaging better.
    """
    h, w = size
    return cv2.resize(roi_image, (w, h), interpolation=cv2.INTER_AREA)


def pad_to_multiple(image: np.ndarray, multiple: int = FINE_MULTIPLE) -> np.ndarray:
    """Edge-replicate the bottom/right so both sides are multiples of `multiple`."""
    h, w = image.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    if not ph and not pw:
        return image
    return cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_REPLICATE)


def score_boxes(
    frame: np.ndarray,
    blobs_per_box: Sequence[Sequence[EyeBlob]],
    animals: Sequence[bool],
    models: Models,
    config: EyeConfig,
) -> tuple[BoxResult, ...]:
    """One regressor call for the eyes of all boxes, split back per box."""
    flat = [b for blobs in blobs_per_box for b in blobs]
    scored = score_blobs(
        frame,
        flat,
        models.eye,
        config,
        groups=[box for box, blobs in enumerate(blobs_per_box) for _ in blobs],
        eye_width=models.eye_width,
    )
    out: list[BoxResult] = []
    i = 0
    for box, (blobs, animal) in enumerate(zip(blobs_per_box, animals)):
        eyes: tuple[EyeScore, ...] = tuple(e for e in scored[i : i + len(blobs)] if e is not None)
        i += len(blobs)
        out.append(BoxResult(box=box, eyes=eyes, animal_found=animal or bool(eyes)))
    return tuple(out)


class _Stopwatch:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.ms[stage] = self.ms.get(stage, 0.0) + (now - self._t) * 1000.0
        self._t = now


class FullResolutionPipeline:
    """seg_fine over each whole ROI at full resolution: the slow accuracy reference."""

    def __init__(self, models: Models, rois: Sequence[Roi], eye_config: EyeConfig | None = None) -> None:
        self.models = models
        self.rois = list(rois)
        self.eye_config = eye_config or EyeConfig()
        self._checked_shape: tuple[int, ...] | None = None

    def __call__(self, frame: np.ndarray, frame_index: int = 0, capture_time: float = 0.0) -> FrameResult:
        if frame.shape != self._checked_shape:
            check_inside(self.rois, frame.shape)
            self._checked_shape = frame.shape
        watch = _Stopwatch()
        blobs_per_box: list[list[EyeBlob]] = []
        animals: list[bool] = []
        for roi in self.rois:
            image = frame[roi.y : roi.y1, roi.x : roi.x1]
            batch = images_to_batch([pad_to_multiple(image)])
            watch.lap("resize")
            classes = class_maps(self.models.seg_fine(batch))[0, : roi.h, : roi.w]
            watch.lap("unet_fine")
            blobs_per_box.append(find_eye_blobs(classes, self.eye_config, origin=(roi.x, roi.y), image=image))
            animals.append(animal_found(classes))
            watch.lap("post")
        boxes = score_boxes(frame, blobs_per_box, animals, self.models, self.eye_config)
        watch.lap("regressor")
        return FrameResult(frame_index=frame_index, capture_time=capture_time, boxes=boxes, stage_ms=watch.ms)


@dataclass(frozen=True)
class FineCrop:
    """One fine crop of a frame: box index, top-left frame pixel, valid map region, class map, and
    the eye blobs the filters let through (before the per-box merge and candidate cap)."""

    box: int
    x0: int
    y0: int
    valid: tuple[int, int, int, int]
    classes: np.ndarray
    blobs: list[EyeBlob]
    scale: float = 1.0  # frame pixels per map pixel

    def to_frame(self, u: np.ndarray | float, v: np.ndarray | float) -> tuple:
        """Map pixel centres -> frame pixel coordinates, as find_eye_blobs placed the blobs."""
        return map_to_frame(u, v, (self.x0, self.y0), (self.scale, self.scale))

    def covers(self, x: float, y: float) -> bool:
        """Whether frame pixel (x, y) lies in the part of the map the fine U-Net saw (not padding)."""
        u, v = (x - self.x0) / self.scale, (y - self.y0) / self.scale
        return self.valid[0] <= u < self.valid[2] and self.valid[1] <= v < self.valid[3]


@dataclass
class _Track:
    """Where the fine crops of one box go next frame, and when its last coarse search ran."""

    centres: list[tuple[float, float]] = field(default_factory=list)
    last_coarse: int = -(10**9)
    animal: bool = False


class FastPipeline:
    """Coarse head search, fine full-resolution crops around heads, tracking in between."""

    def __init__(self, models: Models, rois: Sequence[Roi], config: PipelineConfig | None = None) -> None:
        self.models = models
        self.rois = list(rois)
        self.config = config or PipelineConfig()
        self.tracks = [_Track() for _ in self.rois]
        self.views = [fine_view(self.config, r.w) for r in self.rois]
        self.coarse_passes = 0
        self.crops_run = 0
        self._checked_shape: tuple[int, ...] | None = None
        self._frames = 0
        # The last frame's fine crops with their class maps: references only, kept so the evaluator
        # can tell at which stage an eye the pipeline missed was lost (export/eye_losses.py).
        self.last_fine: list[FineCrop] = []
        # ... and each box's blobs handed to the eye model, to tell a blob the eye model turned down
        # from one the merge or the candidate cap left out.
        self.last_candidates: list[list[EyeBlob]] = [[] for _ in self.rois]

    def __call__(self, frame: np.ndarray, frame_index: int = 0, capture_time: float = 0.0) -> FrameResult:
        watch = _Stopwatch()
        blobs_per_box, animals = self.eye_blobs(frame, watch)
        boxes = score_boxes(frame, blobs_per_box, animals, self.models, self.config.eyes)
        watch.lap("regressor")
        return FrameResult(frame_index=frame_index, capture_time=capture_time, boxes=boxes, stage_ms=watch.ms)

    def eye_blobs(self, frame: np.ndarray, watch: _Stopwatch | None = None) -> tuple[list[list[EyeBlob]], list[bool]]:
        """The eye candidates of each box and whether an animal was seen in it, before the eye model:
        what training cuts its patches at to learn the device's own view (export.train.samples)."""
        if frame.shape != self._checked_shape:
            check_inside(self.rois, frame.shape)
            self._checked_shape = frame.shape
        watch = watch or _Stopwatch()
        n = self._frames
        self._frames += 1
        every = self.config.coarse_every
        # Scheduled searches are staggered over the boxes (box b at frames b*every/boxes + k*every), so
        # no frame pays for four coarse ROIs at once: that keeps the latency p95 flat.
        due = [
            b
            for b, t in enumerate(self.tracks)
            if (n + b * every // len(self.tracks)) % every == 0
            and n - t.last_coarse >= every // 2
            or (not t.centres and n - t.last_coarse >= self.config.lost_retry)
        ]
        if due:
            self._coarse(frame, due, n, watch)
        return self._fine(frame, self._crops(watch), watch)

    def _coarse(self, frame: np.ndarray, due: list[int], n: int, watch: _Stopwatch) -> None:
        size = self.models.coarse_size
        images = [resize_for_coarse(frame[r.y : r.y1, r.x : r.x1], size) for r in (self.rois[b] for b in due)]
        batch = images_to_batch(images)
        watch.lap("resize")
        maps = class_maps(self.models.seg_coarse(batch))
        watch.lap("unet_coarse")
        for b, classes in zip(due, maps):
            roi = self.rois[b]
            track = self.tracks[b]
            track.last_coarse = n
            track.animal = animal_found(classes)
            # A head being tracked stays; the search adds heads not yet followed (a missed coarse
            # detection must not drop a good track).
            heads = self._heads(classes, roi, (roi.w / size[1], roi.h / size[0]))
            track.centres = _distinct(track.centres + heads, self.config.fine_crop / 2)[: self.config.max_heads_per_box]
        self.coarse_passes += 1
        watch.lap("post")

    def _heads(self, classes: np.ndarray, roi: Roi, scale: tuple[float, float]) -> list[tuple[float, float]]:
        """Crop centres from a coarse map: eye pixels of each ear/eye cluster, else the cluster."""
        head = ((classes == EYES) | (classes == EARS)).view(np.uint8)
        n, labels, stats, centroids = cv2.connectedComponentsWithStats(head, connectivity=8)
        found: list[tuple[int, float, float]] = []
        for i in range(1, n):
            member = labels == i
            eyes = member & (classes == EYES)
            weight = int(np.count_nonzero(eyes))
            if weight:
                ys, xs = np.nonzero(eyes)
                u, v = float(xs.mean()), float(ys.mean())
            else:
                u, v = (float(c) for c in centroids[i])
            found.append(
                (
                    weight * 1000 + int(stats[i, cv2.CC_STAT_AREA]),
                    roi.x + (u + 0.5) * scale[0],
                    roi.y + (v + 0.5) * scale[1],
                )
            )
        found.sort(reverse=True)
        if not found:
            found = [(0, roi.x + (u + 0.5) * scale[0], roi.y + (v + 0.5) * scale[1]) for u, v in _body_ends(classes)]
        centres: list[tuple[float, float]] = []
        half = self.config.fine_crop / 2
        for _, x, y in found:
            if all(abs(x - cx) > half or abs(y - cy) > half for cx, cy in centres):
                centres.append((x, y))
            if len(centres) == self.config.max_heads_per_box:
                break
        return centres

    def _crops(self, watch: _Stopwatch) -> list[tuple[int, int, int, int, int]]:
        """(box, x0, y0, frame width, frame height) for every fine crop: its frame square (cut where
        the box is smaller), shifted to stay inside its box."""
        crops = []
        for b, (roi, track) in enumerate(zip(self.rois, self.tracks)):
            c = self.views[b][1]
            for cx, cy in track.centres:
                x0 = int(round(cx)) - c // 2
                y0 = int(round(cy)) - c // 2
                x0 = roi.x if roi.w <= c else min(max(x0, roi.x), roi.x1 - c)
                y0 = roi.y if roi.h <= c else min(max(y0, roi.y), roi.y1 - c)
                crops.append((b, x0, y0, min(c, roi.x1 - x0), min(c, roi.y1 - y0)))
        watch.lap("post")
        return crops

    def _fine(self, frame: np.ndarray, crops, watch: _Stopwatch) -> tuple[list[list[EyeBlob]], list[bool]]:
        blobs_per_box: list[list[EyeBlob]] = [[] for _ in self.rois]
        animals = [t.animal for t in self.tracks]
        self.last_fine = []
        self.last_candidates = blobs_per_box  # the very list returned: its entries are filled and capped below
        if not crops:
            return blobs_per_box, animals
        c = max(self.views[b][0] for b, *_ in crops)  # one batch: smaller crops are padded to the largest
        images = []
        placed = []
        for b, x0, y0, vw, vh in crops:
            image = frame[y0 : y0 + vh, x0 : x0 + vw]
            side, region = self.views[b]
            scale = region / side
            if side != region:
                vw, vh = max(1, int(round(vw / scale))), max(1, int(round(vh / scale)))
                image = cv2.resize(image, (vw, vh), interpolation=cv2.INTER_LINEAR)
            if vw < c or vh < c:
                image = cv2.copyMakeBorder(image, 0, c - vh, 0, c - vw, cv2.BORDER_REPLICATE)
            images.append(image)
            placed.append((b, x0, y0, (0, 0, vw, vh), scale))
        batch = images_to_batch(images)
        watch.lap("resize")
        maps = class_maps(self.models.seg_fine(batch))
        watch.lap("unet_fine")
        eye_centres: list[list[tuple[float, float]]] = [[] for _ in self.rois]
        head_centres: list[list[tuple[float, float]]] = [[] for _ in self.rois]
        for (b, x0, y0, valid, scale), classes, image in zip(placed, maps, images):
            blobs = find_eye_blobs(
                classes, self.config.eyes, origin=(x0, y0), scale=(scale, scale), valid=valid, image=image
            )
            crop = FineCrop(b, x0, y0, valid, classes, blobs, scale)
            self.last_fine.append(crop)
            blobs_per_box[b] = _merge_same_eyes(blobs_per_box[b] + blobs)
            animals[b] = animals[b] or animal_found(classes)
            # Only eyes in fur steer the crop: a low-context blob is scored if the verifier vouches
            # for it, but a vent hole must not pull the box's crop off the head until the next search.
            furred = [blob for blob in blobs if in_fur(blob, self.config.eyes)]
            centre = _track_centre(furred, crop)
            if centre is not None:
                (eye_centres if furred else head_centres)[b].append(centre)
        for b, track in enumerate(self.tracks):
            # A crop that found eyes is followed; crops that only see head parts are kept only while
            # no crop of the box found eyes, so a false head cluster does not cost a crop per frame.
            track.centres = _distinct(eye_centres[b] or head_centres[b], self.config.fine_crop / 4)
            blobs_per_box[b] = blobs_per_box[b][: self.config.eyes.max_candidates_per_box]
        self.crops_run += len(crops)
        watch.lap("post")
        return blobs_per_box, animals


def _body_ends(classes: np.ndarray, min_pixels: int = 12) -> list[tuple[float, float]]:
    """Both ends of the largest animal blob (map pixels): the head is at one of them.

    Used when the coarse map shows an animal but no ear or eye pixels: at coarse resolution a
    small or turned head can vanish, and the fine pass at full resolution may still find its eyes.
    """
    n, labels, stats, _ = cv2.connectedComponentsWithStats((classes == ANIMAL).view(np.uint8), connectivity=8)
    if n < 2:
        return []
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[biggest, cv2.CC_STAT_AREA] < min_pixels:
        return []
    ys, xs = np.nonzero(labels == biggest)
    pts = np.stack([xs, ys], axis=1).astype(np.float32)
    mean = pts.mean(axis=0)
    _, _, vt = np.linalg.svd(pts - mean, full_matrices=False)
    along = (pts - mean) @ vt[0]
    lo, hi = np.percentile(along, [8, 92])
    ends = [mean + t * vt[0] for t in (hi, lo)]
    return [(float(x), float(y)) for x, y in ends]


def _track_centre(blobs: Sequence[EyeBlob], crop: FineCrop) -> tuple[float, float] | None:
    """Next frame's crop centre: the eyes found, else the visible head (ears/eyes), else lost."""
    if blobs:
        return (float(np.mean([b.x for b in blobs])), float(np.mean([b.y for b in blobs])))
    ys, xs = np.nonzero((crop.classes == EYES) | (crop.classes == EARS))
    if len(xs) < 4:
        return None
    x, y = crop.to_frame(float(xs.mean()), float(ys.mean()))
    return (float(x), float(y))


def _distinct(centres: list[tuple[float, float]], min_px: float) -> list[tuple[float, float]]:
    """Two crops that converged on one head become one."""
    kept: list[tuple[float, float]] = []
    for x, y in centres:
        if all(abs(x - kx) > min_px or abs(y - ky) > min_px for kx, ky in kept):
            kept.append((x, y))
    return kept


def _merge_same_eyes(blobs: list[EyeBlob]) -> list[EyeBlob]:
    """Overlapping crops see the same eye twice: keep the uncut, larger view of it."""
    kept: list[EyeBlob] = []
    for blob in sorted(blobs, key=lambda b: (b.touches_border, -b.area_px)):
        if all(abs(blob.x - k.x) > SAME_EYE_PX or abs(blob.y - k.y) > SAME_EYE_PX for k in kept):
            kept.append(blob)
    return sorted(kept, key=lambda b: -b.area_px)


def build_pipeline(models: Models, rois: Sequence[Roi], config: PipelineConfig):
    """The pipeline the config asks for."""
    if config.kind == "full":
        return FullResolutionPipeline(models, rois, config.eyes)
    return FastPipeline(models, rois, config)
