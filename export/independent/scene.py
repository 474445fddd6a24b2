"""One rack frame: layout, boxes, mice, lighting and camera effects, with its labels.

Order of work: sample a rack and a camera, project every box, paint each box back to front
(back wall, bedding, mouse and the things hanging from the lid in depth order, front wall, lid,
cage card), then light the whole frame and add the camera's blur, noise and compression. The
class mask is painted alongside, so whatever covers a part of the animal also covers it in the
mask; an eye is labelled visible only when its centre pixel and at least half its pixels are
still eye pixels at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from export.dataset import Box, Eye
from export.independent import mouse as mice
from export.independent import texture
from export.independent.camera import Camera, rotation
from export.independent.paint import Canvas, coverage
from export.rendered import RenderedFrame

WIDTH, HEIGHT = 1920, 1080
ANIMAL, EARS, EYES = 1, 2, 3
EYE_VISIBLE_FRACTION = 0.5  # share of an eye's pixels that must stay uncovered for it to be labelled visible
UNSCORABLE_BLUR_PX = 8.0
EYE_TO_LENGTH = (
    0.055,
    0.11,
)  # eye width / body length: larger-eyed than a real mouse (about 0.04), as rack images need  # motion blur longer than this: the eye is labelled but left unscored

# BGR colours. Fur families: coat, its variation, skin (ears, paws, nose, tail), eye colours.
FURS = {
    "albino": {
        "coat": (222, 230, 236),
        "spread": 0.05,
        "skin": (150, 160, 228),
        "eyes": {"pink": (95, 80, 210), "red": (55, 40, 170)},
    },
    "black": {
        "coat": (32, 30, 34),
        "spread": 0.25,
        "skin": (70, 72, 96),
        "eyes": {"black": (12, 10, 14), "dark_red": (18, 16, 52)},
    },
    "agouti": {
        "coat": (60, 88, 112),
        "spread": 0.2,
        "skin": (100, 112, 160),
        "eyes": {"black": (14, 12, 16), "dark_red": (20, 18, 58)},
    },
    "grey": {"coat": (112, 114, 118), "spread": 0.12, "skin": (120, 128, 175), "eyes": {"black": (16, 14, 18)}},
    "piebald": {
        "coat": (218, 224, 228),
        "spread": 0.06,
        "skin": (140, 150, 215),
        "eyes": {"black": (14, 12, 16), "dark_red": (22, 18, 60)},
    },
}
BACKDROPS = {
    "crimson": (45, 30, 175),
    "scarlet": (30, 40, 205),
    "orange_red": (25, 70, 210),
    "wine": (50, 25, 140),
    "pink_red": (90, 70, 215),
}
LIGHTING = ("even", "dim", "side", "spot", "bands")
COLOUR_TEMPS = {
    "neutral": (1.0, 1.0, 1.0),
    "warm": (0.8, 0.95, 1.1),
    "cool": (1.12, 1.0, 0.88),
    "fluorescent": (0.95, 1.08, 0.94),
}
POSE_WEIGHTS = {"profile": 0.38, "front": 0.27, "back": 0.1, "rearing": 0.13, "sniffing": 0.12}


@dataclass(frozen=True)
class BoxGeometry:
    """A cage in world mm: front face x0..x1 (left, right), y0..y1 (top, bottom) at depth z0."""

    x0: float
    x1: float
    y0: float
    y1: float
    z0: float
    depth: float

    def corners(self, y_top: float | None = None) -> np.ndarray:
        """Front TL, TR, BR, BL then the same at the back (optionally cut at y_top, for bedding)."""
        y0 = self.y0 if y_top is None else y_top
        front = [
            (self.x0, y0, self.z0),
            (self.x1, y0, self.z0),
            (self.x1, self.y1, self.z0),
            (self.x0, self.y1, self.z0),
        ]
        return np.array(front + [(x, y, z + self.depth) for x, y, z in front], np.float64)


@dataclass
class DrawnEye:
    """An eye as painted: its frame position, score and outline, checked for cover at the end."""

    x: float
    y: float
    score: float | None
    outline: np.ndarray  # frame px


@dataclass
class RenderedBox:
    number: int
    roi: tuple[int, int, int, int]
    eyes: list[DrawnEye]
    conditions: dict[str, str | float | int | bool] = field(default_factory=dict)


def _choice(rng: np.random.Generator, options) -> str:
    options = list(options)
    return options[int(rng.integers(len(options)))]


def _roi(cam: Camera, g: BoxGeometry) -> tuple[int, int, int, int]:
    p = cam.project(g.corners())
    x0, y0 = np.floor(p.min(axis=0)).astype(int)
    x1, y1 = np.ceil(p.max(axis=0)).astype(int)
    return int(x0), int(y0), int(x1 - x0), int(y1 - y0)


def sample_rack(rng: np.random.Generator) -> tuple[Camera, list[BoxGeometry], dict]:
    """A camera and 1-4 cages in one row on a shelf, all inside the frame and not overlapping."""
    n = int(rng.choice([1, 2, 3, 4], p=[0.06, 0.12, 0.22, 0.6]))
    for _ in range(200):
        w_mm = rng.uniform(150, 240)
        h_mm = w_mm * rng.uniform(0.85, 1.5)
        depth = rng.uniform(240, 340)
        widths = w_mm * rng.uniform(0.97, 1.03, n)
        heights = h_mm * rng.uniform(0.98, 1.02, n)
        gaps = rng.uniform(25, 100, max(n - 1, 0))
        total = float(widths.sum() + gaps.sum())
        focal = rng.uniform(1150, 2400)
        yaw, pitch, roll = rng.uniform(-6, 6), rng.uniform(-8, 8), rng.uniform(-2.5, 2.5)
        scale = min(rng.uniform(0.68, 0.92) * WIDTH / total, rng.uniform(0.6, 0.84) * HEIGHT / float(heights.max()))
        dist = focal / scale
        rot = rotation(yaw, pitch, roll)
        cam = Camera(focal, WIDTH / 2 + rng.uniform(-25, 25), HEIGHT / 2 + rng.uniform(-20, 20), rot)
        centre = rot.T @ np.array(
            [rng.uniform(-0.07, 0.07) * WIDTH / scale, rng.uniform(-0.06, 0.06) * HEIGHT / scale, dist]
        )
        x = centre[0] - total / 2
        shelf = centre[1] + heights.max() / 2
        boxes = []
        for i in range(n):
            y1 = shelf + rng.uniform(-8, 8)
            boxes.append(BoxGeometry(x, x + widths[i], y1 - heights[i], y1, centre[2] + rng.uniform(-25, 25), depth))
            x += widths[i] + (gaps[i] if i < n - 1 else 0)
        rois = [_roi(cam, b) for b in boxes]
        inside = all(r[0] >= 6 and r[1] >= 6 and r[0] + r[2] <= WIDTH - 6 and r[1] + r[3] <= HEIGHT - 6 for r in rois)
        apart = all(rois[i][0] + rois[i][2] + 4 <= rois[i + 1][0] for i in range(n - 1))
        if inside and apart:
            conditions = {
                "boxes": n,
                "focal_px": round(focal),
                "camera_yaw_deg": round(yaw, 1),
                "camera_pitch_deg": round(pitch, 1),
                "camera_roll_deg": round(roll, 1),
            }
            return cam, boxes, conditions
    raise RuntimeError("no rack layout fits the frame")  # 200 draws of a layout that usually fits first time


class BoxPainter:
    """Paints one cage and its mouse into the frame region of its ROI."""

    def __init__(self, rng: np.random.Generator, frame: Canvas, cam: Camera, g: BoxGeometry, number: int) -> None:
        self.rng, self.cam, self.g = rng, cam, g
        x, y, w, h = _roi(cam, g)
        self.roi = (x, y, w, h)
        self.origin = np.array([x, y], np.float64)
        self.canvas = Canvas(frame.image[y : y + h, x : x + w], frame.mask[y : y + h, x : x + w])
        self.number = number
        self.eyes: list[DrawnEye] = []
        self.conditions: dict[str, str | float | int | bool] = {"box_width_px": w, "box_height_px": h}
        self.inside = coverage((h, w), [self._hull(g.corners())])
        self.lost: dict[str, int] = {}

    def px(self, points) -> np.ndarray:
        return self.cam.project(np.asarray(points, np.float64).reshape(-1, 3)) - self.origin

    def _hull(self, corners: np.ndarray) -> np.ndarray:
        return cv2.convexHull(self.px(corners).astype(np.float32)).reshape(-1, 2).astype(np.float64)

    def faces(self, corners: np.ndarray) -> dict[str, np.ndarray]:
        p = self.px(corners)
        return {
            "back": p[[4, 5, 6, 7]],
            "left": p[[0, 4, 7, 3]],
            "right": p[[1, 5, 6, 2]],
            "top": p[[0, 1, 5, 4]],
            "front": p[[0, 1, 2, 3]],
        }

    def paint(self) -> RenderedBox:
        rng, g = self.rng, self.g
        self.canvas.paint([self._hull(g.corners())], (40, 35, 55), opacity=rng.uniform(0.15, 0.35))
        self.canvas.paint([self.faces(g.corners())["back"]], (70, 60, 80), opacity=rng.uniform(0.05, 0.15))
        bedding_top = g.y1 - rng.uniform(12, 0.2 * (g.y1 - g.y0))
        self._bedding(bedding_top)
        things = self._lid_things()
        mouse_z = self._mouse_place(bedding_top)
        for z, draw in sorted(things, key=lambda t: -t[0]):
            if z > mouse_z:
                draw()
        self._mouse(bedding_top)
        before = self._eye_pixels()
        for z, draw in sorted(things, key=lambda t: -t[0]):
            if z <= mouse_z:
                draw()
                before = self._lose("lid_fitting", before)
        if rng.random() < 0.25:
            self._mound(bedding_top)
            before = self._lose("bedding", before)
        self._front_wall()
        self._lid()
        before = self._lose("lid", before)
        self.conditions["card"] = bool(rng.random() < 0.55)
        if self.conditions["card"]:
            self._card()
            self._lose("card", before)
        drawn = sum(self._eye_area(e) for e in self.eyes)
        worst = max(self.lost.items(), key=lambda kv: kv[1], default=("none", 0))
        self.conditions["occlusion"] = worst[0] if drawn and worst[1] > 0.1 * drawn else "none"
        return RenderedBox(self.number, self.roi, self.eyes, self.conditions)

    # --- bedding and things ---------------------------------------------------------------
    def _bedding(self, top: float) -> None:
        rng = self.rng
        kind = _choice(rng, texture.BEDDINGS)
        self.conditions["bedding"] = kind
        size = self.cam.px_per_mm(np.array([(self.g.x0 + self.g.x1) / 2, top, self.g.z0])) * rng.uniform(4, 8)
        tex = texture.bedding(rng, kind, self.canvas.shape, size)
        self.bedding_texture = tex
        faces = self.faces(self.g.corners(top))
        shade = {"back": 0.6, "left": 0.75, "right": 0.75, "top": 1.0, "front": 0.8}
        for name in ("back", "left", "right", "top", "front"):
            poly = faces[name]
            if name == "top":
                poly = self._bumpy_top(top)
            self.canvas.paint([poly], tex * shade[name], cls=0)

    def _bumpy_top(self, top: float) -> np.ndarray:
        g, rng = self.g, self.rng
        xs = np.linspace(g.x1, g.x0, 18)
        back = [(x, top - rng.uniform(0, 12), g.z0 + g.depth) for x in xs]
        front = [(g.x0, top, g.z0), (g.x1, top, g.z0)]
        return self.px(np.array(front + back))

    def _lid_things(self) -> list[tuple[float, Callable[[], None]]]:
        """The bottle and the hopper, each with its depth and how to draw it (before or after the mouse)."""
        g, rng = self.g, self.rng
        out = []
        if rng.random() < 0.7:
            side = rng.random() < 0.5
            x = g.x0 + (g.x1 - g.x0) * (rng.uniform(0.12, 0.3) if side else rng.uniform(0.7, 0.88))
            z = g.z0 + g.depth * rng.uniform(0.2, 0.85)
            out.append((z, lambda x=x, z=z: self._bottle(x, z)))
        if rng.random() < 0.6:
            z = g.z0 + g.depth * rng.uniform(0.3, 0.7)
            out.append((z, lambda z=z: self._hopper(z)))
        return out

    def _bottle(self, x: float, z: float) -> None:
        g, rng = self.g, self.rng
        r = rng.uniform(16, 24)
        bottom = g.y0 + (g.y1 - g.y0) * rng.uniform(0.3, 0.5)
        t, b = self.px([(x, g.y0 - 20, z), (x, bottom, z)])
        rpx = r * self.cam.px_per_mm(np.array([x, bottom, z]))
        body = np.array([t + (-rpx, 0), t + (rpx, 0), b + (rpx, 0), b + (-rpx, 0)])
        self.canvas.paint([body], (215, 205, 195), cls=0, opacity=rng.uniform(0.55, 0.75))
        level = b + (0, -rng.uniform(0.2, 0.8) * (b[1] - t[1]))
        self.canvas.paint(
            [np.array([level + (-rpx, 0), level + (rpx, 0), b + (rpx, 0), b + (-rpx, 0)])],
            (200, 170, 150),
            opacity=0.35,
        )
        self.canvas.paint(
            [np.array([t + (rpx * 0.4, 0), t + (rpx * 0.6, 0), b + (rpx * 0.6, 0), b + (rpx * 0.4, 0)])],
            (255, 255, 255),
            opacity=0.5,
        )
        spout = b + (0, 0.6 * rpx)
        self.canvas.paint(
            [np.array([b + (-rpx * 0.25, 0), b + (rpx * 0.25, 0), spout + (rpx * 0.12, 0), spout + (-rpx * 0.12, 0)])],
            (170, 170, 175),
            cls=0,
        )

    def _hopper(self, z: float) -> None:
        g, rng = self.g, self.rng
        width = (g.x1 - g.x0) * rng.uniform(0.3, 0.5)
        left = g.x0 + rng.uniform(0.05, 0.95) * (g.x1 - g.x0 - width)
        drop = (g.y1 - g.y0) * rng.uniform(0.2, 0.32)
        pts = self.px(
            [
                (left, g.y0, z),
                (left + width, g.y0, z),
                (left + width * 0.8, g.y0 + drop, z),
                (left + width * 0.2, g.y0 + drop, z),
            ]
        )
        self.canvas.paint([pts], (60, 75, 90), cls=0, opacity=0.9)
        lo, hi = pts[:, 1].min(), pts[:, 1].max()
        for _ in range(int(rng.integers(6, 14))):
            c = pts.mean(axis=0) + rng.uniform(-0.3, 0.3, 2) * (np.ptp(pts[:, 0]), hi - lo)
            self.canvas.paint([mice.ellipse(c[0], c[1], 7, 4, rng.uniform(0, 180))], (50, 95, 130))
        for k in np.linspace(0, 1, int(rng.integers(6, 11))):
            self.canvas.paint(
                [np.array([pts[0] + k * (pts[1] - pts[0]), pts[3] + k * (pts[2] - pts[3])])],
                (175, 178, 182),
                thickness=2,
                closed=False,
            )

    def _mound(self, top: float) -> None:
        g, rng = self.g, self.rng
        span = (g.x1 - g.x0) * rng.uniform(0.3, 0.7)
        left = g.x0 + rng.uniform(0, 1) * (g.x1 - g.x0 - span)
        xs = np.linspace(left, left + span, 14)
        peak = rng.uniform(10, 40)
        ys = top - peak * np.sin(np.linspace(0, math.pi, 14)) ** 0.7 + rng.uniform(-3, 3, 14)
        pts = [(x, y, g.z0 + 3) for x, y in zip(xs, ys)] + [(left + span, g.y1, g.z0 + 3), (left, g.y1, g.z0 + 3)]
        self.canvas.paint([self.px(pts)], self.bedding_texture * 0.9, cls=0)

    # --- the cage itself ------------------------------------------------------------------
    def _front_wall(self) -> None:
        rng = self.rng
        faces = self.faces(self.g.corners())
        tint = (rng.uniform(170, 230), rng.uniform(180, 230), rng.uniform(170, 215))
        self.canvas.paint([faces["front"]], tint, opacity=rng.uniform(0.03, 0.12))
        h, w = self.canvas.shape
        for _ in range(int(rng.integers(0, 4))):
            x = rng.uniform(0, w)
            band = rng.uniform(8, 60)
            slant = rng.uniform(-0.6, 0.6) * h
            glare = coverage((h, w), [np.array([(x, 0), (x + band, 0), (x + band + slant, h), (x + slant, h)])])
            glare = cv2.GaussianBlur(glare, (0, 0), band / 3) * self.inside * rng.uniform(0.08, 0.3)
            self.canvas.blend((0, 0, w, h), glare, (245, 245, 245))
        edge = (rng.uniform(150, 220),) * 3
        for a, b in ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)):
            p = self.px(self.g.corners()[[a, b]])
            self.canvas.paint(
                [p], edge, thickness=2 if a < 4 and b < 4 else 1, closed=False, opacity=0.6 if a < 4 else 0.3
            )

    def _lid(self) -> None:
        g, rng = self.g, self.rng
        faces = self.faces(g.corners())
        metal = rng.uniform(120, 190)
        self.canvas.paint([faces["top"]], (metal, metal + 3, metal + 6), cls=0, opacity=0.9)
        top = faces["top"]
        for k in np.linspace(0.05, 0.95, int(rng.integers(8, 16))):
            self.canvas.paint(
                [np.array([top[0] + k * (top[1] - top[0]), top[3] + k * (top[2] - top[3])])],
                (metal * 0.6,) * 3,
                thickness=2,
                closed=False,
            )
        rim = rng.uniform(8, 16)
        self.lid_rim = rim
        pts = self.px([(g.x0, g.y0, g.z0), (g.x1, g.y0, g.z0), (g.x1, g.y0 + rim, g.z0), (g.x0, g.y0 + rim, g.z0)])
        self.canvas.paint([pts], (metal * 0.85, metal * 0.87, metal * 0.9), cls=0)

    def _card(self) -> None:
        g, rng = self.g, self.rng
        cw, ch = rng.uniform(50, 80), rng.uniform(40, 95)
        x = g.x0 + rng.uniform(5, max(6, g.x1 - g.x0 - cw - 5))
        y = g.y0 + self.lid_rim + rng.uniform(0, 15)
        z = g.z0 - 2
        pts = self.px([(x, y, z), (x + cw, y, z), (x + cw, y + ch, z), (x, y + ch, z)])
        paper = _choice(rng, [(235, 240, 242), (150, 235, 245), (215, 195, 245), (240, 215, 185)])
        self.canvas.paint([pts], paper, cls=0)
        for k in np.linspace(0.15, 0.85, int(rng.integers(3, 8))):
            a, b = self.px([(x + 5, y + k * ch, z), (x + rng.uniform(0.4, 0.9) * cw, y + k * ch, z)])
            self.canvas.paint([np.array([a, b])], (60, 50, 40), thickness=1, closed=False, opacity=0.8)

    # --- the mouse ------------------------------------------------------------------------
    def _mouse_place(self, bedding_top: float) -> float:
        g, rng = self.g, self.rng
        pose = str(rng.choice(list(POSE_WEIGHTS), p=list(POSE_WEIGHTS.values())))
        self.pose = pose
        side_on = pose in ("profile", "rearing", "sniffing")
        yaw = rng.uniform(-55, 55) if side_on else rng.uniform(-25, 25)
        width = g.x1 - g.x0
        # The eye is sized in pixels (13-27 across: what a 1080p rack camera is set up for), the body
        # from the box; their ratio stays within what a mouse drawn larger-eyed than life can have.
        scale = self.cam.px_per_mm(np.array([(g.x0 + g.x1) / 2, bedding_top, g.z0 + g.depth / 2]))
        eye = rng.uniform(13, 27) / scale
        length = float(np.clip(width * rng.uniform(0.55, 0.85), eye / EYE_TO_LENGTH[1], eye / EYE_TO_LENGTH[0]))
        reach = 0.6 * length * abs(math.cos(math.radians(yaw))) if side_on else 0.3 * length
        if 2 * reach + 20 > width:
            length *= (width - 20) / (2 * reach)
            reach = (width - 20) / 2
        deep = 0.6 * length * abs(math.sin(math.radians(yaw))) if side_on else 0.1 * length
        z_lo, z_hi = g.z0 + 15 + deep, g.z0 + g.depth - 15 - deep
        z = rng.uniform(z_lo, z_hi) if z_hi > z_lo else g.z0 + g.depth / 2
        self.mouse_at = np.array(
            [rng.uniform(g.x0 + 10 + reach, g.x1 - 10 - reach), bedding_top + rng.uniform(0, 5), z]
        )
        self.mouse_yaw, self.mouse_length = yaw, length
        self.eye_width = min(eye, EYE_TO_LENGTH[1] * length)
        return float(z)

    def _mouse(self, bedding_top: float) -> None:
        rng = self.rng
        fur = _choice(rng, FURS)
        family = FURS[fur]
        eye_colour = _choice(rng, family["eyes"])
        base_score = float(rng.uniform(0, 9))
        scores = tuple(round(float(np.clip(base_score + rng.uniform(-0.4, 0.4), 0, 9)), 1) for _ in range(2))
        length = self.mouse_length
        eye_width = self.eye_width
        fig = mice.pose_figure(rng, self.pose, length, eye_width, scores, mirror=bool(rng.random() < 0.5))
        yaw = math.radians(self.mouse_yaw)
        axis = np.array([math.cos(yaw), 0.0, math.sin(yaw)])

        def to_px(uv: np.ndarray) -> np.ndarray:
            uv = np.asarray(uv, np.float64).reshape(-1, 2)
            return self.px(self.mouse_at + uv[:, :1] * axis + uv[:, 1:2] * np.array([0.0, 1.0, 0.0]))

        scale = self.cam.px_per_mm(self.mouse_at)
        blur = float(rng.uniform(3, 14)) if rng.random() < 0.2 else 0.0
        self.conditions.update(
            fur=fur,
            eye_colour=eye_colour,
            pose=self.pose,
            mouse_yaw_deg=round(abs(self.mouse_yaw), 1),
            mouse_length_px=round(length * scale),
            eye_width_px=round(float(eye_width * scale), 1),
            motion_blur_px=round(blur, 1),
        )
        self._shadow(bedding_top, length)
        parts = [(k, to_px(p), th * scale) for k, p, th in fig.parts]
        allpts = np.concatenate([p for _, p, _ in parts])
        h, w = self.canvas.shape
        pad = int(blur) + 8
        x0, y0 = (np.floor(allpts.min(axis=0)).astype(int) - pad).clip(0)
        x1, y1 = np.minimum(np.ceil(allpts.max(axis=0)).astype(int) + pad, (w, h))
        if x1 <= x0 or y1 <= y0:
            return
        shift = np.array([x0, y0], np.float64)
        lh, lw = y1 - y0, x1 - x0
        layer = Canvas(
            np.zeros((lh, lw, 3), np.float32), np.full((lh, lw), 255, np.uint8), np.zeros((lh, lw), np.float32)
        )
        coat = self._coat(
            rng, family, fur, (lh, lw), [p - shift for k, p, _ in parts if k in ("body", "head")], parts, shift
        )
        skin = np.asarray(family["skin"], np.float32) * rng.uniform(0.9, 1.05)
        for kind, p, th in parts:
            q = p - shift
            if kind == "tail":
                layer.paint([q], skin * 0.9, cls=ANIMAL, thickness=max(th, 2.0), closed=False)
            elif kind in ("paw", "nose"):
                layer.paint([q], skin, cls=ANIMAL)
            elif kind == "ear_far":
                layer.paint([q], coat * 0.7, cls=EARS)
            elif kind == "ear":
                layer.paint([q], coat * 0.95, cls=EARS)
            elif kind == "inner_ear":
                layer.paint([q], skin * 0.95, cls=EARS)
            else:
                layer.paint([q], coat, cls=ANIMAL)
        eye_rgb = np.asarray(family["eyes"][eye_colour], np.float32)
        drawn = []
        for spec in fig.eyes:
            drawn.append(self._eye(layer, spec, to_px, shift, scale, eye_rgb, coat, skin, blur))
        whisker = (200, 205, 210) if fur in ("black", "agouti") else (235, 238, 240)
        for wpts in fig.whiskers:
            layer.paint([to_px(wpts) - shift], whisker, thickness=1, closed=False, opacity=rng.uniform(0.3, 0.6))
        alpha, image = layer.alpha, layer.image
        if blur:
            angle = rng.uniform(0, 180)
            kernel = np.zeros((int(blur) | 1, int(blur) | 1), np.float32)
            c = kernel.shape[0] // 2
            cv2.line(
                kernel,
                (int(c - c * math.cos(math.radians(angle))), int(c - c * math.sin(math.radians(angle)))),
                (int(c + c * math.cos(math.radians(angle))), int(c + c * math.sin(math.radians(angle)))),
                1.0,
                1,
            )
            kernel /= kernel.sum()
            image, alpha = cv2.filter2D(image, -1, kernel), cv2.filter2D(alpha, -1, kernel)
        clip = self.inside[y0:y1, x0:x1]
        alpha = alpha * clip
        region = self.canvas.image[y0:y1, x0:x1]
        region *= 1 - alpha[..., None]
        region += image * clip[..., None]
        labels = (layer.mask != 255) & (clip >= 0.5)
        self.canvas.mask[y0:y1, x0:x1][labels] = layer.mask[labels]
        self.eyes = [e for e in drawn if e is not None]

    def _coat(
        self, rng, family: dict, fur: str, shape: tuple[int, int], silhouette: list[np.ndarray], parts, shift
    ) -> np.ndarray:
        """Fur texture for the mouse layer: coat colour, hair streaks along the body, rounded shading."""
        body = next(p for k, p, _ in parts if k == "body") - shift
        axis = body[0] - body[len(body) // 2]
        angle = math.degrees(math.atan2(axis[1], axis[0]))
        spread = family["spread"]
        hairs = texture.streaks(rng, shape, angle, 9)
        blotch = texture.fractal_noise(rng, shape, 30, 3)
        coat = np.asarray(family["coat"], np.float32) * rng.uniform(0.9, 1.08)
        tex = coat * (1 + spread * blotch[..., None] + (0.5 * spread + 0.04) * hairs[..., None])
        if fur == "piebald":
            patches = texture.fractal_noise(rng, shape, 60, 2) > rng.uniform(0.0, 0.3)
            dark = np.asarray(_choice(rng, [(30, 28, 32), (55, 80, 105)]), np.float32)
            tex[patches] = dark * (1 + 0.15 * hairs[patches][:, None])
        solid = (coverage(shape, silhouette) >= 0.5).astype(np.uint8)
        dist = cv2.distanceTransform(solid, cv2.DIST_L2, 3)
        depth = np.sqrt(np.clip(dist / max(float(dist.max()) * 0.6, 1.0), 0, 1))
        rows = np.linspace(1.1, 0.9, shape[0], dtype=np.float32)[:, None]
        return np.clip(tex * ((0.6 + 0.4 * depth) * rows)[..., None], 0, 255)

    def _eye(
        self, layer: Canvas, spec: mice.EyeSpec, to_px, shift, scale: float, eye_rgb, coat, skin, blur: float
    ) -> DrawnEye | None:
        rng = self.rng
        min_half = 1.3 / scale  # at least a 3-px slit, so a closed eye is still a labelled, findable eye
        flat = mice.eye_outline(spec.width, spec.score, 0.0)
        half_h = float(np.abs(flat[:, 1]).max())
        if half_h < min_half:
            flat[:, 1] *= min_half / max(half_h, 1e-6)
        outline = mice.rotate(flat, spec.tilt_deg)
        centre = np.array(spec.centre)
        rim = to_px(centre + outline * 1.3) - shift
        fill = to_px(centre + outline) - shift
        c = to_px(centre)[0] - shift
        fur_here = coat[int(np.clip(c[1], 0, coat.shape[0] - 1)), int(np.clip(c[0], 0, coat.shape[1] - 1))]
        layer.paint([rim], (skin * 0.6 + fur_here * 0.4) * 0.8, cls=ANIMAL)
        layer.paint([fill], eye_rgb * rng.uniform(0.85, 1.15), cls=EYES)
        span = float(np.ptp(fill[:, 1]))
        if span >= 5:
            r = max(1.0, 0.12 * float(np.ptp(fill[:, 0])))
            hl = c + (-0.25 * np.ptp(fill[:, 0]) * 0.5, -0.25 * span)
            layer.paint([mice.ellipse(hl[0], hl[1], r, r)], (250, 250, 250), opacity=rng.uniform(0.6, 0.95))
        if spec.score >= 5:
            strength = (spec.score - 4) / 5
            for k in range(1 + int(spec.score >= 7)):
                arc = mice.eye_outline(spec.width * (1.5 + 0.3 * k), 0.0, spec.tilt_deg)
                arc = arc[(arc[:, 1] - np.tan(math.radians(spec.tilt_deg)) * arc[:, 0]) < 0][2:-2]
                if len(arc) >= 2:
                    layer.paint(
                        [to_px(centre + arc * (1, 0.55 + 0.2 * k)) - shift],
                        fur_here * 0.55,
                        thickness=1,
                        closed=False,
                        opacity=0.35 + 0.4 * strength,
                    )
        score = None if blur > UNSCORABLE_BLUR_PX else spec.score
        return DrawnEye(
            float(c[0] + shift[0] + self.origin[0]),
            float(c[1] + shift[1] + self.origin[1]),
            score,
            fill + shift + self.origin,
        )

    def _shadow(self, bedding_top: float, length: float) -> None:
        t = np.linspace(0, 2 * math.pi, 24, endpoint=False)
        yaw = math.radians(self.mouse_yaw)
        a, b = 0.55 * length, 0.18 * length
        pts = [
            (
                self.mouse_at[0] + a * math.cos(yaw) * math.cos(s) - b * math.sin(yaw) * math.sin(s),
                bedding_top,
                self.mouse_at[2] + a * math.sin(yaw) * math.cos(s) + b * math.cos(yaw) * math.sin(s),
            )
            for s in t
        ]
        h, w = self.canvas.shape
        shadow = cv2.GaussianBlur(coverage((h, w), [self.px(pts)]), (0, 0), 6) * self.rng.uniform(0.25, 0.5)
        self.canvas.blend((0, 0, w, h), shadow, (10, 10, 15))

    # --- eye visibility -------------------------------------------------------------------
    def _eye_area(self, e: DrawnEye) -> int:
        return int(self._eye_region(e)[1].sum())

    def _eye_region(self, e: DrawnEye) -> tuple[tuple[slice, slice], np.ndarray]:
        p = e.outline - self.origin
        x0, y0 = np.floor(p.min(axis=0)).astype(int).clip(0)
        h, w = self.canvas.shape
        x1, y1 = min(int(np.ceil(p[:, 0].max())) + 1, w), min(int(np.ceil(p[:, 1].max())) + 1, h)
        if x1 <= x0 or y1 <= y0:
            return (slice(0, 0), slice(0, 0)), np.zeros((0, 0), bool)
        inside = coverage((y1 - y0, x1 - x0), [p], (x0, y0)) >= 0.5
        return (slice(y0, y1), slice(x0, x1)), inside

    def _eye_pixels(self) -> int:
        total = 0
        for e in self.eyes:
            sl, inside = self._eye_region(e)
            total += int(np.count_nonzero((self.canvas.mask[sl] == EYES) & inside))
        return total

    def _lose(self, what: str, before: int) -> int:
        now = self._eye_pixels()
        if now < before:
            self.lost[what] = self.lost.get(what, 0) + before - now
        return now

    def labelled_eyes(self, mask: np.ndarray) -> list[Eye]:
        """Eyes with `visible` from what is left of them in the final mask."""
        out = []
        for e in self.eyes:
            sl, inside = self._eye_region(e)
            area = int(inside.sum())
            left = int(np.count_nonzero((self.canvas.mask[sl] == EYES) & inside))
            cx, cy = round(e.x), round(e.y)
            centre_ok = 0 <= cy < mask.shape[0] and 0 <= cx < mask.shape[1] and mask[cy, cx] == EYES
            visible = bool(centre_ok and area and left >= EYE_VISIBLE_FRACTION * area)
            out.append(Eye(round(e.x, 2), round(e.y, 2), e.score if visible else None, visible))
        return out


def _light_field(rng: np.random.Generator, kind: str) -> np.ndarray:
    """Relative illumination over the frame, computed small and scaled up (light varies slowly)."""
    h, w = HEIGHT // 16, WIDTH // 16
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx /= w
    yy /= h
    if kind == "dim":
        field = np.full((h, w), rng.uniform(0.42, 0.62), np.float32)
    elif kind == "side":
        ramp = xx if rng.random() < 0.5 else 1 - xx
        field = rng.uniform(0.45, 0.7) + rng.uniform(0.4, 0.6) * ramp
    elif kind == "spot":
        cx, cy, s = rng.uniform(0.2, 0.8), rng.uniform(-0.2, 0.5), rng.uniform(0.25, 0.5)
        field = 0.55 + rng.uniform(0.5, 0.75) * np.exp(-(((xx - cx) * w / h) ** 2 + (yy - cy) ** 2) / (2 * s * s))
    else:
        field = np.full((h, w), rng.uniform(0.92, 1.12), np.float32)
        if kind == "bands":
            field = field * (
                1 + rng.uniform(0.06, 0.15) * np.sin(2 * math.pi * yy * rng.uniform(3, 9) + rng.uniform(0, 6.3))
            )
    field = field * (1 + 0.05 * texture.value_noise(rng, (h, w), 12))
    return cv2.resize(field.astype(np.float32), (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)


def _shelf(rng: np.random.Generator, canvas: Canvas, cam: Camera, boxes: list[BoxGeometry]) -> None:
    """The metal shelf the cages stand on, wider than the row of cages."""
    left, right = boxes[0].x0 - 400, boxes[-1].x1 + 400
    y = max(b.y1 for b in boxes)
    z = min(b.z0 for b in boxes) - 10
    depth = max(b.z0 + b.depth for b in boxes) + 20
    grey = rng.uniform(90, 170)
    top = cam.project(np.array([(left, y, z), (right, y, z), (right, y, depth), (left, y, depth)]))
    lip = cam.project(np.array([(left, y, z), (right, y, z), (right, y + 30, z), (left, y + 30, z)]))
    canvas.paint([top], (grey, grey, grey + 4), cls=0)
    canvas.paint([lip], (grey * 0.75, grey * 0.75, grey * 0.78), cls=0)


def render_frame(seed: int, index: int) -> RenderedFrame:
    """Frame `index` of the set drawn from `seed`: the same pair always gives the same frame."""
    rng = np.random.default_rng([seed, index])
    cam, geometries, conditions = sample_rack(rng)
    backdrop = _choice(rng, BACKDROPS)
    image = texture.fabric(rng, (HEIGHT, WIDTH), BACKDROPS[backdrop])
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    canvas = Canvas(image, mask)
    _shelf(rng, canvas, cam, geometries)
    painters = [BoxPainter(rng, canvas, cam, g, i) for i, g in enumerate(geometries)]
    rendered = [p.paint() for p in painters]
    lighting = _choice(rng, LIGHTING)
    temp = _choice(rng, COLOUR_TEMPS)
    field = _light_field(rng, lighting)
    image *= field[..., None] * np.asarray(COLOUR_TEMPS[temp], np.float32)
    defocus = float(rng.uniform(0.4, 1.8)) if rng.random() < 0.6 else 0.0
    if defocus:
        image = cv2.GaussianBlur(image, (0, 0), defocus)
    noise = float(rng.uniform(1.0, 5.0)) * (1.6 if lighting == "dim" else 1.0)
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise)
    frame = np.clip(image, 0, 255).astype(np.uint8)
    quality = int(rng.integers(55, 96)) if rng.random() < 0.5 else 100
    if quality < 100:
        frame = cv2.imdecode(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_COLOR)
    conditions.update(
        backdrop=backdrop,
        lighting=lighting,
        light_level=round(float(field.mean()), 2),
        colour_temp=temp,
        defocus_px=round(defocus, 2),
        noise_sigma=round(noise, 2),
        jpeg_quality=quality,
    )
    boxes = []
    for painter, r in zip(painters, rendered):
        eyes = painter.labelled_eyes(mask)
        boxes.append(Box(r.number, r.roi, any(e.visible for e in eyes), tuple(eyes), r.conditions))
    return RenderedFrame(frame, mask, tuple(boxes), conditions)
