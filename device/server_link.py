"""The edge box's HTTPS link to mgs-server, for what does not belong on the broker.

Score windows and alerts travel over MQTT. Bulky or file-like traffic goes to the server's device
endpoints (`/api/v1/device/...`) instead: expert-review samples up, model sets down. Every request
carries the device token that `mgs-server provision-device --server-config` wrote; the server
answers it as this device and as no other, whatever the request body says.

Standard library only (urllib), like `import_client`: the device needs no HTTP package. Errors
come in two kinds so callers can queue or give up: `ServerUnreachable` (network, timeout, 5xx,
429: try again later) and `ServerRefused` (any other 4xx: the request itself is wrong, sending it
again will not help).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

from mgs_core.errors import ConfigError, MgsError
from mgs_core.tomlconfig import Check, Range, existing_file, fail

log = logging.getLogger(__name__)

DEVICE_API = "/api/v1/device"
_CHUNK = 1 << 16


class ServerUnreachable(MgsError):
    """The server could not be asked or could not answer now; the same request may work later."""


class ServerRefused(MgsError):
    """The server answered and refused the request (4xx other than 429); retrying will not help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServerLinkConfig:
    SECTION: ClassVar[str] = "server"

    url: str = field(
        default="",
        metadata={
            "doc": "mgs-server address, e.g. https://mgs.lab.example:8080; empty = no link "
            "(no review samples are uploaded, no model roll-outs are received)"
        },
    )
    token_file: Annotated[Path | None, Check(existing_file)] = field(
        default=None, metadata={"doc": "file whose first line is this device's token (written by provision-device)"}
    )
    token_env: str = field(default="", metadata={"doc": "name of an environment variable holding the token"})
    ca: Annotated[Path | None, Check(existing_file)] = field(
        default=None, metadata={"doc": "CA certificate file for an https url; empty = the system's CAs"}
    )
    timeout_s: Annotated[float, Range(1, 600, unit="seconds")] = field(
        default=30.0, metadata={"doc": "how long one request may take before it counts as unreachable"}
    )

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def check(self) -> None:
        if self.url and not self.url.startswith(("http://", "https://")):
            raise fail("url", self.url, "must start with https:// (or http:// on a trusted network)")
        if self.url and not (self.token_file or self.token_env):
            raise fail("url", self.url, "set token_file (or token_env) too: the server needs the device token")
        if self.token_file and self.token_env:
            raise fail("token_env", self.token_env, "set only one of token_file and token_env")

    def resolve_token(self) -> str:
        if self.token_env:
            value = os.environ.get(self.token_env, "").strip()
            if not value:
                raise ConfigError(f"key 'server.token_env' = {self.token_env!r}: that environment variable is not set")
            return value
        try:
            return Path(str(self.token_file)).read_text(encoding="utf-8").splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            raise ConfigError(f"key 'server.token_file' = '{self.token_file}': cannot read a token ({exc})") from None


class ServerLink:
    """Requests to the server's device endpoints, authenticated as this device."""

    def __init__(self, config: ServerLinkConfig) -> None:
        if not config.enabled:
            raise MgsError("no [server] url in device.toml: this needs the link to mgs-server")
        self.base = config.url.rstrip("/") + DEVICE_API
        self.timeout_s = config.timeout_s
        self._token = config.resolve_token()
        self._context = ssl.create_default_context(cafile=str(config.ca) if config.ca else None)

    def request_json(self, method: str, path: str, body: Any = None) -> Any:
        """Send `body` as JSON (None = no body) and return the decoded JSON answer."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        with self._open(method, path, data, "application/json") as response:
            return json.loads(response.read() or b"null")

    def download(self, path: str, dest: Path, max_bytes: int, sha256: str | None = None) -> str:
        """Stream `path` into `dest` (written beside, then renamed); returns the file's sha256.

        Refuses more than `max_bytes` and, when `sha256` is given, a file with another hash, so a
        truncated or tampered download never replaces anything."""
        digest = hashlib.sha256()
        size = 0
        partial = dest.with_name(dest.name + ".part")
        try:
            with self._open("GET", path, None, None) as response, partial.open("wb") as out:
                while chunk := response.read(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise ServerRefused(f"{path}: larger than {max_bytes} bytes; refused", 413)
                    digest.update(chunk)
                    out.write(chunk)
            if sha256 is not None and digest.hexdigest() != sha256:
                raise ServerRefused(f"{path}: sha256 {digest.hexdigest()} is not the expected {sha256}", 422)
            os.replace(partial, dest)
        finally:
            partial.unlink(missing_ok=True)
        return digest.hexdigest()

    def _open(self, method: str, path: str, data: bytes | None, content_type: str | None) -> Any:
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if content_type is not None and data is not None:
            headers["Content-Type"] = content_type
        url = self.base + path
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout_s, context=self._context)
        except urllib.error.HTTPError as exc:
            message = f"{method} {url}: the server answered {exc.code} ({http_error_text(exc)})"
            if exc.code >= 500 or exc.code == 429:
                raise ServerUnreachable(message) from None
            raise ServerRefused(message, exc.code) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ServerUnreachable(f"{method} {url}: cannot reach the server ({exc})") from None


def http_error_text(exc: urllib.error.HTTPError) -> str:
    """The server's JSON `error`, or the start of whatever else it sent."""
    try:
        body = exc.read(4096)
    except OSError:
        return exc.reason or ""
    try:
        return str(json.loads(body).get("error", ""))
    except (ValueError, AttributeError):
        return body.decode(errors="replace").strip()[:200] or str(exc.reason)
