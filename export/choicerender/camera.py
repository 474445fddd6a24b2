"""The camera: light level, colour cast, uneven light, vignetting, a slight tilt or keystone of the
whole frame, defocus or motion blur, sensor noise and JPEG compression.

The tilt is one homography; it moves the image (bilinear), the class mask (nearest) and every
label point the same way, so labels and masks stay consistent with the pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CASTS = {"neutral": (1.0, 1.0, 1.0), "warm": (0.82, 0.97, 1.12), "cool": (1.12, 1.0, 0.86), "green": (0.9, 1.1, 0.9)}
LIGHTS = {"dim": (0.35, 0.6), "normal": (0.75, 1.05), "bright": (1.1, 1.35)}


@dataclass(frozen=True)
class CameraLook:
    """Everything the camera and the room light do to one frame."""

    light: str
    level: float
    cast: str
    falloff: str
    falloff_centre: tuple[float, float]
    falloff_strength: float
    falloff_angle: float
    vignette: float
    tilt_deg: float
    homography: np.ndarray
    blur: str
    blur_px: float
    blur_angle: float
    noise: float
    jpeg: int

    def conditions(self) -> dict[str, str | float | int]:
        """The frame-level conditions written on the label line."""
        return {
            "light": self.light,
            "light_level": round(self.level, 3),
            "cast": self.cast,
            "falloff": self.falloff,
            "vignette": round(self.vignette, 3),
            "tilt_deg": round(self.tilt_deg, 2),
            "blur": self.blur,
            "blur_px": round(self.blur_px, 2),
            "noise_sigma": round(self.noise, 2),
            "jpeg_quality": self.jpeg,
        }


def sample_camera(rng: np.random.Generator, size: tuple[int, int]) -> CameraLook:
    """Draw one frame's camera and light; `size` is (height, width)."""
    h, w = size
    light = str(rng.choice(list(LIGHTS), p=[0.25, 0.55, 0.2]))
    tilt = float(rng.uniform(-2.5, 2.5))
    centre = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), tilt, float(rng.uniform(0.97, 1.03)))
    moved = cv2.transform(centre[None], rot)[0] + rng.uniform(-18, 18, (4, 2)).astype(np.float32)
    blur = str(rng.choice(["none", "defocus", "motion"], p=[0.4, 0.35, 0.25]))
    return CameraLook(
        light=light,
        level=float(rng.uniform(*LIGHTS[light])),
        cast=str(rng.choice(list(CASTS))),
        falloff=str(rng.choice(["none", "linear", "spot"])),
        falloff_centre=(float(rng.uniform(0, w)), float(rng.uniform(0, h))),
        falloff_strength=float(rng.uniform(0.15, 0.55)),
        falloff_angle=float(rng.uniform(0, 2 * np.pi)),
        vignette=float(rng.uniform(0.0, 0.45)),
        tilt_deg=tilt,
        homography=cv2.getPerspectiveTransform(centre, moved.astype(np.float32)),
        blur=blur,
        blur_px=0.0 if blur == "none" else float(rng.uniform(0.8, 4.0)),
        blur_angle=float(rng.uniform(0, 180)),
        noise=float(rng.uniform(1.0, 9.0)),
        jpeg=int(rng.integers(35, 96)),
    )


def _gain(look: CameraLook, h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h:8, 0:w:8].astype(np.float32)
    gain = np.ones_like(xs)
    cx, cy = look.falloff_centre
    if look.falloff == "linear":
        d = ((xs - cx) * np.cos(look.falloff_angle) + (ys - cy) * np.sin(look.falloff_angle)) / w
        gain *= 1 + look.falloff_strength * np.clip(d, -1, 1)
    elif look.falloff == "spot":
        r2 = ((xs - cx) ** 2 + (ys - cy) ** 2) / (0.45 * w) ** 2
        gain *= 1 - look.falloff_strength + look.falloff_strength * 1.6 * np.exp(-r2)
    r2 = ((xs - w / 2) ** 2 + (ys - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
    gain *= 1 - look.vignette * r2**1.5
    return cv2.resize(gain * look.level, (w, h), interpolation=cv2.INTER_LINEAR)


def _blur(img: np.ndarray, look: CameraLook) -> np.ndarray:
    if look.blur == "defocus":
        r = max(1, int(round(look.blur_px)))
        disk = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
        cv2.circle(disk, (r, r), r, 1.0, -1, cv2.LINE_AA)
        return cv2.filter2D(img, -1, disk / disk.sum())
    if look.blur == "motion":
        n = max(3, int(round(2 * look.blur_px)) | 1)
        line = np.zeros((n, n), np.float32)
        line[n // 2, :] = 1.0
        rot = cv2.getRotationMatrix2D((n // 2, n // 2), look.blur_angle, 1.0)
        smear = np.asarray(cv2.warpAffine(line, rot, (n, n)))
        return np.asarray(cv2.filter2D(img, -1, smear / smear.sum()))
    return img


def shoot(
    frame: np.ndarray, mask: np.ndarray, look: CameraLook, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The BGR uint8 photograph of the float scene and the class mask moved the same way."""
    h, w = mask.shape
    lit = frame * _gain(look, h, w)[..., None] * np.asarray(CASTS[look.cast], np.float32)
    lit = cv2.warpPerspective(lit, look.homography, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    moved_mask = cv2.warpPerspective(mask, look.homography, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
    lit = _blur(lit, look)
    lit += rng.normal(0, 1, (h, w, 3)).astype(np.float32) * look.noise * np.sqrt(np.clip(lit, 1, 255) / 128)
    image = np.clip(lit, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, look.jpeg])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode a rendered frame")
    return np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)), np.asarray(moved_mask)


def move_points(look: CameraLook, points: np.ndarray) -> np.ndarray:
    """Scene points (N x 2) to photograph pixels."""
    if len(points) == 0:
        return np.zeros((0, 2))
    return cv2.perspectiveTransform(np.asarray(points, np.float64).reshape(-1, 1, 2), look.homography).reshape(-1, 2)
