"""Domain randomisation: what a rendered rack may look like, drawn per seed from a preset.

Networks trained on one look learn that look, not mice: every family below (camera, layout,
lighting, backdrop, box walls, bedding, body, fur, eyes, camera effects, negatives) varies on its
own, so no single cue predicts where the eyes are or what they score. The ranges are in
docs/synth.md. A preset sets how wide and how often (`none` = the original generator, `default`
for training sets, `hardest` for the acceptance set); restrictions narrow the named families to some
of their levels, which is how a style-held-out protocol trains on some looks and tests on others.

A session of frames (one camera placement, `rack.SESSION_FRAMES` seeds) shares a `SceneStyle`: the
layout, the lighting and everything static. Each frame then draws its own exposure, flicker and
camera effects, and each box its own mouse.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from export.synth.layout import FRAME_H, FRAME_W, RackLayout
from export.synth.mouse import FURS, Animal, EyeLook, MousePose, shrink_to_fit
from export.synth.nuisance import NOISE_SIGMAS, BoxNuisance, Nuisance
from mgs_core.errors import MgsError

PRESETS = ("none", "default", "hardest")
# Families a restriction can narrow, with their levels. Numeric families (tilt, gaps, noise...) are
# drawn within the preset's ranges and are written to the conditions, but not restricted by name.
FAMILIES: dict[str, tuple[str, ...]] = {
    "scale": ("small", "medium", "large"),
    "boxes": ("1", "2", "3", "4"),
    "light": ("normal", "dim", "bright", "warm", "cool"),
    "backdrop": ("red", "dark", "grey", "white", "blue", "green"),
    "bedding": ("wood", "paper", "corncob", "white", "dark"),
    "fur": ("black", "agouti", "white", "albino", "piebald"),
    "pose": ("sitting", "frontal", "three_quarter", "profile", "curled", "rearing", "grooming", "away"),
    "camera": ("clean", "noisy", "blurred", "compressed"),
}
# The style-held-out protocol: train on the first looks, test on the held-out extremes.
STYLE_HOLDOUT: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {
        "fur": ("black", "agouti", "white"),
        "light": ("normal", "warm"),
        "backdrop": ("red", "grey", "dark"),
        "bedding": ("wood", "corncob"),
    },
    "test": {
        "fur": ("albino", "piebald"),
        "light": ("dim", "bright", "cool"),
        "backdrop": ("white", "blue", "green"),
        "bedding": ("paper", "white", "dark"),
    },
}
BOX_WIDTH_PX = {"small": (200.0, 330.0), "medium": (330.0, 500.0), "large": (500.0, 700.0)}
LIGHT_LEVEL = {"normal": (0.8, 1.2), "dim": (0.35, 0.6), "bright": (1.35, 1.8), "warm": (0.8, 1.2), "cool": (0.8, 1.2)}
COLOUR_TEMP_K = {
    "normal": (4500.0, 6200.0),
    "dim": (3800.0, 6500.0),
    "bright": (4200.0, 6500.0),
    "warm": (2700.0, 3800.0),
    "cool": (6800.0, 9500.0),
}
LIGHT_COATS, LIGHT_SCENES = ("white", "albino", "piebald"), ("white", "grey")
PAD = 230  # canvas margin around the frame: boxes cut by the frame edge and tilted views are drawn whole
REFERENCE_BOX_W = 430.0  # the eye sizes of mouse.py / rack.EYE_WIDTH_PX belong to a box this wide


@dataclass(frozen=True)
class Ranges:
    """How wide and how often, per preset (probabilities per session, frame or box).

    `default` and `hardest` share the numeric ranges, so a model trained on `default` has seen every
    look `hardest` can draw; `hardest` draws every level equally often and the hard cases more often.
    """

    weights: dict[str, tuple[float, ...]]  # per family, over FAMILIES[family]
    size_jitter: float  # box widths within one rack differ by up to +-this
    gap: tuple[float, float]  # gap between boxes, in box widths
    cut_p: float  # the rack runs off the frame edge
    tilt_p: float
    tilt_deg: float
    keystone_px: float  # perspective: frame corners move by up to this
    white_on_light_p: float  # a session of light coats on a light scene (the hard negative)
    shadow_p: float
    vignette: float
    flicker_p: float
    exposure_p: float  # over- or under-exposed frame
    empty_frame_p: float
    empty_box_p: float
    occluder_p: float  # water bottle or food hopper in front of the animal
    card_p: float
    decoy_p: float  # drawn rectangles, tape corners and dots on the walls
    scratch_p: float
    condensation_p: float
    defocus_px: float
    motion_px: float
    blink_p: float = 0.03


RANGES: dict[str, Ranges] = {
    "default": Ranges(
        weights={
            "scale": (0.3, 0.45, 0.25),
            "boxes": (0.08, 0.12, 0.15, 0.65),
            "light": (0.5, 0.13, 0.13, 0.12, 0.12),
            "backdrop": (0.4, 0.12, 0.15, 0.13, 0.1, 0.1),
            "bedding": (0.4, 0.2, 0.15, 0.15, 0.1),
            "fur": (0.4, 0.2, 0.15, 0.15, 0.1),
            "pose": (0.3, 0.15, 0.15, 0.12, 0.07, 0.07, 0.06, 0.08),
            "camera": (0.4, 0.2, 0.2, 0.2),
        },
        size_jitter=0.12,
        gap=(0.01, 0.35),
        cut_p=0.2,
        tilt_p=0.5,
        tilt_deg=6.0,
        keystone_px=80.0,
        white_on_light_p=0.08,
        shadow_p=0.3,
        vignette=0.5,
        flicker_p=0.15,
        exposure_p=0.1,
        empty_frame_p=0.03,
        empty_box_p=0.08,
        occluder_p=0.25,
        card_p=0.25,
        decoy_p=0.35,
        scratch_p=0.4,
        condensation_p=0.2,
        defocus_px=3.5,
        motion_px=18.0,
    ),
    "hardest": Ranges(
        weights={family: (1.0,) * len(levels) for family, levels in FAMILIES.items()},  # every level equally often
        size_jitter=0.12,
        gap=(0.01, 0.35),
        cut_p=0.4,
        tilt_p=0.8,
        tilt_deg=6.0,
        keystone_px=80.0,
        white_on_light_p=0.15,
        shadow_p=0.5,
        vignette=0.5,
        flicker_p=0.3,
        exposure_p=0.2,
        empty_frame_p=0.05,
        empty_box_p=0.12,
        occluder_p=0.45,
        card_p=0.45,
        decoy_p=0.6,
        scratch_p=0.7,
        condensation_p=0.4,
        defocus_px=3.5,
        motion_px=18.0,
    ),
}


# The opt-in eye looks: a `Randomisation` field each (share of animals, 0-1) and a `synth` option of the same name.
EYE_LOOKS = ("lid_skin", "dim_eyes", "dark_lids")
# Thickness of the lid-skin band beyond the opening, in eye widths (--lid-skin and --dark-lids).
LID_MARGIN = (0.03, 0.15)


def _option(look: str) -> str:
    return "--" + look.replace("_", "-")


@dataclass(frozen=True)
class Randomisation:
    """A preset plus, per family, the levels it may use (all when not restricted)."""

    preset: str = "default"
    restrict: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # share of animals drawn with lid skin (EyeLook.margin); 0 draws nothing, so every seed renders as before
    lid_skin: float = 0.0
    # share of animals whose eyes are dim (EyeLook.eye_mix, rim_mix, highlight_level); 0 as lid_skin
    dim_eyes: float = 0.0
    # share of animals whose lid skin keeps the eyeball's darkness and outline (EyeLook.skin_eye_mix); 0 as lid_skin
    dark_lids: float = 0.0

    @property
    def active(self) -> bool:
        return self.preset != "none"

    def allowed(self, family: str) -> tuple[str, ...]:
        return dict(self.restrict).get(family, FAMILIES[family])

    def describe(self) -> str:
        words = [f"--randomise {self.preset}", *(f"--restrict {f}={','.join(v)}" for f, v in self.restrict)]
        shares = [(_option(look), getattr(self, look)) for look in EYE_LOOKS]
        return " ".join(words + [f"{option} {share:g}" for option, share in shares if share > 0])

    @classmethod
    def parse(
        cls,
        preset: str,
        restrict: Iterable[str] = (),
        style_holdout: str | None = None,
        lid_skin: float = 0.0,
        dim_eyes: float = 0.0,
        dark_lids: float = 0.0,
    ) -> Randomisation:
        """From the command line: `--randomise PRESET --restrict FAMILY=LEVEL,LEVEL --style-holdout train|test
        --lid-skin SHARE --dim-eyes SHARE --dark-lids SHARE`."""
        if preset not in PRESETS:
            raise MgsError(f"--randomise {preset!r}: choose one of {', '.join(PRESETS)}")
        shares = [(_option(look), share) for look, share in zip(EYE_LOOKS, (lid_skin, dim_eyes, dark_lids))]
        for option, share in shares:
            if not 0.0 <= share <= 1.0:
                raise MgsError(f"{option} {share:g}: give the share of animals, from 0 to 1")
        chosen: dict[str, tuple[str, ...]] = {}
        if style_holdout is not None:
            if style_holdout not in STYLE_HOLDOUT:
                raise MgsError(f"--style-holdout {style_holdout!r}: choose one of {', '.join(STYLE_HOLDOUT)}")
            chosen.update(STYLE_HOLDOUT[style_holdout])
        for text in restrict:
            family, sep, levels = text.partition("=")
            family = family.strip()
            if not sep or family not in FAMILIES:
                raise MgsError(
                    f"--restrict {text!r}: write FAMILY=LEVEL[,LEVEL...] with FAMILY one of {', '.join(FAMILIES)}"
                )
            names = tuple(v.strip() for v in levels.split(",") if v.strip())
            unknown = [v for v in names if v not in FAMILIES[family]]
            if unknown or not names:
                raise MgsError(f"--restrict {text!r}: {family} levels are {', '.join(FAMILIES[family])}")
            chosen[family] = names
        if (chosen or any(share > 0 for _, share in shares)) and preset == "none":
            options = ["--restrict", "--style-holdout", *(option for option, _ in shares)]
            raise MgsError(
                f"{', '.join(options[:-1])} and {options[-1]} need a randomised preset; use --randomise default or hardest"
            )
        order = [f for f in FAMILIES if f in chosen]
        return cls(preset, tuple((f, chosen[f]) for f in order), lid_skin, dim_eyes, dark_lids)


def _choose(rng: np.random.Generator, r: Randomisation, family: str) -> str:
    """A level of the family, by the preset's weights renormalised over the allowed levels."""
    levels = FAMILIES[family]
    allowed = set(r.allowed(family))
    w = np.array([p if name in allowed else 0.0 for name, p in zip(levels, RANGES[r.preset].weights[family])])
    return levels[int(rng.choice(len(levels), p=w / w.sum()))]


@dataclass(frozen=True)
class SceneStyle:
    """Everything static in one camera placement (hashable: it keys the cached scene)."""

    scale: str
    light: str
    light_level: float
    colour_temp_k: float
    lamp: tuple[float, float, float]  # lamp centre (x, y, in frame sizes) and fall-off strength
    shadow: str  # none | soft | hard
    vignette: float
    backdrop: str
    folds: float
    tent: bool
    bedding: str
    bedding_frac: float
    decoys: tuple[int, ...]  # per box: drawn rectangles, corners and dots on the back wall
    occluders: tuple[str, ...]  # per box: none | bottle | hopper
    cards: tuple[bool, ...]
    scratches: tuple[bool, ...]
    condensation: tuple[bool, ...]
    furs: tuple[str, ...]  # coats allowed in this session (a white-on-light session narrows them)
    white_on_light: bool
    tilt_deg: float
    keystone_px: float
    warp: tuple[float, ...] | None  # canvas -> frame homography (9 values), None = straight crop
    cut: tuple[bool, ...]  # per box: partly outside the frame


def _flip(rng: np.random.Generator, p: float) -> bool:
    return bool(rng.random() < p)


def _in_share(rng: np.random.Generator, share: float) -> bool:
    """True for `share` of the animals, as an opt-in eye look picks them: one draw, tested against
    1 - share, so the sets rendered with --lid-skin, --dim-eyes and --dark-lids keep their frames."""
    return not _flip(rng, 1.0 - share)


def styled_layout(session: int, r: Randomisation) -> RackLayout:
    """The camera placement of one session: box sizes and positions, tilt, and the scene style."""
    rng = np.random.default_rng([int(session), 0x1A7, 0xD0])
    ranges = RANGES[r.preset]
    scale = _choose(rng, r, "scale")
    n = int(_choose(rng, r, "boxes"))
    base_w = rng.uniform(*BOX_WIDTH_PX[scale])
    widths = [base_w * rng.uniform(1 - ranges.size_jitter, 1 + ranges.size_jitter) for _ in range(n)]
    aspect = rng.uniform(1.2, 1.55)
    heights = [min(w * aspect * rng.uniform(0.97, 1.03), FRAME_H - 40) for w in widths]
    gaps = [w * rng.uniform(*ranges.gap) for w in widths[1:]]
    total = sum(widths) + sum(gaps)
    cut = _flip(rng, ranges.cut_p) or total > FRAME_W - 24
    if cut:
        lo, hi = sorted((-0.5 * widths[0], FRAME_W - total + 0.5 * widths[-1]))
    else:
        lo, hi = 12.0, FRAME_W - total - 12.0
    x = rng.uniform(lo, hi)
    hmax = max(heights)
    y0 = rng.uniform(20.0, max(FRAME_H - hmax - 20.0, 21.0))
    rois = []
    for i, (w, h) in enumerate(zip(widths, heights)):
        y = y0 + rng.uniform(-0.03, 0.03) * h
        rois.append((x, y, w, h))
        x += w + (gaps[i] if i < len(gaps) else 0.0)
    kept = [b for b in rois if _visible_enough(*b)] or [(FRAME_W / 2 - widths[0] / 2, y0, widths[0], heights[0])]
    canvas_rois = tuple((round(bx) + PAD, round(by) + PAD, round(bw), round(bh)) for bx, by, bw, bh in kept)
    n = len(canvas_rois)
    tilt_deg, keystone, warp = 0.0, 0.0, None
    if _flip(rng, ranges.tilt_p):
        tilt_deg = float(rng.uniform(-ranges.tilt_deg, ranges.tilt_deg))
        keystone = float(rng.uniform(0.0, ranges.keystone_px))
        warp = _homography(tilt_deg, rng.uniform(-keystone, keystone, size=(4, 2)))
    light = _choose(rng, r, "light")
    backdrop, bedding = _choose(rng, r, "backdrop"), _choose(rng, r, "bedding")
    furs = r.allowed("fur")
    white_on_light = False
    light_coats = tuple(f for f in furs if f in LIGHT_COATS)
    light_scenes = tuple(b for b in LIGHT_SCENES if b in r.allowed("backdrop"))
    light_beds = tuple(b for b in ("paper", "white") if b in r.allowed("bedding"))
    if light_coats and light_scenes and light_beds and _flip(rng, ranges.white_on_light_p):
        white_on_light, furs = True, light_coats
        backdrop, bedding = str(rng.choice(light_scenes)), str(rng.choice(light_beds))
    per_box = [
        (
            int(rng.integers(1, 4)) if _flip(rng, ranges.decoy_p) else 0,
            str(rng.choice(["bottle", "hopper"])) if _flip(rng, ranges.occluder_p) else "none",
            _flip(rng, ranges.card_p),
            _flip(rng, ranges.scratch_p),
            _flip(rng, ranges.condensation_p),
        )
        for _ in range(n)
    ]
    style = SceneStyle(
        scale=scale,
        light=light,
        light_level=float(rng.uniform(*LIGHT_LEVEL[light])),
        colour_temp_k=float(rng.uniform(*COLOUR_TEMP_K[light])),
        lamp=(float(rng.uniform(-0.3, 1.3)), float(rng.uniform(-0.6, 0.8)), float(rng.uniform(0.15, 0.7))),
        shadow=str(rng.choice(["soft", "hard"])) if _flip(rng, ranges.shadow_p) else "none",
        vignette=float(rng.uniform(0.0, ranges.vignette)),
        backdrop=backdrop,
        folds=float(rng.uniform(0.02, 0.2)),
        tent=_flip(rng, 0.6),
        bedding=bedding,
        bedding_frac=float(rng.uniform(0.07, 0.2)),
        decoys=tuple(p[0] for p in per_box),
        occluders=tuple(p[1] for p in per_box),
        cards=tuple(p[2] for p in per_box),
        scratches=tuple(p[3] for p in per_box),
        condensation=tuple(p[4] for p in per_box),
        furs=furs,
        white_on_light=white_on_light,
        tilt_deg=round(tilt_deg, 2),
        keystone_px=round(keystone, 1),
        warp=warp,
        cut=tuple(
            bx < PAD or by < PAD or bx + bw > PAD + FRAME_W or by + bh > PAD + FRAME_H for bx, by, bw, bh in canvas_rois
        ),
    )
    return RackLayout(canvas_rois, variant=int(session) & 0x7FFFFFFF, pad=PAD, style=style)


def _visible_enough(x: float, y: float, w: float, h: float) -> bool:
    """A box stays if most of it is in the frame and what is cut off still fits the canvas margin."""
    vis_w = min(x + w, FRAME_W) - max(x, 0.0)
    hidden = max(-x, 0.0) + max(x + w - FRAME_W, 0.0)
    return vis_w >= max(0.45 * w, 90.0) and hidden <= PAD - 10 and y >= 10 - PAD and y + h <= FRAME_H + PAD - 10


def _homography(tilt_deg: float, jitter: np.ndarray) -> tuple[float, ...]:
    """Canvas -> frame: the frame window of the canvas rotated by the tilt, corners moved (perspective)."""
    src = np.float32([[PAD, PAD], [PAD + FRAME_W, PAD], [PAD + FRAME_W, PAD + FRAME_H], [PAD, PAD + FRAME_H]])
    corners = np.float32([[0, 0], [FRAME_W, 0], [FRAME_W, FRAME_H], [0, FRAME_H]])
    t = math.radians(tilt_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]], np.float32)
    centre = np.float32([FRAME_W / 2, FRAME_H / 2])
    dst = (corners - centre) @ rot.T + centre + jitter.astype(np.float32)
    return tuple(float(v) for v in cv2.getPerspectiveTransform(src, dst.astype(np.float32)).ravel())


@dataclass(frozen=True)
class FrameStyle:
    """What one frame adds to its session: camera effects and exposure, and the boxes' conditions."""

    camera: str
    nuisance: Nuisance
    empty: bool
    conditions: dict[str, str | float | int | bool] = field(default_factory=dict)


NOISE_LEVELS = {
    "clean": (0, 1),
    "noisy": (2, 3, 4),
    "blurred": (1, 2),
    "compressed": (1, 2),
}  # indices into NOISE_SIGMAS


def frame_style(rng: np.random.Generator, r: Randomisation, layout: RackLayout) -> FrameStyle:
    """Exposure, flicker and camera effects of one frame, and whether the frame is empty."""
    ranges, style = RANGES[r.preset], layout.style
    camera = _choose(rng, r, "camera")
    gain = float(rng.uniform(0.88, 1.12))
    exposure = "normal"
    if _flip(rng, ranges.exposure_p):
        exposure = str(rng.choice(["over", "under"]))
        gain *= float(rng.uniform(1.3, 1.7)) if exposure == "over" else float(rng.uniform(0.45, 0.7))
    boxes = []
    for _ in layout.rois:
        blurred = camera == "blurred"
        defocus = float(rng.uniform(0.8, ranges.defocus_px)) if _flip(rng, 0.8 if blurred else 0.15) else 0.0
        motion = float(rng.uniform(3.0, ranges.motion_px)) if _flip(rng, 0.4 if blurred else 0.1) else 0.0
        jpeg = int(rng.integers(25, 86)) if _flip(rng, 0.2) else 0
        boxes.append(BoxNuisance(round(defocus, 2), round(motion, 1), float(rng.uniform(0, 180)), jpeg))
    jpeg = int(rng.integers(20, 61)) if camera == "compressed" and _flip(rng, 0.5) else 0
    h264 = int(rng.integers(12, 41)) if camera == "compressed" and not jpeg else 0
    flicker = float(rng.uniform(0.03, 0.12)) if _flip(rng, ranges.flicker_p) else 0.0
    noise = int(rng.choice(NOISE_LEVELS[camera]))
    nuisance = Nuisance(
        gain=gain * style.light_level,
        gamma=float(rng.uniform(0.85, 1.15)),
        noise=noise,
        boxes=tuple(boxes),
        flicker=flicker,
        flicker_period=float(rng.uniform(60.0, 400.0)),
        flicker_phase=float(rng.uniform(0, 2 * math.pi)),
        jpeg=jpeg,
        h264=h264,
    )
    empty = _flip(rng, ranges.empty_frame_p)
    conditions = {
        "randomise": r.preset,
        "boxes": len(layout.rois),
        "scale": style.scale,
        "tilt_deg": style.tilt_deg,
        "keystone_px": style.keystone_px,
        "light": style.light,
        "light_level": round(style.light_level, 3),
        "colour_temp_k": int(style.colour_temp_k),
        "shadow": style.shadow,
        "vignette": round(style.vignette, 3),
        "flicker": round(flicker, 3),
        "exposure": exposure,
        "backdrop": style.backdrop,
        "bedding": style.bedding,
        "white_on_light": style.white_on_light,
        "camera": camera,
        "noise_sigma": NOISE_SIGMAS[noise],
        "jpeg_quality": jpeg,
        "h264_quality": h264,
        "empty_frame": empty,
    }
    return FrameStyle(camera, nuisance, empty, conditions)


def random_styled_pose(rng: np.random.Generator, kind: str, eye_width: float) -> MousePose:
    """A pose of the named kind; head angles as in `mouse.MousePose` (yaw pi/2 = facing the camera)."""
    side = float(rng.choice([0.0, math.pi]))
    yaw, pitch, roll = (
        float(rng.uniform(-0.25, math.pi + 0.25)),
        float(rng.uniform(-0.3, 0.3)),
        float(rng.uniform(-0.4, 0.4)),
    )
    length, girth, body_yaw = (
        float(rng.uniform(0.8, 1.25)),
        float(rng.uniform(0.85, 1.2)),
        float(rng.uniform(-0.6, 0.6)),
    )
    if kind == "frontal":
        yaw = math.pi / 2 + rng.uniform(-0.25, 0.25)
    elif kind == "three_quarter":
        yaw = math.pi / 2 + float(rng.choice([-1.0, 1.0])) * rng.uniform(0.5, 1.0)
    elif kind == "profile":
        yaw = side + rng.uniform(-0.2, 0.2)
    elif kind == "curled":
        pitch, length, girth = rng.uniform(-0.6, -0.25), rng.uniform(0.6, 0.8), rng.uniform(1.15, 1.35)
        body_yaw = float(rng.choice([-1.0, 1.0])) * rng.uniform(1.0, 2.0)
    elif kind == "rearing":
        yaw = side + rng.uniform(-0.6, 0.6)
        roll = -math.copysign(1.0, math.cos(yaw)) * rng.uniform(0.8, 1.4)
        body_yaw = rng.uniform(-0.3, 0.3)
    elif kind == "grooming":
        yaw, pitch = math.pi / 2 + rng.uniform(-0.6, 0.6), rng.uniform(-0.5, -0.2)
    elif kind == "away":
        yaw = -math.pi / 2 + rng.uniform(-0.8, 0.8)
    return MousePose(
        0.0,
        0.0,
        float(eye_width),
        float(rng.uniform(2.9, 3.5)),
        float(yaw),
        float(pitch),
        float(roll),
        float(body_yaw),
        float(rng.uniform(-1.0, 1.0)),
        float(length),
        float(girth),
    )


def styled_animal(
    rng: np.random.Generator, r: Randomisation, layout: RackLayout, box: int, score: float, fur: str | None, empty: bool
) -> tuple[Animal | None, dict[str, str | float | int | bool]]:
    """A mouse for one box, or None for an empty box, and the box's conditions."""
    ranges, style = RANGES[r.preset], layout.style
    w = layout.rois[box][2]
    conditions: dict[str, str | float | int | bool] = {
        "box_width_px": w,
        "box_cut": style.cut[box],
        "occluder": style.occluders[box],
        "cage_card": style.cards[box],
        "decoys": style.decoys[box],
        "scratches": style.scratches[box],
        "condensation": style.condensation[box],
    }
    coat = fur or (str(rng.choice(style.furs)) if style.white_on_light else _choose(rng, r, "fur"))
    kind = _choose(rng, r, "pose")
    eye_width = float(rng.uniform(15.0, 30.0)) * w / REFERENCE_BOX_W
    pose = random_styled_pose(rng, kind, eye_width)
    look = EyeLook(
        highlight=0.0 if _flip(rng, 0.15) else float(rng.uniform(0.5, 1.6)),
        highlight_dx=float(rng.uniform(-0.3, 0.15)),
        highlight_dy=float(rng.uniform(-0.05, 0.3)),
        lid_split=float(rng.uniform(0.42, 0.66)),
    )
    if r.lid_skin > 0:
        look = replace(
            look,
            margin=float(rng.uniform(*LID_MARGIN)) if _in_share(rng, r.lid_skin) else 0.0,
            margin_shade=float(rng.uniform(0.35, 1.6)),
            bulge=float(rng.uniform(0.0, 1.0)),
        )
    dim = r.dim_eyes > 0 and _in_share(rng, r.dim_eyes)
    if dim:
        look = replace(
            look,
            eye_mix=float(rng.uniform(0.0, 0.25)),
            rim_mix=float(rng.uniform(0.3, 0.9)),
            highlight_level=0.0 if _flip(rng, 0.4) else float(rng.uniform(0.25, 0.8)),
        )
    dark = r.dark_lids > 0 and _in_share(rng, r.dark_lids)
    if dark:
        look = replace(
            look,
            margin=float(rng.uniform(*LID_MARGIN)),
            skin_eye_mix=float(rng.uniform(0.3, 0.85)),
            bulge=float(rng.uniform(0.6, 1.0)),
        )
    tone, blink = float(rng.uniform(0.75, 1.25)), _flip(rng, ranges.blink_p)
    placed = None if empty or _flip(rng, ranges.empty_box_p) else _place(rng, pose, layout, box)
    conditions.update(
        empty=placed is None,
        fur=coat if placed else "none",
        pose=kind if placed else "none",
        eye_width_px=round(pose.eye_width if placed is None else placed.eye_width, 1),
    )
    if r.lid_skin > 0:
        conditions["lid_margin"] = round(look.margin, 2)
    if r.dim_eyes > 0:
        conditions["dim_eye"] = dim
    if r.dark_lids > 0:
        conditions["dark_lids"] = dark
    if placed is None:
        return None, conditions
    return Animal(
        FURS[coat], placed, float(score), blink=blink, tone=tone, eye_look=look, paws=kind == "grooming"
    ), conditions


def _place(rng: np.random.Generator, pose: MousePose, layout: RackLayout, box: int) -> MousePose | None:
    """Fit the pose into the box, shrinking a too-large animal until it fits; None if it never does."""
    _, _, w, h = layout.rois[box]
    return shrink_to_fit(pose, w, h, layout.interior(box), rng, tries=10, shrink=0.92)
