"""Camera and scene nuisance that must not change the score: exposure, gamma, sensor noise,
defocus, motion blur and JPEG loss.

Full-frame operations are single OpenCV calls (a LUT, two saturating adds of a precomputed noise
field at a random offset); blur and JPEG act on box ROIs only, where the animals are.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from export.synth.layout import FRAME_H, FRAME_W

NOISE_PAD = 64
NOISE_SIGMAS = (0.0, 2.5, 5.0, 8.0, 12.0)
FLICKER_BAND_PX = 12  # rows that share one gain of the rolling-shutter flicker bands


@dataclass(frozen=True)
class BoxNuisance:
    defocus: float = 0.0  # Gaussian sigma, px; 0 = sharp
    motion: float = 0.0  # motion-blur length, px; 0 = still
    motion_angle: float = 0.0  # degrees
    jpeg: int = 0  # JPEG quality applied to the ROI; 0 = none


@dataclass(frozen=True)
class Nuisance:
    gain: float = 1.0
    gamma: float = 1.0
    noise: int = 1  # index into NOISE_SIGMAS
    boxes: tuple[BoxNuisance, ...] = ()
    flicker: float = 0.0  # mains flicker: relative gain swing of the rolling-shutter bands; 0 = none
    flicker_period: float = 120.0  # px between bright bands
    flicker_phase: float = 0.0
    jpeg: int = 0  # JPEG quality of the whole frame; 0 = none
    h264: int = 0  # H.264-like loss (4:2:0 chroma, blocky low-quality luma); 0 = none


def random_nuisance(rng: np.random.Generator, n_boxes: int) -> Nuisance:
    boxes = []
    for _ in range(n_boxes):
        defocus = 0.0 if rng.random() < 0.6 else float(rng.uniform(0.5, 1.8))
        moving = rng.random() < 0.15
        jpeg = int(rng.integers(35, 86)) if rng.random() < 0.25 else 0
        boxes.append(
            BoxNuisance(defocus, float(rng.uniform(3, 9)) if moving else 0.0, float(rng.uniform(0, 180)), jpeg)
        )
    return Nuisance(
        gain=float(rng.uniform(0.8, 1.2)),
        gamma=float(rng.uniform(0.85, 1.15)),
        noise=int(rng.choice(3, p=[0.2, 0.5, 0.3])),
        boxes=tuple(boxes),
    )


@lru_cache(maxsize=len(NOISE_SIGMAS))
def noise_field(level: int) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) parts of a Gaussian noise field a little larger than a frame, fixed seed."""
    sigma = NOISE_SIGMAS[level]
    rng = np.random.default_rng(0x9015E + level)
    n = rng.standard_normal((FRAME_H + NOISE_PAD, FRAME_W + NOISE_PAD, 3), dtype=np.float32) * sigma
    return np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8)


@lru_cache(maxsize=1)
def fur_texture(size: int = 720) -> np.ndarray:
    """Streaky grey texture (int16, 3 channels, std about 32), fixed seed: fur hairs run one way."""
    rng = np.random.default_rng(0xF0)
    n = rng.standard_normal((size, size)).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sigmaX=0.7, sigmaY=2.2)
    n *= 32.0 / max(float(n.std()), 1e-6)
    return np.repeat(n.astype(np.int16)[..., None], 3, axis=2)


def tone_lut(n: Nuisance, gain: float = 1.0) -> np.ndarray:
    """Exposure and gamma as one table for all channels (white balance belongs to the camera placement)."""
    x = np.arange(256, dtype=np.float32) / 255.0
    return np.clip(255.0 * n.gain * gain * x**n.gamma, 0, 255).astype(np.uint8).reshape(1, 256)


def apply_box(view: np.ndarray, rect: tuple[int, int, int, int] | None, b: BoxNuisance) -> None:
    """Blur and compress one ROI view in place; motion blur only where the animal is (`rect`)."""
    if b.motion > 0 and rect is not None:
        x0, y0, x1, y1 = rect
        k = max(int(round(b.motion)), 2)
        kernel = np.zeros((k, k), np.float32)
        cv2.line(kernel, (0, k // 2), (k - 1, k // 2), 1.0, 1)
        rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), b.motion_angle, 1.0)
        kernel = cv2.warpAffine(kernel, rot, (k, k))
        kernel /= max(float(kernel.sum()), 1e-6)
        sub = view[y0:y1, x0:x1]
        sub[:] = cv2.filter2D(sub, -1, kernel)
    if b.defocus > 0:
        view[:] = cv2.GaussianBlur(view, (0, 0), b.defocus)
    if b.jpeg > 0:
        ok, buf = cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY, b.jpeg])
        if ok:
            view[:] = cv2.imdecode(buf, cv2.IMREAD_COLOR)


def apply_frame(img: np.ndarray, n: Nuisance, rng: np.random.Generator) -> None:
    """Exposure/white balance and sensor noise over the whole frame, in place."""
    flat = img.reshape(img.shape[0], -1)  # a one-channel LUT over all bytes is faster than a 3-channel one
    if n.flicker > 0:  # one table per band of rows: the rolling shutter sees the lamp's 100/120 Hz swing
        for y0 in range(0, flat.shape[0], FLICKER_BAND_PX):
            swing = 1.0 + n.flicker * np.sin(
                2 * np.pi * (y0 + FLICKER_BAND_PX / 2) / n.flicker_period + n.flicker_phase
            )
            band = flat[y0 : y0 + FLICKER_BAND_PX]
            cv2.LUT(band, tone_lut(n, float(swing)), dst=band)
    else:
        cv2.LUT(flat, tone_lut(n), dst=flat)
    if n.noise > 0:
        pos, neg = noise_field(n.noise)
        h, w = img.shape[:2]
        oy, ox = (int(v) for v in rng.integers(0, NOISE_PAD, size=2))
        cv2.add(img, pos[oy : oy + h, ox : ox + w], dst=img)
        cv2.subtract(img, neg[oy : oy + h, ox : ox + w], dst=img)
    if n.h264 > 0:
        _h264_like(img, n.h264)
    elif n.jpeg > 0:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, n.jpeg])
        if ok:
            img[:] = cv2.imdecode(buf, cv2.IMREAD_COLOR)


def _h264_like(img: np.ndarray, quality: int) -> None:
    """What a low-bitrate H.264 stream does to a frame, without an H.264 encoder (this OpenCV has
    none): chroma at half resolution, blocky low-quality luma, then the decoder's deblocking blur."""
    ycc = cv2.cvtColor(img, cv2.COLOR_BGR2YCrCb)
    h, w = img.shape[:2]
    chroma = cv2.resize(
        cv2.resize(ycc[..., 1:], (w // 2, h // 2), interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_LINEAR
    )
    ok, buf = cv2.imencode(".jpg", ycc[..., 0], [cv2.IMWRITE_JPEG_QUALITY, quality])
    luma = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE) if ok else ycc[..., 0]
    ycc = np.dstack([cv2.GaussianBlur(luma, (3, 3), 0.6), chroma])
    img[:] = cv2.cvtColor(ycc, cv2.COLOR_YCrCb2BGR)
