"""The score-over-time figure of one video, drawn with OpenCV.

OpenCV is already on every device; matplotlib would add tens of megabytes and a font cache to an
edge install only for this one picture, so it stays in the training extra. One panel per box:
the window scores as a line (broken where no face was visible: no face is not a score), the share
of frames with a visible face as blue shading behind it, and the alert threshold as a red line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from device.aggregate import BoxWindow
from mgs_core.messages import SCORE_MAX

WIDTH = 1200
PANEL_H = 220
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 34, 36
BLACK, GREY, LIGHT, RED, LINE, FACE = (
    (0, 0, 0),
    (120, 120, 120),
    (225, 225, 225),
    (40, 40, 220),
    (150, 60, 0),
    (245, 215, 170),
)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def draw_plot(
    title: str,
    windows: Sequence[BoxWindow],
    boxes: int,
    duration_s: float,
    threshold: float,
    labels: Mapping[int, str] | None = None,
) -> np.ndarray:
    """A BGR image: the title, then one panel per box."""
    labels = labels or {}
    header = 40
    canvas = np.full((header + boxes * PANEL_H, WIDTH, 3), 255, np.uint8)
    cv2.putText(canvas, title, (10, 27), FONT, 0.7, BLACK, 2, cv2.LINE_AA)
    span = max(duration_s, max((w.end for w in windows), default=0.0), 1e-6)
    for box in range(boxes):
        own = sorted((w for w in windows if w.box == box), key=lambda w: w.start)
        _panel(canvas, header + box * PANEL_H, own, span, threshold, labels.get(box, f"box {box}"))
    return canvas


def _panel(
    canvas: np.ndarray, y0: int, windows: Sequence[BoxWindow], span: float, threshold: float, label: str
) -> None:
    x_lo, x_hi = LEFT, WIDTH - RIGHT
    y_lo, y_hi = y0 + PANEL_H - BOTTOM, y0 + TOP

    def px(t: float) -> int:
        return round(x_lo + (x_hi - x_lo) * t / span)

    def py(score: float) -> int:
        return round(y_lo + (y_hi - y_lo) * score / SCORE_MAX)

    for w in windows:
        if w.face_visible_fraction > 0:
            shade = np.array(FACE, np.float32) * w.face_visible_fraction + 255 * (1 - w.face_visible_fraction)
            cv2.rectangle(canvas, (px(w.start), y_hi), (max(px(w.start), px(w.end) - 1), y_lo), shade.tolist(), -1)
    for s in range(0, int(SCORE_MAX) + 1, 3):
        cv2.line(canvas, (x_lo, py(s)), (x_hi, py(s)), LIGHT, 1)
        cv2.putText(canvas, str(s), (x_lo - 22, py(s) + 5), FONT, 0.45, GREY, 1, cv2.LINE_AA)
    for t in _ticks(span):
        cv2.line(canvas, (px(t), y_lo), (px(t), y_lo + 5), GREY, 1)
        cv2.putText(canvas, _clock(t), (px(t) - 18, y_lo + 20), FONT, 0.42, GREY, 1, cv2.LINE_AA)
    cv2.line(canvas, (x_lo, py(threshold)), (x_hi, py(threshold)), RED, 1, cv2.LINE_AA)
    cv2.putText(canvas, f"alert {threshold:g}", (x_hi - 80, py(threshold) - 4), FONT, 0.42, RED, 1, cv2.LINE_AA)
    run: list[tuple[int, int]] = []
    for w in windows + [None]:  # type: ignore[operator]
        if w is not None and w.score is not None:
            run.append((px((w.start + w.end) / 2), py(w.score)))
            continue
        if len(run) == 1:
            cv2.circle(canvas, run[0], 2, LINE, -1)
        elif run:
            cv2.polylines(canvas, [np.array(run, np.int32)], False, LINE, 2, cv2.LINE_AA)
        run = []
    cv2.rectangle(canvas, (x_lo, y_hi), (x_hi, y_lo), GREY, 1)
    seen = [w.score for w in windows if w.score is not None]
    note = f"mean {np.mean(seen):.2f}" if seen else "no face seen"
    cv2.putText(canvas, f"{label}  ({note}; blue = face visible)", (x_lo, y_hi - 10), FONT, 0.5, BLACK, 1, cv2.LINE_AA)
    cv2.putText(canvas, "score", (8, (y_lo + y_hi) // 2), FONT, 0.45, GREY, 1, cv2.LINE_AA)


def _ticks(span: float) -> list[float]:
    step = next((s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200) if span / s <= 10), 14400)
    return [i * step for i in range(int(span // step) + 1)]


def _clock(t: float) -> str:
    t = round(t)
    return f"{t // 3600}:{t // 60 % 60:02d}:{t % 60:02d}" if t >= 3600 else f"{t // 60}:{t % 60:02d}"
