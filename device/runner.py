"""`mgs-device run`: camera -> pipeline -> windows -> alerts -> outbox -> MQTT, all day.

Threads only at the edges: the capture thread keeps the newest frame, the publisher's pump and
paho's network thread talk to the broker, the local view serves HTTP. The main thread runs the
pipeline, aggregation and alerts, and hands finished windows to the outbox; nothing it does
waits on the network, so a broker outage never slows scoring and scoring never blocks publishing.

Under systemd (NOTIFY_SOCKET set) it reports READY, pings the watchdog from the main loop (a hung
pipeline gets the service restarted) and STOPPING on shutdown, over the socket by hand (stdlib).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import cv2

from device import __version__
from device.aggregate import BoxWindow, WindowAggregator
from device.alerts import AlertEvent, AlertTracker
from device.capture import Capture, Frame
from device.config import DeviceConfig
from device.inference import Models, load_models
from device.localview import LocalView, Preview
from device.offload import OffloadSwitch, offload_switch
from device.outbox import Outbox, Pending
from device.pipeline import build_pipeline
from device.publisher import Publisher
from device.results import FrameResult
from device.rollout import RolloutManager, Swap, store_dir
from device.sample_queue import SampleWorker, start_sampling
from device.sampling import Sampler
from mgs_core.errors import MgsError
from mgs_core.manifest import resolve_models_dir, sha256_file
from mgs_core.messages import DeviceStatus, alert_topic, model_topic, score_topic, utc_iso

log = logging.getLogger(__name__)

FPS_WINDOW_S = 5.0


def sd_notify(message: str) -> bool:
    """Send one sd_notify datagram (READY=1, WATCHDOG=1, STOPPING=1, STATUS=...) if systemd asked for it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False


def watchdog_interval_s() -> float | None:
    """Half the watchdog period systemd set (WatchdogSec=), or None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.1, int(usec) / 2e6)
    except ValueError:
        return None


class RateMeter:
    """Events per second over the last few seconds."""

    def __init__(self, window_s: float = FPS_WINDOW_S) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()

    def tick(self, now: float) -> None:
        self._times.append(now)
        self._trim(now)

    def rate(self, now: float) -> float:
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = max(now - self._times[0], 1e-6)
        return (len(self._times) - 1) / span if span < self.window_s else len(self._times) / self.window_s

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()


@dataclass
class Snapshot:
    """What the local view shows: the newest frame and what the device made of it."""

    frame: Frame | None
    result: FrameResult | None
    windows: dict[int, BoxWindow]


class DeviceRunner:
    def __init__(self, config: DeviceConfig, max_frames: int | None = None, max_seconds: float | None = None) -> None:
        self.config = config
        self.max_frames = max_frames
        self.max_seconds = max_seconds
        self.started = time.monotonic()
        self.frames = 0
        self.stop_requested = threading.Event()
        self.meter = RateMeter()
        self.stage_ms: dict[str, float] = {}
        self.rois = config.rois.rois
        self.aggregator = WindowAggregator(range(len(self.rois)), config.aggregation.window_s)
        self.alerts = AlertTracker(config.alerts)
        self.last_windows: dict[int, BoxWindow] = {}
        self._snapshot_lock = threading.Lock()
        self._frame: Frame | None = None
        self._result: FrameResult | None = None
        self.models: Models | None = None
        self.model_files: dict[str, str] = {}
        self.rollout: RolloutManager | None = None
        self.model_version = ""  # "" = the models shipped on disk
        self.outbox: Outbox | None = None
        self.capture: Capture | None = None
        self.publisher: Publisher | None = None
        self.offload: OffloadSwitch | None = None
        self.sampler: Sampler | None = None
        self.samples: SampleWorker | None = None
        self.pipeline_errors = 0
        self.last_pipeline_error = ""
        self._last_error_log = -60.0

    # --- what others read ---------------------------------------------------------------------

    def status(self) -> DeviceStatus:
        now = time.monotonic()
        problems = []
        camera = self.capture.state if self.capture else "starting"
        if self.capture and self.capture.message:
            problems.append(f"camera {camera}: {self.capture.message}")
        if self.outbox:
            problems.append(self.outbox.stats().problem())
        if self.publisher and self.publisher.last_error:
            problems.append(self.publisher.last_error)
        if self.pipeline_errors:
            problems.append(f"pipeline failed on {self.pipeline_errors} frame(s), last: {self.last_pipeline_error}")
        if self.rollout and self.rollout.problem:
            problems.append(f"model roll-out: {self.rollout.problem}")
        stats = self.outbox.stats() if self.outbox else None
        fps = self.meter.rate(now)
        backend = self.offload.policy.backend if self.offload else "local"
        if self.offload and self.offload.policy.reason:
            problems.append(self.offload.policy.reason)
        elif camera == "ok" and now - self.started > 2 * FPS_WINDOW_S and fps < 0.8 * self.config.target_fps:
            problems.append(f"scoring {fps:.1f} fps, below the target of {self.config.target_fps:g}")
        return DeviceStatus(
            device=self.config.name,
            time=utc_iso(time.time()),
            fps=round(fps, 2),
            target_fps=self.config.target_fps,
            backend=backend,
            camera=camera,
            queue_depth=stats.depth if stats else 0,
            uptime_s=round(now - self.started, 1),
            version=__version__,
            models={**self.model_files, "model_set": self.models.model_sha256} if self.models else {},
            skipped_frames=self.capture.skipped if self.capture else 0,
            boxes=len(self.rois),
            message="; ".join(p for p in problems if p)[:1024],
            epoch=stats.epoch if stats else "",
            first_seq=stats.first_seq if stats else 0,
            model_version=self.model_version,
        )

    def health(self) -> dict[str, Any]:
        """The local view's /health: the status plus what a technician needs at the rack."""
        status = self.status()
        stats = self.outbox.stats() if self.outbox else None
        return {
            "device": status.device,
            "camera": status.camera,
            "camera_message": self.capture.message if self.capture else "",
            "fps": status.fps,
            "target_fps": status.target_fps,
            "capture_fps": round(self.capture.fps, 2) if self.capture else 0.0,
            "skipped_frames": status.skipped_frames,
            "frames_scored": self.frames,
            "pipeline_errors": self.pipeline_errors,
            "stage_ms": {k: round(v, 2) for k, v in self.stage_ms.items()},
            "outbox_depth": status.queue_depth,
            "outbox_dropped": stats.dropped if stats else 0,
            "outbox_disk_full": stats.disk_full if stats else False,
            "last_seq": stats.last_seq if stats else 0,
            "mqtt_connected": bool(self.publisher and self.publisher.connected.is_set()),
            "model_sha256": self.models.model_sha256 if self.models else "",
            "model_version": status.model_version,
            "models": status.models,
            "uptime_s": status.uptime_s,
            "version": status.version,
            "message": status.message,
            "alerts_raised": self.alerts.raised_boxes(),
            "samples": self.samples.stats() if self.samples else None,
            "boxes": [
                {"box": b, "roi": roi.as_list(), **_window_json(self.last_windows.get(b))}
                for b, roi in enumerate(self.rois)
            ],
        }

    def snapshot(self) -> Snapshot:
        with self._snapshot_lock:
            return Snapshot(self._frame, self._result, dict(self.last_windows))

    def preview(self) -> Preview:
        """The local view's picture: the latest frame with its boxes, eyes, scores and camera state."""
        snap = self.snapshot()
        camera = self.capture.state if self.capture else "starting"
        note = "" if camera == "ok" else f"camera {camera}: {self.capture.message if self.capture else ''}"
        return Preview(
            snap.frame.image if snap.frame else None,
            self.rois,
            snap.result,
            snap.windows,
            self.alerts.raised_boxes(),
            note,
        )

    # --- running ------------------------------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        self.stop_requested.set()

    def run(self) -> int:
        cv2.setNumThreads(1)
        # First of all: the publisher, the roll-out and the camera start threads and announce the
        # device before the loop runs, and a stop (systemd, Ctrl-C) in that window must be a clean
        # one (flush, close the outbox), not the default death by signal.
        self._install_signal_handlers()
        c = self.config
        self.outbox = Outbox.from_config(c.outbox)
        view: LocalView | None = None
        try:
            self.rollout = RolloutManager(
                c.name,
                c.mqtt.prefix,
                c.rollout,
                c.server,
                store_dir(c.rollout, c.outbox.path),
                resolve_models_dir(c.models.dir),
                lambda folder: load_models(folder, c.backend.precision, c.backend),
            )
            self.models = self.rollout.initial_models()
            self.model_version = self.rollout.active_version
            self.model_files = _file_shas(self.models)
            self.offload = offload_switch(self.models, self.model_files, c.offload, c.target_fps)
            pipeline = build_pipeline(self.offload.models if self.offload else self.models, self.rois, c.pipeline)
            self.samples = start_sampling(c.sampling, c.server, c.outbox.path)
            if self.samples:
                self.sampler = Sampler(
                    c.sampling,
                    self.rois,
                    c.pipeline.fine_crop,
                    c.pipeline.eyes.min_confidence,
                    c.alerts.threshold,
                    c.aggregation.window_s,
                )
                self.sampler.model_sha256, self.sampler.model_version = self.models.model_sha256, self.model_version
            self.publisher = Publisher(c.name, c.mqtt, self.outbox, self.status, c.status.interval_s)
            self.publisher.handlers[model_topic(c.name, c.mqtt.prefix)] = self.rollout.on_assignment
            self.publisher.on_connected.append(self.rollout.connected)
            self.rollout.attach(self.publisher.publish_retained)
            self.capture = Capture(c.camera)
            if c.http.enabled:
                view = LocalView(self, c.name, c.http)
                view.start()
            self.publisher.start()
            self.rollout.start()
            self.capture.start()
            sd_notify("READY=1")
            log.info(
                "device %s running: %d box(es), models %s, target %g fps",
                c.name,
                len(self.rois),
                self.models.model_sha256[:12],
                c.target_fps,
            )
            self._loop(pipeline)
        finally:
            sd_notify("STOPPING=1")
            self._emit(self.aggregator.flush())
            if self.rollout:
                self.rollout.stop()
            if self.capture:
                self.capture.stop()
            if self.publisher:
                self.publisher.stop()
            if view:
                view.stop()
            if self.offload:
                self.offload.client.close()
            if self.samples:
                self.samples.stop()
            left = self.outbox.stats().depth
            self.outbox.close()
        log.info(
            "device %s stopped after %d frame(s); %d message(s) wait in the outbox for the next start",
            c.name,
            self.frames,
            left,
        )
        if self.capture.state == "failed":
            raise MgsError(f"camera failed: {self.capture.message}")
        return 0

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)

    def _loop(self, pipeline) -> None:
        assert self.capture is not None
        watchdog = watchdog_interval_s()
        next_ping = 0.0
        next_log = time.monotonic() + self.config.status.interval_s
        while not self.stop_requested.is_set():
            now = time.monotonic()
            if watchdog and now >= next_ping:
                sd_notify("WATCHDOG=1")
                next_ping = now + watchdog
            if now >= next_log:
                next_log = now + self.config.status.interval_s
                self._log_rates(now)
            if self.max_seconds is not None and now - self.started >= self.max_seconds:
                log.info("--max-seconds %g reached", self.max_seconds)
                return
            frame = self.capture.get(timeout=0.5)
            if frame is None:
                if self.capture.finished:
                    log.info("camera %s: %s", self.capture.state, self.capture.message)
                    return
                self._emit(self.aggregator.close_stale(time.time()))
                continue
            swap = self.rollout.take_swap(self.models) if self.rollout and self.models else None
            if swap is not None:
                pipeline = self._switch(swap, frame.time)
            try:
                result = pipeline(frame.image, frame.index, frame.time)
            except MgsError:
                raise
            except Exception as exc:
                self._pipeline_failed(frame, exc)
                continue
            self.frames += 1
            self.meter.tick(time.monotonic())
            if self.offload:
                self.offload.observe(self.meter.rate(time.monotonic()))
            for stage, ms in result.stage_ms.items():
                self.stage_ms[stage] = 0.9 * self.stage_ms.get(stage, ms) + 0.1 * ms
            with self._snapshot_lock:
                self._frame, self._result = frame, result
            self._emit(self.aggregator.add(result))
            if self.sampler:
                self.sampler.observe(frame.image, result)
            if self.max_frames is not None and self.frames >= self.max_frames:
                log.info("--max-frames %d reached", self.max_frames)
                return

    def _switch(self, swap: Swap, at: float):
        """New models between two frames: the open window closes here, so each window has one version."""
        self._emit(self.aggregator.split(at))
        self.models, self.model_version = swap.models, swap.version
        self.model_files = _file_shas(swap.models)
        if self.sampler:
            self.sampler.model_sha256, self.sampler.model_version = swap.models.model_sha256, swap.version
        if self.offload:
            self.offload.client.close()
            self.offload = offload_switch(swap.models, self.model_files, self.config.offload, self.config.target_fps)
        return build_pipeline(self.offload.models if self.offload else swap.models, self.rois, self.config.pipeline)

    def _pipeline_failed(self, frame: Frame, exc: Exception) -> None:
        """One frame the pipeline cannot handle must not stop scoring and publishing: count it, say so."""
        self.pipeline_errors += 1
        self.last_pipeline_error = f"{type(exc).__name__}: {exc}"[:200]
        now = time.monotonic()
        if now - self._last_error_log >= 60:
            self._last_error_log = now
            log.exception(
                "pipeline failed on frame %d (%d failure(s) so far); skipping the frame",
                frame.index,
                self.pipeline_errors,
            )

    def _emit(self, windows: list[BoxWindow]) -> None:
        if not windows or self.outbox is None or self.models is None:
            return
        name, sha, prefix = self.config.name, self.models.model_sha256, self.config.mqtt.prefix
        items: list[Pending] = []
        closed: list[tuple[BoxWindow, AlertEvent | None, int]] = []
        for w in windows:
            index = len(items)
            items.append(Pending(score_topic(name, w.box, prefix), _window_payload(w, name, sha, self.model_version)))
            event = self.alerts.update(w)
            if event is not None:
                log.warning(
                    "alert %s for box %d: score %s, threshold %g", event.event, event.box, event.score, event.threshold
                )
                items.append(Pending(alert_topic(name, w.box, prefix), _alert_payload(event, name)))
            closed.append((w, event, index))
        seqs = self.outbox.enqueue(items)
        if self.rollout:
            self.rollout.observe(windows, self.model_version)
        if self.sampler and self.samples:
            # enqueue returns the seqs of held items first, then these; none when the disk is full
            first = len(seqs) - len(items)
            for w, event, i in closed:
                job = self.sampler.window_closed(w, event, seqs[first + i] if first >= 0 else None)
                if job is not None:
                    self.samples.submit(job)
        with self._snapshot_lock:
            self.last_windows.update({w.box: w for w in windows})
        if self.publisher:
            for w in windows:
                self.publisher.publish_state(w.box, w.score)
            self.publisher.notify()

    def _log_rates(self, now: float) -> None:
        stages = ", ".join(f"{k} {v:.1f} ms" for k, v in self.stage_ms.items())
        depth = self.outbox.stats().depth if self.outbox else 0
        log.info(
            "%.1f fps (target %g), camera %s, %d skipped, outbox %d; %s",
            self.meter.rate(now),
            self.config.target_fps,
            self.capture.state if self.capture else "-",
            self.capture.skipped if self.capture else 0,
            depth,
            stages or "no frames yet",
        )


def _window_payload(
    window: BoxWindow, device: str, model_sha256: str, model_version: str
) -> Callable[[int, str], bytes]:
    """The outbox builds a score message once it knows the message's seq and its own epoch."""
    return lambda seq, epoch: replace(
        window.to_message(device, seq, model_sha256, model_version), epoch=epoch
    ).to_json()


def _alert_payload(event: AlertEvent, device: str) -> Callable[[int, str], bytes]:
    return lambda seq, epoch: replace(event.to_message(device, seq), epoch=epoch).to_json()


def _window_json(w: BoxWindow | None) -> dict[str, Any]:
    if w is None:
        return {"score": None, "face_visible_fraction": None, "window_end": None, "valid_eyes": 0}
    return {
        "score": None if w.score is None else round(w.score, 2),
        "face_visible_fraction": round(w.face_visible_fraction, 3),
        "window_end": utc_iso(w.end),
        "valid_eyes": w.valid_eyes,
    }


def _file_shas(models: Models) -> dict[str, str]:
    return {name: sha256_file(path) for name, path in models.files.items()}
