"""One frame: draw the rack layout and the animals, paint them back to front, then photograph it.

Every random choice comes from one generator seeded by (seed, frame index), so a frame does not
depend on which process renders it or in what order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from export.choicerender.camera import move_points, sample_camera, shoot
from export.choicerender.mouse import MouseRender, MouseSpec, render_mouse
from export.choicerender.palette import FURS, pick_coat
from export.choicerender.rack import (
    BACKDROPS,
    BEDDINGS,
    BoxLook,
    paint_backdrop,
    paint_box_back,
    paint_box_front,
    paint_rails,
    paint_shadow,
)
from export.dataset import Box, Eye, label_point
from export.rendered import RenderedFrame

WIDTH, HEIGHT = 1920, 1080
EDGE = 30  # animals keep this far from the frame edge, so a tilt never pushes an eye out of the image
POSES = ("profile", "three_quarter", "frontal", "away")
POSE_SHARE = (0.38, 0.27, 0.22, 0.13)
EMPTY_SHARE = 0.08
BLINK_SHARE = 0.07


@dataclass
class Animal:
    """An animal placed in a box: its spec, its painted sprite and where sprite (0, 0) lands."""

    spec: MouseSpec
    render: MouseRender
    left: int
    top: int

    def to_frame(self, x: float, y: float) -> tuple[float, float]:
        sp = self.render.sprite
        return x - sp.origin[0] + self.left, y - sp.origin[1] + self.top


def _score(rng: np.random.Generator) -> float:
    """Uniform over 0..9, half as integers and half with one decimal."""
    if rng.random() < 0.5:
        return float(rng.integers(0, 10))
    return round(float(rng.uniform(0, 9)), 1)


def _pose(rng: np.random.Generator) -> tuple[str, float]:
    kind = str(rng.choice(POSES, p=POSE_SHARE))
    side = 1.0 if rng.random() < 0.5 else -1.0
    if kind == "profile":
        yaw = side * rng.uniform(78, 100)
        return ("profile_right" if side > 0 else "profile_left"), float(yaw)
    if kind == "three_quarter":
        return kind, float(side * rng.uniform(22, 38))
    if kind == "frontal":
        return kind, float(side * rng.uniform(0, 12))
    return kind, float(180 + rng.uniform(-35, 35))


def _layout(rng: np.random.Generator) -> list[BoxLook]:
    """1-4 boxes of one size side by side with uneven gaps; the outer ones may run past the frame."""
    n = int(rng.integers(1, 5))
    w = int(rng.uniform(200, min(700, 2000 / n - 20)))
    h = int(np.clip(w * rng.uniform(0.62, 0.88), 160, 860))
    gaps = rng.uniform(8, 140, n - 1)
    span = n * w + gaps.sum()
    lo, hi = -0.3 * w, WIDTH - span + 0.3 * w
    x = rng.uniform(lo, hi) if hi > lo else (WIDTH - span) / 2
    y = int(rng.uniform(50, HEIGHT - h - 45))
    r, g, b = (float(v) for v in rng.uniform(150, 235, 3))
    tint = (r, g, b)
    bedding = str(rng.choice(list(BEDDINGS)))
    boxes = []
    for i in range(n):
        boxes.append(
            BoxLook(
                x=int(x),
                y=y,
                w=w,
                h=h,
                lid_h=int(h * rng.uniform(0.08, 0.13)),
                bed_h=int(h * rng.uniform(0.12, 0.24)),
                bedding=bedding,
                tint=tint,
                haze=float(rng.uniform(0.03, 0.16)),
                bottle=bool(rng.random() < 0.4),
                hopper=bool(rng.random() < 0.4),
                card=bool(rng.random() < 0.3),
            )
        )
        x += w + (gaps[i] if i < n - 1 else 0)
    keep = [b for b in boxes if min(b.x + b.w, WIDTH) - max(b.x, 0) >= 0.55 * b.w]
    return keep or [boxes[0]]


def _fit_animal(rng: np.random.Generator, box: BoxLook) -> Animal | None:
    """Draw an animal sized to the box, shrink it until it fits the visible interior, and place it."""
    x0, y0, x1, y1 = box.interior
    x0, x1 = max(x0, EDGE), min(x1, WIDTH - EDGE)
    y1 = min(y1, HEIGHT - EDGE)
    if x1 - x0 < 80 or y1 - y0 < 60:
        return None
    fur = str(rng.choice(FURS))
    pose, yaw = _pose(rng)
    eye_w = float(np.clip(box.w * rng.uniform(0.04, 0.095), 9.0, 50.0))
    spec = MouseSpec(
        coat=pick_coat(rng, fur),
        pose=pose,
        yaw=yaw,
        pitch=float(rng.uniform(-10, 15)),
        roll=float(np.clip(rng.normal(0, 10), -25, 25)),
        eye_width=eye_w,
        score=_score(rng),
        blink=bool(rng.random() < BLINK_SHARE),
        tail_bend=float(rng.uniform(-1, 1)),
        seed=int(rng.integers(0, 2**31)),
    )
    render = render_mouse(spec)
    for _ in range(3):
        h, w = render.sprite.alpha.shape
        scale = min(0.95 * (x1 - x0) / w, 0.92 * (y1 - y0) / h)
        if scale >= 1 or spec.eye_width <= 9.0:
            break
        spec = replace(spec, eye_width=max(9.0, spec.eye_width * scale * 0.97))
        render = render_mouse(spec)
    h, w = render.sprite.alpha.shape
    left = int(rng.uniform(x0, max(x0, x1 - w))) if w <= x1 - x0 else int((x0 + x1 - w) / 2)
    floor = box.y + box.h - box.bed_h + int(rng.uniform(0.15, 0.6) * box.bed_h)
    top = max(y0, min(floor, y1) - h)
    return Animal(spec, render, left, top)


def _composite(frame: np.ndarray, mask: np.ndarray, animal: Animal, box: BoxLook) -> None:
    """Alpha-blend the sprite into the frame inside the box's interior; copy its classes to the mask."""
    sp = animal.render.sprite
    h, w = sp.alpha.shape
    bx0, by0, bx1, by1 = box.interior
    fx0, fy0 = max(animal.left, bx0, 0), max(animal.top, by0, 0)
    fx1, fy1 = min(animal.left + w, bx1, WIDTH), min(animal.top + h, by1, HEIGHT)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    sx0, sy0 = fx0 - animal.left, fy0 - animal.top
    sl = (slice(sy0, sy0 + fy1 - fy0), slice(sx0, sx0 + fx1 - fx0))
    a = sp.alpha[sl].astype(np.float32)[..., None] / 255.0
    region = frame[fy0:fy1, fx0:fx1]
    region[:] = region * (1 - a) + sp.colour[sl].astype(np.float32) * a
    cls = sp.classes[sl]
    mask[fy0:fy1, fx0:fx1][cls > 0] = cls[cls > 0]


def _eye_seen(mask: np.ndarray, x: float, y: float) -> bool:
    """True when class-3 pixels lie within 2 px of (x, y)."""
    xi, yi = int(round(x)), int(round(y))
    win = mask[max(0, yi - 2) : yi + 3, max(0, xi - 2) : xi + 3]
    ys, xs = np.nonzero(win == 3)
    return bool(len(xs)) and bool(np.min((xs + max(0, xi - 2) - x) ** 2 + (ys + max(0, yi - 2) - y) ** 2) <= 4.0)


def _roi(look_points: np.ndarray) -> tuple[int, int, int, int]:
    x0, y0 = np.floor(look_points.min(axis=0)).astype(int)
    x1, y1 = np.ceil(look_points.max(axis=0)).astype(int)
    x0, y0 = max(0, int(x0)), max(0, int(y0))
    x1, y1 = min(WIDTH, int(x1)), min(HEIGHT, int(y1))
    return (x0, y0, x1 - x0, y1 - y0)


def render_frame(seed: int, index: int) -> RenderedFrame:
    """Render frame `index` of the set seeded by `seed`."""
    rng = np.random.default_rng([seed, index])
    frame = np.zeros((HEIGHT, WIDTH, 3), np.float32)
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    backdrop = str(rng.choice(BACKDROPS))
    paint_backdrop(frame, rng, backdrop)
    boxes = _layout(rng)
    paint_rails(frame, boxes[0].y, boxes[0].y + boxes[0].h, rng)
    animals: list[Animal | None] = []
    for box in boxes:
        paint_box_back(frame, box, rng)
        animal = None if rng.random() < EMPTY_SHARE else _fit_animal(rng, box)
        if animal is not None:
            h, w = animal.render.sprite.alpha.shape
            paint_shadow(frame, (animal.left + w / 2, animal.top + h * 0.92), (0.42 * w, 0.09 * h), 0.45)
            _composite(frame, mask, animal, box)
        animals.append(animal)
    for box in boxes:
        paint_box_front(frame, mask, box, rng)
    look = sample_camera(rng, (HEIGHT, WIDTH))
    image, moved_mask = shoot(frame, mask, look, rng)
    labelled: list[Box] = []
    for i, (box, animal) in enumerate(zip(boxes, animals)):
        corners = np.array(
            [
                [max(box.x, 0), box.y],
                [min(box.x + box.w, WIDTH), box.y],
                [min(box.x + box.w, WIDTH), box.y + box.h],
                [max(box.x, 0), box.y + box.h],
            ],
            np.float64,
        )
        cond: dict = {
            "box_width_px": box.w,
            "bedding": box.bedding,
            "cut": box.x < 0 or box.x + box.w > WIDTH,
            "bottle": box.bottle,
            "hopper": box.hopper,
            "card": box.card,
        }
        eyes: list[Eye] = []
        if animal is None:
            cond.update(fur="none", pose="empty")
        else:
            spec = animal.spec
            labels = animal.render.eyes  # an eye behind the head is listed only when the face is turned away
            moved = move_points(look, np.array([animal.to_frame(e.x, e.y) for e in labels]))
            hidden_by_clutter = False
            facing = any(e.visible for e in labels)
            for e, (x, y) in zip(labels, moved):
                at = label_point(x, y, (0, 0, WIDTH, HEIGHT))
                if at is None or (facing and not e.visible):
                    continue
                seen = e.visible and _eye_seen(moved_mask, x, y)
                hidden_by_clutter |= e.visible and not seen
                score = spec.score if seen and not spec.blink else None
                eyes.append(Eye(*at, score, seen))
            cond.update(
                fur=spec.coat.fur,
                pose=spec.pose,
                yaw_deg=round(spec.yaw, 1),
                head_tilt_deg=round(spec.roll, 1),
                eye_width_px=round(max(e.width for e in labels), 1),
                blink=spec.blink,
                occluded=hidden_by_clutter,
            )
        roi = _roi(move_points(look, corners))
        labelled.append(Box(i, roi, any(e.visible for e in eyes), tuple(eyes), cond))
    conditions = {"style": "choice", "boxes": len(boxes), "backdrop": backdrop, **look.conditions()}
    return RenderedFrame(image, moved_mask, tuple(labelled), conditions)
