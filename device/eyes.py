"""From a class map to scored eyes: blobs, plausibility, 50x50 patches, quality, scores.

The U-Net is only the region proposal (paper, section 2.2): an eye is a connected blob of class 3
of plausible size and shape with animal or ear pixels around it. The 50x50 patch the regressor
sees is always cut from the ORIGINAL full-resolution frame, whatever resolution the class map had,
so the fast and the full-resolution pipelines feed the regressor the same pixels for the same eye.

A blurred eye (variance of the Laplacian below a threshold) or a partial one (blob cut by the
border of the analysed region, or a patch that leaves the frame) is still reported but with
`quality_ok=False`: aggregation ignores it, the preview can still show it.

Every eye also gets a confidence in [0, 1]: a logistic model over cues the pipeline already has
(blob size and shape, fur and ears around it, sharpness, contrast and edge directions of the patch,
agreement with its mirror image and with the other eye; see `EyeCues`), gated by how eye-like the
patch's edges are. A segmentation network trained on one renderer happily marks the
corners of a drawn rectangle as eyes; such a candidate passes every size and context rule, but it
does not look like an eye on several cues at once. Eyes below `min_confidence` are abstained on:
reported, not scored. The weights were fitted on the validation set (docs/confidence.md).

An eye model with the eye verifier (a second output, models/eye_regressor.py) also says how
likely each candidate is a real eye at all. The segmenter's eye class lights up on noses, dark fur
and vent holes too; so up to `max_candidates_per_box` blobs per box go to the regressor, those the
verifier rejects (`min_eyeness`) are dropped as not eyes, and the `max_eyes_per_box` most eye-like
of the rest are kept. Without a verifier the largest blobs are kept, as before.

The context rule leans on the segmenter's animal class, and on racks unlike the training renders
that class misses fur more often than the eye class misses eyes: a real eye then sits in "too
little animal". So a blob with less animal around it than `min_context_fraction` (but at least
`low_context_fraction`) is not dropped outright; it needs the verifier's stronger word
(`low_context_eyeness`). Without a verifier such blobs are dropped, as before.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, ClassVar

import cv2
import numpy as np

from device.inference import ModelRunner
from device.results import EyeCues, EyeScore
from mgs_core.tomlconfig import Range, fail

PATCH_SIZE = 50
SCORE_MIN, SCORE_MAX = 0.0, 9.0
ANIMAL, EARS, EYES = 1, 2, 3
# Ears are looked for within this many times `context_px` of an eye blob.
EARS_REACH = 4.0
# Output column of the eye verifier's logit (models.eye_regressor.VERIFIER_COLUMN; the device
# does not import the torch side, a test keeps the two equal).
VERIFIER_COLUMN = 1


@dataclass
class EyeConfig:
    """`[eyes]`: which class-3 blobs count as eyes and which eyes are good enough to score."""

    SECTION: ClassVar[str] = "pipeline.eyes"

    min_area_px: Annotated[int, Range(1)] = field(
        default=26,
        metadata={
            "doc": "smallest eye blob in full-resolution pixels (an eye is about 15-25 px across at 1080p); chosen on the synthetic validation set for precision and recall >= 0.95"
        },
    )
    max_area_px: int = field(default=2500, metadata={"doc": "largest eye blob in full-resolution pixels"})
    max_aspect: Annotated[float, Range(1)] = field(
        default=20.0,
        metadata={
            "doc": "longest / shortest side of a blob's bounding box; a tight eye (score 9) is a 2-px slit, so keep this generous"
        },
    )
    context_px: Annotated[int, Range(0)] = field(
        default=12, metadata={"doc": "an eye needs animal or ear pixels within this many pixels of its blob"}
    )
    min_context_fraction: Annotated[float, Range(0, 1)] = field(
        default=0.65,
        metadata={
            "doc": "share of the non-eye pixels within context_px of a blob that must be animal or ears for the verifier's ordinary word (min_eyeness) to keep it: a dark round hole in the box (lid vents) has none around it, an eye sits in fur"
        },
    )
    low_context_fraction: Annotated[float, Range(0, 1)] = field(
        default=0.35,
        metadata={
            "doc": "a blob with less animal around it than min_context_fraction but at least this share (when lower) is still a candidate, kept only if the eye model's verifier rates it at least low_context_eyeness (without a verifier: dropped); on racks unlike the training ones the segmenter misses fur more often than eyes; chosen on the choice sets (docs/generalisation.md)"
        },
    )
    low_context_eyeness: Annotated[float, Range(0, 1)] = field(
        default=0.85,
        metadata={
            "doc": "the eyeness (0-1) a blob with less than min_context_fraction animal around it needs to be kept"
        },
    )
    min_sharpness: Annotated[float, Range(0)] = field(
        default=15.0,
        metadata={"doc": "variance of the Laplacian of the eye patch below which the eye counts as blurred"},
    )
    max_eyes_per_box: Annotated[int, Range(1)] = field(
        default=2,
        metadata={
            "doc": "keep at most this many eyes per box (most eye-like first, by the eye model's verifier; largest first without one): one mouse per box has two eyes"
        },
    )
    max_candidates_per_box: Annotated[int, Range(1)] = field(
        default=4,
        metadata={
            "doc": "eye blobs per box (largest first) handed to the eye model, which keeps max_eyes_per_box of them; more finds an eye behind a nose or spot the segmenter also marked, at more regressor time"
        },
    )
    min_eyeness: Annotated[float, Range(0, 1)] = field(
        default=0.35,
        metadata={
            "doc": "an eye model with a verifier rates every blob 0-1 for being a real eye; below this it is no eye: neither scored nor counted as not scorable; 0 keeps every blob; chosen on the synthetic validation set for the eye model before the shipped one and kept for it (docs/confidence.md)"
        },
    )
    min_delta_e: Annotated[float, Range(0, 100)] = field(
        default=0.0,
        metadata={
            "doc": "an eye whose pixels the picture shows less apart from the fur around them than this (CIELAB delta E, the larger of the mean colour's and the most distinct pixels' difference; about 2 is just noticeable) is reported as not scorable instead of scored: a washed-out or smeared eye the segmenter placed from the head around it gets a guess for a score; 0 = never (docs/confidence.md)"
        },
    )
    min_confidence: Annotated[float, Range(0, 1)] = field(
        default=0.4,
        metadata={
            "doc": "eyes whose confidence (0-1) is below this are reported as not scorable instead of scored; 0 scores every eye that passes the other checks; chosen for the shipped eye model on synthetic frames of the hardest preset, to score as many eyes as the models before it (docs/confidence.md)"
        },
    )

    def check(self) -> None:
        if self.max_area_px <= self.min_area_px:
            raise fail("max_area_px", self.max_area_px, f"must be larger than min_area_px ({self.min_area_px})")
        if self.max_candidates_per_box < self.max_eyes_per_box:
            raise fail(
                "max_candidates_per_box",
                self.max_candidates_per_box,
                f"must be at least max_eyes_per_box ({self.max_eyes_per_box})",
            )


@dataclass(frozen=True)
class EyeBlob:
    """An eye candidate in full-frame pixels, before scoring."""

    x: float
    y: float
    area_px: int
    touches_border: bool
    fill: float = 1.0
    context: float = 1.0
    ears_near: bool = True
    width_px: float = 0.0  # longest side of the blob's bounding box: the eye's width, open or shut
    delta_e: float | None = None  # how far the image shows it apart from the fur around it (`EyeContrast`)


def map_to_frame(u, v, origin: tuple[float, float], scale: tuple[float, float]) -> tuple:
    """Class-map pixel centres (u, v; scalars or arrays) -> full-frame pixel coordinates, for a map
    whose pixel (0, 0) covers frame pixels from `origin`, `scale` frame pixels per map pixel."""
    return origin[0] + (u + 0.5) * scale[0] - 0.5, origin[1] + (v + 0.5) * scale[1] - 0.5


def find_eye_blobs(
    classes: np.ndarray,
    config: EyeConfig,
    origin: tuple[float, float] = (0.0, 0.0),
    scale: tuple[float, float] = (1.0, 1.0),
    valid: tuple[int, int, int, int] | None = None,
    image: np.ndarray | None = None,
) -> list[EyeBlob]:
    """Eye blobs of one class map, in full-frame pixels.

    `classes` is [H, W] uint8 (0 background, 1 animal, 2 ears, 3 eyes); map pixel (u, v) is frame
    pixel (origin_x + u * scale_x, origin_y + v * scale_y). `valid` = (x0, y0, x1, y1) in map pixels
    is the part of the map that shows real image (padding excluded); a blob touching its edge is cut.
    `image` is the BGR picture the map was computed from (same grid): with it, and with the gate on
    (`min_delta_e` > 0; it costs about 0.3 ms a box), every blob gets its `delta_e`, how distinct its
    pixels are from the fur around them.
    """
    h, w = classes.shape
    x0, y0, x1, y1 = valid if valid is not None else (0, 0, w, h)
    sx, sy = scale
    pixel_area = sx * sy
    eye_mask = (classes == EYES).view(np.uint8)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(eye_mask, connectivity=8)
    blobs: list[EyeBlob] = []
    margin = config.context_px / max(sx, sy)
    shown = image if config.min_delta_e > 0 else None
    for i in range(1, n):
        bx, by, bw, bh, area = (int(v) for v in stats[i])
        rejected, context = blob_rejection(classes, stats[i], config, scale)
        if rejected is not None or context is None:
            continue
        full_area = area * pixel_area
        cu, cv = centroids[i]
        touches = bx <= x0 or by <= y0 or bx + bw >= x1 or by + bh >= y1
        ears = _ears_near(classes, bx, by, bw, bh, EARS_REACH * margin)
        x, y = map_to_frame(cu, cv, origin, scale)
        contrast = None if shown is None else blob_contrast(shown, labels, i, stats[i], eye_mask)
        blobs.append(
            EyeBlob(
                x,
                y,
                int(round(full_area)),
                touches,
                fill=area / (bw * bh),
                context=context,
                ears_near=ears,
                width_px=blob_width(bw, bh, scale),
                delta_e=None if contrast is None else round(contrast.shown, 2),
            )
        )
    blobs.sort(key=lambda b: -b.area_px)
    return blobs[: config.max_candidates_per_box]


@dataclass(frozen=True)
class EyeContrast:
    """How far an eye's pixels stand apart from the fur just around them, in CIELAB delta E (1976).

    `mean`: the eye pixels' mean colour against the fur's (a dark eye in pale fur, a pink eye in dark
    fur); `peak`: how far the eye's most distinct pixels (95th percentile) stand out beyond the fur's
    own spread (its 95th percentile): the highlight or rim of a black eye in black fur, which a mean
    over the dark iris misses, without taking sensor noise for an eye. About 2 is just noticeable
    between two large flat patches; a washed-out or smeared eye a few pixels across measures a few
    units at most: the picture does not show it, and a score given to it is a guess.
    """

    mean: float
    peak: float

    @property
    def shown(self) -> float:
        return max(self.mean, self.peak)


# The fur ring starts this many px outside the eye's pixels (their anti-aliased edge mixes both
# colours) and reaches a quarter of the eye's width further, at least 2 px.
RING_GAP_PX = 1
CONTRAST_PERCENTILE = 95


def ring_reach(width: float) -> int:
    """How far (px) the fur ring around an eye `width` px wide reaches beyond its pixels."""
    return RING_GAP_PX + max(2, round(width / 4))


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def eye_ring_contrast(image: np.ndarray, eye: np.ndarray, other_eyes: np.ndarray, width: float) -> EyeContrast | None:
    """`EyeContrast` of the eye pixels `eye` (bool, the image's grid) against a ring around them that
    leaves out `other_eyes` pixels; None when the ring is empty (nothing around the eye to compare)."""
    pixels = eye.view(np.uint8)
    ring = cv2.dilate(pixels, _disc(ring_reach(width))).astype(bool) & ~cv2.dilate(pixels, _disc(RING_GAP_PX)).astype(
        bool
    )
    ring &= ~other_eyes
    if not ring.any() or not eye.any():
        return None
    lab = cv2.cvtColor(image.astype(np.float32) * np.float32(1.0 / 255.0), cv2.COLOR_BGR2LAB)
    fur = lab[ring].mean(axis=0)
    eye_de = np.linalg.norm(lab[eye] - fur, axis=1)
    ring_de = np.linalg.norm(lab[ring] - fur, axis=1)
    return EyeContrast(
        mean=float(np.linalg.norm(lab[eye].mean(axis=0) - fur)),
        peak=float(np.percentile(eye_de, CONTRAST_PERCENTILE) - np.percentile(ring_de, CONTRAST_PERCENTILE)),
    )


def blob_contrast(
    image: np.ndarray, labels: np.ndarray, label: int, component: np.ndarray, eye_mask: np.ndarray
) -> EyeContrast | None:
    """`eye_ring_contrast` of one connected component (`labels == label`, cv2 stats row `component`),
    measured in a window just large enough for its ring."""
    bx, by, bw, bh, _ = (int(v) for v in component)
    reach = ring_reach(max(bw, bh)) + 1
    x0, y0 = max(bx - reach, 0), max(by - reach, 0)
    x1, y1 = min(bx + bw + reach, labels.shape[1]), min(by + bh + reach, labels.shape[0])
    return eye_ring_contrast(
        image[y0:y1, x0:x1], labels[y0:y1, x0:x1] == label, eye_mask[y0:y1, x0:x1].astype(bool), max(bw, bh)
    )


def blob_rejection(
    classes: np.ndarray, component: np.ndarray, config: EyeConfig, scale: tuple[float, float] = (1.0, 1.0)
) -> tuple[str | None, float | None]:
    """Why `find_eye_blobs` drops an eye-class component (its cv2 stats row: x, y, w, h, area in map
    pixels), None when it is a candidate; and the share of animal around it, where that was measured."""
    bx, by, bw, bh, area = (int(v) for v in component)
    sx, sy = scale
    full_area = area * sx * sy
    if full_area < config.min_area_px:
        return "too small", None
    if full_area > config.max_area_px:
        return "too large", None
    if max(bw * sx, bh * sy) > config.max_aspect * max(1.0, min(bw * sx, bh * sy)):
        return "too long", None
    context = _context_fraction(classes, bx, by, bw, bh, config.context_px / max(sx, sy))
    if context is None or context < min(config.low_context_fraction, config.min_context_fraction):
        return "too little animal around", context
    return None, context


def blob_width(bw: int, bh: int, scale: tuple[float, float] = (1.0, 1.0)) -> float:
    """An eye's width from its blob's bounding box (map pixels): the longest side in frame pixels,
    the eye's width whether it is open or shut. Training measures labelled eyes with it too."""
    return float(max(bw * scale[0], bh * scale[1]))


def _window(classes: np.ndarray, bx: int, by: int, bw: int, bh: int, margin: float) -> np.ndarray:
    m = int(np.ceil(margin))
    return classes[max(0, by - m) : by + bh + m, max(0, bx - m) : bx + bw + m]


def _context_fraction(classes: np.ndarray, bx: int, by: int, bw: int, bh: int, margin: float) -> float | None:
    """Share of animal or ear pixels around the blob (None: none at all); an eye floating in the background is a false positive."""
    window = _window(classes, bx, by, bw, bh, margin)
    head = int(np.count_nonzero((window == ANIMAL) | (window == EARS)))
    around = int(np.count_nonzero(window != EYES))
    return head / around if head else None


def _ears_near(classes: np.ndarray, bx: int, by: int, bw: int, bh: int, margin: float) -> bool:
    """Ear pixels within a head's reach: a real eye has an ear a few eye-widths away."""
    return bool(np.any(_window(classes, bx, by, bw, bh, margin) == EARS))


def animal_found(classes: np.ndarray, min_pixels: int = 1) -> bool:
    return int(np.count_nonzero(classes == ANIMAL)) >= min_pixels


def crop_patches(
    frame: np.ndarray,
    centres: Sequence[tuple[float, float]],
    size: int = PATCH_SIZE,
    zooms: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """size x size patches centred on each (x, y) of the full frame, edge-padded where they leave it.

    With `zooms` (patch pixels per frame pixel, one per centre), each patch is the frame window of
    side size / zoom resized to size x size: what a scale-normalised eye model sees (`patch_zooms`).
    Returns (patches [N, size, size, 3] uint8, clipped [N] bool: the patch needed padding).
    """
    patches = np.empty((len(centres), size, size, frame.shape[2]), dtype=frame.dtype)
    clipped = np.zeros(len(centres), dtype=bool)
    for i, (cx, cy) in enumerate(centres):
        side = size if zooms is None else max(1, int(round(size / zooms[i])))
        window, clipped[i] = _cut(frame, cx, cy, side)
        if side != size:
            shrink = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
            window = cv2.resize(window, (size, size), interpolation=shrink)
        patches[i] = window
    return patches, clipped


def _cut(frame: np.ndarray, cx: float, cy: float, side: int) -> tuple[np.ndarray, bool]:
    """The side x side window of the frame centred on (cx, cy), edge-padded; and whether it needed padding."""
    h, w = frame.shape[:2]
    x0 = int(round(cx)) - side // 2
    y0 = int(round(cy)) - side // 2
    x1, y1 = x0 + side, y0 + side
    if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
        return frame[y0:y1, x0:x1], False
    rows = np.clip(np.arange(y0, y1), 0, h - 1)
    cols = np.clip(np.arange(x0, x1), 0, w - 1)
    return frame[rows[:, None], cols[None, :]], True


#: A scale-normalised eye model sees an eye of any size at its `eye_width`, within these zooms:
#: beyond them the blob is more likely a part of an eye or something else than a tiny or huge eye.
ZOOM_RANGE = (0.5, 2.0)


def patch_zoom(width_px: float, eye_width: float) -> float:
    """The zoom that makes an eye `width_px` wide in the frame `eye_width` wide in its patch."""
    return float(np.clip(eye_width / max(width_px, 1.0), *ZOOM_RANGE))


def patch_zooms(widths_px: Sequence[float], eye_width: float) -> list[float] | None:
    """`patch_zoom` per eye; None (fixed 50x50 crops) for an eye model trained without scale
    normalisation (eye_width 0)."""
    if eye_width <= 0:
        return None
    return [patch_zoom(w, eye_width) for w in widths_px]


def sharpness(patch: np.ndarray) -> float:
    """Variance of the Laplacian of the grey patch: the usual blur measure (low = blurred)."""
    grey = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY) if patch.ndim == 3 else patch
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def patches_to_batch(patches: np.ndarray) -> np.ndarray:
    """[N, 50, 50, 3] uint8 BGR -> the regressor's "patch" input, float32 [N, 3, 50, 50] in [0, 1]."""
    return np.ascontiguousarray(patches.transpose(0, 3, 1, 2), dtype=np.float32) * np.float32(1.0 / 255.0)


def _grey(patch: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY) if patch.ndim == 3 else patch


@functools.lru_cache(maxsize=4)
def _centre_distance(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return np.hypot(xx - (w - 1) / 2, yy - (h - 1) / 2)


def eye_contrast(patch: np.ndarray, area_px: float) -> float:
    """Mean grey of a ring around the patch centre minus the centre (the eye), in grey levels / 255.

    Signed: how an eye differs from the fur around it depends on fur, eye colour and light, so the
    confidence fit decides what the sign means.
    """
    grey = _grey(patch)
    h, w = grey.shape
    radius = float(np.clip(np.sqrt(area_px / np.pi), 2.0, min(h, w) / 5))
    dist = _centre_distance(h, w)
    inner = grey[dist <= 0.7 * radius]
    ring = grey[(dist >= 1.6 * radius) & (dist <= 2.5 * radius)]
    return float(ring.mean() - inner.mean()) / 255.0


ORIENTATION_BINS = 12


def orientation_spread(patch: np.ndarray) -> float:
    """Entropy (0-1) of the patch's gradient directions, weighted by gradient strength.

    An eye in fur has edges in every direction (near 1); straight man-made edges (a drawn
    rectangle's corner, a cage bar, a label) put the gradient into one or two directions. This
    holds for any renderer and any camera, unlike the colours of one generator's mice.
    """
    grey = _grey(patch).astype(np.float32)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    angle = np.mod(np.arctan2(gy, gx), np.pi)
    bins = np.minimum((angle * (ORIENTATION_BINS / np.pi)).astype(np.int64), ORIENTATION_BINS - 1)
    hist = np.bincount(bins.ravel(), weights=np.hypot(gx, gy).ravel(), minlength=ORIENTATION_BINS)
    if hist.sum() <= 0:
        return 0.0
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log(p)).sum() / np.log(ORIENTATION_BINS))


CUE_NAMES = (
    "log_area",
    "log_area_sq",
    "fill",
    "context",
    "ears_near",
    "log_sharpness",
    "log_sharpness_sq",
    "contrast",
    "orientation_spread",
    "flip_gap",
    "pair_gap",
)


def cue_vector(cues: EyeCues) -> np.ndarray:
    """The cues as the model's features (in CUE_NAMES order); squares let size and sharpness be too large as well as too small."""
    la = float(np.log(max(cues.area_px, 1)))
    ls = float(np.log1p(max(cues.sharpness, 0.0)))
    return np.array(
        [
            la,
            la * la,
            cues.fill,
            cues.context,
            float(cues.ears_near),
            ls,
            ls * ls,
            cues.contrast,
            cues.orientation_spread,
            cues.flip_gap,
            cues.pair_gap,
        ]
    )


def sigmoid(z: np.ndarray | float) -> np.ndarray:
    """Logistic function, clipped so a wild logit cannot overflow exp."""
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))


@dataclass(frozen=True)
class ConfidenceModel:
    """P(real eye, scored within tolerance | cues): a logistic regression, gated by how eye-like the patch is.

    The logistic part is fitted on candidates of the validation set, which holds few wrong ones
    and none unlike anything the generator draws; on a patch outside everything it saw, a linear
    model extrapolates blindly. So the confidence is also scaled down linearly from 1 at
    `spread_full` (a low percentile of the good eyes' orientation spread on the validation set)
    to 0 at `spread_zero`: a patch whose edges are not eye-like is not scored, however the other
    cues look.
    """

    weights: tuple[float, ...]
    bias: float
    spread_full: float
    spread_zero: float

    def __call__(self, cues: EyeCues) -> float:
        z = self.bias + float(np.dot(self.weights, cue_vector(cues)))
        likely = sigmoid(z)
        eye_like = np.clip(
            (cues.orientation_spread - self.spread_zero) / (self.spread_full - self.spread_zero), 0.0, 1.0
        )
        return float(likely * eye_like)


# Fitted by scripts/fit_confidence.py on the validation set (docs/confidence.md).
SHIPPED_CONFIDENCE = ConfidenceModel(
    weights=(2.58773, -0.1941, 0.60537, 5.04083, 6.56931, 0.52313, -0.01916, 0.20125, 2.75985, -12.21423, -4.05058),
    bias=-22.11158,
    spread_full=0.831,
    spread_zero=0.681,
)


@dataclass(frozen=True)
class PatchScores:
    """What the eye model says of each patch: its score, its mirror image's, and the verifier's view."""

    own: np.ndarray  # [N] clipped to 0-9
    mirrored: np.ndarray  # [N] clipped to 0-9
    eyeness: np.ndarray | None  # [N] 0-1, P(real eye) from both views; None: the model has no verifier

    @property
    def scores(self) -> np.ndarray:
        return (self.own + self.mirrored) / 2


def score_patches(regressor: ModelRunner, patches: np.ndarray) -> PatchScores:
    """Each patch and its mirror image through the eye model in ONE call.

    A left eye mirrored is a right eye, so both are fair views of the same eye: the published
    score is their mean (on the randomised validation eyes of issue 10 this took the wide
    regressor's MAE from 1.27 to 1.21 at no cost, the mirrored half was already computed for the
    confidence), and their difference is a confidence cue. The verifier's logits of both views are
    averaged the same way.
    """
    batch = patches_to_batch(patches)
    out = np.asarray(regressor(np.concatenate([batch, batch[:, :, :, ::-1]])), dtype=np.float32).reshape(
        2 * len(patches), -1
    )
    n = len(patches)
    both = np.clip(np.nan_to_num(out[:, 0], nan=SCORE_MIN), SCORE_MIN, SCORE_MAX)
    eyeness = None
    if out.shape[1] > VERIFIER_COLUMN:
        logit = np.nan_to_num((out[:n, VERIFIER_COLUMN] + out[n:, VERIFIER_COLUMN]) / 2, nan=-50.0)
        eyeness = sigmoid(logit)
    return PatchScores(both[:n], both[n:], eyeness)


def select_eyes(
    blobs: Sequence[EyeBlob], eyeness: np.ndarray | None, groups: Sequence[int], config: EyeConfig
) -> list[int]:
    """Indices of the blobs kept as eyes: per group (box), those the verifier accepts (a blob with
    little animal around it needs `low_context_eyeness`), most eye-like first (without a verifier:
    only blobs with `min_context_fraction` animal around them, largest first), at most
    `max_eyes_per_box`; in input order."""
    kept: list[int] = []
    for group in dict.fromkeys(groups):
        members = [i for i, g in enumerate(groups) if g == group]
        if eyeness is None:
            members = [i for i in members if in_fur(blobs[i], config)]
            members.sort(key=lambda i: -blobs[i].area_px)
        else:
            members = [i for i in members if eyeness[i] >= _eyeness_needed(blobs[i], config)]
            members.sort(key=lambda i: -float(eyeness[i]))
        kept += members[: config.max_eyes_per_box]
    return sorted(kept)


def in_fur(blob: EyeBlob, config: EyeConfig) -> bool:
    """Whether the blob has `min_context_fraction` animal around it; a blob below that (a fur the
    segmenter does not know, or a hole in the box wall) is a candidate only on the verifier's word."""
    return blob.context >= config.min_context_fraction


def _eyeness_needed(blob: EyeBlob, config: EyeConfig) -> float:
    return config.min_eyeness if in_fur(blob, config) else config.low_context_eyeness


def score_blobs(
    frame: np.ndarray,
    blobs: Sequence[EyeBlob],
    regressor: ModelRunner,
    config: EyeConfig,
    groups: Sequence[int] | None = None,
    model: ConfidenceModel = SHIPPED_CONFIDENCE,
    eye_width: float = 0.0,
) -> list[EyeScore | None]:
    """Crop, score and verify every blob in ONE regressor call (batching is the cheap part), keep the
    eyes (`select_eyes`), then quality-check and judge those.

    Each eye's score is the mean of its patch and the patch's mirror image (`score_patches`).
    `groups` gives each blob's box (all one box when None): the two eyes of one box should agree.
    `eye_width` > 0 (the eye model's `Models.eye_width`) cuts each patch so the blob's width is
    that many patch pixels (`patch_zooms`). Returns one entry per blob, None where it was not kept as an eye.
    """
    if not blobs:
        return []
    zooms = patch_zooms([b.width_px for b in blobs], eye_width)
    patches, clipped = crop_patches(frame, [(b.x, b.y) for b in blobs], zooms=zooms)
    scored = score_patches(regressor, patches)
    own, mirrored, scores = scored.own, scored.mirrored, scored.scores
    groups = list(groups) if groups is not None else [0] * len(blobs)
    kept = select_eyes(blobs, scored.eyeness, groups, config)
    out: list[EyeScore | None] = [None] * len(blobs)
    for i in kept:
        blob, patch, clip, score = blobs[i], patches[i], clipped[i], scores[i]
        patch_area = blob.area_px * (1.0 if zooms is None else zooms[i] ** 2)
        # Blur is judged at the camera's own scale: an enlarged small eye is soft but not blurred.
        sharp = sharpness(patch if zooms is None else _cut(frame, blob.x, blob.y, PATCH_SIZE)[0])
        others = [float(scores[j]) for j in kept if j != i and groups[j] == groups[i]]
        cues = EyeCues(
            area_px=blob.area_px,
            fill=round(blob.fill, 4),
            context=round(blob.context, 4),
            ears_near=blob.ears_near,
            sharpness=round(sharp, 2),
            contrast=round(eye_contrast(patch, patch_area), 4),
            orientation_spread=round(orientation_spread(patch), 4),
            flip_gap=round(abs(float(own[i]) - float(mirrored[i])) / SCORE_MAX, 4),
            pair_gap=round(min(abs(float(score) - o) for o in others) / SCORE_MAX, 4) if others else 0.0,
            eyeness=None if scored.eyeness is None else round(float(scored.eyeness[i]), 4),
            delta_e=blob.delta_e,
        )
        # An eye the picture does not show apart from its fur was placed by the head around it: its
        # score is a guess, so it gets no confidence at all.
        unseen = blob.delta_e is not None and blob.delta_e < config.min_delta_e
        confidence = 0.0 if unseen else model(cues)
        quality = not blob.touches_border and not clip and sharp >= config.min_sharpness
        abstained = quality and (confidence < config.min_confidence or unseen)
        out[i] = EyeScore(
            x=float(blob.x),
            y=float(blob.y),
            score=float(score),
            quality_ok=quality and not abstained,
            area_px=blob.area_px,
            sharpness=cues.sharpness,
            confidence=round(confidence, 4),
            abstained=abstained,
            cues=cues,
        )
    return out
