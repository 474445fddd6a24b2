"""`mgs-server export-dataset`: reviewed samples in a real SQLite file become a dataset `mgs-export validate` accepts."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from export.cli import main as mgs_export
from export.dataset import open_dataset
from export.synth.writer import write_dataset
from server.cli import main as mgs_server
from tests.dataset_support import RoiSample, add_rating, add_sample, rack_samples

DAY = 86400.0
T0 = 1_790_000_000.0  # 2026-09-21


@pytest.fixture(scope="module")
def rois(tmp_path_factory: pytest.TempPathFactory) -> list[RoiSample]:
    samples = rack_samples(write_dataset(tmp_path_factory.mktemp("synth") / "d", frames=1, seed=5, progress=False))
    assert len(samples) >= 3
    return samples


@pytest.fixture
def server_toml(tmp_path: Path) -> Path:
    path = tmp_path / "server.toml"
    path.write_text('[database]\npath = "facility.sqlite"\n[dashboard]\ntimezone = "UTC"\n')
    return path


def face_eyes(s: RoiSample, dx: float = 0.0) -> list[tuple[float, float]]:
    """The true eyes in face-crop pixels, shifted by `dx` as a rater's click would be."""
    return [(x - s.face_box[0] + dx, y - s.face_box[1]) for x, y, _ in s.eyes]


def export(server_toml: Path, out: Path, *extra: str) -> int:
    return mgs_server(["export-dataset", str(out), "--config", str(server_toml), *extra])


def test_export_writes_a_valid_dataset_with_consensus_eyes_and_pseudonymous_raters(
    rois: list[RoiSample], server_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "facility.sqlite"
    agreed, unscorable, once = rois[:3]
    a = add_sample(db, agreed.image, agreed.face_box, box=1, taken_at=T0)
    add_rating(db, a, "dr.anna", ot=4, mgs=1, eyes=face_eyes(agreed, -2))
    add_rating(db, a, "ben", ot=6, mgs=1, eyes=[*face_eyes(agreed, 2), (1.0, 1.0)])  # a stray mark only ben made
    add_rating(db, a, "carla", scorable=False)
    add_rating(db, a, "dave", ot=5, eyes=face_eyes(agreed))
    b = add_sample(db, unscorable.image, unscorable.face_box, taken_at=T0 + 60)
    add_rating(db, b, "dr.anna", ot=3, eyes=face_eyes(unscorable))
    add_rating(db, b, "ben", scorable=False)
    c = add_sample(db, once.image, once.face_box, taken_at=T0 + 120)
    add_rating(db, c, "ben", ot=2, eyes=face_eyes(once))
    d = add_sample(db, once.image, once.face_box, taken_at=T0 + 180)
    add_rating(db, d, "ben", ot=2, eyes=face_eyes(once))
    add_rating(db, d, "dave", ot=2, eyes=face_eyes(once))
    with sqlite3.connect(db) as conn:  # an image that is not the JPEG its type says
        conn.execute("UPDATE sample_images SET data = ? WHERE sample_id = ? AND kind = 'roi'", [b"GIF89a..", d])
    out = tmp_path / "facility-set"

    assert export(server_toml, out) == 0
    printed = capsys.readouterr().out
    assert "1 exported" in printed and "1 not scorable" in printed and "1 too few ratings" in printed
    assert "1 no image" in printed

    assert mgs_export(["validate", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"OK {out}: 1 images")
    data = open_dataset(out)
    (frame,) = data.frames
    assert frame.size == agreed.image.shape[:2]
    (box,) = frame.boxes
    assert box.box == 1 and box.roi == (0, 0, agreed.image.shape[1], agreed.image.shape[0])
    assert len(box.eyes) == len(agreed.eyes)  # a mark one of three raters made is not an eye
    for eye, (x, y, _) in zip(sorted(box.eyes, key=lambda e: e.x), sorted(agreed.eyes)):
        assert abs(eye.x - x) < 0.5 and abs(eye.y - y) < 0.5  # clicks 2 px either side average out
        assert eye.score == 5.0  # mean of the scorable raters' 4, 6 and 5
    line = json.loads((out / "labels.jsonl").read_text())
    raters = {r["rater"]: r for r in line["review"]["ratings"]}
    assert set(raters) == {"R1", "R2", "R3", "R4"}  # ben, carla, dave, dr.anna in name order
    assert (raters["R4"]["ot"], raters["R1"]["ot"], raters["R2"]["scorable"]) == (4, 6, False)
    assert "anna" not in (out / "labels.jsonl").read_text()
    info = json.loads((out / "dataset.json").read_text())
    generator = info["generator"]
    assert generator["labels_sha256"] == hashlib.sha256((out / "labels.jsonl").read_bytes()).hexdigest()
    assert generator["counts"]["exported"] == 1 and generator["filters"]["min_raters"] == 2
    assert (out / "README.md").is_file()


def test_filters_and_min_raters_choose_the_samples(rois: list[RoiSample], server_toml: Path, tmp_path: Path) -> None:
    db = tmp_path / "facility.sqlite"
    for day, (device, s) in enumerate(zip(("rack1", "rack2", "rack1"), rois)):
        sid = add_sample(db, s.image, s.face_box, device=device, taken_at=T0 + day * DAY, mime="image/png")
        add_rating(db, sid, "anna", ot=day + 1, eyes=face_eyes(s))

    assert export(server_toml, tmp_path / "all", "--min-raters", "1") == 0
    assert len(open_dataset(tmp_path / "all").frames) == 3
    assert (
        export(server_toml, tmp_path / "some", "--min-raters", "1", "--device", "rack1", "--since", "2026-09-22") == 0
    )
    (frame,) = open_dataset(tmp_path / "some").frames
    assert frame.image.endswith(".png") and frame.boxes[0].eyes[0].score == 3.0
    assert mgs_export(["validate", str(tmp_path / "some")]) == 0


def test_min_raters_defaults_to_the_review_target_of_the_config(
    rois: list[RoiSample], server_toml: Path, tmp_path: Path
) -> None:
    """A sample is reviewed once it has `[review] raters_per_sample` ratings, so that is what the export waits for."""
    db = tmp_path / "facility.sqlite"
    sid = add_sample(db, rois[0].image, rois[0].face_box, taken_at=T0)
    add_rating(db, sid, "anna", ot=3, eyes=face_eyes(rois[0]))
    server_toml.write_text(server_toml.read_text() + "[review]\nraters_per_sample = 1\n")
    assert export(server_toml, tmp_path / "one") == 0
    assert json.loads((tmp_path / "one" / "dataset.json").read_text())["generator"]["filters"]["min_raters"] == 1
    server_toml.write_text(server_toml.read_text().replace("raters_per_sample = 1", "raters_per_sample = 3"))
    add_rating(db, sid, "ben", ot=4, eyes=face_eyes(rois[0]))
    assert export(server_toml, tmp_path / "three") == 2  # two ratings of the three a sample needs
    assert export(server_toml, tmp_path / "two", "--min-raters", "2") == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "no review samples match"),
        (("--min-raters", "1", "--since", "yesterday"), "--since 'yesterday' is not a date"),
        (("--min-raters", "0"), "at least 1 scorable rating"),
        (("--since", "2026-10-02", "--until", "2026-10-01"), "--until must be after its --since"),
    ],
)
def test_refusals_say_what_to_do(
    args: tuple[str, ...], message: str, server_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export(server_toml, tmp_path / "out", *args) == 2
    assert message in capsys.readouterr().err


def test_an_unrated_set_and_a_used_folder_are_refused(
    rois: list[RoiSample], server_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "facility.sqlite"
    sid = add_sample(db, rois[0].image, rois[0].face_box, taken_at=T0)
    add_rating(db, sid, "anna", ot=3, eyes=face_eyes(rois[0]))
    assert export(server_toml, tmp_path / "out") == 2
    assert "lower --min-raters" in capsys.readouterr().err
    assert not any((tmp_path / "out").iterdir())
    used = tmp_path / "used"
    used.mkdir()
    (used / "labels.jsonl").write_text("")
    assert export(server_toml, used, "--min-raters", "1") == 2
    assert "is not empty" in capsys.readouterr().err
