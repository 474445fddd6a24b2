"""A whole synthetic rack frame with its ground truth: four boxes, one mouse each.

`render_frame(seed)` is the one-call entry point (training data, tests); `Renderer` keeps the
static scene of one camera placement and renders frames from explicit animals and nuisance, which
is what the video writer needs for smooth motion. The truth records are exactly the dataset
format's label records (`export.dataset.Eye` / `Box`), so a rendered frame is written as-is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from export.dataset import Box, Eye
from export.synth.layout import RackLayout, scene
from export.synth.mouse import FURS, Animal, MousePose, draw_animal, fit_pose
from export.synth.nuisance import Nuisance, apply_box, apply_frame, fur_texture, random_nuisance

EyeTruth = Eye
BoxTruth = Box
SESSION_FRAMES = 64  # consecutive seeds share a camera placement (and its cached background)
EYE_WIDTH_PX = (15.0, 30.0)
FUR_WEIGHTS = {"black": 0.7, "white": 0.15, "agouti": 0.15}


@dataclass(frozen=True)
class SynthFrame:
    image: np.ndarray  # H x W x 3 BGR uint8
    mask: np.ndarray  # H x W uint8: 0 background, 1 animal, 2 ears, 3 eyes
    boxes: tuple[Box, ...]
    animal_scores: tuple[float | None, ...] = ()  # true score per box; None for an empty box


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
    margin = layout.interior(box)
    for _ in range(12):
        placed = fit_pose(pose, w, h, margin, rng)
        if placed is not None:
            return placed
        pose = replace(pose, eye_width=max(pose.eye_width * 0.93, EYE_WIDTH_PX[0] * 0.9), body_yaw=pose.body_yaw * 0.7)
    return fit_pose(replace(pose, head_scale=2.6, body_yaw=0.0, eye_width=EYE_WIDTH_PX[0]), w, h, margin, rng) or pose


def random_animal(rng: np.random.Generator, layout: RackLayout, box: int, score: float, fur: str | None = None) -> Animal | None:
    """A random mouse for one box; about 3 % of boxes are empty and 12 % of faces turned away."""
    if rng.random() < 0.03:
        return None
    names = list(FUR_WEIGHTS)
    name = fur or str(rng.choice(names, p=list(FUR_WEIGHTS.values())))
    pose = place(random_pose(rng, away=rng.random() < 0.12), layout, box, rng)
    return Animal(FURS[name], pose, float(score), blink=bool(rng.random() < 0.03), tone=float(rng.uniform(0.85, 1.2)))


class Renderer:
    """Renders frames of one camera placement; the static scene is built once."""

    def __init__(self, layout: RackLayout) -> None:
        self.layout = layout
        self.scene = scene(layout)
        self.texture = fur_texture()

    def render(self, animals: Sequence[Animal | None], nuisance: Nuisance, rng: np.random.Generator) -> SynthFrame:
        img = self.scene.background.copy()
        mask = np.zeros(img.shape[:2], np.uint8)
        boxes = []
        for i, (x, y, w, h) in enumerate(self.layout.rois):
            view, mview = img[y:y + h, x:x + w], mask[y:y + h, x:x + w]
            animal = animals[i] if i < len(animals) else None
            rect = None
            eyes: list[Eye] = []
            if animal is not None:
                light = float(self.scene.light[int(y + animal.pose.y), int(x + animal.pose.x)])
                drawn, rect = draw_animal(view, mview, replace(animal, tone=animal.tone * light), self.texture, rng)
                score = None if animal.blink else round(float(animal.score), 2)
                eyes = [Eye(round(e.x + x, 2), round(e.y + y, 2), score, True) for e in drawn if e.visible]
            cv2.add(view, self.scene.glare[i], dst=view)
            if i < len(nuisance.boxes):
                apply_box(view, rect, nuisance.boxes[i])
            boxes.append(Box(i, (x, y, w, h), bool(eyes), tuple(eyes)))
        apply_frame(img, nuisance, rng)
        scores = tuple(None if a is None else float(a.score) for a in (list(animals) + [None] * 4)[: len(self.layout.rois)])
        return SynthFrame(img, mask, tuple(boxes), scores)


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
) -> SynthFrame:
    """One random rack frame, identical for the same arguments.

    scores: per box (None entries, or scores=None, draw uniformly over 0-9 so training data covers
    the scale). layout: None = the camera placement of this seed's session
    (`RackLayout.random(seed // SESSION_FRAMES)`), so consecutive seeds share a background.
    furs: per box "black" | "white" | "agouti" | None (random, mostly black).
    """
    layout = layout or RackLayout.random(seed // SESSION_FRAMES)
    rng = np.random.default_rng([int(seed), 0xF7A3E])
    n = len(layout.rois)
    animals = []
    for i in range(n):
        s = scores[i] if scores is not None and i < len(scores) else None
        s = float(rng.uniform(0.0, 9.0)) if s is None else float(s)
        if not 0.0 <= s <= 9.0:
            raise ValueError(f"score {s} for box {i} is outside the orbital-tightening scale 0-9")
        fur = furs[i] if furs is not None and i < len(furs) else None
        if fur is not None and fur not in FURS:
            raise ValueError(f"unknown fur {fur!r} for box {i}; choose from {', '.join(FURS)}")
        animals.append(random_animal(rng, layout, i, s, fur))
    return renderer_for(layout).render(animals, random_nuisance(rng, n), rng)
