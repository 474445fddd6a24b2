"""One synthetic mouse: a few projected ellipsoids, ears, eyes whose lid aperture encodes the score.

The head is a small 3-D model (cranium, muzzle, ears, eyes on the cranium surface) turned by yaw,
pitch and roll and projected orthographically, so head direction, foreshortening and which eyes
face the camera all follow from one pose. Everything is drawn with OpenCV primitives into views of
the frame and of the class mask: no per-pixel Python, a mouse costs a few milliseconds.

The orbital-tightening score drives only the eye region: the lid aperture (round at 0, a slit at
9), the corner shape (elliptic when open, almond when tight), lid swelling and squint wrinkles
above and below the eye. All of that fits in a 50x50 patch around the eye centre, which is what
the regressor sees; fur colour, light, blur and noise vary independently of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

CLASS_BACKGROUND, CLASS_ANIMAL, CLASS_EARS, CLASS_EYES = 0, 1, 2, 3
SHIFT = 4  # fixed-point bits for sub-pixel OpenCV drawing
ONE = 1 << SHIFT
EYE_VISIBLE_NZ = 0.22  # an eye whose surface normal points less towards the camera is not visible
MIN_APERTURE_PX = 2.0  # a closed eye still shows a 2-px slit
MASK_MIN_RATIO = 0.3  # eye class covers at least this height/width, so a shut eye is still a findable blob


@dataclass(frozen=True)
class Fur:
    """Colours (BGR) of one coat; the score cues are drawn relative to these."""

    name: str
    body: tuple[int, int, int]
    texture: float  # amplitude of the fur texture, grey levels
    ear: tuple[int, int, int]
    ear_inner: tuple[int, int, int]
    eye: tuple[int, int, int]
    lid: tuple[int, int, int]
    wrinkle: tuple[int, int, int]
    nose: tuple[int, int, int]
    tail: tuple[int, int, int]
    patches: tuple[int, int, int] | None = None  # colour of the dark patches of a mixed (piebald) coat


FURS = {
    "black": Fur(
        "black",
        (34, 31, 32),
        9.0,
        (58, 56, 66),
        (92, 88, 122),
        (10, 8, 9),
        (74, 70, 78),
        (96, 94, 104),
        (95, 92, 140),
        (60, 60, 80),
    ),
    "white": Fur(
        "white",
        (212, 222, 228),
        10.0,
        (170, 176, 214),
        (150, 150, 226),
        (48, 36, 150),
        (150, 154, 196),
        (150, 160, 170),
        (150, 140, 220),
        (150, 160, 210),
    ),
    "agouti": Fur(
        "agouti",
        (62, 88, 112),
        14.0,
        (80, 96, 128),
        (110, 120, 170),
        (12, 10, 10),
        (96, 112, 134),
        (40, 56, 72),
        (110, 110, 170),
        (100, 110, 150),
    ),
    # Albino with pink eyes (lighter than "white"'s red ones) and a mixed coat: white with dark patches.
    "albino": Fur(
        "albino",
        (222, 230, 236),
        8.0,
        (176, 182, 226),
        (160, 158, 236),
        (120, 110, 214),
        (160, 164, 210),
        (160, 170, 180),
        (160, 150, 230),
        (160, 170, 220),
    ),
    "piebald": Fur(
        "piebald",
        (205, 212, 216),
        11.0,
        (150, 150, 176),
        (130, 130, 200),
        (14, 12, 12),
        (120, 124, 150),
        (110, 116, 126),
        (130, 122, 190),
        (140, 145, 185),
        (40, 38, 40),
    ),
}


def aperture_ratio(score: float) -> float:
    """Lid opening height / eye width: 0.88 (round, wide open) at score 0 down to 0.06 (slit) at 9."""
    s = min(max(float(score), 0.0), 9.0) / 9.0
    return 0.06 + 0.82 * (1.0 - s) ** 1.15


@dataclass(frozen=True)
class MousePose:
    """Where the head is and where it points; angles in radians.

    yaw 0: snout to the image right (profile), pi/2: towards the camera (both eyes), pi: to the
    left, -pi/2: away from the camera (no eyes). Roll turns the whole animal in the image plane.
    """

    x: float  # head centre in the box ROI, px
    y: float
    eye_width: float  # px in the full frame; sets the size of the whole animal
    head_scale: float  # head half-length A = head_scale * eye_width
    yaw: float
    pitch: float
    roll: float
    body_yaw: float  # body direction relative to the head yaw
    tail_bend: float
    body_length: float = 1.0  # body shape relative to the head: long and thin, short and fat (curled)
    body_girth: float = 1.0


@dataclass(frozen=True)
class EyeLook:
    """How an eye looks apart from its score: the lamp's reflection, the shape of the lid split and
    the lid skin around the opening.

    `lid_split` is the share of the opening above the eye axis; drooping upper lids (small split) and
    puffy lower lids (large split) are the partial-closure shapes a real camera shows. The lid skin
    (`margin` > 0; pigmented, pink or pale by `margin_shade`) is a band around the opening that can
    also show the bulge of the eyeball under closing lids (`bulge`: 0 follows the opening, 1 keeps
    the wide-open eye's outline), so a shut eye may look like an eye-shaped patch with a slit in it:
    only the opening tells the score. None of it changes the aperture, which is what the score sets.
    A dim eye (`eye_mix`, `rim_mix` > 0, `highlight_level` < 1) differs from its coat by little more
    than its shape, as a dark eye in dark fur does under diffuse light. Dark lids (`skin_eye_mix` > 0)
    are thin lid skin over a dark eyeball, or an orbit in shadow: with a large `bulge` a shut eye is an
    eye-sized dark oval with the slit in it, which an eye model must not read as an open eye.
    """

    highlight: float = 1.0  # size of the specular highlight; 0 = none (diffuse light)
    highlight_dx: float = -0.18  # its position along the eye axis, in eye widths
    highlight_dy: float = 0.12  # its position towards the upper lid, in aperture heights
    lid_split: float = 0.55
    margin: float = 0.0  # thickness of the lid-skin band beyond the opening, in eye widths; 0 = none
    margin_shade: float = 1.0  # its brightness relative to the coat's lid colour
    bulge: float = 0.0  # share of the open eye's height the band keeps as the lids close
    eye_mix: float = 0.0  # share of the coat's colour in the eyeball; 0 = the coat's eye colour
    rim_mix: float = 0.0  # share of the coat's colour in the lid rim; 1 = a rim that vanishes into the fur
    highlight_level: float = 1.0  # brightness of the reflections, from the eyeball's colour (0) to the lamp's (1)
    skin_eye_mix: float = 0.0  # share of the eyeball's colour in the lid skin; 0 = the lid's own colour


@dataclass(frozen=True)
class Animal:
    fur: Fur
    pose: MousePose
    score: float
    blink: bool = False  # lids shut for a blink: visible but not scorable
    tone: float = 1.0  # brightness of this coat (individual variation and local light)
    texture_seed: int | None = None  # fixed fur texture (video: fur must not shimmer); None = random
    eye_look: EyeLook = EyeLook()
    paws: bool = False  # fore paws raised to the muzzle (grooming)


@dataclass(frozen=True)
class DrawnEye:
    x: float  # ROI coordinates
    y: float
    visible: bool


@dataclass(frozen=True)
class Ellipse:
    cx: float
    cy: float
    a: float
    b: float
    angle: float  # degrees, OpenCV convention
    z: float

    def half_extent(self) -> tuple[float, float]:
        t = math.radians(self.angle)
        c, s = math.cos(t), math.sin(t)
        return math.hypot(self.a * c, self.b * s), math.hypot(self.a * s, self.b * c)


@dataclass(frozen=True)
class ProjectedEye:
    x: float  # relative to the head centre, px
    y: float
    nz: float  # surface normal towards the camera: > EYE_VISIBLE_NZ means the eye can be seen
    axis: np.ndarray  # unit vector along the lid slit, image coordinates
    up: np.ndarray  # unit vector towards the upper lid
    width_factor: float  # foreshortening of the eye width


@dataclass
class Geometry:
    """The projected animal relative to the head centre (add pose.x, pose.y to draw)."""

    body: Ellipse
    cranium: Ellipse
    muzzle: Ellipse
    ears: list[tuple[Ellipse, float]]  # (disc, n_z: >0 shows the inner ear)
    eyes: list[ProjectedEye]
    nose: tuple[float, float, float]  # x, y, z
    tail: np.ndarray  # polyline points, ROI-relative to the head centre
    head_a: float

    def bounds(self) -> tuple[float, float, float, float]:
        xs0, ys0, xs1, ys1 = [], [], [], []
        for e in [self.body, self.cranium, self.muzzle, *(d for d, _ in self.ears)]:
            hx, hy = e.half_extent()
            xs0.append(e.cx - hx)
            xs1.append(e.cx + hx)
            ys0.append(e.cy - hy)
            ys1.append(e.cy + hy)
        return min(xs0), min(ys0), max(xs1), max(ys1)


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Columns: forward (snout), left, up of the head, in camera coordinates (x right, y down, z to camera)."""
    f = np.array([math.cos(yaw), 0.0, math.sin(yaw)])
    u = np.array([0.0, -1.0, 0.0])
    f, u = f * math.cos(pitch) + u * math.sin(pitch), u * math.cos(pitch) - f * math.sin(pitch)
    left = np.cross(u, f)
    cr, sr = math.cos(roll), math.sin(roll)
    z_roll = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return z_roll @ np.stack([f, left, u], axis=1)


def _project_ellipsoid(center: np.ndarray, rot: np.ndarray, axes: tuple[float, float, float]) -> Ellipse:
    """Orthographic silhouette of an ellipsoid: the Schur complement of its quadric in z."""
    m = rot @ np.diag([1.0 / axes[0] ** 2, 1.0 / axes[1] ** 2, 1.0 / axes[2] ** 2]) @ rot.T
    q = m[:2, :2] - np.outer(m[:2, 2], m[:2, 2]) / m[2, 2]
    vals, vecs = np.linalg.eigh(q)
    a, b = 1.0 / math.sqrt(vals[0]), 1.0 / math.sqrt(vals[1])
    angle = math.degrees(math.atan2(vecs[1, 0], vecs[0, 0]))
    return Ellipse(float(center[0]), float(center[1]), a, b, angle, float(center[2]))


def project(pose: MousePose) -> Geometry:
    a = pose.head_scale * pose.eye_width
    rot = _rotation(pose.yaw, pose.pitch, pose.roll)
    f, left, up = rot[:, 0], rot[:, 1], rot[:, 2]
    cranium_axes = (0.75 * a, 0.55 * a, 0.5 * a)
    cranium = _project_ellipsoid(np.zeros(3), rot, cranium_axes)
    muzzle_c = 0.72 * a * f - 0.12 * a * up
    muzzle = _project_ellipsoid(muzzle_c, rot, (0.52 * a, 0.32 * a, 0.3 * a))
    nose = muzzle_c + 0.5 * a * f

    body_rot = _rotation(pose.yaw + pose.body_yaw, 0.0, pose.roll)
    fb = body_rot[:, 0]
    down = body_rot[:, 2] * -1.0
    body_axes = (1.5 * a * pose.body_length, 0.82 * a * pose.body_girth, 0.78 * a * pose.body_girth)
    body_c = -fb * (body_axes[0] * 0.8 + 0.35 * a) + down * 0.3 * a
    body = _project_ellipsoid(body_c, body_rot, body_axes)

    ears = []
    for side in (1.0, -1.0):
        c = -0.3 * a * f + side * 0.5 * a * left + 0.62 * a * up
        n = 0.75 * f + side * 0.45 * left + 0.25 * up
        n /= np.linalg.norm(n)
        r = 0.42 * a
        minor = r * max(abs(n[2]), 0.28)
        angle = math.degrees(math.atan2(n[1], n[0])) + 90.0
        ears.append((Ellipse(float(c[0]), float(c[1]), r, minor, angle, float(c[2])), float(n[2])))

    eyes = []
    scale = np.array(cranium_axes)
    for side in (1.0, -1.0):
        local = np.array([0.35, side * 0.46, 0.2]) * a
        local /= math.sqrt(float(np.sum((local / scale) ** 2)))
        normal_local = local / scale**2
        n = rot @ (normal_local / np.linalg.norm(normal_local))
        p = rot @ local
        tangent = f - np.dot(f, n) * n
        axis2 = tangent[:2]
        width_factor = float(np.linalg.norm(axis2) / max(np.linalg.norm(tangent), 1e-6))
        axis = axis2 / max(np.linalg.norm(axis2), 1e-6)
        lid_up = np.array([-axis[1], axis[0]])
        along_head_up = float(np.dot(lid_up, up[:2]))
        if along_head_up < 0 or (abs(along_head_up) < 1e-3 and lid_up[1] > 0):
            lid_up = -lid_up
        eyes.append(ProjectedEye(float(p[0]), float(p[1]), float(n[2]), axis, lid_up, max(width_factor, 0.7)))

    rear = body_c - fb * body_axes[0] * 0.95
    bend = pose.tail_bend
    t = np.linspace(0.0, 1.0, 7)[:, None]
    sideways = np.array([-fb[1], fb[0]])
    tail = rear[:2] - fb[:2] * (t * 1.6 * a) + sideways * (np.sin(t * math.pi) * bend * a)
    return Geometry(body, cranium, muzzle, ears, eyes, (float(nose[0]), float(nose[1]), float(nose[2])), tail, a)


def _fix(x: float) -> int:
    return int(round(x * ONE))


def _line_type(color) -> int:
    """Anti-alias colours only: an anti-aliased class mask would get in-between class ids at edges."""
    return cv2.LINE_8 if isinstance(color, int) else cv2.LINE_AA


def _ellipse(
    img: np.ndarray, e: Ellipse, ox: float, oy: float, color, scale: float = 1.0, dx: float = 0.0, dy: float = 0.0
) -> None:
    cv2.ellipse(
        img,
        (_fix(e.cx + ox + dx), _fix(e.cy + oy + dy)),
        (max(_fix(e.a * scale), 1), max(_fix(e.b * scale), 1)),
        e.angle,
        0,
        360,
        color,
        -1,
        _line_type(color),
        SHIFT,
    )


def _shade(color: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c * factor))) for c in color)


def _mix(color: tuple[int, int, int], other: tuple[int, int, int], share: float) -> tuple[int, int, int]:
    """`share` of `other` in `color`; exactly `color` at 0 and `other` at 1, so defaults draw as before."""
    return tuple(int(round(a + (b - a) * share)) for a, b in zip(color, other))


def eye_outline(
    cx: float,
    cy: float,
    axis: np.ndarray,
    up: np.ndarray,
    width: float,
    score: float,
    closed: bool,
    min_ratio: float = 0.0,
    split: float = 0.55,
) -> np.ndarray:
    """Lid outline polygon (float px): elliptic corners when open, almond corners as the score rises."""
    ratio = max(aperture_ratio(9.0 if closed else score), min_ratio)
    h = max(ratio * width, MIN_APERTURE_PX)
    power = 0.5 + 0.45 * min(max(score, 0.0), 9.0) / 9.0
    u = np.linspace(-1.0, 1.0, 17)
    bulge = (1.0 - u**2) ** power
    upper = np.stack([u * width / 2, split * h * bulge], axis=1)
    lower = np.stack([u[::-1] * width / 2, -(1.0 - split) * h * bulge[::-1]], axis=1)
    pts = np.concatenate([upper, lower])
    return np.array([cx, cy]) + pts[:, :1] * axis + pts[:, 1:] * up


def _poly(img: np.ndarray, pts: np.ndarray, color) -> None:
    cv2.fillPoly(img, [np.round(pts * ONE).astype(np.int32)], color, _line_type(color), SHIFT)


def _polyline(img: np.ndarray, pts: np.ndarray, color, thickness: int) -> None:
    cv2.polylines(img, [np.round(pts * ONE).astype(np.int32)], False, color, thickness, _line_type(color), SHIFT)


def draw_eye(
    img: np.ndarray,
    mask: np.ndarray,
    fur: Fur,
    tone: float,
    cx: float,
    cy: float,
    axis: np.ndarray,
    up: np.ndarray,
    width: float,
    score: float,
    closed: bool,
    look: EyeLook = EyeLook(),
) -> None:
    """Lid rim, wrinkles, eyeball (also into the mask as eye class) and the reflections of the lamp."""
    s = min(max(score, 0.0), 9.0)
    tight = s / 9.0
    outline = eye_outline(cx, cy, axis, up, width, s, closed, split=look.lid_split)
    centre = np.array([cx, cy])
    rim = 1.0 + (0.10 + 0.12 * tight) * 2.0  # the lid margin swells as the eye tightens
    opening = aperture_ratio(9.0 if closed else s)
    if look.margin > 0:
        held = opening + look.bulge * (aperture_ratio(0.0) - opening)
        skin = eye_outline(cx, cy, axis, up, width * (1.0 + 2.0 * look.margin), s, closed, held, look.lid_split)
        _poly(img, skin, _mix(_shade(fur.lid, tone * look.margin_shade), fur.eye, look.skin_eye_mix))
    coat = _shade(fur.body, tone)
    _poly(img, centre + (outline - centre) * rim + up * 0.02 * width, _mix(_shade(fur.lid, tone), coat, look.rim_mix))
    upper, lower = outline[:17], outline[17:]
    for k in range(int(round(tight * 3.2))):  # squint wrinkles: none when open, three when shut
        gap = (0.16 + 0.11 * k) * width
        for edge, sign in ((upper, 1.0), (lower, -0.8)):
            pts = centre + (edge[3:-3] - centre) * (1.0 + 0.12 * k) + up * sign * gap
            _polyline(img, pts, _shade(fur.wrinkle, tone), 1)
    eyeball = _mix(fur.eye, coat, look.eye_mix)
    _poly(img, outline, eyeball)
    _poly(mask, eye_outline(cx, cy, axis, up, width, s, closed, MASK_MIN_RATIO, look.lid_split), CLASS_EYES)
    h = max(opening * width, MIN_APERTURE_PX)
    if h > 3.0 and look.highlight > 0:
        r = min(0.13 * width, 0.3 * h) * look.highlight
        hl = centre + axis * look.highlight_dx * width + up * look.highlight_dy * h
        lamp = _mix(eyeball, (238, 240, 242), look.highlight_level)
        cv2.circle(img, (_fix(hl[0]), _fix(hl[1])), max(_fix(r), ONE), lamp, -1, cv2.LINE_AA, SHIFT)
        lo = centre + axis * 0.12 * width - up * 0.22 * h
        glint = _mix(eyeball, (120, 120, 124), look.highlight_level)
        cv2.circle(img, (_fix(lo[0]), _fix(lo[1])), max(_fix(r * 0.45), ONE), glint, -1, cv2.LINE_AA, SHIFT)


def draw_animal(
    img: np.ndarray, mask: np.ndarray, animal: Animal, fur_texture: np.ndarray, rng: np.random.Generator
) -> tuple[list[DrawnEye], tuple[int, int, int, int]]:
    """Draw into `img`/`mask` (views of one box ROI); returns the eyes and the drawn rectangle (x0, y0, x1, y1)."""
    pose, fur = animal.pose, animal.fur
    g = project(pose)
    ox, oy = pose.x, pose.y
    tone = animal.tone
    body_col = _shade(fur.body, tone)
    head_col = _shade(fur.body, tone * 1.04)
    light = _shade(fur.body, tone * (1.08 if fur.name == "white" else 1.35))

    x0, y0, x1, y1 = g.bounds()
    tx0, ty0 = np.min(g.tail, axis=0)
    tx1, ty1 = np.max(g.tail, axis=0)
    pad = 8
    rx0 = max(int(math.floor(min(x0, tx0) + ox)) - pad, 0)
    ry0 = max(int(math.floor(min(y0, ty0) + oy)) - pad, 0)
    rx1 = min(int(math.ceil(max(x1, tx1) + ox)) + pad, img.shape[1])
    ry1 = min(int(math.ceil(max(y1, ty1) + oy)) + pad, img.shape[0])
    sub = img[ry0:ry1, rx0:rx1]
    msub = mask[ry0:ry1, rx0:rx1]
    lx, ly = ox - rx0, oy - ry0

    sil = np.zeros(msub.shape, np.uint8)
    tail_w = max(int(0.16 * g.head_a), 3)
    _polyline(sub, g.tail + [lx, ly], _shade(fur.tail, tone), tail_w)
    _polyline(msub, g.tail + [lx, ly], CLASS_ANIMAL, tail_w)
    _polyline(sil, g.tail + [lx, ly], 255, tail_w)

    parts: list[tuple[float, str, object]] = [
        (g.body.z, "body", g.body),
        (g.cranium.z, "head", g.cranium),
        (g.muzzle.z, "head", g.muzzle),
    ]
    parts += [(d.z, "ear", (d, nz)) for d, nz in g.ears]
    parts.sort(key=lambda p: p[0])
    for _, kind, part in parts:
        if kind == "ear":
            disc, nz = part
            _ellipse(sub, disc, lx, ly, _shade(fur.ear, tone))
            if nz > 0.1:
                _ellipse(sub, disc, lx, ly, _shade(fur.ear_inner, tone), scale=0.72)
            _ellipse(msub, disc, lx, ly, CLASS_EARS)
            _ellipse(sil, disc, lx, ly, 255)
        else:
            col = body_col if kind == "body" else head_col
            _ellipse(sub, part, lx, ly, col)
            _ellipse(sub, part, lx, ly, light, scale=0.55, dx=-0.2 * part.a, dy=-0.25 * part.b)
            _ellipse(msub, part, lx, ly, CLASS_ANIMAL)
            _ellipse(sil, part, lx, ly, 255)

    k = 2 * int(max(0.09 * g.head_a, 1.5)) + 1
    soft = cv2.stackBlur(sub, (k, k))
    np.copyto(sub, soft, where=(sil > 0)[..., None])
    th, tw = fur_texture.shape[:2]
    h, w = sil.shape
    if h < th and w < tw:
        pick = rng if animal.texture_seed is None else np.random.default_rng(animal.texture_seed)
        fy, fx = pick.random(2)
        oy_t, ox_t = int(fy * (th - h)), int(fx * (tw - w))
        tex = fur_texture[oy_t : oy_t + h, ox_t : ox_t + w]
        amp = fur.texture / 32.0
        noisy = cv2.addWeighted(sub.astype(np.int16), 1.0, tex, amp, 0.0, dtype=cv2.CV_16S)
        np.copyto(sub, np.clip(noisy, 0, 255).astype(np.uint8), where=(sil > 0)[..., None])
    if fur.patches is not None:
        _draw_patches(
            sub,
            sil,
            g,
            lx,
            ly,
            _shade(fur.patches, tone),
            rng if animal.texture_seed is None else np.random.default_rng(animal.texture_seed + 1),
        )

    eyes: list[DrawnEye] = []
    if g.nose[2] > -0.2 * g.head_a:
        cv2.circle(
            sub,
            (_fix(g.nose[0] + lx), _fix(g.nose[1] + ly)),
            _fix(max(0.09 * g.head_a, 2.0)),
            _shade(fur.nose, tone),
            -1,
            cv2.LINE_AA,
            SHIFT,
        )
        for k in range(5):
            for sgn in (1.0, -1.0):
                ang = math.atan2(g.nose[1] - g.muzzle.cy, g.nose[0] - g.muzzle.cx) + sgn * (0.5 + 0.22 * k)
                start = np.array([g.nose[0] * 0.8 + g.muzzle.cx * 0.2 + lx, g.nose[1] * 0.8 + g.muzzle.cy * 0.2 + ly])
                end = start + np.array([math.cos(ang), math.sin(ang)]) * g.head_a * (0.9 + 0.15 * k)
                _polyline(
                    sub,
                    np.stack([start, (start + end) / 2 + sgn * 2.0, end]),
                    (150, 150, 150) if fur.name == "black" else (235, 235, 235),
                    1,
                )
    if animal.paws:  # before the eyes: a paw never hides a labelled eye
        _draw_paws(sub, msub, g, lx, ly, _shade(fur.ear_inner, tone))
    for e in g.eyes:
        visible = e.nz > EYE_VISIBLE_NZ
        if visible:
            draw_eye(
                sub,
                msub,
                fur,
                tone,
                e.x + lx,
                e.y + ly,
                e.axis,
                e.up,
                pose.eye_width * e.width_factor,
                animal.score,
                animal.blink,
                animal.eye_look,
            )
        eyes.append(DrawnEye(e.x + ox, e.y + oy, visible))
    return eyes, (rx0, ry0, rx1, ry1)


def _draw_patches(
    sub: np.ndarray,
    sil: np.ndarray,
    g: Geometry,
    lx: float,
    ly: float,
    color: tuple[int, int, int],
    rng: np.random.Generator,
) -> None:
    """Dark patches of a mixed coat, inside the silhouette; drawn before the eyes, so never over them."""
    layer = np.zeros(sil.shape, np.uint8)
    for part in (g.body, g.body, g.cranium):
        hx, hy = part.half_extent()
        cx, cy = part.cx + lx + rng.uniform(-hx, hx) * 0.6, part.cy + ly + rng.uniform(-hy, hy) * 0.6
        axes = (max(_fix(part.a * rng.uniform(0.2, 0.5)), ONE), max(_fix(part.b * rng.uniform(0.3, 0.7)), ONE))
        cv2.ellipse(layer, (_fix(cx), _fix(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_8, SHIFT)
    np.copyto(sub, np.array(color, np.uint8), where=((layer > 0) & (sil > 0))[..., None])


def _draw_paws(
    sub: np.ndarray, msub: np.ndarray, g: Geometry, lx: float, ly: float, color: tuple[int, int, int]
) -> None:
    """Two small fore paws under the muzzle, the grooming posture; they are animal in the mask."""
    r = max(0.16 * g.head_a, 2.0)
    for side in (-1.0, 1.0):
        px = g.muzzle.cx + lx + side * 0.35 * g.head_a
        py = g.muzzle.cy + ly + 0.45 * g.head_a
        cv2.circle(sub, (_fix(px), _fix(py)), _fix(r), color, -1, cv2.LINE_AA, SHIFT)
        cv2.circle(msub, (_fix(px), _fix(py)), _fix(r), CLASS_ANIMAL, -1, cv2.LINE_8, SHIFT)


def fit_pose(
    pose: MousePose, roi_w: int, roi_h: int, margin: tuple[int, int, int, int], rng: np.random.Generator
) -> MousePose | None:
    """Place the head so the whole animal (tail excepted) lies inside the ROI margins, or None if it cannot."""
    x0, y0, x1, y1 = project(replace(pose, x=0.0, y=0.0)).bounds()
    left, top, right, bottom = margin
    lo_x, hi_x = left - x0, roi_w - right - x1
    lo_y, hi_y = top - y0, roi_h - bottom - y1
    if lo_x > hi_x or lo_y > hi_y:
        return None
    y = hi_y - abs(rng.normal(0.0, 0.3)) * (hi_y - lo_y)  # mostly sitting on the bedding, sometimes rearing
    return replace(pose, x=float(rng.uniform(lo_x, hi_x)), y=float(max(y, lo_y)))


def shrink_to_fit(
    pose: MousePose,
    roi_w: int,
    roi_h: int,
    margin: tuple[int, int, int, int],
    rng: np.random.Generator,
    *,
    tries: int,
    shrink: float,
    min_eye_width: float = 0.0,
    last_eye_width: float | None = None,
    keep_unfitted: bool = False,
) -> MousePose | None:
    """fit_pose, shrinking a too-large animal and turning it towards the camera after each miss, then
    once more as a big head facing the camera. A pose that never fits is None, or with
    `keep_unfitted` the last shrunk pose (drawn where it falls rather than leaving the box empty)."""
    for _ in range(tries):
        placed = fit_pose(pose, roi_w, roi_h, margin, rng)
        if placed is not None:
            return placed
        pose = replace(pose, eye_width=max(pose.eye_width * shrink, min_eye_width), body_yaw=pose.body_yaw * 0.7)
    last = replace(pose, head_scale=2.6, body_yaw=0.0)
    if last_eye_width is not None:
        last = replace(last, eye_width=last_eye_width)
    placed = fit_pose(last, roi_w, roi_h, margin, rng)
    return pose if placed is None and keep_unfitted else placed
