"""The animal: a head and a two-part body made of rotated ellipsoids, ears, eyes, snout and tail.

Everything is measured in units of the eye width, so one number sets the animal's size in the
frame. A single yaw angle gives profile, three-quarter, frontal and turned-away views; an eye
whose surface faces away from the camera is not drawn and is labelled hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from export.choicerender.eye import EyeDraw, draw_eye
from export.choicerender.geometry import Orientation, ellipse_polygon, ellipsoid_points, silhouette, surface_direction
from export.choicerender.palette import Coat
from export.choicerender.sprite import Sprite

EYE_FACING_MIN = 0.15  # an eye whose surface normal points less than this towards the camera is hidden


@dataclass(frozen=True)
class MouseSpec:
    """What to draw: coat, view (yaw/pitch/roll in degrees), eye width in px and the orbital tightening score."""

    coat: Coat
    pose: str
    yaw: float
    pitch: float
    roll: float
    eye_width: float
    score: float
    blink: bool
    tail_bend: float
    seed: int


@dataclass(frozen=True)
class EyeLabel:
    """An eye in sprite coordinates; hidden eyes carry the position they would have."""

    x: float
    y: float
    visible: bool
    width: float


@dataclass
class MouseRender:
    """The painted animal and its eyes; sprite coordinates have the head centre at (0, 0)."""

    sprite: Sprite
    eyes: list[EyeLabel]


@dataclass(frozen=True)
class _Anatomy:
    head: tuple[float, float, float]
    snout: float
    shoulder: tuple[float, float, float]
    rump: tuple[float, float, float]

    @classmethod
    def for_eye(cls, w: float) -> _Anatomy:
        a, b, c = 1.55 * w, 1.5 * w, 1.9 * w
        return cls((a, b, c), 1.3 * w, (1.4 * a, 1.3 * b, 1.3 * c), (1.75 * a, 1.5 * b, 1.6 * c))


def _shift_darker(colour: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return (int(colour[0] * f), int(colour[1] * f), int(colour[2] * f))


class _Builder:
    """Computes the projected outline of every part, then paints them in depth order."""

    def __init__(self, spec: MouseSpec) -> None:
        self.spec = spec
        self.anat = _Anatomy.for_eye(spec.eye_width)
        self.head_r = Orientation(spec.yaw, spec.pitch, spec.roll).matrix()
        self.body_r = Orientation(spec.yaw).matrix()
        a, b, c = self.anat.head
        head_pts = ellipsoid_points(self.anat.head)
        ring = ellipse_polygon((0.0, 0.0), (0.28 * a, 0.25 * a), 0.0, 12)
        snout = np.column_stack([ring[:, 0], ring[:, 1] + 0.3 * b, np.full(len(ring), c + self.anat.snout)])
        self.head = silhouette(np.vstack([head_pts, snout]) @ self.head_r.T)
        self.tip = (np.array([0.0, 0.3 * b, c + self.anat.snout]) @ self.head_r.T)[:2]
        self.tip_depth = float((np.array([0.0, 0.0, 1.0]) @ self.head_r.T)[2])
        self.parts: list[tuple[float, str, np.ndarray]] = []
        for name, axes, back, down in (
            ("shoulder", self.anat.shoulder, 1.3 * c, 0.5 * b),
            ("rump", self.anat.rump, 2.7 * c, 0.75 * b),
        ):
            centre3 = np.array([0.0, down, -back]) @ self.body_r.T
            pts = ellipsoid_points(axes) @ self.body_r.T + centre3
            self.parts.append((float(centre3[2]), name, silhouette(pts)))
        self.body = silhouette(np.vstack([p for _, _, p in self.parts]))

    def eyes(self) -> list[tuple[EyeDraw | None, np.ndarray, float]]:
        """Each eye as a drawing (None when it faces away), its projected position and its drawn width."""
        a, b, c = self.anat.head
        out: list[tuple[EyeDraw | None, np.ndarray, float]] = []
        for side in (-1.0, 1.0):
            d = surface_direction(side * 50.0, 14.0)
            p = (d * np.array([a, b, c])) @ self.head_r.T
            normal = (d / np.array([a, b, c]) ** 2) @ self.head_r.T
            facing = float(normal[2] / np.linalg.norm(normal))
            tangent = np.array([np.cos(np.radians(side * 50.0)), 0.0, -np.sin(np.radians(side * 50.0))]) @ self.head_r.T
            t2 = tangent[:2]
            fore = float(np.linalg.norm(t2))
            angle = float(np.degrees(np.arctan2(t2[1], t2[0])))
            if angle > 90:
                angle -= 180
            if angle < -90:
                angle += 180
            slant = -8.0 if p[0] > 0 else 8.0
            width = max(8.0, self.spec.eye_width * max(fore, 0.55))
            draw = None
            if facing > EYE_FACING_MIN:
                draw = EyeDraw((float(p[0]), float(p[1])), width, angle + slant, self.spec.score, self.spec.blink)
            out.append((draw, p[:2], width))
        return out

    def ears(self) -> list[tuple[float, np.ndarray, np.ndarray | None]]:
        """Each ear's depth, outline and inner (pink) outline when its front faces the camera."""
        a, b, c = self.anat.head
        out = []
        for side in (-1.0, 1.0):
            d = surface_direction(side * 70.0, 52.0)
            base = (d * np.array([a, b, c]) * 1.25) @ self.head_r.T
            normal = np.array([0.7 * side, -0.1, 1.0]) @ self.head_r.T
            normal /= np.linalg.norm(normal)
            flat = max(0.45, abs(float(normal[2])))
            tilt = self.spec.roll + side * 28.0 + (float(np.degrees(np.arctan2(normal[0], normal[2]))) * 0.15)
            outline = ellipse_polygon((float(base[0]), float(base[1])), (0.62 * a * flat, 0.72 * a), tilt, 32)
            inner = None
            if normal[2] > 0.1:
                inner = ellipse_polygon(
                    (float(base[0]), float(base[1]) + 0.05 * a), (0.42 * a * flat, 0.52 * a), tilt, 24
                )
            out.append((float(base[2]), outline, inner))
        return out

    def tail(self) -> tuple[float, list[np.ndarray]]:
        """Depth and tapering segments of the tail, leaving the rump backwards and curling sideways."""
        c = self.anat.head[2]
        start3 = np.array([0.0, 0.9 * self.anat.head[1], -2.7 * c - self.anat.rump[2] * 0.95]) @ self.body_r.T
        back = start3[:2] - (np.array([0.0, 0.9 * self.anat.head[1], -2.7 * c]) @ self.body_r.T)[:2]
        if np.linalg.norm(back) < 0.3 * c:
            back = np.array([self.spec.tail_bend, 0.4]) * c
        direction = back / np.linalg.norm(back)
        length = 4.2 * c
        s = np.linspace(0.0, 1.0, 24)
        side = np.array([-direction[1], direction[0]])
        path = (
            start3[:2]
            + np.outer(s * length * 0.8, direction)
            + np.outer(self.spec.tail_bend * np.sin(s * np.pi * 1.2) * length * 0.35, side)
        )
        path[:, 1] = np.maximum(path[:, 1], path[:, 1] + np.linspace(0, 0.6 * c, 24))
        return float(start3[2]), [path[i : i + 5] for i in range(0, 20, 4)]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        _, segments = self.tail()
        pts = np.vstack([self.head, self.body, *segments] + [o for _, o, _ in self.ears()])
        margin = 0.3 * self.spec.eye_width + 4
        return pts.min(axis=0) - margin, pts.max(axis=0) + margin


def _texture(sprite: Sprite, spec: MouseSpec, rng: np.random.Generator) -> None:
    """Fur: piebald patches, body shading from the outline inwards, streaky grain and a top light."""
    h, w = sprite.alpha.shape
    fur = sprite.fur > 0
    if spec.coat.patch is not None:
        small = rng.normal(0, 1, (max(2, h // 14), max(2, w // 14))).astype(np.float32)
        blobs = cv2.GaussianBlur(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), (0, 0), 3)
        sprite.colour[fur & (blobs > 0.35)] = spec.coat.patch
    inside = (sprite.alpha > 0).astype(np.uint8)
    depth = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
    shade = 0.6 + 0.4 * np.clip(depth / (1.2 * spec.eye_width), 0, 1) ** 0.6
    shade *= np.linspace(1.1, 0.88, h, dtype=np.float32)[:, None]
    grain = rng.normal(0, 1, (h, w)).astype(np.float32)
    k = np.zeros((7, 7), np.float32)
    k[3, :] = 1 / 7
    rot = cv2.getRotationMatrix2D((3, 3), float(rng.uniform(0, 180)), 1.0)
    grain = np.asarray(cv2.filter2D(grain, -1, cv2.warpAffine(k, rot, (7, 7))))
    amp = 0.12 if spec.coat.fur in ("white", "piebald") else 0.3
    col = sprite.colour.astype(np.float32)
    lit = col * (shade * (1 + amp * grain))[..., None] + (8 * (shade - 0.8))[..., None]
    col[fur] = lit[fur]
    sprite.colour = np.clip(col, 0, 255).astype(np.uint8)


def render_mouse(spec: MouseSpec) -> MouseRender:
    """Paint the animal into its own sprite, back to front, and report its eyes."""
    rng = np.random.default_rng(spec.seed)
    bld = _Builder(spec)
    lo, hi = bld.bounds()
    sp = Sprite.blank(lo, hi)
    coat = spec.coat
    tail_depth, segments = bld.tail()
    tail_colour = _shift_darker(coat.skin, 0.8) if coat.fur in ("black", "agouti", "grey") else coat.skin
    thick = np.linspace(0.5, 0.14, len(segments)) * spec.eye_width

    def paint_tail() -> None:
        for seg, t in zip(segments, thick):
            sp.stroke(seg, tail_colour, max(1, int(round(t))), 1)

    def paint_body() -> None:
        for _, _, outline in sorted(bld.parts, key=lambda p: p[0]):
            sp.fill(outline, coat.base, 1, True)
        low = bld.body[np.argsort(bld.body[:, 1])[-3:]].mean(axis=0)
        for dx in (-1.2, 1.0):
            foot = ellipse_polygon(
                (float(low[0] + dx * spec.eye_width), float(low[1])),
                (0.5 * spec.eye_width, 0.25 * spec.eye_width),
                0,
                16,
            )
            sp.fill(foot, coat.skin, 1, False)

    ears = bld.ears()

    def paint_head() -> None:
        for depth, outline, inner in ears:
            if depth < 0:
                sp.fill(outline, _shift_darker(coat.base, 0.9), 2, True)
                if inner is not None:
                    sp.fill(inner, coat.skin, 2, False)
        sp.fill(bld.head, coat.base, 1, True)
        for depth, outline, inner in ears:
            if depth >= 0:
                sp.fill(outline, coat.base, 2, True)
                if inner is not None:
                    sp.fill(inner, coat.skin, 2, False)

    body_depth = max(p[0] for p in bld.parts)
    if tail_depth < body_depth:
        paint_tail()
    if body_depth > 0:
        paint_head()
        paint_body()
    else:
        paint_body()
        paint_head()
    if tail_depth >= body_depth:
        paint_tail()
    _texture(sp, spec, rng)
    if bld.tip_depth > -0.3:
        a = bld.anat.head[0]
        sp.fill(
            ellipse_polygon((float(bld.tip[0]), float(bld.tip[1])), (0.22 * a, 0.16 * a), spec.roll, 16),
            coat.skin,
            1,
            False,
        )
        for k in range(5):
            for side in (-1.0, 1.0):
                ang = np.radians(spec.roll + (0 if side > 0 else 180) + (k - 2) * 12 + rng.normal(0, 4))
                end = bld.tip + 1.8 * a * np.array([np.cos(ang), np.sin(ang)])
                sp.stroke(np.array([bld.tip, end]), (200, 205, 210), 1, None)
    labels: list[EyeLabel] = []
    for draw, pos, width in bld.eyes():
        if draw is None:
            labels.append(EyeLabel(float(pos[0]), float(pos[1]), False, width))
        else:
            x, y = draw_eye(sp, draw, coat)
            labels.append(EyeLabel(x, y, True, width))
    return MouseRender(sp, labels)
