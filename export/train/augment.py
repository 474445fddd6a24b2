"""Training-time augmentation shared by the three networks: what a camera, a lamp or a cage can do
to a picture that the generator may not have drawn.

The generator's own randomisation (export/synth/randomise.py) is one renderer's idea of variety;
augmenting every sample again, with operations that know nothing of the renderer, keeps the networks
from learning its particular noise, blur and colours. Segmentation samples are warped together with
their masks (linear for the image, nearest for the mask, the same matrix), so a label never moves
away from its pixels; an occluder laid over a sample is background in the mask, as in the renderer.
Everything is numpy + OpenCV on uint8 and draws from the caller's generator, so a run (and a resumed
run) sees the same augmented samples for the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from device.eyes import ANIMAL, EYES


@dataclass(frozen=True)
class Augment:
    """Probabilities and ranges; `SEG_FINE`, `SEG_COARSE` and `EYE` below are what training uses."""

    scale: tuple[float, float] = (1.0, 1.0)  # zoom about the sample centre
    rotate_deg: float = 0.0
    shift: float = 0.0  # translation, in sample sides
    photometric_p: float = 0.9
    blur_p: float = 0.25
    blur_sigma: float = 1.6
    motion_p: float = 0.1
    noise_p: float = 0.4
    noise_sigma: float = 10.0
    jpeg_p: float = 0.2
    cutout_p: float = 0.3
    cutout_size: float = 0.35  # largest occluder side, in sample sides
    restyle_p: float = 0.0  # share of segmentation samples whose coat and eyes are redrawn (`restyle`)
    randconv_p: float = 0.0  # share of segmentation samples seen through a random convolution (`random_convolution`)


SEG_FINE = Augment(scale=(0.6, 1.6), rotate_deg=30.0, shift=0.1)
SEG_COARSE = Augment(scale=(0.8, 1.25), rotate_deg=8.0, shift=0.08, cutout_size=0.25)
EYE = Augment(
    photometric_p=0.9,
    blur_p=0.25,
    blur_sigma=1.2,
    noise_p=0.4,
    noise_sigma=8.0,
    jpeg_p=0.25,
    cutout_p=0.15,
    cutout_size=0.3,
)
EYE_SCALE = (0.6, 1.5)  # the regressor's zoom, applied inside its own rotate-and-crop warp


def photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure, contrast, gamma, white balance and saturation, as one lookup per channel."""
    x = np.arange(256, dtype=np.float32) / 255.0
    gain, gamma = rng.uniform(0.55, 1.5), rng.uniform(0.7, 1.4)
    contrast, offset = rng.uniform(0.7, 1.3), rng.uniform(-0.08, 0.08)
    base = np.clip(((x**gamma) - 0.5) * contrast + 0.5 + offset, 0, 1) * gain
    luts = [np.clip(255.0 * base * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8) for _ in range(3)]
    out = cv2.merge([cv2.LUT(c, lut) for c, lut in zip(cv2.split(image), luts)])
    sat = rng.uniform(0.5, 1.4)
    if abs(sat - 1.0) > 0.05:
        grey = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        out = cv2.addWeighted(out, sat, grey, 1.0 - sat, 0.0)
    return out


def _motion_kernel(rng: np.random.Generator, length: int) -> np.ndarray:
    kernel = np.zeros((length, length), np.float32)
    cv2.line(kernel, (0, length // 2), (length - 1, length // 2), 1.0, 1)
    rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), float(rng.uniform(0, 180)), 1.0)
    kernel = cv2.warpAffine(kernel, rot, (length, length))
    return kernel / max(float(kernel.sum()), 1e-6)


def camera(image: np.ndarray, rng: np.random.Generator, a: Augment) -> np.ndarray:
    """Photometric change, blur (defocus or motion), sensor noise and JPEG loss, each by its probability."""
    if rng.random() < a.photometric_p:
        image = photometric(image, rng)
    if rng.random() < a.blur_p:
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.4, a.blur_sigma)))
    elif rng.random() < a.motion_p:
        image = cv2.filter2D(image, -1, _motion_kernel(rng, int(rng.integers(3, 9))))
    if rng.random() < a.noise_p:
        noise = rng.normal(0.0, rng.uniform(1.0, a.noise_sigma), image.shape).astype(np.float32)
        image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if rng.random() < a.jpeg_p:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(20, 80))])
        if ok:
            image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return image


def _cutout(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, a: Augment) -> None:
    """An opaque rectangle or bar (a bottle, a card edge, a cage bar) over part of the sample, in place."""
    h, w = image.shape[:2]
    cw = max(int(w * rng.uniform(0.05, a.cutout_size)), 2)
    ch = max(int(h * rng.uniform(0.05, a.cutout_size)), 2)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    image[y0 : y0 + ch, x0 : x0 + cw] = rng.integers(0, 256, 3, dtype=np.uint8)
    if mask is not None:
        mask[y0 : y0 + ch, x0 : x0 + cw] = 0


def affine(side_hw: tuple[int, int], rng: np.random.Generator, a: Augment) -> np.ndarray:
    """Zoom, rotation and shift about the sample centre, as a 2x3 matrix."""
    h, w = side_hw
    m = cv2.getRotationMatrix2D(
        (w / 2, h / 2), float(rng.uniform(-a.rotate_deg, a.rotate_deg)), float(rng.uniform(*a.scale))
    )
    m[:, 2] += rng.uniform(-a.shift, a.shift, 2) * np.array([w, h])
    return m


MIN_EYE_CONTRAST = 12.0  # grey levels an eye keeps from the fur around it, so its shape stays visible


def _masked_mean(image: np.ndarray, where: np.ndarray) -> np.ndarray:
    return image[where].mean(axis=0)


def _eye_gap(image: np.ndarray, eyes: np.ndarray, ring: np.ndarray) -> float:
    """Mean grey levels between the eye pixels and the mean of the fur around them (a dark pupil with a
    bright highlight on grey fur has a large gap, though its mean may equal the fur's)."""
    return float(np.abs(image[eyes].mean(axis=1) - _masked_mean(image, ring).mean()).mean())


def _visible(changed: np.ndarray, before: np.ndarray, eyes: np.ndarray, ring: np.ndarray) -> bool:
    """Whether a change keeps the eyes as visible as MIN_EYE_CONTRAST (or as they were, if less): a
    change that would hide an eye is not made, since nothing is learnt from an invisible eye."""
    if not ring.any():
        return True
    return _eye_gap(changed, eyes, ring) >= min(_eye_gap(before, eyes, ring), MIN_EYE_CONTRAST)


def _fur_ring(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(animal, eyes, ring): the masks of fur, of eyes, and of the fur within 3 px of an eye (what `_visible` compares)."""
    animal, eyes = mask == ANIMAL, mask == EYES
    return animal, eyes, cv2.dilate(eyes.view(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & animal


def _coat_shade(image: np.ndarray, body: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The body's pixels through a gamma lookup (slightly tinted per channel) that takes the coat's mean
    grey to a level drawn from dark to pale coats, blended at the body's edge."""
    level = float(_masked_mean(image, body).mean()) / 255.0
    target = float(rng.uniform(0.08, 0.8))
    gamma = float(np.clip(np.log(target) / np.log(min(max(level, 0.02), 0.98)), 0.4, 2.5))
    tint = rng.uniform(0.9, 1.1, 3).astype(np.float32)
    shaded = np.clip(255.0 * (image / 255.0) ** gamma * tint, 0, 255)
    weight = cv2.GaussianBlur(body.astype(np.float32), (0, 0), 1.0)[..., None]
    return image * (1.0 - weight) + shaded * weight


def _flat_fur(image: np.ndarray, animal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The fur's texture blurred towards flat, from the fur's own pixels only (no eye bleeds into it)."""
    sigma = float(rng.uniform(1.5, 4.0))
    weight = cv2.GaussianBlur(animal.astype(np.float32), (0, 0), sigma)[..., None]
    smooth = cv2.GaussianBlur(image * animal[..., None], (0, 0), sigma) / np.maximum(weight, 1e-3)
    out = image.copy()
    t = float(rng.uniform(0.3, 1.0))
    out[animal] = (1.0 - t) * image[animal] + t * smooth[animal]
    return out


def _no_highlight(image: np.ndarray, eyes: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """No eye pixel brighter than the eyes' median colour: the reflections taken out."""
    return image * (1.0 - soft) + np.minimum(image, np.median(image[eyes], axis=0)) * soft


def _closer_to_fur(
    image: np.ndarray, eyes: np.ndarray, ring: np.ndarray, soft: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """The eyes' colours moved towards the mean of the fur around them, keeping MIN_EYE_CONTRAST."""
    fur = _masked_mean(image, ring)
    gap = _eye_gap(image, eyes, ring)
    keep = max(float(rng.uniform(0.25, 1.0)), min(1.0, MIN_EYE_CONTRAST / max(gap, 1e-3)))
    return image * (1.0 - soft) + (fur + keep * (image - fur)) * soft


def restyle(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The sample's coat and eyes redrawn from its own pixels and mask: another coat shade, the fur's
    texture smoothed towards flat, the eyes' highlights taken out and their contrast to the fur around
    them lowered (to no less than MIN_EYE_CONTRAST), each by its own chance.

    A camera in a diffuse light tent shows a dark mouse as flat fur with dark eyes that differ from it
    by little more than their shape, often without a highlight; the generator seldom draws that, and the
    fine U-Net marks no eye pixel on many such eyes (docs/generalisation.md). Working on the masks
    rather than inside the generator keeps it renderer-free: any labelled frame can be restyled."""
    animal, eyes, ring = _fur_ring(mask)
    if not animal.any():
        return image
    out = image.astype(np.float32)
    soft = cv2.GaussianBlur(eyes.astype(np.float32), (0, 0), 0.8)[..., None]
    steps = [
        (0.7, lambda x: _coat_shade(x, animal | eyes, rng)),
        (0.7, lambda x: _flat_fur(x, animal, rng)),
        (0.6 if eyes.any() else 0.0, lambda x: _no_highlight(x, eyes, soft)),
        (0.7 if ring.any() else 0.0, lambda x: _closer_to_fur(x, eyes, ring, soft, rng)),
    ]
    for chance, step in steps:
        if rng.random() < chance:
            changed = step(out)
            if _visible(changed, out, eyes, ring):
                out = changed
    return np.clip(out, 0, 255).astype(np.uint8)


#: Kernel sides a random convolution draws from (1 = a random colour mix; larger ones change texture too).
RANDCONV_KERNELS = (1, 3, 5, 7)


def random_convolution(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The sample through a freshly drawn random 3 -> 3 convolution (RandConv, Xu et al., ICLR 2021),
    each output channel moved to the sample's own channel mean and spread, blended with the sample at
    a uniform weight; kept only where the eyes stay visible (`_visible`).

    Another renderer, or a real camera, differs from ours in local colour and texture far more than in
    shapes: a random filter changes the first and keeps the second, with no idea of any renderer in it.
    """
    k = int(rng.choice(RANDCONV_KERNELS))
    weights = rng.normal(0.0, 1.0 / np.sqrt(3 * k * k), (3, 3, k, k)).astype(np.float32)
    src = image.astype(np.float32)
    channels = cv2.split(src)
    out = np.empty_like(src)
    for o in range(3):
        out[..., o] = sum(
            cv2.filter2D(c, -1, weights[o, i], borderType=cv2.BORDER_REFLECT) for i, c in enumerate(channels)
        )
    mean, std = src.mean(axis=(0, 1)), src.std(axis=(0, 1))
    out = (out - out.mean(axis=(0, 1))) / np.maximum(out.std(axis=(0, 1)), 1e-3) * std + mean
    alpha = float(rng.uniform(0.0, 1.0))
    blended = np.clip(alpha * src + (1.0 - alpha) * out, 0, 255)
    _, eyes, ring = _fur_ring(mask)
    return blended.astype(np.uint8) if _visible(blended, src, eyes, ring) else image


def seg_sample(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, a: Augment
) -> tuple[np.ndarray, np.ndarray]:
    """One augmented (image, mask) pair of the same size: geometry on both, the rest on the image."""
    h, w = mask.shape
    if a.rotate_deg or a.scale != (1.0, 1.0) or a.shift:
        m = affine((h, w), rng, a)
        image = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        mask = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    image, mask = np.ascontiguousarray(image), np.ascontiguousarray(mask)  # OpenCV needs them, once
    if a.restyle_p and rng.random() < a.restyle_p:
        image = restyle(image, mask, rng)
    if a.randconv_p and rng.random() < a.randconv_p:
        image = random_convolution(image, mask, rng)
    image = np.ascontiguousarray(camera(image, rng, a))
    if rng.random() < a.cutout_p:
        _cutout(image, mask, rng, a)
    return image, mask


def seg_batch(
    images: np.ndarray, masks: np.ndarray, rng: np.random.Generator, a: Augment
) -> tuple[np.ndarray, np.ndarray]:
    pairs = [seg_sample(i, m, rng, a) for i, m in zip(images, masks)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def eye_patch(patch: np.ndarray, rng: np.random.Generator, a: Augment = EYE) -> np.ndarray:
    """Camera effects and a small occluder at the patch edge (never over the eye at the centre)."""
    patch = camera(np.ascontiguousarray(patch), rng, a)
    if rng.random() < a.cutout_p:
        h, w = patch.shape[:2]
        side = max(int(w * rng.uniform(0.1, a.cutout_size)), 2)
        edge = int(rng.integers(4))
        x0 = [0, w - side, int(rng.integers(0, w - side + 1)), int(rng.integers(0, w - side + 1))][edge]
        y0 = [int(rng.integers(0, h - side + 1)), int(rng.integers(0, h - side + 1)), 0, h - side][edge]
        patch = patch.copy()
        patch[y0 : y0 + side, x0 : x0 + side] = rng.integers(0, 256, 3, dtype=np.uint8)
    return patch
