"""Procedural textures: fractal value noise, oriented hair streaks, wood chips, paper, fabric.

Built from low-resolution random grids scaled up with cubic interpolation, so a full 1080x1920
texture costs a few milliseconds and needs no image files.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def value_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Smooth noise in [-1, 1] with features about `cell` pixels across."""
    h, w = shape
    gh, gw = max(2, math.ceil(h / cell) + 2), max(2, math.ceil(w / cell) + 2)
    grid = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
    big = cv2.resize(grid, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    return np.clip(big[:h, :w], -1, 1)


def fractal_noise(
    rng: np.random.Generator, shape: tuple[int, int], cell: float, octaves: int = 4, gain: float = 0.5
) -> np.ndarray:
    """Sum of value noise octaves, each half the size and `gain` times the amplitude of the last."""
    out = np.zeros(shape, np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        out += amp * value_noise(rng, shape, max(cell, 1.5))
        total += amp
        amp *= gain
        cell /= 2
    return out / total


def streaks(rng: np.random.Generator, shape: tuple[int, int], angle_deg: float, length: int) -> np.ndarray:
    """White noise smeared along one direction: hairs lying along the body, in about [-1, 1]."""
    noise = rng.standard_normal(shape).astype(np.float32)
    k = max(3, length | 1)
    kernel = np.zeros((k, k), np.float32)
    c = k // 2
    dx, dy = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    for t in np.linspace(-c, c, 2 * k):
        kernel[round(c + t * dy), round(c + t * dx)] = 1.0
    kernel /= kernel.sum()
    out = cv2.filter2D(noise, -1, kernel, borderType=cv2.BORDER_REFLECT)
    return out / max(float(out.std()), 1e-6) / 3


def wood_chips(rng: np.random.Generator, shape: tuple[int, int], size_px: float) -> np.ndarray:
    """Aspen-chip bedding: overlapping pale-brown flakes with dark gaps, BGR float32."""
    h, w = shape
    img = np.zeros((h, w, 3), np.float32)
    img[:] = (40, 60, 80)
    n = int(h * w / max(size_px * size_px * 0.35, 1.0))
    for _ in range(min(n, 1500)):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        a, b = rng.uniform(0.5, 1.0) * size_px, rng.uniform(0.15, 0.4) * size_px
        tone = rng.uniform(0.75, 1.2)
        colour = (tone * rng.uniform(95, 130), tone * rng.uniform(150, 185), tone * rng.uniform(190, 225))
        cv2.ellipse(
            img,
            (int(x), int(y)),
            (max(1, int(a)), max(1, int(b))),
            rng.uniform(0, 180),
            0,
            360,
            colour,
            -1,
            cv2.LINE_AA,
        )
    img *= 1 + 0.12 * fractal_noise(rng, shape, size_px * 3, 2)[..., None]
    return img


def paper_bedding(rng: np.random.Generator, shape: tuple[int, int], size_px: float) -> np.ndarray:
    """Shredded-paper bedding: bright crinkled strips with soft grey folds, BGR float32."""
    h, w = shape
    base = 215 + 30 * fractal_noise(rng, shape, size_px * 2, 3)
    img = np.repeat(base[..., None], 3, axis=2) * np.array([0.97, 0.99, 1.0], np.float32)
    for _ in range(min(int(h * w / max(size_px * size_px, 1.0)), 1200)):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        ang = rng.uniform(0, math.pi)
        ln = rng.uniform(0.8, 2.0) * size_px
        p0 = (int(x - ln * math.cos(ang)), int(y - ln * math.sin(ang)))
        p1 = (int(x + ln * math.cos(ang)), int(y + ln * math.sin(ang)))
        g = rng.uniform(140, 190)
        cv2.line(img, p0, p1, (g, g, g + 5), 1, cv2.LINE_AA)
    return img


def corncob(rng: np.random.Generator, shape: tuple[int, int], size_px: float) -> np.ndarray:
    """Corn-cob granules: small rounded yellow-brown grains, BGR float32."""
    h, w = shape
    img = np.zeros((h, w, 3), np.float32)
    img[:] = (35, 70, 100)
    for _ in range(min(int(h * w / max(size_px * size_px * 0.5, 1.0)), 2000)):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        r = max(1, int(rng.uniform(0.3, 0.6) * size_px))
        tone = rng.uniform(0.7, 1.15)
        cv2.circle(img, (int(x), int(y)), r, (tone * 70, tone * 150, tone * 200), -1, cv2.LINE_AA)
    return img


BEDDINGS = {"wood_chips": wood_chips, "paper": paper_bedding, "corncob": corncob}


def bedding(rng: np.random.Generator, kind: str, shape: tuple[int, int], size_px: float) -> np.ndarray:
    """A bedding texture drawn at half size and scaled up: a quarter of the particles to draw."""
    h, w = shape
    small = BEDDINGS[kind](rng, ((h + 1) // 2, (w + 1) // 2), max(size_px / 2, 1.5))
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def fabric(rng: np.random.Generator, shape: tuple[int, int], colour: tuple[float, float, float]) -> np.ndarray:
    """A red backdrop cloth: its colour and broad folds (the camera noise added later gives the grain), BGR float32."""
    h, w = shape
    small = (h // 4, w // 4)
    folds = fractal_noise(rng, small, rng.uniform(40, 100), 3)
    shade = cv2.resize(1 + 0.18 * folds, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.asarray(colour, np.float32) * shade[..., None]
