"""Parametric mice: outlines in the animal's own plane, in millimetres, for four poses.

A mouse is a flat figure standing in a vertical plane inside the box (u along the plane, v down,
origin on the ground under the animal); the scene turns that plane about the vertical axis and
projects it through the camera. Outlines are closed curves (egg, teardrop, ellipse), not pictures,
so every size and angle comes from a few numbers.

The eye follows the orbital-tightening definition: at score 0 it is fully open and round; the lid
aperture (height / width) falls linearly with the score to a thin slit at 9, and from score 5 on
creases appear around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

POSES = ("profile", "front", "back", "rearing", "sniffing")
APERTURE_AT_9 = 0.12


def aperture(score: float) -> float:
    """Lid opening height / eye width: 1 (round) at score 0 down to APERTURE_AT_9 at 9."""
    return 1.0 - (1.0 - APERTURE_AT_9) * min(max(score, 0.0), 9.0) / 9.0


def eye_outline(width: float, score: float, tilt_deg: float, n: int = 28) -> np.ndarray:
    """Closed lid outline around (0, 0): almond-shaped, narrower as the score rises."""
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    w = width * (1.0 - 0.12 * score / 9.0)
    half_h = 0.5 * w * aperture(score)
    s = np.sin(t)
    pts = np.stack([0.5 * w * np.cos(t), half_h * np.sign(s) * np.abs(s) ** 0.8], axis=1)
    return rotate(pts, tilt_deg)


def rotate(pts: np.ndarray, deg: float, about: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    p = np.asarray(pts, np.float64) - about
    return np.stack([c * p[:, 0] - s * p[:, 1], s * p[:, 0] + c * p[:, 1]], axis=1) + about


def ellipse(cx: float, cy: float, a: float, b: float, deg: float = 0.0, n: int = 36) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return rotate(np.stack([a * np.cos(t), b * np.sin(t)], axis=1), deg) + (cx, cy)


def egg(cx: float, cy: float, a: float, b: float, taper: float, n: int = 48) -> np.ndarray:
    """An egg along u: the +u end is `taper` narrower than the -u end (a body, wider at the hips)."""
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + a * np.cos(t), cy + b * np.sin(t) * (1 - taper * np.cos(t))], axis=1)


def teardrop(
    cx: float, cy: float, half_len: float, half_h: float, deg: float, bluntness: float, n: int = 48
) -> np.ndarray:
    """A head: rounded at the back, pointed at +u (the snout); `bluntness` rounds the point."""
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    y = half_h * np.sin(t) * (np.abs(np.sin(t / 2)) ** 1.1 * (1 - bluntness) + bluntness)
    return rotate(np.stack([half_len * np.cos(t), y], axis=1), deg) + (cx, cy)


@dataclass(frozen=True)
class EyeSpec:
    centre: tuple[float, float]  # (u, v) mm in the mouse plane
    width: float  # mm, at score 0
    tilt_deg: float
    score: float


@dataclass
class Figure:
    """A posed mouse: parts in drawing order, each (kind, outline or polyline, thickness mm)."""

    parts: list[tuple[str, np.ndarray, float]] = field(default_factory=list)
    eyes: list[EyeSpec] = field(default_factory=list)
    whiskers: list[np.ndarray] = field(default_factory=list)

    def add(self, kind: str, pts: np.ndarray, thickness: float = 0.0) -> None:
        self.parts.append((kind, np.asarray(pts, np.float64), thickness))

    def transformed(self, deg: float, about: tuple[float, float], mirror: bool) -> Figure:
        """Turn the whole figure about a point of the plane (rearing, sniffing) and mirror it."""

        def tf(p: np.ndarray) -> np.ndarray:
            q = rotate(p, deg, about)
            return q * (-1, 1) if mirror else q

        out = Figure()
        out.parts = [(k, tf(p), th) for k, p, th in self.parts]
        out.whiskers = [tf(w) for w in self.whiskers]
        for e in self.eyes:
            c = tf(np.array([e.centre]))[0]
            tilt = e.tilt_deg + deg
            out.eyes.append(EyeSpec((float(c[0]), float(c[1])), e.width, -tilt if mirror else tilt, e.score))
        return out


def bezier(p0, p1, p2, p3, n: int = 20) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2, p3 = (np.asarray(p, np.float64) for p in (p0, p1, p2, p3))
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3


def _whiskers(
    rng: np.random.Generator, root: tuple[float, float], direction: float, length: float, count: int
) -> list[np.ndarray]:
    out = []
    for _ in range(count):
        ang = math.radians(direction + rng.uniform(-35, 35))
        ln = length * rng.uniform(0.6, 1.0)
        bend = rng.uniform(-0.15, 0.15) * ln
        end = (root[0] + ln * math.cos(ang), root[1] + ln * math.sin(ang))
        mid = ((root[0] + end[0]) / 2 - bend * math.sin(ang), (root[1] + end[1]) / 2 + bend * math.cos(ang))
        out.append(bezier(root, mid, mid, end, 8))
    return out


def profile(rng: np.random.Generator, length: float, eye_width: float, score: float, head_pitch: float) -> Figure:
    """Side view facing +u: egg body, teardrop head with one ear and one eye, tail, paws."""
    f = Figure()
    a, b = length / 2, length * rng.uniform(0.17, 0.21)
    body_cy = -b * 1.02
    hl, hh = length * rng.uniform(0.17, 0.2), length * rng.uniform(0.12, 0.145)
    neck = (a * 0.62, body_cy - b * 0.25)
    head_c = rotate(np.array([[neck[0] + hl * 0.85, neck[1]]]), head_pitch, neck)[0]
    ear_c = rotate(np.array([[head_c[0] - hl * 0.55, head_c[1] - hh * 0.95]]), head_pitch, tuple(head_c))[0]
    f.add(
        "ear_far", ellipse(ear_c[0] - hl * 0.25, ear_c[1] + hh * 0.05, length * 0.07, length * 0.095, -25 + head_pitch)
    )
    tail_len = length * rng.uniform(0.75, 1.0)
    droop = rng.uniform(-0.15, 0.25) * length
    f.add(
        "tail",
        bezier(
            (-a * 0.95, body_cy + b * 0.3),
            (-a - tail_len * 0.4, -0.02 * length),
            (-a - tail_len * 0.7, droop),
            (-a - tail_len, droop * 0.6 - 0.05 * length),
        ),
        length * 0.03,
    )
    f.add("paw", ellipse(-a * 0.45, -length * 0.025, length * 0.07, length * 0.03))
    f.add("body", egg(0.0, body_cy, a, b, rng.uniform(0.1, 0.2)))
    f.add("paw", ellipse(a * 0.55, -length * 0.02, length * 0.045, length * 0.022))
    f.add("head", teardrop(head_c[0], head_c[1], hl, hh, head_pitch, rng.uniform(0.12, 0.25)))
    f.add("ear", ellipse(ear_c[0], ear_c[1], length * 0.075, length * 0.1, -20 + head_pitch))
    f.add(
        "inner_ear",
        ellipse(ear_c[0] + length * 0.008, ear_c[1] + length * 0.01, length * 0.045, length * 0.065, -20 + head_pitch),
    )
    snout = rotate(np.array([[head_c[0] + hl * 0.95, head_c[1] + hh * 0.05]]), head_pitch, tuple(head_c))[0]
    f.add("nose", ellipse(snout[0], snout[1], length * 0.016, length * 0.013))
    eye = rotate(
        np.array([[head_c[0] + hl * rng.uniform(0.05, 0.2), head_c[1] - hh * rng.uniform(0.2, 0.35)]]),
        head_pitch,
        tuple(head_c),
    )[0]
    f.eyes.append(EyeSpec((float(eye[0]), float(eye[1])), eye_width, head_pitch + rng.uniform(-12, 8), score))
    f.whiskers = _whiskers(rng, (snout[0] - hl * 0.15, snout[1]), head_pitch, length * 0.22, int(rng.integers(4, 8)))
    return f


def front(rng: np.random.Generator, length: float, eye_width: float, scores: tuple[float, float]) -> Figure:
    """Head towards the camera: body behind and above the head, two ears, two eyes, snout down."""
    f = Figure()
    bw, bh = length * rng.uniform(0.2, 0.24), length * rng.uniform(0.17, 0.21)
    f.add(
        "tail",
        bezier((0, -length * 0.05), (bw * 1.2, -length * 0.02), (bw * 1.6, -length * 0.1), (bw * 2.0, -length * 0.05)),
        length * 0.03,
    )
    f.add("body", ellipse(0, -length * 0.27, bw, bh))
    hw, hh = length * rng.uniform(0.14, 0.17), length * rng.uniform(0.17, 0.2)
    head_cy = -length * 0.19
    for side in (-1, 1):
        f.add("paw", ellipse(side * length * 0.06, -length * 0.015, length * 0.035, length * 0.022))
    f.add("head", teardrop(0, head_cy, hh, hw, 90, rng.uniform(0.2, 0.35)))
    for side in (-1, 1):
        ex, ey = side * hw * 0.95, head_cy - hh * 0.85
        f.add("ear", ellipse(ex, ey, length * 0.075, length * 0.095, side * 25))
        f.add("inner_ear", ellipse(ex, ey + length * 0.008, length * 0.045, length * 0.06, side * 25))
    f.add("nose", ellipse(0, head_cy + hh * 0.93, length * 0.02, length * 0.014))
    spread = rng.uniform(0.5, 0.62)
    height = head_cy - hh * rng.uniform(0.12, 0.25)
    for side, score in zip((-1, 1), scores):
        f.eyes.append(EyeSpec((side * hw * spread, height), eye_width * 0.92, side * rng.uniform(10, 25), score))
    for side in (-1, 1):
        f.whiskers += _whiskers(
            rng, (side * hw * 0.2, head_cy + hh * 0.8), 90 - side * 75, length * 0.22, int(rng.integers(3, 6))
        )
    return f


def back(rng: np.random.Generator, length: float) -> Figure:
    """Turned away: body, the backs of the ears above it and the tail; no eye can be seen."""
    f = Figure()
    bw, bh = length * rng.uniform(0.2, 0.25), length * rng.uniform(0.18, 0.22)
    for side in (-1, 1):
        f.add("ear", ellipse(side * bw * 0.55, -bh * 2.05, length * 0.07, length * 0.09, side * 20))
    f.add("body", ellipse(0, -bh, bw, bh))
    f.add(
        "tail",
        bezier(
            (0, -length * 0.02),
            (0, length * 0.01),
            (rng.uniform(-1, 1) * bw * 2, 0),
            (rng.uniform(-1, 1) * bw * 2.5, -length * 0.04),
        ),
        length * 0.03,
    )
    return f


def pose_figure(
    rng: np.random.Generator, pose: str, length: float, eye_width: float, scores: tuple[float, float], mirror: bool
) -> Figure:
    if pose == "front":
        return front(rng, length, eye_width, scores).transformed(0, (0, 0), mirror)
    if pose == "back":
        return back(rng, length)
    if pose == "rearing":
        fig = profile(rng, length, eye_width, scores[0], rng.uniform(-5, 15))
        return fig.transformed(-rng.uniform(35, 60), (-length * 0.45, 0), mirror)
    pitch = rng.uniform(25, 45) if pose == "sniffing" else rng.uniform(-15, 12)
    return profile(rng, length, eye_width, scores[0], pitch).transformed(0, (0, 0), mirror)
