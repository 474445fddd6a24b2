"""Model roll-out on the edge box: take an assigned model set, prove it, switch to it between two
frames, and go back on its own when the new set sees much less than the old one did.

The server publishes the version this device should run, retained, on `model_topic` (so a device
that was offline finds it when it connects). A worker thread downloads the set over the device's
HTTPS link (`device.server_link`: `manifest.json` first, checked against the assignment's sha256,
then every file it lists, each checked against the manifest), opens the models and runs the set's
self-test (`device.model_store`). Only then does it hand the models to the frame loop, which
swaps them between two frames: scoring never stops, and the window open at the switch is closed
there, so every window is computed by one model version and names it (`model_version`). Each step
is reported, retained, on `model_event_topic`; a failure at any step leaves the old models scoring.

For `observe_s` after a switch the manager compares the new version's face-visible and scorable
rates with the old version's over the same span just before the switch; a collapse below
`collapse_fraction` of the old rate swaps the old models back (still loaded, so at once) and
reports "rolled_back" with the figures. That assignment is remembered and never retried; a new
assignment of the same version is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar

from device.aggregate import BoxWindow
from device.inference import Models
from device.model_store import ModelStore, StoreState, run_selftest
from device.server_link import ServerLink, ServerLinkConfig, ServerUnreachable
from mgs_core.errors import MessageError, MgsError
from mgs_core.manifest import MANIFEST_NAME, check_plain_name, load_manifest, sha256_file
from mgs_core.messages import ModelAssignment, ModelEvent, model_event_topic, utc_iso
from mgs_core.tomlconfig import Range

log = logging.getLogger(__name__)

STORE_FOLDER = "model-sets"


@dataclass(frozen=True)
class RolloutConfig:
    """`[rollout]`: where rolled-out model sets live and when a new one is rolled back."""

    SECTION: ClassVar[str] = "rollout"

    store_dir: Path | None = field(
        default=None,
        metadata={
            "doc": "folder for downloaded model sets and the roll-out state; empty = model-sets/ next to the outbox file"
        },
    )
    max_set_bytes: Annotated[int, Range(1_000_000)] = field(
        default=200_000_000, metadata={"doc": "largest model set (all its files together) the device downloads"}
    )
    observe_s: Annotated[float, Range(1, 86400, unit="seconds")] = field(
        default=600.0,
        metadata={"doc": "how long after a switch the new version is watched and rolled back if its rates collapse"},
    )
    min_windows: Annotated[int, Range(1)] = field(
        default=120,
        metadata={
            "doc": "box windows the new version (and the old one before the switch) must have before they are compared"
        },
    )
    collapse_fraction: Annotated[float, Range(0, 1)] = field(
        default=0.5,
        metadata={
            "doc": "roll back when the new face-visible or scorable rate falls below this fraction of the old one"
        },
    )
    retry_s: Annotated[float, Range(1, 3600, unit="seconds")] = field(
        default=60.0, metadata={"doc": "wait before trying a download again when the server cannot be reached"}
    )


@dataclass
class Swap:
    """Models for the frame loop to switch to, and what to report once it has."""

    models: Models
    version: str
    event: str
    assignment_id: int
    manifest_sha256: str = ""
    reason: str = ""
    assigned_version: str | None = None  # the version the event is about, when not `version` (a rollback)


@dataclass(frozen=True)
class _Seen:
    """One box window, reduced to what the rollback compares."""

    at: float
    version: str
    face_visible: bool
    valid_eyes: int
    abstained_eyes: int


@dataclass
class _Watch:
    """The switch being watched: the old models (for a rollback) and the old rates before it."""

    since: float
    version: str
    assignment_id: int
    previous: Models
    previous_version: str
    previous_sha256: str
    baseline: list[_Seen]


def rates(seen: list[_Seen]) -> tuple[float, float | None]:
    """Share of windows with a face visible, and valid eyes / (valid + abstained) (None: no eyes at all)."""
    face = sum(s.face_visible for s in seen) / len(seen)
    valid = sum(s.valid_eyes for s in seen)
    eyes = valid + sum(s.abstained_eyes for s in seen)
    return face, (valid / eyes if eyes else None)


class RolloutManager:
    """Assignments in (paho's thread), downloads in its own thread, swaps and rollbacks handed to the
    frame loop (`take_swap`, `observe`), events out through the publisher."""

    def __init__(
        self,
        device: str,
        prefix: str,
        config: RolloutConfig,
        server: ServerLinkConfig,
        store_dir: Path,
        shipped_dir: Path,
        loader: Callable[[Path], Models],
    ) -> None:
        self.device = device
        self.prefix = prefix
        self.config = config
        self.server = server
        self.store = ModelStore(store_dir)
        self.shipped_dir = shipped_dir
        self.loader = loader
        self.state = self.store.load_state()
        self.active_version = ""
        self.problem = ""  # for the device status while it lasts
        self._publish: Callable[[str, bytes], None] | None = None
        self._last_event: ModelEvent | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._wanted: ModelAssignment | None = None
        self._handled = 0
        self._retry_at = 0.0
        self._pending: Swap | None = None
        self._watch: _Watch | None = None
        self._seen: deque[_Seen] = deque()
        self._held_since: float | None = None
        self._active_sha256 = ""
        self._thread: threading.Thread | None = None

    # --- start-up -----------------------------------------------------------------------------

    def initial_models(self) -> Models:
        """The rolled-out version the state names, its files checked again; the shipped models when
        there is none or its files are corrupt (reported as "failed" once connected)."""
        version = self.state.active_version
        if version:
            try:
                models = self.loader(self.store.set_dir(version))
                self.active_version, self._active_sha256 = version, self.state.manifest_sha256
                log.info("running rolled-out model set %s from %s", version, self.store.set_dir(version))
                return models
            except MgsError as exc:
                reason = (
                    f"stored model set {version} cannot be used ({exc}); running the shipped models, "
                    "the set is downloaded again while it stays assigned"
                )
                log.error("%s", reason)
                self._event(self.state.assignment_id, version, "failed", reason, previous=version)
                self.state = StoreState(rolled_back=self.state.rolled_back)
                self.store.save_state(self.state)
        return self.loader(self.shipped_dir)

    def attach(self, publish: Callable[[str, bytes], None]) -> None:
        """`publish(topic, payload)` sends retained at QoS 1; the last event is sent again on connect."""
        self._publish = publish

    def connected(self) -> None:
        with self._lock:
            event = self._last_event
        if event is not None:
            self._send(event)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="model-rollout", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)

    # --- paho's thread ------------------------------------------------------------------------

    def on_assignment(self, payload: bytes) -> None:
        try:
            assignment = ModelAssignment.from_json(payload)
        except MessageError as exc:
            log.warning("ignoring a malformed model assignment: %s", exc)
            return
        if assignment.device != self.device:
            log.warning("ignoring a model assignment for device %s", assignment.device)
            return
        with self._lock:
            self._wanted = assignment
        self._wake.set()

    # --- the frame loop -----------------------------------------------------------------------

    def take_swap(self, current: Models) -> Swap | None:
        """Called once per frame: models to switch to before this frame, if any. `current` (what
        scores now) is kept while the new version is watched, for a rollback without loading."""
        with self._lock:
            swap = self._pending
            if swap is None or self._waits_for_baseline(swap):
                return None
            self._pending = None
        previous, previous_sha = self.active_version, self._active_sha256
        self.active_version, self._active_sha256 = swap.version, swap.manifest_sha256
        rolled_back = list(self.state.rolled_back)
        if swap.event == "rolled_back":
            rolled_back.append(swap.assignment_id)
        self.state = StoreState(swap.version, swap.manifest_sha256, swap.assignment_id, rolled_back)
        self.store.save_state(self.state)
        self._watch = None
        if swap.event == "active" and swap.version:
            now = time.monotonic()
            baseline = [s for s in self._seen if s.version == previous and s.at >= now - self.config.observe_s]
            self._watch = _Watch(now, swap.version, swap.assignment_id, current, previous, previous_sha, baseline)
        self.problem = swap.reason if swap.event == "rolled_back" else ""
        log.info("model set %s now scores (%s)", swap.version or "shipped", swap.event)
        assigned = swap.version if swap.assigned_version is None else swap.assigned_version
        self._event(swap.assignment_id, assigned, swap.event, swap.reason, previous=previous)
        return swap

    def _waits_for_baseline(self, swap: Swap) -> bool:
        """A new version is judged against the old one's windows just before the switch, so a device
        that has just started (or come back online to find its assignment) scores `min_windows` more
        windows with the old models first; otherwise the set it picked up would never be watched.
        Not longer than `observe_s`: a rack that gives few windows must not hold a roll-out for ever."""
        if swap.event != "active" or not swap.version:
            return False
        now = time.monotonic()
        recent = sum(1 for s in self._seen if s.version == self.active_version and s.at >= now - self.config.observe_s)
        if self._held_since is None:
            if recent >= self.config.min_windows:
                return False
            self._held_since = now
            log.info(
                "model set %s is ready; it switches once %d window(s) of %s are seen to compare it with (%d so far)",
                swap.version,
                self.config.min_windows,
                self.active_version or "the shipped models",
                recent,
            )
        if recent >= self.config.min_windows or now - self._held_since >= self.config.observe_s:
            self._held_since = None
            return False
        return True

    def observe(self, windows: list[BoxWindow], version: str) -> None:
        """Windows as they are published; during a watch, judge the new version against the old."""
        now = time.monotonic()
        self._seen.extend(_Seen(now, version, w.valid_eyes > 0, w.valid_eyes, w.abstained_eyes) for w in windows)
        while self._seen and self._seen[0].at < now - 2 * self.config.observe_s:
            self._seen.popleft()
        watch = self._watch
        if watch is None:
            return
        new = [s for s in self._seen if s.version == watch.version and s.at >= watch.since]
        if now - watch.since >= self.config.observe_s:
            log.info("model set %s kept: its rates held for %.0f s after the switch", watch.version, now - watch.since)
            self._watch = None
            return
        if len(new) < self.config.min_windows:
            return
        if len(watch.baseline) < self.config.min_windows:
            log.warning(
                "model set %s is not watched for a collapse: only %d window(s) of %s before the switch (min_windows %d)",
                watch.version,
                len(watch.baseline),
                watch.previous_version or "the shipped models",
                self.config.min_windows,
            )
            self._watch = None
            return
        reason = self._collapse(watch, new, now)
        if reason:
            log.error("rolling back model set %s: %s", watch.version, reason)
            self._watch = None
            with self._lock:
                self._pending = Swap(
                    watch.previous,
                    watch.previous_version,
                    "rolled_back",
                    watch.assignment_id,
                    watch.previous_sha256,
                    reason,
                    watch.version,
                )

    def _collapse(self, watch: _Watch, new: list[_Seen], now: float) -> str:
        face_new, scorable_new = rates(new)
        face_old, scorable_old = rates(watch.baseline)
        f = self.config.collapse_fraction
        span = _span(now - watch.since)
        thresholds = (
            f"thresholds [rollout] collapse_fraction = {f:g}, observe_s = {self.config.observe_s:g}, "
            f"min_windows = {self.config.min_windows}"
        )
        old_name = watch.previous_version or "the shipped models"
        if face_new < f * face_old:
            return (
                f"face visible in {face_new:.0%} of {len(new)} windows over {span} with {watch.version} against "
                f"{face_old:.0%} with {old_name} before; {thresholds}"
            )
        if scorable_new is not None and scorable_old is not None and scorable_new < f * scorable_old:
            return (
                f"{scorable_new:.0%} of the eyes found were scorable over {span} with {watch.version} against "
                f"{scorable_old:.0%} with {old_name} before; {thresholds}"
            )
        return ""

    # --- the worker thread --------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            with self._lock:
                wanted = self._wanted
                busy = self._pending is not None
            if wanted is None or busy or wanted.assignment_id == self._handled or time.monotonic() < self._retry_at:
                continue
            try:
                self._follow(wanted)
            except Exception:
                log.exception("model roll-out failed unexpectedly")
                self._handled = wanted.assignment_id
                self._event(wanted.assignment_id, wanted.version, "failed", "unexpected error; see the device log")

    def _follow(self, a: ModelAssignment) -> None:
        if a.assignment_id in self.state.rolled_back:
            log.info("assignment %d (%s) was rolled back here before; not trying it again", a.assignment_id, a.version)
            self._handled = a.assignment_id
            return
        if a.version == self.active_version and a.manifest_sha256 == self._active_sha256:
            self._handled = a.assignment_id
            if self.state.assignment_id != a.assignment_id:
                self.state = StoreState(a.version, a.manifest_sha256, a.assignment_id, self.state.rolled_back)
                self.store.save_state(self.state)
            self._event(a.assignment_id, a.version, "active", "already running this version")
            return
        if not a.version:
            self._hand_over(
                Swap(self.loader(self.shipped_dir), "", "active", a.assignment_id, "", "assignment withdrawn")
            )
            self._handled = a.assignment_id
            return
        self._event(a.assignment_id, a.version, "downloading")
        try:
            models = self._fetch_and_check(a)
        except ServerUnreachable as exc:
            self._retry_at = time.monotonic() + self.config.retry_s
            reason = f"{exc}; trying again in {self.config.retry_s:g} s (check the network and [server] url)"
            log.warning("model set %s: %s", a.version, reason)
            self._event(a.assignment_id, a.version, "downloading", reason)
            return
        except MgsError as exc:
            self._handled = a.assignment_id
            reason = f"{exc}; the previous models keep scoring"
            log.error("model set %s refused: %s", a.version, reason)
            self._event(a.assignment_id, a.version, "failed", reason)
            return
        except OSError as exc:
            self._handled = a.assignment_id
            reason = f"cannot store the set in {self.store.set_dir(a.version)} ({exc}); free disk space, then assign it again"
            log.error("model set %s: %s", a.version, reason)
            self._event(a.assignment_id, a.version, "failed", reason)
            return
        self._handled = a.assignment_id
        self._hand_over(Swap(models, a.version, "active", a.assignment_id, a.manifest_sha256))

    def _hand_over(self, swap: Swap) -> None:
        with self._lock:
            self._pending = swap

    def _fetch_and_check(self, a: ModelAssignment) -> Models:
        """Download what is missing, check every hash, open the models and run the self-test."""
        if not self.server.enabled:
            raise MgsError("no [server] url in device.toml, so the set cannot be downloaded; run provision-device")
        link = ServerLink(self.server)
        folder = self.store.set_dir(a.version)
        folder.mkdir(parents=True, exist_ok=True)
        base = f"/models/{a.version}/"
        link.download(base + MANIFEST_NAME, folder / MANIFEST_NAME, 1_000_000, sha256=a.manifest_sha256)
        manifest = load_manifest(folder)
        if manifest.set is None or manifest.selftest is None:
            raise MgsError(
                f"version {a.version} is not a packaged model set (no set/selftest); make it with mgs-export package"
            )
        if manifest.set.version != a.version:
            raise MgsError(f"the set's manifest names version {manifest.set.version!r}, not {a.version!r}")
        for entry in manifest.entries:
            try:
                check_plain_name(entry.file)
            except ValueError as exc:
                raise MgsError(f"the set's manifest lists {entry.file!r}, which {exc}; the set is refused") from None
        wanted = [(e.file, e.sha256, e.size_bytes) for e in manifest.entries]
        wanted += [(r.file, r.sha256, r.size_bytes) for r in (manifest.selftest, *manifest.reports.values())]
        total = sum(size for _, _, size in wanted)
        if total > self.config.max_set_bytes:
            raise MgsError(
                f"set {a.version} is {total} bytes, more than [rollout] max_set_bytes = {self.config.max_set_bytes}; "
                "raise it if the disk has room"
            )
        for name, sha, size in wanted:
            path = folder / name
            if path.is_file() and path.stat().st_size == size and sha256_file(path) == sha:
                continue
            link.download(base + name, path, size, sha256=sha)
        models = self.loader(folder)
        try:
            summary = run_selftest(models, folder / manifest.selftest.file)
        except MgsError:
            raise
        except Exception as exc:  # onnxruntime's own errors: a graph that loads but cannot run these inputs
            raise MgsError(f"the self-test could not run the models ({type(exc).__name__}: {exc})") from None
        log.info("model set %s: %s", a.version, summary)
        return models

    # --- events -------------------------------------------------------------------------------

    def _event(
        self, assignment_id: int, version: str, event: str, reason: str = "", previous: str | None = None
    ) -> None:
        message = ModelEvent(
            device=self.device,
            assignment_id=assignment_id,
            version=version,
            event=event,
            time=utc_iso(time.time()),
            active_version=self.active_version,
            previous_version=self.active_version if previous is None else previous,
            reason=reason[:1024],
        )
        with self._lock:
            self._last_event = message
        self._send(message)

    def _send(self, message: ModelEvent) -> None:
        if self._publish is not None:
            self._publish(model_event_topic(self.device, self.prefix), message.to_json())


def _span(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def store_dir(config: RolloutConfig, outbox_path: Path) -> Path:
    """`[rollout] store_dir`, or model-sets/ beside the outbox (the device's state folder)."""
    return config.store_dir if config.store_dir is not None else Path(outbox_path).parent / STORE_FOLDER
