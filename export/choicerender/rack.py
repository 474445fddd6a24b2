"""The rack around the animals: backdrop, shelf rails, cage boxes (back, bedding, front panel, lid)
and clutter. Opaque things in front of an animal also clear the class mask under them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

BACKDROPS = ("wall", "tiles", "shelves")
BEDDINGS = {"paper": (215, 225, 230), "aspen": (120, 175, 205), "corncob": (70, 120, 165)}


@dataclass(frozen=True)
class BoxLook:
    """One cage box: its full rectangle (it may run past the frame edge) and how it is fitted out."""

    x: int
    y: int
    w: int
    h: int
    lid_h: int
    bed_h: int
    bedding: str
    tint: tuple[float, float, float]
    haze: float
    bottle: bool
    hopper: bool
    card: bool

    @property
    def interior(self) -> tuple[int, int, int, int]:
        """Where an animal may be: below the lid, inside the walls (x0, y0, x1, y1, full-box coordinates)."""
        wall = max(4, self.w // 40)
        return self.x + wall, self.y + self.lid_h, self.x + self.w - wall, self.y + self.h - wall


def _clip(frame: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
    h, w = frame.shape[:2]
    return max(0, x0), max(0, y0), min(w, x1), min(h, y1)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    small = rng.normal(0, 1, (max(2, shape[0] // cells), max(2, shape[1] // cells))).astype(np.float32)
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def paint_backdrop(frame: np.ndarray, rng: np.random.Generator, kind: str) -> None:
    """Room behind the rack: a painted wall, a tiled wall or open metal shelving."""
    h, w = frame.shape[:2]
    base = (rng.uniform(60, 200) + rng.normal(0, 18, 3)).clip(30, 230).astype(np.float32)
    frame[:] = base * (1 + 0.08 * _smooth_noise(rng, (h, w), 120))[..., None]
    if kind == "tiles":
        step = int(rng.integers(60, 160))
        grout = tuple(float(v) for v in base * 0.75)
        for x in range(int(rng.integers(0, step)), w, step):
            cv2.line(frame, (x, 0), (x, h), grout, 3)
        for y in range(int(rng.integers(0, step)), h, step):
            cv2.line(frame, (0, y), (w, y), grout, 3)
    elif kind == "shelves":
        for y in range(int(rng.integers(0, 200)), h, int(rng.integers(180, 320))):
            cv2.rectangle(frame, (0, y), (w, y + 14), (150, 150, 155), -1)
            cv2.line(frame, (0, y + 2), (w, y + 2), (215, 215, 220), 2)
            cv2.rectangle(frame, (0, y + 14), (w, y + 40), tuple(float(v) for v in base * 0.55), -1)


def paint_rails(frame: np.ndarray, top: int, bottom: int, rng: np.random.Generator) -> None:
    """Shelf the boxes stand on and the rail their lids hang from."""
    w = frame.shape[1]
    metal = rng.uniform(110, 190)
    for y0, y1 in ((bottom, bottom + 28), (top - 22, top)):
        cv2.rectangle(frame, (0, y0), (w, y1), (metal, metal, metal * 1.03), -1)
        cv2.line(frame, (0, y0 + 3), (w, y0 + 3), (min(255.0, metal + 55),) * 3, 2)
        cv2.line(frame, (0, y1 - 2), (w, y1 - 2), (metal * 0.5,) * 3, 2)


def paint_box_back(frame: np.ndarray, box: BoxLook, rng: np.random.Generator) -> None:
    """The box seen through its front: a dimmed, tinted back panel, the rear edges, then the bedding."""
    x0, y0, x1, y1 = _clip(frame, box.x, box.y, box.x + box.w, box.y + box.h)
    region = frame[y0:y1, x0:x1]
    region[:] = region * 0.78 + np.asarray(box.tint, np.float32) * 0.22
    inset = int(0.07 * box.w)
    rear = (box.x + inset, box.y + inset // 2, box.x + box.w - inset, box.y + box.h - inset)
    edge = (200.0, 205.0, 205.0)
    cv2.rectangle(frame, rear[:2], rear[2:], edge, 2, cv2.LINE_AA)
    for (ax, ay), (bx, by) in zip(
        ((box.x, box.y), (box.x + box.w, box.y), (box.x, box.y + box.h), (box.x + box.w, box.y + box.h)),
        ((rear[0], rear[1]), (rear[2], rear[1]), (rear[0], rear[3]), (rear[2], rear[3])),
    ):
        cv2.line(frame, (ax, ay), (bx, by), edge, 1, cv2.LINE_AA)
    colour = np.asarray(BEDDINGS[box.bedding], np.float32)
    top = box.y + box.h - box.bed_h
    bx0, by0, bx1, by1 = _clip(frame, box.x + 2, top, box.x + box.w - 2, box.y + box.h - 2)
    frame[by0:by1, bx0:bx1] = colour * rng.uniform(0.8, 0.95)
    n = int(box.w * box.bed_h / 45)
    xs = rng.uniform(box.x, box.x + box.w, n)
    ys = rng.uniform(top - 0.12 * box.bed_h, box.y + box.h - 3, n)
    sizes = rng.uniform(2, max(3.0, box.w / 70), (n, 2))
    shades = rng.uniform(0.6, 1.2, n)
    angles = rng.uniform(0, 180, n)
    for x, y, (a, b), s, ang in zip(xs, ys, sizes, shades, angles):
        cv2.ellipse(
            frame,
            (int(x), int(y)),
            (int(a), int(b)),
            float(ang),
            0,
            360,
            tuple(float(v) for v in colour * s),
            -1,
            cv2.LINE_AA,
        )


def paint_shadow(frame: np.ndarray, centre: tuple[float, float], axes: tuple[float, float], strength: float) -> None:
    """A soft contact shadow on the bedding under an animal."""
    x0, y0 = int(centre[0] - 2 * axes[0]), int(centre[1] - 2 * axes[1])
    x1, y1 = int(centre[0] + 2 * axes[0]), int(centre[1] + 2 * axes[1])
    cx0, cy0, cx1, cy1 = _clip(frame, x0, y0, x1, y1)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    blob = np.zeros((y1 - y0, x1 - x0), np.float32)
    cv2.ellipse(blob, (int(centre[0]) - x0, int(centre[1]) - y0), (int(axes[0]), int(axes[1])), 0, 0, 360, 1.0, -1)
    soft = np.asarray(cv2.GaussianBlur(blob, (0, 0), max(2.0, axes[1] * 0.5)))[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    frame[cy0:cy1, cx0:cx1] *= (1 - strength * soft)[..., None]


def _occlude(frame: np.ndarray, mask: np.ndarray, poly: np.ndarray, colour: tuple[float, float, float]) -> None:
    pts = np.round(poly).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(frame, [pts], colour, cv2.LINE_AA)
    cv2.fillPoly(mask, [pts], 0, cv2.LINE_8)


def paint_box_front(frame: np.ndarray, mask: np.ndarray, box: BoxLook, rng: np.random.Generator) -> None:
    """Front panel haze and reflections, wall edges, the wire lid and the clutter on or in the box."""
    x0, y0, x1, y1 = _clip(frame, box.x, box.y, box.x + box.w, box.y + box.h)
    region = frame[y0:y1, x0:x1]
    region[:] = region * (1 - box.haze) + 235.0 * box.haze
    for _ in range(int(rng.integers(1, 4))):
        sx = rng.uniform(box.x, box.x + box.w)
        width = rng.uniform(0.02, 0.08) * box.w
        slope = rng.uniform(-0.35, 0.35) * box.h
        streak = np.array(
            [[sx, box.y], [sx + width, box.y], [sx + width + slope, box.y + box.h], [sx + slope, box.y + box.h]]
        )
        layer = frame.copy()
        cv2.fillPoly(layer, [np.round(streak).astype(np.int32)], (250.0, 250.0, 250.0), cv2.LINE_AA)
        a = rng.uniform(0.06, 0.18)
        cv2.addWeighted(layer, a, frame, 1 - a, 0, dst=frame)
    cv2.rectangle(frame, (box.x, box.y), (box.x + box.w, box.y + box.h), (225.0, 228.0, 230.0), 3, cv2.LINE_AA)
    cv2.rectangle(
        frame, (box.x + 4, box.y + 4), (box.x + box.w - 4, box.y + box.h - 4), (120.0, 120.0, 125.0), 1, cv2.LINE_AA
    )
    metal = rng.uniform(70, 150)
    cv2.rectangle(frame, (box.x, box.y), (box.x + box.w, box.y + box.lid_h // 3), (metal,) * 3, -1)
    for wx in range(box.x + 6, box.x + box.w - 4, max(6, box.w // 40)):
        cv2.line(frame, (wx, box.y + box.lid_h // 3), (wx, box.y + box.lid_h), (metal * 1.3,) * 3, 1, cv2.LINE_AA)
    cv2.line(frame, (box.x, box.y + box.lid_h), (box.x + box.w, box.y + box.lid_h), (metal * 1.2,) * 3, 2, cv2.LINE_AA)
    mask[max(0, box.y) : max(0, box.y + box.lid_h), max(0, box.x) : max(0, box.x + box.w)] = 0
    if box.hopper:
        hx = box.x + int(box.w * rng.uniform(0.1, 0.4))
        hw = int(box.w * 0.3)
        v = np.array(
            [
                [hx, box.y + 2],
                [hx + hw, box.y + 2],
                [hx + hw * 0.7, box.y + box.lid_h - 2],
                [hx + hw * 0.3, box.y + box.lid_h - 2],
            ]
        )
        _occlude(frame, mask, v, (90.0, 95.0, 100.0))
        for _ in range(12):
            px, py = rng.uniform(hx + 0.2 * hw, hx + 0.8 * hw), rng.uniform(box.y + 4, box.y + box.lid_h - 5)
            cv2.circle(frame, (int(px), int(py)), max(2, box.w // 90), (50.0, 110.0, 150.0), -1, cv2.LINE_AA)
    if box.bottle:
        bx = box.x + int(box.w * rng.uniform(0.6, 0.85))
        bw = max(14, box.w // 12)
        top = max(0, box.y - int(box.h * 0.35))
        glass = frame[top : box.y + 2, max(0, bx - bw) : bx + bw]
        glass[:] = glass * 0.55 + np.array([210.0, 190.0, 170.0]) * 0.45
        tip = (bx - int(box.w * 0.06), box.y + box.lid_h + int(box.h * 0.12))
        tube = np.array([[bx - 3, box.y], [bx + 3, box.y], [tip[0] + 3, tip[1]], [tip[0] - 3, tip[1]]], np.float64)
        _occlude(frame, mask, tube, (185.0, 185.0, 190.0))
    if box.card:
        cw, ch = int(box.w * rng.uniform(0.18, 0.26)), int(box.h * rng.uniform(0.12, 0.18))
        cx = box.x + (8 if rng.random() < 0.5 else box.w - cw - 8)
        cy = box.y + box.lid_h + 6
        paper = np.array([rng.uniform(190, 245), rng.uniform(215, 250), rng.uniform(225, 252)])
        card = np.empty((ch, cw, 3), np.uint8)
        card[:] = paper.astype(np.uint8)
        for k in range(3):
            text = "".join(str(d) for d in rng.integers(0, 10, 5))
            cv2.putText(
                card, text, (4, int((k + 1) * ch / 3.6)), cv2.FONT_HERSHEY_PLAIN, ch / 60, (40, 40, 60), 1, cv2.LINE_AA
            )
        fx0, fy0, fx1, fy1 = _clip(frame, cx, cy, cx + cw, cy + ch)
        if fx1 > fx0 and fy1 > fy0:
            frame[fy0:fy1, fx0:fx1] = card[fy0 - cy : fy1 - cy, fx0 - cx : fx1 - cx]
            mask[fy0:fy1, fx0:fx1] = 0
