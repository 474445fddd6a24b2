"""Frames in: camera, video file, RTSP stream or generated rack video, behind one interface.

A capture thread reads the source and leaves only the NEWEST frame in a single slot (condition
variable, picamera2/Frigate style). If the pipeline is slower than the camera, older frames are
overwritten and counted as skipped; nothing queues up, so latency stays bounded. A source that stops
delivering is reopened with exponential backoff, and `state` says what is going on
("starting", "ok", "reconnecting", "ended", "failed" - the camera states of DeviceStatus).

`realtime = false` turns a file into an offline source: the thread waits until the pipeline took
each frame, so every frame is analysed (benchmarks, evaluation of recorded videos).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Protocol

import numpy as np

from mgs_core.errors import MgsError
from mgs_core.tomlconfig import Length, Range, fail

log = logging.getLogger(__name__)

CameraState = Literal["starting", "ok", "reconnecting", "ended", "failed"]
SourceKind = Literal["auto", "picamera2", "opencv", "file"]


@dataclass
class CaptureConfig:
    """`[camera]`: where frames come from."""

    SECTION: ClassVar[str] = "camera"

    source: Annotated[str, Length(1)] = field(
        default="0",
        metadata={
            "doc": 'camera index ("0"), video file path, rtsp:// or http:// URL, or "picamera2" for a Raspberry Pi / Jetson CSI camera'
        },
    )
    kind: SourceKind = field(
        default="auto", metadata={"doc": "auto (decide from `source`), picamera2, opencv (index or URL) or file"}
    )
    width: Annotated[int, Range(16)] = field(
        default=1920, metadata={"doc": "frame width asked of a camera (files keep their own size)"}
    )
    height: Annotated[int, Range(16)] = field(default=1080, metadata={"doc": "frame height asked of a camera"})
    fps: Annotated[float, Range(0)] = field(
        default=30.0, metadata={"doc": "frame rate asked of a camera (a video file always plays at its own rate)"}
    )
    loop: bool = field(
        default=False, metadata={"doc": "play a video file again from the start when it ends (demo, soak tests)"}
    )
    realtime: bool = field(
        default=True,
        metadata={
            "doc": "files only: play at the frame rate and drop frames the pipeline misses (true), or hand over every frame (false)"
        },
    )
    lores_width: int = field(
        default=640, metadata={"doc": "picamera2 only: width of the low-resolution stream next to the main one"}
    )
    lores_height: int = field(default=360, metadata={"doc": "picamera2 only: height of the low-resolution stream"})
    exposure_us: int = field(
        default=10000, metadata={"doc": "picamera2 only: fixed exposure time in microseconds (0 = automatic)"}
    )
    colour_gains: tuple[float, float] = field(
        default=(0.0, 0.0), metadata={"doc": "picamera2 only: fixed red/blue white-balance gains ([0, 0] = automatic)"}
    )
    reconnect_initial_s: Annotated[float, Range(0, above=True, unit="seconds")] = field(
        default=0.5, metadata={"doc": "first wait before reopening a source that failed"}
    )
    reconnect_max_s: float = field(
        default=30.0, metadata={"doc": "longest wait between reopen attempts (the wait doubles each time)"}
    )
    reconnect_attempts: Annotated[int, Range(0, note="0 = never give up")] = field(
        default=0,
        metadata={"doc": 'give up (state "failed") after this many failed reopen attempts in a row; 0 = never give up'},
    )

    def check(self) -> None:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise fail(
                "reconnect_max_s",
                self.reconnect_max_s,
                f"must be at least reconnect_initial_s ({self.reconnect_initial_s})",
            )
        if self.kind == "file" and not Path(self.source).exists():
            raise fail("source", self.source, "no such video file")

    def resolved_kind(self) -> SourceKind:
        if self.kind != "auto":
            return self.kind
        if self.source == "picamera2":
            return "picamera2"
        if self.source.isdigit() or "://" in self.source:
            return "opencv"
        return "file"


@dataclass(frozen=True)
class Frame:
    index: int
    time: float
    image: np.ndarray


class SourceError(Exception):
    """The source cannot be opened or stopped delivering; the message says which and why."""


class FrameSource(Protocol):
    """What the capture thread needs from a camera or a file."""

    fps: float
    live: bool

    def read(self) -> np.ndarray | None:
        """The next BGR frame; None when a file ended."""

    def close(self) -> None: ...


class OpenCVSource:
    """A USB camera index, an RTSP/HTTP stream or a video file through OpenCV."""

    def __init__(self, config: CaptureConfig) -> None:
        import cv2

        kind = config.resolved_kind()
        self.live = kind == "opencv"
        target: int | str = int(config.source) if config.source.isdigit() else config.source
        self.cap = cv2.VideoCapture(target)
        if not self.cap.isOpened():
            what = (
                f"camera index {target}"
                if isinstance(target, int)
                else f"{'stream' if self.live else 'video file'} {target}"
            )
            raise SourceError(
                f"cannot open {what}; check that it is connected/exists and that no other program uses it"
            )
        if isinstance(target, int):
            self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, config.width)
            self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, config.height)
            self.cap.set(cv2.CAP_PROP_FPS, config.fps or 30.0)
            self.cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        native = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = (config.fps or 30.0) if self.live else (native if 0 < native <= 240 else 30.0)

    def read(self) -> np.ndarray | None:
        ok, image = self.cap.read()
        if ok:
            return image
        if self.live:
            raise SourceError("the camera stopped delivering frames")
        return None

    def close(self) -> None:
        self.cap.release()


class Picamera2Source:
    """A CSI camera on a Raspberry Pi (or a Jetson with picamera2): main + lores stream, fixed exposure."""

    def __init__(self, config: CaptureConfig) -> None:
        try:
            from picamera2 import Picamera2  # only on the camera board itself
        except ImportError:
            raise SourceError(
                'camera.source = "picamera2" but the picamera2 package is not installed '
                "(on Raspberry Pi OS: sudo apt install python3-picamera2)"
            ) from None
        self.live = True
        self.fps = config.fps or 30.0
        self.cam = Picamera2()
        cfg = self.cam.create_video_configuration(
            main={"size": (config.width, config.height), "format": "BGR888"},
            lores={"size": (config.lores_width, config.lores_height)},
            controls={"FrameRate": self.fps},
        )
        self.cam.configure(cfg)
        controls: dict[str, object] = {}
        if config.exposure_us:
            controls.update(AeEnable=False, ExposureTime=config.exposure_us)
        if all(config.colour_gains):
            controls.update(AwbEnable=False, ColourGains=tuple(config.colour_gains))
        if controls:
            self.cam.set_controls(controls)
        self.cam.start()

    def read(self) -> np.ndarray | None:
        image = self.cam.capture_array("main")
        if image is None:
            raise SourceError("the CSI camera stopped delivering frames")
        return image[:, :, :3]

    def close(self) -> None:
        self.cam.stop()
        self.cam.close()


def open_source(config: CaptureConfig) -> FrameSource:
    if config.resolved_kind() == "picamera2":
        return Picamera2Source(config)
    return OpenCVSource(config)


class Capture:
    """The capture thread and its newest-frame slot. Use as a context manager or start()/stop()."""

    def __init__(self, config: CaptureConfig) -> None:
        self.config = config
        self.state: CameraState = "starting"
        self.message = ""
        self.delivered = 0
        self.skipped = 0
        self.reconnects = 0
        self.fps = 0.0
        self.decode_ms_total = 0.0
        self._slot: Frame | None = None
        self._taken = -1
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def decode_ms(self) -> float:
        """Mean time to read and decode one frame."""
        return self.decode_ms_total / self.delivered if self.delivered else 0.0

    @property
    def finished(self) -> bool:
        """No frame will ever come again (file ended, or gave up)."""
        return self.state in ("ended", "failed")

    def get(self, timeout: float = 1.0) -> Frame | None:
        """The newest frame not handed out yet; None after `timeout` or once the source is finished."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._slot is None or self._slot.index <= self._taken:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.finished or self._stop.is_set():
                    return None
                self._cond.wait(remaining)
            frame = self._slot
            self._taken = frame.index
            self._cond.notify_all()
            return frame

    def _set_state(self, state: CameraState, message: str = "") -> None:
        if state != self.state or message != self.message:
            log.log(
                logging.WARNING if state in ("reconnecting", "failed") else logging.INFO,
                "camera %s%s",
                state,
                f": {message}" if message else "",
            )
        with self._cond:
            self.state = state
            self.message = message
            self._cond.notify_all()

    def _run(self) -> None:
        delay = self.config.reconnect_initial_s
        failures = 0
        while not self._stop.is_set():
            try:
                source = open_source(self.config)
            except (SourceError, MgsError) as exc:
                failures += 1
                if self.config.reconnect_attempts and failures > self.config.reconnect_attempts:
                    self._set_state("failed", f"{exc} (gave up after {failures - 1} retries)")
                    return
                self._set_state("reconnecting", str(exc))
                self._stop.wait(delay)
                delay = min(delay * 2, self.config.reconnect_max_s)
                self.reconnects += 1
                continue
            delivered_before = self.delivered
            try:
                ended = self._pump(source)
            except SourceError as exc:
                self._set_state("reconnecting", str(exc))
                self._stop.wait(delay)
                self.reconnects += 1
                continue
            finally:
                source.close()
                if self.delivered > delivered_before:
                    delay = self.config.reconnect_initial_s
                    failures = 0
            if not ended:
                return
            if self.delivered == delivered_before:
                self._set_state("failed", f"video {self.config.source} has no readable frames; check the file")
                return
            if not self.config.loop:
                self._set_state("ended", f"video {self.config.source} ended")
                return

    def _pump(self, source: FrameSource) -> bool:
        """Read until the file ends (True) or stop is asked (False); SourceError if a live source dies.

        A frame's time is taken before it is decoded, so capture-to-result latency includes decoding.
        """
        pace = 1.0 / source.fps if (self.config.realtime and not source.live and source.fps > 0) else 0.0
        next_due = time.monotonic()
        started = time.monotonic()
        count = 0
        while not self._stop.is_set():
            if pace:
                wait = next_due - time.monotonic()
                if wait > 0:
                    self._stop.wait(wait)
                    next_due += pace
                else:
                    next_due = time.monotonic() + pace
            captured = time.time()
            t0 = time.perf_counter()
            image = source.read()
            if image is None:
                return True
            self.decode_ms_total += (time.perf_counter() - t0) * 1000.0
            self._put(image, captured, blocking=not self.config.realtime and not source.live)
            count += 1
            self.fps = count / max(1e-6, time.monotonic() - started)
        return False

    def _put(self, image: np.ndarray, captured: float, blocking: bool) -> None:
        with self._cond:
            if blocking:
                while self._slot is not None and self._slot.index > self._taken and not self._stop.is_set():
                    self._cond.wait(0.5)
            elif self._slot is not None and self._slot.index > self._taken:
                self.skipped += 1
            self._slot = Frame(self.delivered, captured, image)
            self.delivered += 1
            if self.state != "ok":
                self.state, self.message = "ok", ""
            self._cond.notify_all()
