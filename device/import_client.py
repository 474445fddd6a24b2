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
TIMEOUT_S = 120


class ImportClient:
    def __init__(self, server: str, token: str) -> None:
        if not server.startswith(("http://", "https://")):
            raise MgsError(f"--server {server!r} must start with http:// or https://")
        self.url = server.rstrip("/") + IMPORT_PATH
        self.token = token

    def send(self, result: dict[str, Any]) -> dict[str, Any]:
        """Import one result.json; returns the server's answer (stored and duplicate counts)."""
        body = json.dumps({k: v for k, v in result.items() if k not in ("path", "folder")}).encode()
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                answer = json.loads(response.read())
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
