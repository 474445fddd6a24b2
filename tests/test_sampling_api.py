"""`POST /api/v1/device/samples` on the real app over a temporary SQLite file: what is stored, and
every refusal with its status and a message that says what is wrong."""

from __future__ import annotations

import base64
import copy
import json
import sqlite3
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from flask import Flask

from server.app import create_app
from server.config import DatabaseConfig, HttpConfig, ServerConfig
from server.sample_store import SamplesConfig
from tests.web_support import add_device_token, add_token, add_user, make_app, repo_call

URL = "/api/v1/device/samples"
SHA = "cd" * 32


def encoded(image: np.ndarray, ext: str = ".jpg") -> str:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return base64.b64encode(data.tobytes()).decode()


def body(
    key: str = "s1-b0", box: int = 0, taken_at: str = "2026-03-01T10:00:00.500Z", **changes: Any
) -> dict[str, Any]:
    roi = np.full((120, 160, 3), 90, np.uint8)
    face = roi[10:74, 20:84]
    sample = {
        "sample_key": key,
        "box": box,
        "taken_at": taken_at,
        "reason": "low_confidence",
        "model_version": "",
        "model_sha256": SHA,
        "model_score": 4.5,
        "meta": {
            "face_box": [20, 10, 64, 64],
            "eyes": [{"x": 30.0, "y": 20.5, "score": 4.5, "confidence": 0.42, "abstained": True, "later_key": 1}],
            "window_score": 4.5,
            "window_seq": 12,
            "roi_box": [0, 0, 160, 120],
            "threshold": 6.0,
        },
        "images": {
            "roi": {"mime": "image/jpeg", "data": encoded(roi)},
            "face": {"mime": "image/png", "data": encoded(face, ".png")},
        },
    }
    sample.update(changes)
    return sample


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app(tmp_path)


def as_device(app: Flask, device: str = "rack-a") -> dict[str, str]:
    return {"Authorization": f"Bearer {add_device_token(app, device)}"}


def rows(app: Flask, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(app.config["DATABASE"]) as db:
        return db.execute(sql).fetchall()


def test_a_sample_is_stored_once_with_its_images_and_the_animal_of_its_box(app: Flask) -> None:
    animal = repo_call(app, "create_animal", "m-17")
    repo_call(app, "create_assignment", animal, "rack-a", 2, "2026-03-01T09:00:00Z", "2026-03-01T11:00:00Z")
    client, headers = app.test_client(), as_device(app)
    first = client.post(URL, json=body(box=2), headers=headers)
    assert first.status_code == 201 and first.get_json() == {"stored": True, "id": 1}
    again = client.post(URL, json=body(box=2), headers=headers)  # the answer was lost, the device sends again
    assert again.status_code == 200 and again.get_json() == {"stored": False, "id": 1}
    outside = client.post(URL, json=body("s2", box=2, taken_at="2026-03-01T12:00:00Z"), headers=headers)
    assert outside.get_json() == {"stored": True, "id": 2}
    samples = rows(app, "SELECT device, sample_key, box, animal_id, reason, model_score, meta_json FROM samples")
    assert [s[:6] for s in samples] == [
        ("rack-a", "s1-b0", 2, animal, "low_confidence", 4.5),
        ("rack-a", "s2", 2, None, "low_confidence", 4.5),
    ]
    assert json.loads(samples[0][6])["eyes"][0]["later_key"] == 1  # unknown meta keys are kept for later readers
    images = rows(app, "SELECT kind, mime, width, height, length(data) > 100 FROM sample_images WHERE sample_id = 1")
    assert sorted(images) == [("face", "image/png", 64, 64, 1), ("roi", "image/jpeg", 160, 120, 1)]


def test_the_same_key_from_another_device_is_another_sample(app: Flask) -> None:
    client = app.test_client()
    assert client.post(URL, json=body(), headers=as_device(app, "rack-a")).get_json()["id"] == 1
    assert client.post(URL, json=body(), headers=as_device(app, "rack-b")).get_json() == {"stored": True, "id": 2}


def test_a_device_uploads_only_as_itself(app: Flask) -> None:
    client, headers = app.test_client(), as_device(app, "rack-a")
    other = client.post(URL, json={**body(), "device": "rack-b"}, headers=headers)
    assert other.status_code == 403 and "rack-b" in other.get_json()["error"]
    assert client.post(URL, json={**body(), "device": "rack-a"}, headers=headers).status_code == 201
    person = add_token(app, add_user(app, "ada", "admin"))
    as_person = client.post(URL, json=body("s9"), headers={"Authorization": f"Bearer {person}"})
    assert as_person.status_code == 403 and "edge boxes" in as_person.get_json()["error"]
    forged = client.post(URL, json=body("s9"), headers={"Authorization": "Bearer mgsdev_forged"})
    assert forged.status_code == 401 and "device token" in forged.get_json()["error"]
    assert client.post(URL, json=body("s9")).status_code == 401
    assert rows(app, "SELECT device, sample_key FROM samples") == [("rack-a", "s1-b0")]


def _without(key: str) -> dict[str, Any]:
    b = body()
    del b[key]
    return b


def _meta(**changes: Any) -> dict[str, Any]:
    b = body()
    b["meta"].update(changes)
    return b


def _image(kind: str, mime: str, data: bytes) -> dict[str, Any]:
    b = body()
    b["images"][kind] = {"mime": mime, "data": base64.b64encode(data).decode()}
    return b


def _cut(kind: str, keep: int) -> dict[str, Any]:
    b = body()
    raw = base64.b64decode(b["images"][kind]["data"])
    b["images"][kind]["data"] = base64.b64encode(raw[:keep]).decode()
    return b


GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"


@pytest.mark.parametrize(
    ("sample", "status", "says"),
    [
        (_without("sample_key"), 400, "missing field(s) ['sample_key']"),
        ({**body(), "extra": 1}, 400, "unknown field(s) ['extra']"),
        (body(key="../etc"), 400, "sample_key"),
        (body(box=16), 400, "'box' = 16"),
        (body(box=True), 400, "'box' = True"),
        (body(taken_at="2026-03-01 10:00"), 400, "must be UTC"),
        (body(taken_at="2150-01-01T00:00:00Z"), 400, "1970-2099"),
        (body(reason="because"), 400, "'reason'"),
        (body(model_sha256="ABC"), 400, "model_sha256"),
        (body(model_version="bad version!"), 400, "model_version"),
        (body(model_score=9.5), 400, "'model_score' = 9.5"),
        (body(meta=[]), 400, "'meta' must be a JSON object"),
        (_meta(face_box=[0, 0, 64]), 400, "meta.face_box"),
        (_meta(eyes=[{"x": 1, "y": 2, "score": None, "confidence": 1.5, "abstained": False}]), 400, "confidence"),
        (_meta(eyes=[{"x": float("nan"), "y": 2, "confidence": 1, "abstained": False}]), 400, "x"),
        (_meta(blob="x" * 20000), 400, "larger than"),
        (body(images={"roi": body()["images"]["roi"]}), 400, "exactly ['roi', 'face']"),
        (_image("roi", "image/jpeg", b"\xff\xd8\xff" + b"\x00" * 20), 422, "cut short"),
        (_cut("face", 40), 422, "damaged or cut short"),
        (_image("roi", "image/gif", GIF), 415, "image/gif"),
        (_image("face", "image/png", GIF), 415, "not a PNG"),
        (_image("roi", "image/jpeg", GIF), 415, "not a JPEG"),
        (_meta(face_box=[20, 10, 64, 65]), 422, "face_box says 64x65"),
        (_meta(face_box=[100, 10, 64, 64]), 422, "leaves the 160x120 ROI"),
    ],
)
def test_a_bad_sample_is_refused_with_what_is_wrong(app: Flask, sample: Any, status: int, says: str) -> None:
    answer = app.test_client().post(URL, json=copy.deepcopy(sample), headers=as_device(app))
    assert answer.status_code == status, answer.get_json()
    assert says in answer.get_json()["error"]
    assert rows(app, "SELECT COUNT(*) FROM samples") == [(0,)] and rows(app, "SELECT COUNT(*) FROM sample_images") == [
        (0,)
    ]


def test_not_json_and_not_base64_are_refused(app: Flask) -> None:
    client, headers = app.test_client(), as_device(app)
    form = client.post(URL, data={"sample_key": "x"}, headers=headers)
    assert form.status_code == 415 and "application/json" in form.get_json()["error"]
    broken = client.post(URL, data="{not json", headers={**headers, "Content-Type": "application/json"})
    assert broken.status_code == 400 and "JSON object" in broken.get_json()["error"]
    deep = client.post(URL, data="[" * 200_000, headers={**headers, "Content-Type": "application/json"})
    assert deep.status_code == 400
    b = body()
    b["images"]["roi"]["data"] = "%%%"
    bad64 = client.post(URL, json=b, headers=headers)
    assert bad64.status_code == 400 and "base64" in bad64.get_json()["error"]


def test_an_oversized_upload_is_refused_before_it_is_stored(tmp_path: Path) -> None:
    config = ServerConfig(database=DatabaseConfig(path=tmp_path / "s.sqlite"), samples=SamplesConfig(max_upload_kb=16))
    app = make_app_with(config)
    big = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)  # noise: a large JPEG
    b = body()
    b["images"]["roi"] = {"mime": "image/png", "data": encoded(big, ".png")}
    answer = app.test_client().post(URL, json=b, headers=as_device(app))
    assert answer.status_code == 413 and "[samples] max_upload_kb" in answer.get_json()["error"]
    small = ServerConfig(database=DatabaseConfig(path=tmp_path / "t.sqlite"), http=HttpConfig(max_request_kb=16))
    app2 = make_app_with(small)  # the app-wide limit applies too
    assert app2.test_client().post(URL, json=b, headers=as_device(app2)).status_code == 413
    assert rows(app, "SELECT COUNT(*) FROM samples") == [(0,)]


def test_a_side_over_the_limit_is_refused(tmp_path: Path) -> None:
    config = ServerConfig(
        database=DatabaseConfig(path=tmp_path / "s.sqlite"), samples=SamplesConfig(max_image_side=100)
    )
    app = make_app_with(config)
    answer = app.test_client().post(URL, json=body(), headers=as_device(app))
    assert answer.status_code == 422 and "160x120" in answer.get_json()["error"]


def make_app_with(config: ServerConfig) -> Flask:
    return create_app(config, {"TESTING": True, "SECRET_KEY": "test-secret-" + "x" * 32})
