"""The whole review loop with real processes, from the facility's own animals to a compared model.

A device provisioned by `mgs-server provision-device` scores a generated rack video with
`mgs-device run` and uploads review samples to a real `mgs-server run`; two officers review every
sample in a real headless Chromium by keyboard alone; the agreement page shows their ICC;
`mgs-server export-dataset` writes the set that `mgs-export validate` accepts, `train-eye --init`
fine-tunes the shipped regressor on it and `evaluate --baseline` compares the old and new model.
The parts were tested one by one against stand-ins (tests/test_sampling_run.py,
tests/test_review_browser.py, tests/test_finetune.py); this test checks the seams between them.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from mgs_core.messages import SAMPLE_REASONS
from server import auth
from server.db import connect
from tests.conftest import Broker, free_port, wait_for
from tests.test_browser import browser, expect  # noqa: F401  (fixtures)
from tests.test_device_run import finish, rack_video, start  # noqa: F401  (fixtures)
from tests.test_review_browser import keyboard_login
from tests.test_server_run import http_status
from tests.test_server_run import write_config as write_server_config
from tests.web_support import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models"
DEVICE = "rack-e2e"
RATERS = ("olga", "rita")
MIN_SAMPLES = 6
MGS_KEYS = "zxc"


def cli(module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """A console command as its own process (`server.cli` = mgs-server, `export.cli` = mgs-export)."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{module} {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def provision(tmp_path: Path, server_config: Path, http_port: int, broker: Broker, video: Path, rois: Any) -> Path:
    """device.toml as provisioning writes it, moved from /etc/mgs-rack to the test's folder and given its boxes."""
    out = tmp_path / "provisioned"
    cli(
        "server.cli",
        "provision-device",
        DEVICE,
        "--server-config",
        str(server_config),
        "--server-url",
        f"http://127.0.0.1:{http_port}",
        "--broker-host",
        broker.host,
        "--broker-port",
        str(broker.port),
        "--camera",
        str(video),
        "--password-file",
        str(tmp_path / "mgs.passwd"),
        "--acl-file",
        str(tmp_path / "mgs.acl"),
        "--out",
        str(out),
    )
    path = out / "device.toml"
    doc = tomlkit.parse(path.read_text())
    written = tomllib.loads(path.read_text())
    assert written["server"]["url"] == f"http://127.0.0.1:{http_port}" and written["mqtt"]["username"] == DEVICE
    doc["target_fps"] = 5
    doc["mqtt"]["password_file"] = str(out / Path(written["mqtt"]["password_file"]).name)  # type: ignore[index]
    doc["mqtt"]["reconnect_max_s"] = 1  # type: ignore[index]
    doc["server"]["token_file"] = str(out / Path(written["server"]["token_file"]).name)  # type: ignore[index]
    doc["server"]["timeout_s"] = 5  # type: ignore[index]
    doc["camera"]["loop"] = True  # type: ignore[index]
    doc["rois"]["boxes"] = rois  # type: ignore[index]
    doc["outbox"]["path"] = str(tmp_path / "outbox.sqlite")  # type: ignore[index]
    doc["http"] = {"enabled": False}
    doc["status"] = {"interval_s": 1}
    doc["sampling"] = {"share": 1.0, "min_interval_s": 0, "retry_max_s": 1, "path": str(tmp_path / "samples.sqlite")}
    path.write_text(tomlkit.dumps(doc))
    return path


def stored_samples(db: Path) -> list[int]:
    try:
        with sqlite3.connect(db) as conn:
            return [r[0] for r in conn.execute("SELECT id FROM samples WHERE device = ? ORDER BY id", (DEVICE,))]
    except sqlite3.OperationalError:
        return []


def reasons_of(db: Path) -> dict[int, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT id, reason FROM samples"))


def scores(rater: str, i: int) -> tuple[str, str]:
    """(OT key, MGS key) of sample number i: the raters differ by at most one point, so the ICC is high."""
    ot = (1 + 3 * i) % 9
    if rater == "rita" and i % 2:
        ot += 1
    return str(ot), MGS_KEYS[ot // 4]


def review_all(page: Any, url: str, rater: str, count: int) -> list[int]:
    """Score every sample offered, by keyboard only; returns the sample ids in the order they were offered."""
    offered: list[int] = []
    page.goto(f"{url}/review")
    for i in range(count):
        action = page.locator("#review-form").get_attribute("action") or ""
        sample_id = int(re.search(r"/samples/(\d+)/", action).group(1))  # type: ignore[union-attr]
        offered.append(sample_id)
        ot, mgs = scores(rater, i)
        page.keyboard.press(ot)
        page.keyboard.press(mgs)
        expect(page.locator(f"input[name=ot_score][value='{ot}']")).to_be_checked()
        page.keyboard.press("Enter")
        expect(page.locator(".flash.info")).to_have_text(f"Sample {sample_id} rated.")
        page.wait_for_load_state()  # the next page's keyboard script is deferred: keys before it would be lost
    expect(page.locator("#review-empty")).to_contain_text("Nothing waiting for you")
    return offered


def test_device_samples_to_reviewed_dataset_to_fine_tuned_and_compared_model(
    tmp_path: Path,
    broker: Broker,
    browser: Any,  # noqa: F811
    rack_video,  # noqa: F811
) -> None:
    video, rois = rack_video
    http_port = free_port()
    url = f"http://127.0.0.1:{http_port}"
    server_config = write_server_config(tmp_path, broker.port, http_port)
    server_config.write_text(server_config.read_text() + "\n[review]\nraters_per_sample = 2\n")
    db = tmp_path / "server.sqlite"
    device_config = provision(tmp_path, server_config, http_port, broker, video, rois)
    users = connect(db)
    try:
        for rater in RATERS:
            auth.create_user(users, rater, PASSWORD, "officer")
    finally:
        users.conn.close()

    server = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "run", "--config", str(server_config)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "server.log", "ab"),
    )
    try:
        wait_for(lambda: http_status(f"{url}/login") == 200 or server.poll() is not None, 30, what="the server")
        assert server.poll() is None, (tmp_path / "server.log").read_text()
        device = start(device_config)
        try:
            wait_for(
                lambda: len(stored_samples(db)) >= MIN_SAMPLES or device.poll() is not None,
                90,
                what=f"{MIN_SAMPLES} samples uploaded by the device",
            )
        finally:
            code = finish(device)
        log = (device_config.parent / "device.log").read_text()
        assert code == 0, log[-3000:]
        assert "review sampling on" in log
        samples = stored_samples(db)
        assert len(samples) >= MIN_SAMPLES

        offered = {}
        for rater in RATERS:
            page = keyboard_login(browser, url, rater)
            offered[rater] = review_all(page, url, rater, len(samples))
            page.context.close()
        reasons = reasons_of(db)
        for rater, ids in offered.items():
            assert len(ids) == len(set(ids)), f"{rater} was offered a sample twice"
            assert sorted(ids) == samples
            ranks = [SAMPLE_REASONS.index(reasons[i]) for i in ids]
            assert ranks == sorted(ranks), "alert and uncertain samples come before the random ones"

        page = keyboard_login(browser, url, "olga")
        page.goto(f"{url}/review/agreement")
        icc = page.locator("#icc-ot .value")
        expect(icc).to_have_text(re.compile(r"^-?[01]\.[0-9]{2}$"))
        assert 0.8 < float(icc.inner_text()) <= 1.0
        expect(page.locator("#icc-ot")).to_contain_text(f"n = {len(samples)}")
        expect(page.locator("#pairs-ot")).to_contain_text("olga · rita")
        page.context.close()
    finally:
        server.terminate()
        server.wait(timeout=30)

    with sqlite3.connect(db) as conn:
        ratings = conn.execute("SELECT sample_id, username, eyes_json FROM sample_ratings").fetchall()
        meta = {sid: json.loads(text) for sid, text in conn.execute("SELECT id, meta_json FROM samples")}
    assert sorted(r[:2] for r in ratings) == sorted((s, r) for s in samples for r in RATERS)
    for sid, _, marks in ratings:  # nobody moved a marker: the page started from the device's eyes
        device_eyes = [v for e in meta[sid]["eyes"] for v in (e["x"], e["y"])]
        assert [v for m in json.loads(marks) for v in (m["x"], m["y"])] == pytest.approx(device_eyes, abs=0.06)

    data = tmp_path / "facility-set"
    exported = cli("server.cli", "export-dataset", str(data), "--config", str(server_config)).stdout
    assert f"{len(samples)} samples, {len(samples)} exported" in exported
    cli("export.cli", "validate", str(data))
    labels = [json.loads(line) for line in (data / "labels.jsonl").read_text().splitlines()]
    eyes = [e for frame in labels for box in frame["boxes"] for e in box["eyes"] if "score" in e]
    assert eyes, "the exported set has no scored eyes to fine-tune on"
    for frame in labels:  # face-crop marks land where the device saw the eyes in the ROI image
        roi_eyes = sorted((e["roi_x"], e["roi_y"]) for e in meta[frame["review"]["sample_id"]]["eyes"])
        exported_eyes = sorted((e["x"], e["y"]) for e in frame["boxes"][0]["eyes"])
        assert [v for p in exported_eyes for v in p] == pytest.approx([v for p in roi_eyes for v in p], abs=0.15)

    new = tmp_path / "eye-facility.pt"
    cli(
        "export.cli",
        "train-eye",
        "--data",
        str(data),
        "--init",
        str(SHIPPED / "eye.pt"),
        "--epochs",
        "1",
        "--batch",
        "4",
        "--out",
        str(new),
        "--quiet",
    )
    assert new.is_file()
    report_dir = tmp_path / "report"
    printed = cli(
        "export.cli",
        "evaluate",
        "--data",
        str(data),
        "--models",
        str(new),
        "--baseline",
        str(SHIPPED),
        "--out",
        str(report_dir),
        "--pipeline",
        "fast",
        "--quiet",
    ).stdout
    assert "baseline" in printed and "regressor-only MAE" in printed
    comparison = json.loads((report_dir / "report.json").read_text())["comparison"]
    assert comparison["new"]["models"]["eye"]["path"] == str(new)
    assert comparison["baseline"]["models"]["eye"]["path"] == str(SHIPPED / "eye.pt")
    assert comparison["new"]["regressor-only eyes"] == comparison["baseline"]["regressor-only eyes"] == len(eyes)
