"""Large uploads in pieces (server/chunked_upload.py) against a real `mgs-server run`.

The server runs with `[http] max_request_kb = 64`, so anything larger than 64 KiB in one request
is refused by waitress, as a 4 GiB video would be by the default 1 MiB. A file sent in pieces
still arrives; the refusals (over the feature's limit, wrong offsets, another user's upload, no
login, no CSRF token, a piece over the request limit) are checked on the same process.
"""

from __future__ import annotations

import http.client
import http.cookiejar
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device.import_client import ImportClient
from server import auth
from server.db import connect
from tests.conftest import Broker
from tests.model_set_support import build_set
from tests.test_browser import Server
from tests.test_server_run import write_config
from tests.test_video_import import result_window
from tests.web_support import PASSWORD

LIMIT_KB = 64
PIECE = LIMIT_KB * 1024 - 1024  # the pieces the server asks for: a little under the request limit


def limited_config(tmp_path: Path, broker_port: int, http_port: int) -> Path:
    """The config of tests/test_server_run.py with a 64 KiB request limit, a 1 MiB video limit and a
    model-set limit that the shipped set (a few MiB) fits."""
    path = write_config(tmp_path, broker_port, http_port)
    text = path.read_text().replace("[http]\n", f"[http]\nmax_request_kb = {LIMIT_KB}\n")
    path.write_text(text + "\n[videos]\nmax_upload_mb = 1\n\n[models]\nmax_set_mb = 32\n")
    return path


class Client:
    """A logged-in browser session over plain HTTP: cookies, and the CSRF token pages carry."""

    def __init__(self, url: str, username: str | None) -> None:
        self.url = url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPCookieProcessor(self.jar))
        self.csrf = ""
        if username is not None:
            self.csrf = self._page_token("/login")
            status, _ = self.call("POST", "/login", form={"username": username, "password": PASSWORD})
            assert status == 302, status
            self.csrf = self._page_token("/")

    def _page_token(self, path: str) -> str:
        with self.opener.open(self.url + path, timeout=30) as response:
            match = re.search(r'name="csrf-token" content="([^"]+)"', response.read().decode())
        assert match
        return match.group(1)

    def call(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        data: bytes | None = None,
        form: dict[str, str] | None = None,
        csrf: bool = True,
    ) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        if csrf and self.csrf:
            headers["X-CSRF-Token"] = self.csrf
        if json_body is not None:
            data, headers["Content-Type"] = json.dumps(json_body).encode(), "application/json"
        elif form is not None:
            form = {**form, "csrf_token": self.csrf} if csrf else form
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif data is not None:
            headers["Content-Type"] = "application/octet-stream"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with self.opener.open(request, timeout=60) as response:
                return response.status, _body(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _body(exc.read()) if exc.code != 302 else exc.headers["Location"]

    def status_before_body(self, method: str, path: str, size: int) -> int:
        """The answer to a request that announces `size` bytes and sends none of them: a server that
        refuses it by its length answers at once, one that reads first times out. (Sending the body
        races the server closing the connection: the client may get a broken pipe, not the answer.)"""
        parts = urllib.parse.urlsplit(self.url)
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
        try:
            connection.putrequest(method, path)
            headers = {
                "Accept": "application/json",
                "X-CSRF-Token": self.csrf,
                "Content-Type": "application/octet-stream",
                "Content-Length": str(size),
                "Cookie": "; ".join(f"{c.name}={c.value}" for c in self.jar),
            }
            for name, value in headers.items():
                connection.putheader(name, value)
            connection.endheaders()
            return connection.getresponse().status
        finally:
            connection.close()

    def send(self, kind: str, content: bytes, filename: str = "file.bin") -> str:
        """Start an upload and send all of `content` in pieces; returns the upload id."""
        status, begun = self.call("POST", f"/api/v1/uploads/{kind}", {"filename": filename, "size": len(content)})
        assert status == 201, begun
        assert begun["chunk_bytes"] == PIECE and begun["offset"] == 0
        for offset in range(0, len(content), PIECE):
            status, answer = self.call(
                "PUT", f"/api/v1/uploads/{kind}/{begun['id']}?offset={offset}", data=content[offset : offset + PIECE]
            )
            assert status == 200, answer
        return str(begun["id"])


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


USERS = (("olga", "officer"), ("otto", "officer"), ("ada", "admin"), ("vic", "viewer"))


class LimitedServer(Server):
    """`mgs-server run` with a small request limit, officers, an admin and a viewer."""

    def __init__(self, tmp_path: Path, broker: Broker) -> None:
        super().__init__(tmp_path, broker, USERS, limited_config)

    def partials(self, kind_folder: str) -> list[str]:
        folder = self.db_path.parent / kind_folder / ".partial-uploads"
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def server(tmp_path: Path, broker: Broker) -> Iterator[LimitedServer]:
    s = LimitedServer(tmp_path, broker)
    try:
        yield s
    finally:
        s.stop()


def test_a_model_set_over_the_request_limit_arrives_in_pieces(server: LimitedServer, tmp_path: Path) -> None:
    content = build_set(tmp_path).read_bytes()
    assert len(content) > 2 * PIECE
    ada = Client(server.url, "ada")
    assert ada.status_before_body("POST", "/models", len(content)) == 413  # in one request: refused unread
    upload_id = ada.send("model_set", content, "v2.tar.gz")
    status, answer = ada.call("POST", "/models", form={"upload_id": upload_id})
    assert status == 201, answer
    assert "Version v2 registered" in answer["message"]
    assert server.partials("model-sets") == []
    status, answer = ada.call("POST", "/models", form={"upload_id": upload_id})  # taken once only
    assert status == 400 and "no unfinished upload" in answer["message"]


def test_a_refused_video_leaves_nothing_behind(server: LimitedServer) -> None:
    olga = Client(server.url, "olga")
    upload_id = olga.send("video", b"not a video, only notes " * 8000, "notes.mp4")
    assert len(server.partials("videos")) == 1
    status, location = olga.call("POST", "/videos", form={"upload_id": upload_id})
    assert status == 302 and location.endswith("/videos")
    assert server.partials("videos") == []
    assert [p.name for p in (server.db_path.parent / "videos").iterdir()] == [".partial-uploads"]


def test_pieces_are_refused_out_of_order_and_resumed_from_the_servers_offset(server: LimitedServer) -> None:
    olga = Client(server.url, "olga")
    content = bytes(range(256)) * 1000
    status, begun = olga.call("POST", "/api/v1/uploads/video", {"filename": "v.mp4", "size": len(content)})
    url = f"/api/v1/uploads/video/{begun['id']}"
    assert olga.call("PUT", f"{url}?offset=0", data=content[:PIECE])[0] == 200
    status, answer = olga.call("PUT", f"{url}?offset=0", data=content[:PIECE])  # sent twice: the answer was lost
    assert status == 409 and answer["offset"] == PIECE
    status, answer = olga.call("PUT", f"{url}?offset={2 * PIECE}", data=content[2 * PIECE : 3 * PIECE])  # a gap
    assert status == 409 and answer["offset"] == PIECE
    status, answer = olga.call("PUT", f"{url}?offset=abc", data=b"x")
    assert status == 400
    status, answer = olga.call("GET", url)
    assert status == 200 and answer["offset"] == PIECE and answer["size"] == len(content)
    last = len(content) - len(content) % PIECE
    for offset in range(PIECE, last, PIECE):
        assert olga.call("PUT", f"{url}?offset={offset}", data=content[offset : offset + PIECE])[0] == 200
    status, answer = olga.call("PUT", f"{url}?offset={last}", data=content[last:] + b"more")  # past the size
    assert status == 400 and "past the 256000 bytes declared" in answer["error"]
    assert olga.call("PUT", f"{url}?offset={last}", data=content[last:])[0] == 200
    folder = server.db_path.parent / "videos" / ".partial-uploads" / begun["id"]
    assert (folder / "data").read_bytes() == content


def test_an_upload_is_its_owners_alone_and_needs_a_login_csrf_and_the_role(server: LimitedServer) -> None:
    olga, otto, vic, anonymous = (Client(server.url, n) for n in ("olga", "otto", "vic", None))
    status, begun = olga.call("POST", "/api/v1/uploads/video", {"filename": "v.mp4", "size": 3 * PIECE})
    assert status == 201
    url = f"/api/v1/uploads/video/{begun['id']}"
    assert otto.call("GET", url)[0] == 404
    assert otto.call("PUT", f"{url}?offset=0", data=b"x" * 10)[0] == 404
    assert otto.call("DELETE", url)[0] == 404
    assert otto.call("POST", "/videos", form={"upload_id": begun["id"]})[0] == 302
    assert olga.call("GET", url)[1]["offset"] == 0  # still there, untouched
    assert anonymous.call("PUT", f"{url}?offset=0", data=b"x" * 10)[0] == 401
    assert anonymous.call("POST", "/api/v1/uploads/video", {"filename": "v", "size": 10})[0] == 401
    assert olga.call("PUT", f"{url}?offset=0", data=b"x" * 10, csrf=False)[0] == 400
    assert olga.call("POST", "/api/v1/uploads/video", {"filename": "v", "size": 10}, csrf=False)[0] == 400
    status, answer = vic.call("POST", "/api/v1/uploads/video", {"filename": "v", "size": 10})
    assert status == 403 and "officer" in answer["error"]
    assert olga.call("POST", "/api/v1/uploads/model_set", {"filename": "s", "size": 10})[0] == 403
    assert olga.call("GET", "/api/v1/uploads/video/..%2F..%2Fserver.sqlite")[0] == 404
    status, answer = olga.call("POST", "/videos", form={"upload_id": begun["id"]})  # incomplete: refused, kept
    assert status == 302 and olga.call("GET", url)[1]["offset"] == 0
    assert olga.call("DELETE", url)[0] == 200
    assert olga.call("GET", url)[0] == 404
    assert server.partials("videos") == []


def test_limits_of_the_feature_and_of_a_piece_still_hold(server: LimitedServer) -> None:
    olga = Client(server.url, "olga")
    status, answer = olga.call("POST", "/api/v1/uploads/video", {"filename": "v.mp4", "size": 2 * 1024 * 1024})
    assert status == 413 and "[videos] max_upload_mb" in answer["error"]
    assert server.partials("videos") == []
    status, answer = olga.call("POST", "/api/v1/uploads/video", {"filename": "v.mp4", "size": "big"})
    assert status == 400
    status, begun = olga.call("POST", "/api/v1/uploads/video", {"filename": "v.mp4", "size": 4 * PIECE})
    over = olga.status_before_body("PUT", f"/api/v1/uploads/video/{begun['id']}?offset=0", LIMIT_KB * 1024)
    assert over == 413  # a piece over [http] max_request_kb is refused like any other body
    assert olga.call("GET", f"/api/v1/uploads/video/{begun['id']}")[1]["offset"] == 0


def test_a_long_videos_result_is_imported_in_pieces_by_the_import_client(server: LimitedServer) -> None:
    """`mgs-device score --server`: a result.json over the request limit (a long video's windows)."""
    db = connect(server.db_path)
    try:
        token = auth.create_token(db, db.execute("SELECT id FROM users WHERE username = 'olga'").fetchone()[0], "pc")
    finally:
        db.conn.close()
    windows = [result_window(box, i) for box in range(4) for i in range(300)]
    result = {
        "fingerprint": "b" * 64,
        "video": "day9.mp4",
        "start": "2026-05-01T08:00:00Z",
        "window_s": 1.0,
        "model_sha256": "a" * 64,
        "boxes": [{"box": b, "animal": ""} for b in range(4)],
        "windows": windows,
    }
    assert len(json.dumps(result)) > 2 * PIECE
    answer = ImportClient(server.url, token).send(result)
    assert answer["stored"] == 1200
    assert ImportClient(server.url, token).send(result)["duplicates"] == 1200  # again: nothing twice
    assert server.partials("videos") == []


def test_abandoned_uploads_are_dropped_after_a_day_and_beyond_four_per_user(server: LimitedServer) -> None:
    olga, otto = Client(server.url, "olga"), Client(server.url, "otto")
    ids = [olga.call("POST", "/api/v1/uploads/video", {"filename": f"{n}.mp4", "size": 100})[1]["id"] for n in range(4)]
    other = otto.call("POST", "/api/v1/uploads/video", {"filename": "o.mp4", "size": 100})[1]["id"]
    folder = server.db_path.parent / "videos" / ".partial-uploads"
    day_ago = time.time() - 25 * 3600
    for path in (folder / other).iterdir():
        os.utime(path, (day_ago, day_ago))
    for n, upload_id in enumerate(ids):  # the order they were last touched: ids[0] oldest
        for path in (folder / upload_id).iterdir():
            os.utime(path, (day_ago + 3600 * (n + 1), day_ago + 3600 * (n + 1)))
    newest = olga.call("POST", "/api/v1/uploads/video", {"filename": "5.mp4", "size": 100})[1]["id"]
    assert server.partials("videos") == sorted([*ids[1:], newest])
    assert olga.call("GET", f"/api/v1/uploads/video/{ids[0]}")[0] == 404
