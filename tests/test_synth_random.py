"""Domain randomisation: every family varies, restrictions hold, frames stay truthful and carry their conditions."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from export.cli import main
from export.dataset import open_dataset
from export.synth.rack import SESSION_FRAMES, render_frame
from export.synth.randomise import FAMILIES, STYLE_HOLDOUT, Randomisation, frame_style, styled_animal, styled_layout
from export.synth.writer import write_dataset
from mgs_core.errors import MgsError

HARDEST = Randomisation("hardest")
SESSIONS = range(90)


def _draws(r: Randomisation) -> tuple[dict[str, set], dict[str, set]]:
    """Conditions of the first frame of many sessions, drawn without rendering (cheap)."""
    frame, box = defaultdict(set), defaultdict(set)
    for session in SESSIONS:
        layout = styled_layout(session, r)
        rng = np.random.default_rng(session)
        style = frame_style(rng, r, layout)
        for k, v in style.conditions.items():
            frame[k].add(v)
        for i in range(len(layout.rois)):
            _, conditions = styled_animal(rng, r, layout, i, 4.0, None, style.empty)
            for k, v in conditions.items():
                box[k].add(v)
    return frame, box


@pytest.fixture(scope="module")
def hardest_draws() -> tuple[dict[str, set], dict[str, set]]:
    return _draws(HARDEST)


def test_every_family_varies(hardest_draws) -> None:
    frame, box = hardest_draws
    for family in ("scale", "light", "backdrop", "bedding", "camera"):
        assert frame[family] == set(FAMILIES[family]), family
    assert frame["boxes"] == {1, 2, 3, 4}
    assert box["fur"] - {"none"} == set(FAMILIES["fur"])
    assert box["pose"] - {"none"} == set(FAMILIES["pose"])
    assert min(box["box_width_px"]) < 260 and max(box["box_width_px"]) > 600  # camera distance
    assert 0.0 in frame["tilt_deg"] and max(abs(t) for t in frame["tilt_deg"]) > 3.0
    assert max(frame["keystone_px"]) > 30
    assert {"none", "soft", "hard"} == frame["shadow"]
    assert {"normal", "over", "under"} == frame["exposure"]
    assert (
        len(frame["colour_temp_k"]) > 20 and min(frame["colour_temp_k"]) < 3500 and max(frame["colour_temp_k"]) > 7000
    )
    assert max(frame["flicker"]) > 0 and max(frame["vignette"]) > 0.3
    assert max(frame["jpeg_quality"]) > 0 and max(frame["h264_quality"]) > 0 and len(frame["noise_sigma"]) >= 4
    assert frame["white_on_light"] == {True, False} and frame["empty_frame"] == {True, False}
    assert box["box_cut"] == {True, False} and box["empty"] == {True, False}
    assert box["occluder"] == {"none", "bottle", "hopper"} and box["cage_card"] == {True, False}
    assert max(box["decoys"]) >= 2 and box["scratches"] == {True, False} and box["condensation"] == {True, False}


def test_restrictions_and_style_holdout_hold() -> None:
    frame, box = _draws(Randomisation.parse("hardest", ["fur=black,agouti", "light=normal"]))
    assert frame["light"] == {"normal"} and box["fur"] - {"none"} == {"black", "agouti"}
    assert frame["white_on_light"] == {False}  # no light coat allowed, so no white-on-light session
    for side, families in STYLE_HOLDOUT.items():
        frame, box = _draws(Randomisation.parse("default", style_holdout=side))
        assert box["fur"] - {"none"} <= set(families["fur"])
        for family in ("light", "backdrop", "bedding"):
            assert frame[family] <= set(families[family]), (side, family)
    train, test = STYLE_HOLDOUT["train"], STYLE_HOLDOUT["test"]
    assert all(not set(train[f]) & set(test[f]) for f in train)


def test_bad_randomisation_options_say_what_to_do() -> None:
    with pytest.raises(MgsError, match="FAMILY one of"):
        Randomisation.parse("default", ["colour=red"])
    with pytest.raises(MgsError, match="fur levels are black, agouti"):
        Randomisation.parse("default", ["fur=grey"])
    with pytest.raises(MgsError, match="need a randomised preset"):
        Randomisation.parse("none", ["fur=black"])
    with pytest.raises(MgsError, match="choose one of none, default, hardest"):
        Randomisation.parse("wild")


@pytest.mark.parametrize(
    "seed", [3, 5 * SESSION_FRAMES + 1, 11 * SESSION_FRAMES + 7, 17 * SESSION_FRAMES, 23 * SESSION_FRAMES + 2]
)
def test_randomised_frames_are_deterministic_and_truthful(seed: int) -> None:
    a, b = render_frame(seed, randomise=HARDEST), render_frame(seed, randomise=HARDEST)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) and a.boxes == b.boxes
    assert a.image.shape == (1080, 1920, 3) and a.mask.shape == (1080, 1920)
    assert set(np.unique(a.mask)) <= {0, 1, 2, 3}
    assert a.conditions["randomise"] == "hardest" and len(a.boxes) == len(a.animal_scores)
    assert [box.box for box in a.boxes] == list(range(len(a.boxes)))
    for box in a.boxes:
        x, y, w, h = box.roi
        assert 0 <= x and 0 <= y and x + w <= 1920 and y + h <= 1080
        assert {"fur", "pose", "box_width_px", "occluder"} <= set(box.conditions)
        assert box.face_visible == any(e.visible for e in box.eyes)
        for eye in box.eyes:
            assert x <= eye.x < x + w and y <= eye.y < y + h
            if eye.visible:
                cx, cy = round(eye.x), round(eye.y)
                assert (a.mask[cy - 1 : cy + 2, cx - 1 : cx + 2] == 3).any(), (seed, box.box, eye)


def _mean_scene(seed: int, restrict: list[str]) -> float:
    return float(render_frame(seed, randomise=Randomisation.parse("default", restrict)).image.mean())


def test_families_change_the_pixels() -> None:
    seed = 40 * SESSION_FRAMES
    assert (
        _mean_scene(seed, ["backdrop=white", "light=normal"])
        > _mean_scene(seed, ["backdrop=dark", "light=normal"]) + 40
    )
    assert _mean_scene(seed, ["light=bright", "backdrop=grey"]) > _mean_scene(seed, ["light=dim", "backdrop=grey"]) + 30
    coats = {}
    for fur in ("black", "albino"):
        f = render_frame(seed, randomise=Randomisation.parse("default", [f"fur={fur}", "pose=frontal", "light=normal"]))
        coats[fur] = float(f.image[f.mask == 1].mean())
    assert coats["albino"] > coats["black"] + 60


def test_the_original_generator_is_unchanged_without_randomisation() -> None:
    plain = render_frame(9)
    assert plain.conditions == {} and all(box.conditions == {} for box in plain.boxes)
    assert np.array_equal(plain.image, render_frame(9, randomise=Randomisation("none")).image)


def _lid_margins_drawn(margins: set) -> bool:
    return 0.0 in margins and 0.03 <= min(margins - {0.0}) and max(margins) <= 0.15


@pytest.mark.parametrize(
    ("option", "condition", "drawn"),
    [
        ("lid_skin", "lid_margin", _lid_margins_drawn),
        ("dim_eyes", "dim_eye", lambda dim: dim == {True, False}),
        ("dark_lids", "dark_lids", lambda dark: dark == {True, False}),
    ],
)
def test_eye_looks_are_opt_in_and_recorded(option: str, condition: str, drawn: Callable[[set], bool]) -> None:
    """Off by default, each draws nothing (every seed renders as before); on, part of the animals get it."""
    seed = 29 * SESSION_FRAMES + 3
    flag = "--" + option.replace("_", "-")
    plain = render_frame(seed, randomise=HARDEST)
    assert all(condition not in box.conditions for box in plain.boxes)
    off = Randomisation.parse("hardest", **{option: 0.0})
    assert np.array_equal(plain.image, render_frame(seed, randomise=off).image)
    _, box = _draws(Randomisation.parse("hardest", **{option: 0.5}))
    assert drawn(box[condition])
    assert Randomisation.parse("default", **{option: 0.5}).describe() == f"--randomise default {flag} 0.5"
    with pytest.raises(MgsError, match=f"{flag} 1.5: give the share of animals, from 0 to 1"):
        Randomisation.parse("default", **{option: 1.5})
    with pytest.raises(MgsError, match="need a randomised preset"):
        Randomisation.parse("none", **{option: 0.5})


def test_all_eye_looks_are_described() -> None:
    looks = Randomisation.parse("default", lid_skin=0.5, dim_eyes=0.5, dark_lids=0.25).describe()
    assert looks == "--randomise default --lid-skin 0.5 --dim-eyes 0.5 --dark-lids 0.25"


def test_written_dataset_carries_conditions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = write_dataset(
        tmp_path / "ds", frames=3, seed=4, progress=False, randomise=Randomisation.parse("default", ["fur=piebald"])
    )
    data = open_dataset(out)
    assert all(f.conditions["randomise"] == "default" for f in data.frames)
    furs = {b.conditions["fur"] for f in data.frames for b in f.boxes}
    assert furs <= {"piebald", "none"} and "piebald" in furs
    assert "--restrict fur=piebald" in json.loads((out / "dataset.json").read_text())["generator"]["randomise"]
    cli = tmp_path / "cli"
    assert main(["synth", "--frames", "2", "--seed", "2", "--out", str(cli), "--style-holdout", "test", "--quiet"]) == 0
    first = json.loads((cli / "labels.jsonl").read_text().splitlines()[0])
    assert (
        first["conditions"]["randomise"] == "default" and first["conditions"]["light"] in STYLE_HOLDOUT["test"]["light"]
    )
    assert main(["synth", "--frames", "1", "--out", str(tmp_path / "bad"), "--restrict", "fur=grey", "--quiet"]) == 2
    assert "fur levels are" in capsys.readouterr().err
