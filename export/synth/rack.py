"""A whole synthetic rack frame with its ground truth: four boxes, one mouse each.

`render_frame(seed)` is the one-call entry point (training data, tests); `Renderer` keeps the
static scene of one camera placement and renders frames from explicit animals and nuisance, which
is what the video writer needs for smooth motion. The truth records are exactly the dataset
format's label records (`export.dataset.Eye` / `Box`), so a rendered frame is written as-is.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from export.dataset import Box, Eye, label_point
from export.synth.layout import RackLayout
from export.synth.mouse import FURS, Animal, MousePose, draw_animal, shrink_to_fit
from export.synth.nuisance import Nuisance, apply_box, apply_frame, fur_texture, random_nuisance
from export.synth.randomise import Randomisation, frame_style, styled_animal, styled_layout
from export.synth.scenery import scene

EyeTruth = Eye
BoxTruth = Box
SESSION_FRAMES = 64  # consecutive seeds share a camera placement (and its cached background)
# Randomised sessions are short: the camera placement carries most of the families (layout, light,
# backdrop, bedding, walls), and a training set must see many of them, not a few dozen.
STYLED_SESSION_FRAMES = 8
EYE_WIDTH_PX = (15.0, 30.0)
FUR_WEIGHTS = {"black": 0.7, "white": 0.15, "agouti": 0.15}


@dataclass(frozen=True)
class SynthFrame:
    image: np.ndarray  # H x W x 3 BGR uint8
    mask: np.ndarray  # H x W uint8: 0 background, 1 animal, 2 ears, 3 eyes
    boxes: tuple[Box, ...]
    animal_scores: tuple[float | None, ...] = ()  # true score per box; None for an empty box
    conditions: dict = field(default_factory=dict)  # what the frame was rendered under (randomised frames)


def random_pose(rng: np.random.Generator, away: bool) -> MousePose:
    yaw = -math.pi / 2 + rng.uniform(-0.8, 0.8) if away else rng.uniform(-0.25, math.pi + 0.25)
    return MousePose(
        x=0.0,
        y=0.0,
        eye_width=float(rng.uniform(*EYE_WIDTH_PX)),
        head_scale=float(rng.uniform(3.0, 3.4)),
        yaw=float(yaw),
        pitch=float(rng.uniform(-0.3, 0.3)),
        roll=float(rng.uniform(-0.4, 0.4)),
        body_yaw=float(rng.uniform(-0.6, 0.6)),
        tail_bend=float(rng.uniform(-1.0, 1.0)),
    )


def place(pose: MousePose, layout: RackLayout, box: int, rng: np.random.Generator) -> MousePose:
    """Fit the pose into the box, shrinking a too-large animal a little until it fits."""
    _, _, w, h = layout.rois[box]
    return shrink_to_fit(
        pose,
        w,
        h,
        layout.interior(box),
        rng,
        tries=12,
        shrink=0.93,
        min_eye_width=EYE_WIDTH_PX[0] * 0.9,
        last_eye_width=EYE_WIDTH_PX[0],
        keep_unfitted=True,
    )


def random_animal(
    rng: np.random.Generator, layout: RackLayout, box: int, score: float, fur: str | None = None
) -> Animal | None:
    """A random mouse for one box; about 3 % of boxes are empty and 12 % of faces turned away."""
    if rng.random() < 0.03:
        return None
    names = list(FUR_WEIGHTS)
    name = fur or str(rng.choice(names, p=list(FUR_WEIGHTS.values())))
    pose = place(random_pose(rng, away=rng.random() < 0.12), layout, box, rng)
    return Animal(FURS[name], pose, float(score), blink=bool(rng.random() < 0.03), tone=float(rng.uniform(0.85, 1.2)))


@contextmanager
def one_opencv_thread() -> Iterator[None]:
    """Render with OpenCV on one thread, the caller's setting restored after. Some of its filters round
    differently with another thread count (1-2 grey levels on about 0.01 % of the pixels; its default
    is one thread per core), so a seed renders the same pixels whatever the machine's core count only
    with a fixed count: one, what every recorded set was rendered with."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


class Renderer:
    """Renders frames of one camera placement; the static scene is built once."""

    def __init__(self, layout: RackLayout) -> None:
        self.layout = layout
        self.scene = scene(layout)
        self.texture = fur_texture()

    def render(
        self,
        animals: Sequence[Animal | None],
        nuisance: Nuisance,
        rng: np.random.Generator,
        box_conditions: Sequence[dict] = (),
    ) -> SynthFrame:
        img = self.scene.background.copy()
        mask = np.zeros(img.shape[:2], np.uint8)
        boxes = []
        for i, (x, y, w, h) in enumerate(self.layout.rois):
            view, mview = img[y : y + h, x : x + w], mask[y : y + h, x : x + w]
            animal = animals[i] if i < len(animals) else None
            rect = None
            eyes: list[Eye] = []
            if animal is not None:
                light = float(self.scene.light[int(y + animal.pose.y), int(x + animal.pose.x)])
                drawn, rect = draw_animal(view, mview, replace(animal, tone=animal.tone * light), self.texture, rng)
                score = None if animal.blink else round(float(animal.score), 2)
                eyes = [Eye(round(e.x + x, 2), round(e.y + y, 2), score, True) for e in drawn if e.visible]
            cv2.add(view, self.scene.glare[i], dst=view)
            if self.scene.front:
                eyes = _lay_front(view, mview, self.scene.front[i], eyes, x, y)
            if i < len(nuisance.boxes):
                apply_box(view, rect, nuisance.boxes[i])
            boxes.append(
                Box(
                    i,
                    (x, y, w, h),
                    any(e.visible for e in eyes),
                    tuple(eyes),
                    dict(box_conditions[i]) if i < len(box_conditions) else {},
                )
            )
        scores = tuple(
            None if a is None else float(a.score) for a in (list(animals) + [None] * 4)[: len(self.layout.rois)]
        )
        if self.layout.pad or self.layout.style is not None:
            img, mask, boxes, scores = _to_frame(self.layout, img, mask, boxes, scores)
        apply_frame(img, nuisance, rng)
        return SynthFrame(img, mask, tuple(boxes), scores)


def _lay_front(view: np.ndarray, mview: np.ndarray, items, eyes: list[Eye], x: int, y: int) -> list[Eye]:
    """Lay cage cards, bottles and hoppers over the box; what they cover is no animal, and a covered eye is hidden."""
    for x0, y0, pic, alpha in items:
        h, w = alpha.shape
        sub, msub = view[y0 : y0 + h, x0 : x0 + w], mview[y0 : y0 + h, x0 : x0 + w]
        a = alpha[..., None].astype(np.float32) / 255.0
        sub[:] = (sub * (1.0 - a) + pic * a).astype(np.uint8)
        msub[alpha > 127] = 0
        eyes = [
            replace(e, visible=False)
            if 0 <= e.x - x - x0 < w and 0 <= e.y - y - y0 < h and alpha[int(e.y - y - y0), int(e.x - x - x0)] > 127
            else e
            for e in eyes
        ]
    return eyes


MIN_FRAME_BOX_PX = 60  # a box less wide or high than this in the frame is dropped from the labels


def _to_frame(layout: RackLayout, img: np.ndarray, mask: np.ndarray, boxes: list[Box], scores: tuple):
    """Canvas -> camera frame (crop, or tilt and perspective), and the truth with it: ROIs become the
    boxes' bounding rectangles inside the frame, eyes outside the frame or their box are dropped,
    boxes too small in the frame are dropped and the rest numbered again from the left."""
    fw, fh = layout.width, layout.height
    warp = getattr(layout.style, "warp", None)
    if warp is None:
        hom = np.array([[1.0, 0.0, -layout.pad], [0.0, 1.0, -layout.pad], [0.0, 0.0, 1.0]])
        img = np.ascontiguousarray(img[layout.pad : layout.pad + fh, layout.pad : layout.pad + fw])
        mask = np.ascontiguousarray(mask[layout.pad : layout.pad + fh, layout.pad : layout.pad + fw])
    else:
        hom = np.array(warp).reshape(3, 3)
        img = cv2.warpPerspective(img, hom, (fw, fh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mask = cv2.warpPerspective(mask, hom, (fw, fh), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)

    def to_frame(points: np.ndarray) -> np.ndarray:
        return cv2.perspectiveTransform(points.reshape(-1, 1, 2).astype(np.float64), hom).reshape(-1, 2)

    out, kept = [], []
    for box, score in zip(boxes, scores):
        x, y, w, h = box.roi
        corners = to_frame(np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float64))
        x0, y0 = max(math.floor(corners[:, 0].min()), 0), max(math.floor(corners[:, 1].min()), 0)
        x1, y1 = min(math.ceil(corners[:, 0].max()), fw), min(math.ceil(corners[:, 1].max()), fh)
        if x1 - x0 < MIN_FRAME_BOX_PX or y1 - y0 < MIN_FRAME_BOX_PX:
            continue
        eyes = []
        for e in box.eyes:
            at = label_point(*to_frame(np.array([[e.x, e.y]]))[0], (x0, y0, x1, y1))
            if at is not None:
                eyes.append(replace(e, x=at[0], y=at[1]))
        conditions = dict(box.conditions)
        if conditions:  # cut: a corner of the box lies outside the frame (after tilt and perspective)
            conditions["box_cut"] = bool(
                (corners < 0).any() or (corners[:, 0] > fw).any() or (corners[:, 1] > fh).any()
            )
        out.append(Box(len(out), (x0, y0, x1 - x0, y1 - y0), any(e.visible for e in eyes), tuple(eyes), conditions))
        kept.append(score)
    return img, mask, out, tuple(kept)


_renderers: dict[RackLayout, Renderer] = {}


def renderer_for(layout: RackLayout) -> Renderer:
    if layout not in _renderers:
        if len(_renderers) >= 4:
            _renderers.pop(next(iter(_renderers)))
        _renderers[layout] = Renderer(layout)
    return _renderers[layout]


def render_frame(
    seed: int,
    scores: Sequence[float | None] | None = None,
    layout: RackLayout | None = None,
    furs: Sequence[str | None] | None = None,
    randomise: Randomisation | None = None,
) -> SynthFrame:
    """One random rack frame, identical for the same arguments.

    scores: per box (None entries, or scores=None, draw uniformly over 0-9 so training data covers
    the scale). layout: None = the camera placement of this seed's session
    (`RackLayout.random(seed // SESSION_FRAMES)`, or `randomise.styled_layout` when randomised), so
    consecutive seeds share a background. furs: per box, a name of `mouse.FURS` or None (random).
    randomise: None or preset "none" = the original generator; otherwise the domain randomisation of
    export/synth/randomise.py, and the frame and its boxes carry the conditions they were drawn under.
    """
    styled = randomise is not None and randomise.active
    if layout is None:
        layout = (
            styled_layout(seed // STYLED_SESSION_FRAMES, randomise)
            if styled
            else RackLayout.random(seed // SESSION_FRAMES)
        )
    elif styled and layout.style is None:
        raise ValueError("a randomised frame needs a randomised layout (randomise.styled_layout) or layout=None")
    rng = np.random.default_rng([int(seed), 0xF7A3E] + ([0xD0] if styled else []))
    n = len(layout.rois)
    style = frame_style(rng, randomise, layout) if styled else None
    animals, box_conditions = [], []
    for i in range(n):
        s = scores[i] if scores is not None and i < len(scores) else None
        s = float(rng.uniform(0.0, 9.0)) if s is None else float(s)
        if not 0.0 <= s <= 9.0:
            raise ValueError(f"score {s} for box {i} is outside the orbital-tightening scale 0-9")
        fur = furs[i] if furs is not None and i < len(furs) else None
        if fur is not None and fur not in FURS:
            raise ValueError(f"unknown fur {fur!r} for box {i}; choose from {', '.join(FURS)}")
        if style is None:
            animals.append(random_animal(rng, layout, i, s, fur))
        else:
            animal, conditions = styled_animal(rng, randomise, layout, i, s, fur, style.empty)
            animals.append(animal)
            box_conditions.append(conditions)
    if style is None:
        return renderer_for(layout).render(animals, random_nuisance(rng, n), rng)
    frame = renderer_for(layout).render(animals, style.nuisance, rng, box_conditions)
    return replace(frame, conditions=dict(style.conditions))
