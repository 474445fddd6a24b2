"""The dataset button: officers download the export as a streamed .zip that `mgs-export validate` accepts."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest

from export.cli import main as mgs_export
from export.synth.writer import write_dataset
from server.app import create_app
from server.config import DatabaseConfig, ReviewConfig, ServerConfig
from tests.dataset_support import RoiSample, add_rating, add_sample, rack_samples
from tests.test_browser import browser, expect, page, server  # noqa: F401  (fixtures)
from tests.web_support import logged_in, make_app


@pytest.fixture(scope="module")
def rois(tmp_path_factory: pytest.TempPathFactory) -> list[RoiSample]:
    return rack_samples(write_dataset(tmp_path_factory.mktemp("synth") / "d", frames=1, seed=5, progress=False))


def rated(db: Path, s: RoiSample, device: str, taken_at: float) -> None:
    sid = add_sample(db, s.image, s.face_box, device=device, taken_at=taken_at)
    marks = [(x - s.face_box[0], y - s.face_box[1]) for x, y, _ in s.eyes]
    add_rating(db, sid, "anna", ot=3, eyes=marks)
    add_rating(db, sid, "ben", ot=5, eyes=marks)


def test_an_officer_downloads_a_zip_that_validates(
    rois: list[RoiSample], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = make_app(tmp_path)
    db = Path(app.config["DATABASE"])
    rated(db, rois[0], "rack1", 1_790_000_000.0)
    rated(db, rois[1], "rack2", 1_790_000_000.0 + 86400)
    client = logged_in(app, "officer")

    html = client.get("/review/dataset").get_data(as_text=True)
    assert "2 exported" in html and 'value="rack2"' in html

    response = client.get("/review/dataset/download", query_string={"device": "rack2", "until": "2026-09-22"})
    assert response.status_code == 200 and response.mimetype == "application/zip"
    assert response.is_streamed
    archive = zipfile.ZipFile(io.BytesIO(response.get_data()))
    archive.extractall(tmp_path / "unzipped")
    (folder,) = (tmp_path / "unzipped").iterdir()
    assert mgs_export(["validate", str(folder)]) == 0
    assert "1 images" in capsys.readouterr().out
    assert archive.getinfo(f"{folder.name}/labels.jsonl").compress_type == zipfile.ZIP_DEFLATED


def test_refusals_come_before_the_download_and_viewers_may_not(rois: list[RoiSample], tmp_path: Path) -> None:
    app = make_app(tmp_path)
    officer = logged_in(app, "officer")
    assert "no review samples match" in officer.get("/review/dataset").get_data(as_text=True)
    empty = officer.get("/review/dataset/download")
    assert empty.status_code == 400 and "no review samples match" in empty.get_data(as_text=True)
    bad = officer.get("/review/dataset/download", query_string={"since": "last week"})
    assert bad.status_code == 400 and "is not a date" in bad.get_data(as_text=True)
    viewer = logged_in(app, "viewer")
    assert viewer.get("/review/dataset").status_code == 403
    assert viewer.get("/review/dataset/download").status_code == 403
    assert "/review/dataset" not in viewer.get("/", follow_redirects=True).get_data(as_text=True)


def test_the_default_minimum_of_raters_is_the_review_target(rois: list[RoiSample], tmp_path: Path) -> None:
    config = ServerConfig(database=DatabaseConfig(path=tmp_path / "server.sqlite"), review=ReviewConfig(3))
    app = create_app(config, {"TESTING": True, "SECRET_KEY": "test-secret-" + "x" * 32})
    rated(Path(app.config["DATABASE"]), rois[0], "rack1", 1_790_000_000.0)  # two ratings of the three it needs
    officer = logged_in(app, "officer")
    html = officer.get("/review/dataset").get_data(as_text=True)
    assert 'name="min_raters" min="1" value="3"' in html and "1 too few ratings" in html
    assert officer.get("/review/dataset/download").status_code == 400
    assert officer.get("/review/dataset/download", query_string={"min_raters": "2"}).status_code == 200


@pytest.mark.browser
def test_the_download_button_in_a_browser_gives_a_dataset(
    rois: list[RoiSample],
    page: Any,  # noqa: F811
    server: Any,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rated(server.db_path, rois[0], "rack1", 1_790_000_000.0)
    rated(server.db_path, rois[1], "rack2", 1_790_000_000.0)
    page.click("nav a:has-text('Dataset')")
    expect(page.locator("#dataset-preview")).to_contain_text("2 exported")
    page.select_option("select[name=device]", "rack1")
    with page.expect_download() as download:
        page.click("#dataset-form button[type=submit]")
    path = tmp_path / "dataset.zip"
    download.value.save_as(path)
    zipfile.ZipFile(path).extractall(tmp_path / "unzipped")
    (folder,) = (tmp_path / "unzipped").iterdir()
    assert mgs_export(["validate", str(folder)]) == 0
    assert "1 images" in capsys.readouterr().out
