"""`mgs-server demo`: the whole facility on one machine, from one command.

An MQTT broker, the server and one device run as child processes, exactly as they run in a facility
(`mgs-server run`, `mgs-device run`), so the demo shows the real thing rather than a mock-up. The
device's "camera" is a generated rack video in which one animal's orbital tightening rises past
the alert threshold within the first half minute; four demo animals are assigned to the four
boxes and an alert rule watches them. The video is rendered once into a cache folder and reused.

The broker is Mosquitto when it is installed, otherwise the pure-Python amqtt broker (installed with
the `server` extra). amqtt speaks only MQTT 3.1.1, so with it the server and the device are
configured with `protocol = "3.1.1"`.

Every child runs in its own session, so Ctrl-C reaches only the demo, which stops the device,
then the server, then the broker, each with a deadline; the kernel also terminates a child whose
parent dies without cleaning up (PR_SET_PDEATHSIG), so the demo never leaves processes behind.
"""

from __future__ import annotations

import ctypes
import getpass
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import webbrowser
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import tomlkit

from mgs_core.broker import BrokerConfig
from mgs_core.errors import MgsError
from server.ingest import IngestConfig
from server.provision import toml_table

log = logging.getLogger(__name__)

DEVICE_NAME = "demo-rack"
ADMIN_USER = "admin"
EXPERIMENT = "Demo: post-operative monitoring"
ANIMALS = ("M01", "M02", "M03", "M04")  # box 0..3
STRAIN = "C57BL/6J"
ALERT_THRESHOLD = 6.0
DEVICE_ALERT_S = 5.0
SERVER_RULE_S = 10.0
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_CHARS = 3000
MOSQUITTO_PATHS = ("mosquitto", "/usr/sbin/mosquitto")


@dataclass
class DemoOptions:
    port: int = 8080
    headless: bool = False
    seconds: float | None = None
    video_seconds: float = 60.0
    video_fps: float = 10.0
    seed: int = 0
    cache_dir: Path | None = None
    workdir: Path | None = None
    broker: str = "auto"


@dataclass
class DemoLogin:
    username: str
    password: str
    token: str


@dataclass
class Child:
    """One facility process of the demo, with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM (what systemd sends) to the child's whole process group; SIGKILL after a deadline."""
        if self.proc.poll() is not None:
            return
        _signal_group(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s; killing it", self.name, STOP_TIMEOUT_S)
            _signal_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        _signal_group(self.proc.pid, signal.SIGKILL)  # anything the child left behind in its group


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends SIGTERM when the demo process dies."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Facility:
    """The child processes of a running demo, stopped in reverse order of starting."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[Child] = []
        (workdir / "logs").mkdir(parents=True, exist_ok=True)

    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Child:
        log_path = self.workdir / "logs" / f"{name}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        child = Child(name, proc, log_path)
        self.children.append(child)
        return child

    def wait_ready(self, child: Child, ready: Callable[[], bool], what: str, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if not child.alive():
                raise MgsError(
                    f"{child.name} exited with status {child.proc.returncode} while starting; its log "
                    f"({child.log_path}) ends with:\n{child.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise MgsError(f"{child.name} did not {what} within {timeout:.0f} s; see {child.log_path}")
            time.sleep(0.1)

    def check_running(self) -> None:
        for child in self.children:
            if not child.alive():
                raise MgsError(
                    f"{child.name} stopped unexpectedly (status {child.proc.returncode}); its log "
                    f"({child.log_path}) ends with:\n{child.log_tail()}"
                )

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()


# --- pieces ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mgs-rack" / "demo"


def demo_video(cache_dir: Path, seconds: float, fps: float, seed: int, progress: bool) -> Path:
    """The rack video of the demo, rendered on first use and reused afterwards.

    Rendered under a temporary name and renamed when complete, so an interrupted first run never
    leaves a half video that later runs would take for a finished one.
    """
    from export.synth.demo import truth_path, write_video

    cache_dir.mkdir(parents=True, exist_ok=True)
    video = cache_dir / f"demo-{seconds:g}s-{fps:g}fps-seed{seed}.avi"
    if video.is_file() and truth_path(video).is_file():
        return video
    partial = cache_dir / f".partial-{os.getpid()}-{video.name}"
    print(f"rendering the demo rack video once ({seconds:g} s at {fps:g} fps) into {cache_dir} ...", flush=True)
    try:
        write_video(partial, seconds, fps=fps, seed=seed, trajectory="demo", progress=progress)
        os.replace(truth_path(partial), truth_path(video))
        os.replace(partial, video)
    finally:
        partial.unlink(missing_ok=True)
        truth_path(partial).unlink(missing_ok=True)
    return video


@dataclass
class BrokerChoice:
    """Which broker the demo starts, and the MQTT version the server and the device speak to it."""

    kind: str  # "mosquitto" or "amqtt"
    mosquitto: str = ""  # the Mosquitto binary

    @property
    def protocol(self) -> str:
        return "5" if self.kind == "mosquitto" else "3.1.1"


def find_mosquitto() -> str | None:
    for candidate in MOSQUITTO_PATHS:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def amqtt_installed() -> bool:
    try:
        import amqtt.broker  # noqa: F401
    except ImportError:
        return False
    return True


def choose_broker(wanted: str) -> BrokerChoice:
    """Mosquitto if installed (or asked for), else amqtt; a message that says what to install if neither is there."""
    mosquitto = find_mosquitto() if wanted in ("auto", "mosquitto") else None
    if mosquitto:
        return BrokerChoice("mosquitto", mosquitto)
    if wanted == "mosquitto":
        raise MgsError(
            "--broker mosquitto: Mosquitto is not installed: run `sudo apt-get install mosquitto` "
            "(Debian/Ubuntu), or leave out --broker to use the embedded amqtt broker"
        )
    if amqtt_installed():
        return BrokerChoice("amqtt")
    raise MgsError(
        "the demo needs an MQTT broker: install Mosquitto (`sudo apt-get install mosquitto`) or the "
        "embedded one with the server extra (`pip install -e '.[server]'`), then start the demo again"
    )


def start_broker(facility: Facility, choice: BrokerChoice) -> tuple[Child, int]:
    if choice.kind == "mosquitto":
        return start_mosquitto(facility, choice.mosquitto)
    return start_amqtt(facility)


def start_amqtt(facility: Facility) -> tuple[Child, int]:
    """amqtt in its own process (`python -m amqtt.scripts.broker_script`), loopback only, on a free port.

    Clients must give a user name (any name, no password): amqtt keeps nothing for a disconnected
    anonymous session, so with anonymous clients what the device publishes while the server is
    disconnected would be lost at the broker instead of waiting in the server's session."""
    port = free_port()
    conf = facility.workdir / "amqtt.yaml"
    conf.write_text(
        f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\n"
        "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: false\n"
    )
    child = facility.spawn("broker", [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(conf)])
    facility.wait_ready(child, lambda: port_open(port), f"listen on port {port}")
    return child, port


def start_mosquitto(facility: Facility, mosquitto: str) -> tuple[Child, int]:
    """A loopback-only, anonymous Mosquitto on a free port with a throw-away config."""
    port = free_port()
    conf = facility.workdir / "mosquitto.conf"
    # `user` keeps a root-started Mosquitto from switching user, which would clear its PDEATHSIG.
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"user {getpass.getuser()}\n"
        "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n"
    )
    child = facility.spawn("broker", [mosquitto, "-c", str(conf)])
    facility.wait_ready(child, lambda: port_open(port), f"listen on port {port}")
    return child, port


def write_server_config(workdir: Path, broker_port: int, http_port: int, protocol: str) -> Path:
    ingest = IngestConfig(
        host="127.0.0.1", port=broker_port, client_id="mgs-demo-server", username="mgs-demo-server", protocol=protocol
    )
    doc = tomlkit.document()
    doc.add(tomlkit.comment("mgs-server demo: everything on this machine, nothing reachable from outside."))
    doc.add("database", toml_table(path="mgs-server.sqlite"))
    doc.add("ingest", toml_table(**broker_keys(ingest)))
    doc.add("http", toml_table(host="127.0.0.1", port=http_port))
    doc.add("dashboard", toml_table(refresh_s=2.0, history_hours=0.25, plot_threshold=ALERT_THRESHOLD))
    path = workdir / "server.toml"
    path.write_text(tomlkit.dumps(doc))
    return path


def write_device_config(workdir: Path, video: Path, broker_port: int, preview_port: int, protocol: str) -> Path:
    """The demo device: the rendered video as its camera, played in real time and looped."""
    from export.synth.demo import read_video_truth

    mqtt = BrokerConfig(host="127.0.0.1", port=broker_port, username=DEVICE_NAME, protocol=protocol)
    doc = tomlkit.document()
    doc.add(tomlkit.comment("mgs-server demo device: a generated rack video stands in for the camera."))
    doc.add("name", DEVICE_NAME)
    doc.add("mqtt", toml_table(**broker_keys(mqtt)))
    doc.add("camera", toml_table(source=str(video), kind="file", loop=True, realtime=True))
    doc.add("rois", toml_table(boxes=[list(roi) for roi in read_video_truth(video).rois]))
    doc.add("alerts", toml_table(threshold=ALERT_THRESHOLD, min_duration_s=DEVICE_ALERT_S, cooldown_s=30.0))
    doc.add("outbox", toml_table(path="outbox.sqlite"))
    doc.add("status", toml_table(interval_s=5.0))
    doc.add("http", toml_table(host="127.0.0.1", port=preview_port))
    path = workdir / "device.toml"
    path.write_text(tomlkit.dumps(doc))
    return path


def broker_keys(config: BrokerConfig) -> dict[str, object]:
    """The broker keys the demo sets, as its TOML section holds them (the rest keep their defaults)."""
    return {k: getattr(config, k) for k in ("host", "port", "prefix", "username", "client_id", "protocol")}


def seed_database(server_config: Path) -> DemoLogin:
    """The demo's admin login, an API token, four animals in the four boxes and an alert rule."""
    from export.synth.demo import DEMO_RISING_BOX
    from server import auth
    from server.config import load_server_config
    from server.db import connect
    from server.repository import Repository

    config = load_server_config(server_config)
    db = connect(config.database.path)
    try:
        password = secrets.token_urlsafe(12)
        user_id = auth.create_user(db, ADMIN_USER, password, "admin")
        token = auth.create_token(db, user_id, "mgs-server demo")
        repo = Repository(db)
        repo.register_device(DEVICE_NAME)
        experiment = repo.create_experiment(
            EXPERIMENT,
            f"Generated rack video: the animal in box {DEMO_RISING_BOX} has "
            f"a painful procedure and its orbital tightening rises past "
            f"{ALERT_THRESHOLD:g}.",
        )
        start = time.time() - 60
        for box, name in enumerate(ANIMALS):
            animal = repo.create_animal(name, strain=STRAIN, experiment_id=experiment)
            repo.create_assignment(animal, DEVICE_NAME, box, start, note="mgs-server demo", created_by=ADMIN_USER)
        repo.create_alert_rule(ALERT_THRESHOLD, SERVER_RULE_S, experiment_id=experiment)
    finally:
        db.close()
    return DemoLogin(ADMIN_USER, password, token)


# --- the demo -------------------------------------------------------------------------------------


@dataclass
class DemoUrls:
    dashboard: str
    preview: str
    broker: str


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(options: DemoOptions) -> int:
    """Start everything, print how to reach it, run until Ctrl-C (or --seconds), stop everything."""
    http_port = options.port or free_port()
    if port_open(http_port):
        raise MgsError(f"port {http_port} is already in use; choose another with --port (0 = any free port)")
    broker = choose_broker(options.broker)
    cache_dir = options.cache_dir or default_cache_dir()
    video = demo_video(cache_dir, options.video_seconds, options.video_fps, options.seed, progress=not options.headless)

    owns_workdir = options.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="mgs-demo-")) if owns_workdir else options.workdir
    assert workdir is not None
    workdir.mkdir(parents=True, exist_ok=True)
    facility = Facility(workdir)
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    # A shell starts a background job (`make demo &`, a script) with SIGINT ignored, and Python keeps
    # that: Ctrl-C or `kill -INT` would then never stop the demo. It always stops on SIGINT.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    stopped_by_user = False
    failed = True
    try:
        try:
            print(f"starting the {broker.kind} MQTT broker (MQTT {broker.protocol}) ...", flush=True)
            _, broker_port = start_broker(facility, broker)
            server_config = write_server_config(workdir, broker_port, http_port, broker.protocol)
            login = seed_database(server_config)
            server = facility.spawn(
                "server", [sys.executable, "-m", "server.cli", "run", "--config", str(server_config)]
            )
            facility.wait_ready(server, lambda: port_open(http_port), f"serve the dashboard on port {http_port}")
            preview_port = free_port()
            device_config = write_device_config(workdir, video, broker_port, preview_port, broker.protocol)
            device = facility.spawn(
                "device", [sys.executable, "-m", "device.cli", "run", "--config", str(device_config)]
            )
            facility.wait_ready(device, lambda: port_open(preview_port), f"serve its preview on port {preview_port}")
            urls = DemoUrls(
                f"http://127.0.0.1:{http_port}/",
                f"http://127.0.0.1:{preview_port}/",
                f"{broker.kind} on 127.0.0.1:{broker_port} (MQTT {broker.protocol})",
            )
            _print_banner(urls, login, workdir, options)
            if not options.headless:
                _open_browser(urls.dashboard)
            deadline = None if options.seconds is None else time.monotonic() + options.seconds
            while deadline is None or time.monotonic() < deadline:
                facility.check_running()
                time.sleep(0.5)
            failed = False
        except KeyboardInterrupt:
            stopped_by_user, failed = True, False
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("stopping the demo (device, server, broker) ...", flush=True)
            facility.stop()
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
        if owns_workdir and not failed:
            shutil.rmtree(workdir, ignore_errors=True)
        elif failed:
            print(f"configs and logs kept in {workdir}", flush=True)
    print("demo stopped" + (" (Ctrl-C)" if stopped_by_user else ""), flush=True)
    return 0


def _print_banner(urls: DemoUrls, login: DemoLogin, workdir: Path, options: DemoOptions) -> None:
    from export.synth.demo import DEMO_RISING_BOX, demo_threshold_crossing_s

    lines = [
        "",
        "mgs-rack demo is running: one broker, the server and one device scoring a generated rack video",
        f"  dashboard:      {urls.dashboard}",
        f"  login:          {login.username} / {login.password}",
        f"  API token:      {login.token}",
        f"  device preview: {urls.preview}",
        f"  broker:         {urls.broker}",
        f"  logs:           {workdir / 'logs'}",
        f"The animal {ANIMALS[DEMO_RISING_BOX]} in box {DEMO_RISING_BOX} gets worse: its score passes "
        f"{ALERT_THRESHOLD:g} about {demo_threshold_crossing_s(options.video_seconds, ALERT_THRESHOLD):.0f} s "
        "into the video and raises an alert.",
        "Stop with Ctrl-C." if options.seconds is None else f"Stops by itself after {options.seconds:g} s (or Ctrl-C).",
        "",
    ]
    print("\n".join(lines), flush=True)


def _open_browser(url: str) -> None:
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform == "darwin":
        try:
            webbrowser.open(url)
        except webbrowser.Error:
            log.info("no web browser to open; visit %s", url)
