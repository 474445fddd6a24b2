"""Send a scored video's windows to mgs-server (`POST /api/v1/imports`), standard library only.

The server keys every window by video fingerprint, box and window, so sending the same video
again (a re-run, a retry after a network error) stores nothing twice.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

from device.server_link import http_error_text
from mgs_core.errors import MgsError

log = logging.getLogger(__name__)

IMPORT_PATH = "/api/v1/imports"
UPLOAD_PATH = "/api/v1/uploads/import"
TIMEOUT_S = 120


class ImportClient:
    def __init__(self, server: str, token: str) -> None:
        if not server.startswith(("http://", "https://")):
            raise MgsError(f"--server {server!r} must start with http:// or https://")
        self.server = server.rstrip("/")
        self.url = self.server + IMPORT_PATH
        self.token = token

    def send(self, result: dict[str, Any]) -> dict[str, Any]:
        """Import one result.json; returns the server's answer (stored and duplicate counts).

        A result larger than the server takes in one request ([http] max_request_kb: a long video's
        windows) is sent in pieces and then imported by its upload id."""
        body = json.dumps({k: v for k, v in result.items() if k not in ("path", "folder")}).encode()
        try:
            try:
                answer = self._call("POST", IMPORT_PATH, body, "application/json")
            except urllib.error.HTTPError as exc:
                if exc.code != 413:
                    raise
                upload_id = self._send_in_pieces(f"{result['video']}.result.json", body)
                answer = self._call(
                    "POST", IMPORT_PATH, json.dumps({"upload_id": upload_id}).encode(), "application/json"
                )
        except urllib.error.HTTPError as exc:
            raise MgsError(
                f"{result['video']}: the server refused the import ({exc.code}: {http_error_text(exc)}); "
                "the local results are kept, fix that and run again"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise MgsError(
                f"{result['video']}: cannot reach {self.url} ({exc}); the local results are kept, "
                "run again when the server answers (nothing is stored twice)"
            ) from None
        log.info(
            "%s: imported into %s as %s: %d window(s) stored, %d already there",
            result["video"],
            self.url,
            answer.get("device"),
            answer.get("stored", 0),
            answer.get("duplicates", 0),
        )
        result["import"] = answer
        return answer

    def _send_in_pieces(self, filename: str, body: bytes) -> str:
        """Upload `body` in pieces of the size the server asks for (server/chunked_upload.py)."""
        start = json.dumps({"filename": filename, "size": len(body)}).encode()
        begun = self._call("POST", UPLOAD_PATH, start, "application/json")
        offset = 0
        while offset < len(body):
            piece = body[offset : offset + begun["chunk_bytes"]]
            try:
                offset = self._call("PUT", f"{UPLOAD_PATH}/{begun['id']}?offset={offset}", piece)["offset"]
            except urllib.error.HTTPError as exc:
                if exc.code != 409:  # 409: the server holds another offset (an answer was lost): go on from there
                    raise
                offset = json.loads(exc.read())["offset"]
        return str(begun["id"])

    def _call(self, method: str, path: str, data: bytes, content_type: str = "application/octet-stream") -> Any:
        request = urllib.request.Request(
            self.server + path,
            data=data,
            method=method,
            headers={"Content-Type": content_type, "Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return json.loads(response.read())
