"""Where the four boxes sit in the frame, and the static scene behind the animals.

A camera placement (`RackLayout`) is fixed for a video and for a session of dataset frames; its
background (light tent, red backdrop, rack, transparent boxes with frames and bedding) and the
glare on the box fronts are rendered once and reused, so a frame only costs the animals.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FRAME_H, FRAME_W = 1080, 1920
BOX_W, BOX_H, BOX_GAP, BOX_TOP = 430, 600, 34, 250
LID_PX, BEDDING_FRAC, WALL_PX = 26, 0.13, 9


@dataclass(frozen=True)
class RackLayout:
    """Box ROIs as (x, y, w, h) in full-frame pixels, left to right, plus the scene variant."""

    rois: tuple[tuple[int, int, int, int], ...]
    variant: int = 0  # seeds the backdrop texture and lighting of this camera placement
    width: int = FRAME_W
    height: int = FRAME_H
    # Randomised placements (export.synth.randomise) draw on a canvas `pad` px larger on every side,
    # so a box cut by the frame edge or a tilted view is still drawn whole; `rois` are then canvas
    # coordinates and the frame's ROIs come from the renderer. `style` is a randomise.SceneStyle.
    pad: int = 0
    style: object | None = None

    @property
    def canvas(self) -> tuple[int, int]:
        return self.height + 2 * self.pad, self.width + 2 * self.pad

    @classmethod
    def default(cls) -> RackLayout:
        x0 = (FRAME_W - (4 * BOX_W + 3 * BOX_GAP)) // 2
        return cls(tuple((x0 + i * (BOX_W + BOX_GAP), BOX_TOP, BOX_W, BOX_H) for i in range(4)))

    @classmethod
    def random(cls, seed: int) -> RackLayout:
        """A slightly different camera placement: shift, zoom and a few px per box."""
        rng = np.random.default_rng([seed, 0x1A7])
        zoom = rng.uniform(0.93, 1.03)
        w, h, gap = round(BOX_W * zoom), round(BOX_H * zoom), round(BOX_GAP * zoom)
        total = 4 * w + 3 * gap
        spare_x = FRAME_W - total - 24
        x0 = 12 + int(rng.integers(0, max(spare_x, 1)))
        y0 = int(np.clip(BOX_TOP + rng.normal(0, 30), 40, FRAME_H - h - 60))
        rois = []
        for i in range(4):
            dx, dy = (int(v) for v in rng.integers(-5, 6, size=2))
            x = int(np.clip(x0 + i * (w + gap) + dx, 0, FRAME_W - w))
            rois.append((x, int(np.clip(y0 + dy, 0, FRAME_H - h)), w, h))
        return cls(tuple(rois), variant=int(seed) & 0x7FFFFFFF)

    def interior(self, box: int) -> tuple[int, int, int, int]:
        """Margins (left, top, right, bottom) inside the ROI where an animal may be: below the lid, inside the walls."""
        _, _, w, h = self.rois[box]
        if self.style is None:
            return WALL_PX + 6, LID_PX + 8, WALL_PX + 6, int(h * BEDDING_FRAC * 0.4)
        k = w / BOX_W
        wall, lid = round((WALL_PX + 6) * k), round((LID_PX + 8) * k)
        return wall, lid, wall, int(h * self.style.bedding_frac * 0.4)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    small = rng.standard_normal((max(h // cell, 2), max(w // cell, 2))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def light_map(layout: RackLayout) -> np.ndarray:
    """Relative illumination (about 0.8-1.15) over the frame: the tent lamp is off-centre and above."""
    rng = np.random.default_rng([layout.variant, 0x11])
    yy, xx = np.mgrid[0 : layout.height, 0 : layout.width].astype(np.float32)
    cx, cy = rng.uniform(0.3, 0.7) * layout.width, rng.uniform(-0.3, 0.3) * layout.height
    d = np.hypot((xx - cx) / layout.width, (yy - cy) / layout.height)
    return (1.15 - 0.35 * d * rng.uniform(0.6, 1.2)).astype(np.float32)


@dataclass(frozen=True)
class Scene:
    background: np.ndarray  # BGR uint8, full frame
    glare: tuple[np.ndarray, ...]  # per box ROI, additive BGR uint8 reflections on the front wall
    light: np.ndarray  # float32 full-frame illumination, for shading the animals
    # per box ROI: things in front of the animal (cage card, water bottle, food hopper), each
    # (x0, y0, BGR uint8 picture, alpha uint8) in ROI pixels; empty for the original generator
    front: tuple[tuple[tuple[int, int, np.ndarray, np.ndarray], ...], ...] = ()


def plain_scene(layout: RackLayout) -> Scene:
    """The original generator's static scene (red backdrop, tent, rack); `scenery.scene` picks it
    for layouts without a style."""
    rng = np.random.default_rng([layout.variant, 0x5C])
    h, w = layout.height, layout.width
    light = light_map(layout)
    img = np.empty((h, w, 3), np.float32)
    red = np.array([38, 34, 172], np.float32) * rng.uniform(0.85, 1.1, size=3).astype(np.float32)
    img[:] = red
    img += (_smooth_noise(rng, h, w, 90) * 10.0)[..., None]
    img += (rng.standard_normal((h, w)).astype(np.float32) * 3.0)[..., None]
    folds = _smooth_noise(rng, h, w, 240)
    img *= (1.0 + 0.08 * folds)[..., None]

    tent = np.array([205, 208, 212], np.float32)
    tm = int(rng.integers(30, 70))
    img[:tm] = tent
    img[:, : int(rng.integers(10, 50))] = tent * 0.93
    img[:, w - int(rng.integers(10, 50)) :] = tent * 0.9
    img[h - int(rng.integers(20, 60)) :] = tent * 0.85

    x_first = layout.rois[0][0]
    x_last = layout.rois[-1][0] + layout.rois[-1][2]
    bottom = max(y + bh for _, y, _, bh in layout.rois)
    top = min(y for _, y, _, _ in layout.rois)
    metal = np.array([150, 150, 156], np.float32)
    img[bottom : bottom + 34, max(x_first - 30, 0) : x_last + 30] = metal
    img[bottom + 34 : bottom + 40, max(x_first - 30, 0) : x_last + 30] = metal * 0.6
    img[max(top - 30, 0) : top - 6, max(x_first - 30, 0) : x_last + 30] = metal * 1.05
    for px in (max(x_first - 30, 0), x_last + 8):
        img[max(top - 30, 0) : bottom + 40, px : px + 22] = metal * 0.9

    glare = []
    for bx, by, bw, bh in layout.rois:
        box = img[by : by + bh, bx : bx + bw]
        box *= 0.9
        box += np.array([22, 24, 20], np.float32)
        bed_h = int(bh * BEDDING_FRAC)
        bed = box[bh - bed_h :]
        bed[:] = np.array([120, 168, 196], np.float32)
        grains = rng.standard_normal((bed_h, bw)).astype(np.float32)
        bed += (cv2.GaussianBlur(grains, (0, 0), 1.6) * 60.0)[..., None]
        for _ in range(90):
            cx, cy = int(rng.integers(0, bw)), int(rng.integers(0, bed_h))
            cv2.ellipse(
                bed,
                (cx, cy),
                (int(rng.integers(3, 10)), int(rng.integers(2, 5))),
                float(rng.uniform(0, 180)),
                0,
                360,
                (90.0, 130.0, 165.0),
                -1,
            )
        box[:LID_PX] = np.array([175, 178, 180], np.float32)
        for hx in range(18, bw - 10, 26):
            cv2.circle(box, (hx, LID_PX // 2), 4, (60.0, 60.0, 70.0), -1)
        box[:, :WALL_PX] = box[:, :WALL_PX] * 0.5 + 120
        box[:, bw - WALL_PX :] = box[:, bw - WALL_PX :] * 0.5 + 120
        box[bh - 6 :] = box[bh - 6 :] * 0.5 + 110

        g = np.zeros((bh, bw), np.float32)
        for _ in range(int(rng.integers(1, 4))):
            x = int(rng.integers(0, bw))
            slope = rng.uniform(-0.35, 0.35)
            pts = np.array([[x, 0], [int(x + slope * bh), bh]], np.int32)
            cv2.polylines(g, [pts], False, float(rng.uniform(25, 60)), int(rng.integers(6, 30)))
        g = cv2.GaussianBlur(g, (0, 0), 7)
        glare.append(np.clip(np.repeat(g[..., None], 3, axis=2), 0, 255).astype(np.uint8))

    img *= light[..., None]
    img *= rng.uniform(0.93, 1.07, size=3).astype(np.float32)  # white balance of this camera
    return Scene(np.clip(img, 0, 255).astype(np.uint8), tuple(glare), light)
