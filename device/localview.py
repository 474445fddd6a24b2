"""The device's own small web page: health JSON and a live picture with ROIs, eyes and scores.

For the technician at the rack (mounting the camera, checking the light tent) and for anyone who
wants to know whether this one box is well without the central server. Standard library HTTP
server in a thread, OpenCV for the picture, no JavaScript from anywhere but this page: the
facility network may have no internet. There is no login: keep [http] host on a trusted network
or set it to 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import cv2
import numpy as np

from device.aggregate import BoxWindow
from device.config import HttpConfig
from device.results import FrameResult
from device.rois import Roi
from mgs_core.errors import MgsError

log = logging.getLogger(__name__)

PREVIEW_WIDTH = 960
GREEN, ORANGE, RED, GREY, WHITE = (60, 200, 60), (0, 160, 255), (40, 40, 230), (150, 150, 150), (255, 255, 255)


def draw_preview(
    image: np.ndarray | None,
    rois: Sequence[Roi],
    result: FrameResult | None,
    windows: Mapping[int, BoxWindow],
    alerts: Sequence[int] = (),
    note: str = "",
) -> np.ndarray:
    """The picture the paper's GUI showed: each box, the eyes found in it and its current score.

    Boxes are green, red while an alert is raised, grey without a face; eyes are green when used
    for the score and orange when rejected (blurred or cut, or abstained on: "?" instead of a score).
    """
    if image is None:
        blank = np.full((PREVIEW_WIDTH * 9 // 16, PREVIEW_WIDTH, 3), 40, np.uint8)
        cv2.putText(
            blank, note or "waiting for the camera", (30, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.0, WHITE, 2, cv2.LINE_AA
        )
        return blank
    scale = min(1.0, PREVIEW_WIDTH / image.shape[1])
    canvas = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image.copy()
    for b, roi in enumerate(rois):
        w = windows.get(b)
        colour = RED if b in alerts else (GREY if w is None or w.score is None else GREEN)
        p0 = (round(roi.x * scale), round(roi.y * scale))
        p1 = (round(roi.x1 * scale), round(roi.y1 * scale))
        cv2.rectangle(canvas, p0, p1, colour, 2)
        label = f"box {b}: " + ("-" if w is None else "no face" if w.score is None else f"{w.score:.1f}")
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.7, 2)
        cv2.rectangle(canvas, (p0[0] + 2, p0[1] + 2), (p0[0] + tw + 10, p0[1] + th + 12), (0, 0, 0), -1)
        cv2.putText(canvas, label, (p0[0] + 6, p0[1] + th + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.7, colour, 2, cv2.LINE_AA)
    if result is not None:
        for box in result.boxes:
            for eye in box.eyes:
                centre = (round(eye.x * scale), round(eye.y * scale))
                radius = max(5, round(math.sqrt(max(eye.area_px, 1)) * scale))
                cv2.circle(canvas, centre, radius, GREEN if eye.quality_ok else ORANGE, 2)
                cv2.putText(
                    canvas,
                    "?" if eye.abstained else f"{eye.score:.1f}",
                    (centre[0] + radius + 2, centre[1] + 5),
                    cv2.FONT_HERSHEY_SIMPLEX,
                    0.5,
                    GREEN if eye.quality_ok else ORANGE,
                    1,
                    cv2.LINE_AA,
                )
    if note:
        cv2.putText(canvas, note, (10, canvas.shape[0] - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.6, WHITE, 1, cv2.LINE_AA)
    return canvas


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mgs-rack device {name}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; background: #111; color: #eee; }}
img {{ max-width: 100%; border: 1px solid #444; }}
table {{ border-collapse: collapse; margin-top: 1em; }}
td, th {{ padding: 0.3em 0.8em; border-bottom: 1px solid #333; text-align: left; }}
.bad {{ color: #f66; }}
</style></head>
<body>
<h1>Device {name}</h1>
<p id="summary">loading...</p>
<img id="preview" src="preview.jpg" alt="camera picture with boxes, eyes and scores">
<table><thead><tr><th>box</th><th>score (0-9)</th><th>face visible</th><th>eyes</th><th>window end (UTC)</th></tr></thead>
<tbody id="boxes"></tbody></table>
<p>Raw health data: <a href="health">/health</a></p>
<script>
const every = {interval_ms};
function cell(row, text, bad) {{ const td = row.insertCell(); td.textContent = text; if (bad) td.className = "bad"; }}
async function refresh() {{
  document.getElementById("preview").src = "preview.jpg?t=" + Date.now();
  try {{
    const h = await (await fetch("health")).json();
    const s = document.getElementById("summary");
    s.textContent = `camera ${{h.camera}} | ${{h.fps}} fps (target ${{h.target_fps}}) | outbox ${{h.outbox_depth}} | ` +
      `broker ${{h.mqtt_connected ? "connected" : "NOT connected"}} | model ${{h.model_sha256.slice(0, 12)}}` +
      (h.message ? " | " + h.message : "");
    s.className = (h.camera !== "ok" || !h.mqtt_connected || h.message) ? "bad" : "";
    const body = document.getElementById("boxes");
    body.replaceChildren();
    for (const b of h.boxes) {{
      const row = body.insertRow();
      cell(row, b.box);
      cell(row, b.score === null ? "no face" : b.score.toFixed(1), h.alerts_raised.includes(b.box));
      cell(row, b.face_visible_fraction === null ? "-" : Math.round(100 * b.face_visible_fraction) + " %");
      cell(row, b.valid_eyes);
      cell(row, b.window_end || "-");
    }}
  }} catch (e) {{ document.getElementById("summary").textContent = "device not answering"; }}
}}
refresh();
setInterval(refresh, every);
</script>
</body></html>
"""


@dataclass(frozen=True)
class Preview:
    """Everything `draw_preview` needs, taken at one moment."""

    image: np.ndarray | None
    rois: Sequence[Roi]
    result: FrameResult | None
    windows: Mapping[int, BoxWindow]
    alerts: Sequence[int]
    note: str


class ViewSource(Protocol):
    """What the page shows. The runner provides it; a protocol keeps this module from importing the runner."""

    def health(self) -> dict[str, Any]: ...

    def preview(self) -> Preview: ...


class LocalView:
    """The HTTP server thread; `port` is the real port (useful with port 0)."""

    def __init__(self, source: ViewSource, name: str, config: HttpConfig) -> None:
        self.source = source
        self.name = name
        self.config = config
        try:
            self.server = ThreadingHTTPServer((config.host, config.port), self._handler())
        except OSError as exc:
            raise MgsError(
                f"cannot serve the local page on {config.host}:{config.port} ({exc.strerror}); set [http] port "
                "to a free port, or [http] enabled = false"
            ) from None
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.serve_forever, name="localview", daemon=True)
        self._thread.start()
        log.info("local view on http://%s:%d/", self.config.host, self.port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def preview_jpeg(self) -> bytes:
        p = self.source.preview()
        image = draw_preview(p.image, p.rois, p.result, p.windows, p.alerts, p.note)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        return data.tobytes() if ok else b""

    def page(self) -> bytes:
        return PAGE.format(name=self.name, interval_ms=round(self.config.preview_interval_s * 1000)).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        view = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                try:
                    if path == "/":
                        self._send(200, "text/html; charset=utf-8", view.page())
                    elif path == "/health":
                        self._send(200, "application/json", json.dumps(view.source.health()).encode())
                    elif path == "/preview.jpg":
                        self._send(200, "image/jpeg", view.preview_jpeg())
                    else:
                        self._send(404, "text/plain; charset=utf-8", b"not found: try / or /health\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("http: " + format, *args)

        return Handler
