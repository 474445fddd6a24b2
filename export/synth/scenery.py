"""The static scene of a randomised camera placement (`randomise.SceneStyle`), drawn on the canvas.

Same parts as `layout.plain_scene` (backdrop, rack, boxes with bedding and glare) with every look taken
from the style: backdrop shade and folds, lamp position and colour temperature, hard or soft
shadows, vignetting, bedding kind, scratched or misted walls, marks on the walls that look like
eyes to a careless network (rectangles, tape corners, dots), and things in front of the animal
(cage card, water bottle, food hopper) that the renderer lays over it and takes out of the mask.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from export.synth.layout import BOX_W, LID_PX, WALL_PX, RackLayout, Scene, _smooth_noise, plain_scene

BACKDROPS = {
    "red": (38, 34, 172),
    "dark": (32, 30, 34),
    "grey": (128, 126, 124),
    "white": (214, 216, 212),
    "blue": (150, 96, 44),
    "green": (62, 122, 56),
}
BEDDINGS = {  # base colour, speck colour, speck size factor
    "wood": ((120, 168, 196), (90, 130, 165), 1.0),
    "paper": ((198, 204, 208), (160, 166, 172), 1.8),
    "corncob": ((70, 150, 200), (40, 96, 150), 0.7),
    "white": ((224, 228, 230), (196, 202, 204), 1.2),
    "dark": ((52, 56, 62), (84, 88, 94), 1.0),
}


def white_balance(kelvin: float) -> np.ndarray:
    """BGR gains of a lamp of this colour temperature as a camera balanced for 5500 K records it."""
    t = float(np.clip((kelvin - 5500.0) / 3500.0, -1.0, 1.2))
    return np.array([1.0 + 0.28 * t, 1.0 + 0.03 * t, 1.0 - 0.3 * t], np.float32)


def _light(layout: RackLayout, rng: np.random.Generator) -> np.ndarray:
    """Lamp fall-off, vignetting, shadows and the backdrop's folds over the canvas; smooth, so
    computed at 1/4 size (the folds shade whatever hangs in front of the cloth a little too)."""
    st = layout.style
    ch, cw = layout.canvas
    q = 4
    p, fw, fh = layout.pad / q, layout.width / q, layout.height / q
    yy, xx = np.mgrid[0 : ch // q + 1, 0 : cw // q + 1].astype(np.float32)
    lx, ly, strength = st.lamp
    d = np.hypot((xx - p - lx * fw) / fw, (yy - p - ly * fh) / fh)
    light = 1.12 - strength * d
    r2 = ((xx - p - fw / 2) / (fw / 2)) ** 2 + ((yy - p - fh / 2) / (fw / 2)) ** 2
    light *= 1.0 - st.vignette * np.clip(r2, 0, 2) / 2
    if st.shadow != "none":  # a pole or lamp arm between lamp and rack: a dark band across the frame
        band = np.zeros(light.shape, np.float32)
        x0 = rng.uniform(0, cw / q)
        width = rng.uniform(40, 260) / q
        slope = rng.uniform(-0.6, 0.6)
        h = light.shape[0]
        pts = np.array([[x0, 0], [x0 + width, 0], [x0 + width + slope * h, h], [x0 + slope * h, h]], np.int32)
        cv2.fillPoly(band, [pts], 1.0)
        band = cv2.GaussianBlur(band, (0, 0), 0.5 if st.shadow == "hard" else 45.0 / q)
        light *= 1.0 - rng.uniform(0.25, 0.5) * band
    light *= 1.0 + st.folds * _smooth_noise(rng, *light.shape, int(rng.integers(120, 360)) // q)
    light = cv2.resize(light, (cw, ch), interpolation=cv2.INTER_LINEAR)
    return np.clip(light, 0.2, 1.3).astype(np.float32)


@lru_cache(maxsize=4)
def scene(layout: RackLayout) -> Scene:
    """Render the static scene of a camera placement (cached: frames of one placement share it)."""
    return plain_scene(layout) if layout.style is None else styled_scene(layout)


def styled_scene(layout: RackLayout) -> Scene:
    st = layout.style
    rng = np.random.default_rng([layout.variant, 0x5C, 0xD0])
    ch, cw = layout.canvas
    light = _light(layout, rng)
    colour = np.array(BACKDROPS[st.backdrop], np.float32) * rng.uniform(0.8, 1.15, size=3).astype(np.float32)
    blotches = cv2.resize(_smooth_noise(rng, ch // 4, cw // 4, 22) * 10.0, (cw, ch), interpolation=cv2.INTER_LINEAR)
    img = cv2.merge([blotches + float(c) for c in colour])  # single-channel OpenCV work: a fresh scene every few frames
    if st.tent:
        tent = np.array([205, 208, 212], np.float32) * rng.uniform(0.85, 1.05)
        p = layout.pad
        img[: p + int(rng.integers(20, 90))] = tent
        img[:, : p + int(rng.integers(0, 60))] = tent * 0.93
        img[:, cw - p - int(rng.integers(0, 60)) :] = tent * 0.9
        img[ch - p - int(rng.integers(10, 70)) :] = tent * 0.85
    _rack(img, layout, rng)

    glare, front = [], []
    for i, (bx, by, bw, bh) in enumerate(layout.rois):
        box = img[by : by + bh, bx : bx + bw]
        k = bw / BOX_W
        wall, lid = max(round(WALL_PX * k), 3), max(round(LID_PX * k), 8)
        box *= rng.uniform(0.8, 0.95)
        box += np.array([22, 24, 20], np.float32) * rng.uniform(0.5, 1.5)
        _decoys(box, st.decoys[i], rng, wall, lid)
        _bedding(box, st.bedding, st.bedding_frac, k, rng)
        box[:lid] = np.array([175, 178, 180], np.float32) * rng.uniform(0.8, 1.1)
        for hx in range(round(18 * k), bw - round(10 * k), max(round(26 * k), 6)):
            cv2.circle(box, (hx, lid // 2), max(round(4 * k), 2), (60.0, 60.0, 70.0), -1)
        box[:, :wall] = box[:, :wall] * 0.5 + 120
        box[:, bw - wall :] = box[:, bw - wall :] * 0.5 + 120
        box[bh - 6 :] = box[bh - 6 :] * 0.5 + 110
        glare.append(_glare(bw, bh, st.scratches[i], st.condensation[i], rng))
        front.append(
            _front(
                bw,
                bh,
                st.occluders[i],
                st.cards[i],
                lid,
                rng,
                light[by : by + bh, bx : bx + bw],
                white_balance(st.colour_temp_k),
            )
        )

    balance = white_balance(st.colour_temp_k) * rng.uniform(0.95, 1.05, size=3).astype(np.float32)
    lit = cv2.multiply(img, cv2.merge([light * float(b) for b in balance]))
    return Scene(cv2.convertScaleAbs(lit), tuple(glare), light, tuple(front))


def _rack(img: np.ndarray, layout: RackLayout, rng: np.random.Generator) -> None:
    x_first = layout.rois[0][0]
    x_last = layout.rois[-1][0] + layout.rois[-1][2]
    bottom = max(y + bh for _, y, _, bh in layout.rois)
    top = min(y for _, y, _, _ in layout.rois)
    metal = np.array([150, 150, 156], np.float32) * rng.uniform(0.6, 1.2)
    t = int(rng.integers(16, 40))
    x0, x1 = max(x_first - 30, 0), x_last + 30
    img[bottom : bottom + t, x0:x1] = metal
    img[bottom + t : bottom + t + 6, x0:x1] = metal * 0.6
    img[max(top - 30, 0) : max(top - 6, 0), x0:x1] = metal * 1.05
    for px in (x0, x_last + 8):
        img[max(top - 30, 0) : bottom + t + 6, px : px + 22] = metal * 0.9


def _bedding(box: np.ndarray, kind: str, frac: float, k: float, rng: np.random.Generator) -> None:
    bh, bw = box.shape[:2]
    base, speck, size = BEDDINGS[kind]
    bed_h = max(int(bh * frac), 4)
    bed = box[bh - bed_h :]
    bed[:] = np.array(base, np.float32) * rng.uniform(0.85, 1.1)
    grains = rng.standard_normal((bed_h, bw)).astype(np.float32)
    bed += (cv2.GaussianBlur(grains, (0, 0), 1.6 * size * k) * 60.0)[..., None]
    for _ in range(int(90 * bw / BOX_W)):
        cx, cy = int(rng.integers(0, bw)), int(rng.integers(0, bed_h))
        axes = (max(int(rng.integers(3, 10) * size * k), 1), max(int(rng.integers(2, 5) * size * k), 1))
        cv2.ellipse(bed, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, tuple(float(c) for c in speck), -1)


def _decoys(box: np.ndarray, count: int, rng: np.random.Generator, wall: int, lid: int) -> None:
    """Marks on the back wall with sharp dark corners and blobs: what an eye detector must not take for eyes."""
    bh, bw = box.shape[:2]
    for _ in range(count):
        kind = rng.choice(["rectangle", "corner", "dots", "label"])
        colour = (float(rng.uniform(5, 60)),) * 3
        x, y = int(rng.uniform(wall, bw - wall - 20)), int(rng.uniform(lid, bh * 0.75))
        s = int(rng.uniform(12, 70))
        if kind == "rectangle":
            cv2.rectangle(box, (x, y), (x + s, y + int(s * rng.uniform(0.5, 1.5))), colour, int(rng.integers(2, 6)))
        elif kind == "corner":
            t = int(rng.integers(3, 8))
            cv2.line(box, (x, y), (x + s, y), colour, t)
            cv2.line(box, (x, y), (x, y + s), colour, t)
        elif kind == "dots":
            r = int(rng.uniform(3, 9))
            for dx in (0, int(rng.uniform(2.5, 5) * r)):
                cv2.circle(box, (x + dx, y), r, colour, -1)
        else:
            cv2.rectangle(box, (x, y), (x + s, y + s // 2), (235.0, 235.0, 230.0), -1)
            cv2.rectangle(box, (x + 3, y + 3), (x + s // 3, y + s // 2 - 3), colour, -1)


def _glare(bw: int, bh: int, scratches: bool, condensation: bool, rng: np.random.Generator) -> np.ndarray:
    g = np.zeros((bh, bw), np.float32)
    for _ in range(int(rng.integers(0, 5))):
        x = int(rng.integers(0, bw))
        slope = rng.uniform(-0.35, 0.35)
        pts = np.array([[x, 0], [int(x + slope * bh), bh]], np.int32)
        cv2.polylines(g, [pts], False, float(rng.uniform(15, 80)), int(rng.integers(4, 40)))
    g = cv2.GaussianBlur(g, (0, 0), 7)
    if scratches:
        for _ in range(int(rng.integers(5, 30))):
            x, y = rng.uniform(0, bw), rng.uniform(0, bh)
            angle, length = rng.uniform(0, np.pi), rng.uniform(10, 120)
            end = (int(x + length * np.cos(angle)), int(y + length * np.sin(angle)))
            cv2.line(g, (int(x), int(y)), end, float(rng.uniform(20, 70)), 1, cv2.LINE_AA)
    if condensation:
        mist = np.zeros((bh, bw), np.float32)
        top = int(bh * rng.uniform(0.3, 0.7))
        for _ in range(int(rng.integers(150, 600))):
            cv2.circle(
                mist,
                (int(rng.integers(0, bw)), int(rng.integers(0, top))),
                int(rng.integers(1, 4)),
                float(rng.uniform(20, 60)),
                -1,
            )
        g += cv2.GaussianBlur(mist, (0, 0), 0.8) + 12.0 * (np.arange(bh) < top)[:, None]
    return np.clip(np.repeat(g[..., None], 3, axis=2), 0, 255).astype(np.uint8)


def _front(
    bw: int,
    bh: int,
    occluder: str,
    card: bool,
    lid: int,
    rng: np.random.Generator,
    light: np.ndarray,
    balance: np.ndarray,
) -> tuple[tuple[int, int, np.ndarray, np.ndarray], ...]:
    """Pictures with alpha laid over the animal: lit like the scene, cut to their bounding boxes."""
    items = []
    if occluder == "bottle":
        w = int(bw * rng.uniform(0.08, 0.14))
        h = int(bh * rng.uniform(0.25, 0.5))
        x0 = int(rng.uniform(0.1, 0.9) * (bw - w))
        pic = np.zeros((h, w, 3), np.float32)
        pic[:] = np.array([200, 190, 175], np.float32) * rng.uniform(0.8, 1.05)
        pic[:, w // 5 : w // 3] += 40
        pic[h - max(h // 8, 4) :, w // 3 : 2 * w // 3] = (120, 120, 125)
        alpha = np.full((h, w), int(rng.uniform(150, 230)), np.uint8)
        items.append((x0, lid, pic, alpha))
    elif occluder == "hopper":
        w = int(bw * rng.uniform(0.35, 0.7))
        h = int(bh * rng.uniform(0.15, 0.32))
        x0 = int(rng.uniform(0, bw - w))
        pic = np.zeros((h, w, 3), np.float32)
        pic[:] = (95, 95, 100)
        alpha = np.zeros((h, w), np.uint8)
        step, t = int(rng.integers(8, 16)), int(rng.integers(2, 4))
        for x in range(0, w, step):
            cv2.line(alpha, (x, 0), (x, h - 1), 255, t)
        cv2.rectangle(alpha, (0, 0), (w - 1, h - 1), 255, t + 1)
        for _ in range(int(rng.integers(3, 10))):  # pellets behind the bars
            cv2.ellipse(
                pic, (int(rng.integers(0, w)), int(rng.integers(h // 3, h))), (6, 4), 0, 0, 360, (70, 120, 150), -1
            )
            cv2.ellipse(alpha, (int(rng.integers(0, w)), int(rng.integers(h // 3, h))), (6, 4), 0, 0, 360, 255, -1)
        items.append((x0, lid, pic, alpha))
    if card:
        w = int(bw * rng.uniform(0.25, 0.45))
        h = int(w * rng.uniform(0.5, 0.75))
        x0 = int(rng.choice([rng.uniform(0, 0.15), rng.uniform(0.55, 0.75)]) * bw)
        y0 = int(rng.choice([rng.uniform(0.05, 0.2), rng.uniform(0.55, 0.7)]) * bh)
        w, h = min(w, bw - x0), min(h, bh - y0)
        pic = np.zeros((h, w, 3), np.float32)
        pic[:] = np.array([235, 240, 242], np.float32) * rng.uniform(0.85, 1.0)
        cv2.rectangle(pic, (2, 2), (w - 3, h - 3), (20.0, 20.0, 20.0), 2)
        for row in range(8, h - 6, 9):  # lines of writing
            cv2.line(pic, (6, row), (int(rng.uniform(0.3, 0.95) * w), row), (40.0, 40.0, 60.0), 2)
        items.append((x0, y0, pic, np.full((h, w), 255, np.uint8)))
    out = []
    for x0, y0, pic, alpha in items:
        h, w = alpha.shape
        lit = pic * light[y0 : y0 + h, x0 : x0 + w, None] * balance
        out.append((x0, y0, np.clip(lit, 0, 255).astype(np.uint8), alpha))
    return tuple(out)
