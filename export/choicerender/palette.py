"""Coat colours (BGR) of the strains the rack holds, with the eye and skin colours that go with them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FURS = ("white", "black", "agouti", "grey", "piebald")


@dataclass(frozen=True)
class Coat:
    """Colours of one animal; `patch` is the second colour of a piebald coat (None for solid coats)."""

    fur: str
    base: tuple[int, int, int]
    patch: tuple[int, int, int] | None
    iris: tuple[int, int, int]
    pupil: tuple[int, int, int]
    skin: tuple[int, int, int]
    lid: tuple[int, int, int]


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], spread: float) -> tuple[int, int, int]:
    c = np.clip(np.asarray(colour, float) * rng.uniform(1 - spread, 1 + spread) + rng.normal(0, 4, 3), 0, 255)
    return (int(c[0]), int(c[1]), int(c[2]))


def pick_coat(rng: np.random.Generator, fur: str) -> Coat:
    """Colours for `fur`; albino (white) animals get red eyes and pink skin, the others dark eyes."""
    dark_eye = dict(iris=_jitter(rng, (28, 26, 30), 0.2), pupil=(8, 8, 10))
    skin = _jitter(rng, (160, 165, 225), 0.08)
    if fur == "white":
        return Coat(
            fur,
            _jitter(rng, (228, 234, 238), 0.04),
            None,
            iris=_jitter(rng, (70, 45, 200), 0.1),
            pupil=(45, 25, 130),
            skin=skin,
            lid=(120, 125, 205),
        )
    if fur == "black":
        return Coat(
            fur,
            _jitter(rng, (34, 31, 30), 0.2),
            None,
            skin=_jitter(rng, (95, 100, 130), 0.1),
            lid=(20, 18, 18),
            **dark_eye,
        )
    if fur == "agouti":
        return Coat(fur, _jitter(rng, (62, 98, 134), 0.12), None, skin=skin, lid=(35, 45, 60), **dark_eye)
    if fur == "grey":
        return Coat(fur, _jitter(rng, (125, 124, 120), 0.15), None, skin=skin, lid=(50, 50, 52), **dark_eye)
    second = (34, 31, 30) if rng.random() < 0.6 else (62, 98, 134)
    return Coat(
        fur, _jitter(rng, (225, 230, 233), 0.04), _jitter(rng, second, 0.1), skin=skin, lid=(40, 40, 45), **dark_eye
    )
