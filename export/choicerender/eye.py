"""The eye drawing: an almond opening whose lids close as orbital tightening rises.

Score-to-eye mapping (this renderer's own, see docs/choice-renderer.md), with t = score / 9:
- opening height / eye width: r(t) = 0.70 * (1 - t**0.85) + 0.045 * t (0.70 round, 0.045 a slit);
- lid curve y = h * (1 - x**2) ** e with e(t) = 0.5 + 0.9 * t (a circle-like rim at 0, pointed corners at 9);
- the upper lid does most of the closing: the opening's upper part is 60 % of it at 0 and 40 % at 9;
- the eye narrows to (1 - 0.12 t) of its width; squeezed skin folds (0 to 4 per lid) appear above t = 0.35,
  and short folds fan out from the outer corner above t = 0.6.
A blink closes the lids to a line whatever the score, and is labelled unscored.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from export.choicerender.palette import Coat
from export.choicerender.sprite import Sprite


@dataclass(frozen=True)
class EyeDraw:
    """One eye in sprite coordinates; `width` is its corner-to-corner length when wide open."""

    centre: tuple[float, float]
    width: float
    angle_deg: float
    score: float
    blink: bool


def opening_ratio(score: float, blink: bool) -> float:
    """Height of the lid opening as a fraction of the eye's width."""
    if blink:
        return 0.0
    t = min(max(score / 9.0, 0.0), 1.0)
    return 0.70 * (1.0 - t**0.85) + 0.045 * t


def _to_sprite(eye: EyeDraw, pts: np.ndarray) -> np.ndarray:
    a = np.radians(eye.angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return pts @ rot.T + np.asarray(eye.centre)


def _lids(eye: EyeDraw) -> tuple[np.ndarray, np.ndarray, float]:
    """Upper and lower lid curves (eye-local, corner to corner) and the half-width used."""
    t = min(max(eye.score / 9.0, 0.0), 1.0) if not eye.blink else 1.0
    half = 0.5 * eye.width * (1.0 - 0.12 * t)
    height = opening_ratio(eye.score, eye.blink) * eye.width
    e = 0.5 + 0.9 * t
    up_share = 0.6 - 0.2 * t
    x = np.linspace(-1.0, 1.0, 33)
    bulge = (1.0 - x**2) ** e
    offset = height * (up_share - 0.5)
    upper = np.stack([x * half, offset - height * up_share * bulge], axis=-1)
    lower = np.stack([x * half, offset + height * (1 - up_share) * bulge], axis=-1)
    return upper, lower, half


def _folds(sprite: Sprite, eye: EyeDraw, half: float, coat: Coat) -> None:
    t = eye.score / 9.0 if not eye.blink else 0.8
    n = int(round(4 * max(0.0, t - 0.35) / 0.65))
    dark = (int(coat.base[0] * 0.45), int(coat.base[1] * 0.45), int(coat.base[2] * 0.45))
    thick = max(1, int(round(eye.width / 16)))
    x = np.linspace(-0.9, 0.9, 21)
    for k in range(1, n + 1):
        span = 1.0 + 0.12 * k
        gap = 0.09 * eye.width * k
        for side in (-1.0, 1.0):
            y = side * (0.04 * eye.width + gap) * (1.0 - x**2) ** 0.7
            pts = np.stack([x * half * span, y], axis=-1)
            sprite.stroke(_to_sprite(eye, pts), dark, thick, None)
    if t > 0.6:
        for a in np.radians([-25.0, 0.0, 25.0]):
            ray = np.array([[1.05, 0.0], [1.05 + 0.3 * np.cos(a), 0.3 * np.sin(a)]]) * half
            sprite.stroke(_to_sprite(eye, ray), dark, thick, None)


def draw_eye(sprite: Sprite, eye: EyeDraw, coat: Coat) -> tuple[float, float]:
    """Paint the eye (class 3) and its folds; returns the opening's centre, the labelled eye position."""
    upper, lower, half = _lids(eye)
    _folds(sprite, eye, half, coat)
    aperture = np.concatenate([upper, lower[::-1]])
    mid = 0.5 * (upper + lower)
    lo = np.floor(sprite.local(_to_sprite(eye, aperture)).min(axis=0)).astype(int) - 2
    hi = np.ceil(sprite.local(_to_sprite(eye, aperture)).max(axis=0)).astype(int) + 3
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [sprite.colour.shape[1], sprite.colour.shape[0]])
    ox, oy = int(lo[0]), int(lo[1])
    patch_h, patch_w = int(hi[1] - lo[1]), int(hi[0] - lo[0])
    if patch_h > 0 and patch_w > 0:
        shift = np.asarray(sprite.origin) + [ox, oy]

        def to_patch(p: np.ndarray) -> np.ndarray:
            return np.round((_to_sprite(eye, p) - shift) * 16).astype(np.int32).reshape(-1, 1, 2)

        cover = np.zeros((patch_h, patch_w), np.uint8)
        cv2.fillPoly(cover, [to_patch(aperture)], 255, lineType=cv2.LINE_AA, shift=4)
        ball = np.empty((patch_h, patch_w, 3), np.uint8)
        ball[:] = coat.iris
        cx, cy = to_patch(np.array([[0.0, mid[16, 1]]]))[0, 0]
        cv2.circle(ball, (int(cx), int(cy)), int(0.2 * eye.width * 16), coat.pupil, -1, cv2.LINE_AA, 4)
        hx, hy = to_patch(np.array([[-0.18 * eye.width, mid[16, 1] - 0.12 * eye.width]]))[0, 0]
        cv2.circle(ball, (int(hx), int(hy)), max(16, int(0.07 * eye.width * 16)), (245, 248, 250), -1, cv2.LINE_AA, 4)
        region = sprite.colour[oy : oy + patch_h, ox : ox + patch_w]
        a = cover[..., None].astype(np.float32) / 255.0
        region[:] = (region * (1 - a) + ball * a).astype(np.uint8)
        cv2.fillPoly(sprite.classes[oy : oy + patch_h, ox : ox + patch_w], [to_patch(aperture)], 3, cv2.LINE_8, shift=4)
        sprite.fur[oy : oy + patch_h, ox : ox + patch_w][cover > 0] = 0
    rim = max(1, int(round(eye.width / 14)))
    sprite.stroke(_to_sprite(eye, upper), coat.lid, rim, None)
    sprite.stroke(_to_sprite(eye, lower), coat.lid, rim, None)
    if opening_ratio(eye.score, eye.blink) * eye.width < 4.0:
        sprite.stroke(_to_sprite(eye, mid[6:27]), coat.lid, 2, 3)
    centre = _to_sprite(eye, mid[16:17])[0]
    return float(centre[0]), float(centre[1])
