"""`server.toml`: one typed, strict config for the whole server process.

Sections: [database], [ingest] (the MQTT side, `server.ingest.IngestConfig`), [http], [auth],
[dashboard], [videos], [review], [samples] (expert-review uploads) and [models] (the model registry).
Relative paths are taken relative to the config file, so a config can be moved together with its
database. The session secret is generated on first start and kept next to the
database when none is configured: logins then survive restarts without anyone handling a secret.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mgs_core.errors import ConfigError
from mgs_core.messages import SCORE_MAX, SCORE_MIN
from mgs_core.tomlconfig import Range, fail, load_config
from server.ingest import IngestConfig
from server.model_registry import ModelsConfig
from server.sample_store import SamplesConfig
from server.video_jobs import VideosConfig

log = logging.getLogger(__name__)

SECRET_KEY_MIN_CHARS = 32
OT_SCALE = Range(SCORE_MIN, SCORE_MAX, note="the orbital tightening scale")


@dataclass
class DatabaseConfig:
    SECTION: ClassVar[str] = "database"

    path: Path = field(
        default=Path("mgs-server.sqlite"),
        metadata={
            "doc": "SQLite file with the score history, users and tokens (created if missing; relative to the config file)"
        },
    )


@dataclass
class HttpConfig:
    SECTION: ClassVar[str] = "http"

    host: str = field(
        default="127.0.0.1",
        metadata={
            "doc": "address the dashboard listens on (0.0.0.0 = every interface; put HTTPS in front for other hosts)"
        },
    )
    port: Annotated[int, Range(1, 65535)] = field(
        default=8080, metadata={"doc": "TCP port of the dashboard and the REST API"}
    )
    threads: Annotated[int, Range(1, 64)] = field(default=8, metadata={"doc": "request threads of the web server"})
    secret_key: str = field(
        default="", metadata={"doc": "session signing secret; empty = read or create secret_key_file"}
    )
    secret_key_file: Path = field(
        default=Path(""), metadata={"doc": "file holding the session secret; empty = 'secret_key' next to the database"}
    )
    cookie_secure: bool = field(
        default=False, metadata={"doc": "send the session cookie over HTTPS only (set true behind an HTTPS proxy)"}
    )
    max_request_kb: Annotated[int, Range(16, 1024 * 1024, unit="KiB")] = field(
        default=1024,
        metadata={"doc": "largest request body accepted, in KiB; larger ones are refused with 413 before being read"},
    )

    def check(self) -> None:
        if self.secret_key and len(self.secret_key) < SECRET_KEY_MIN_CHARS:
            raise fail(
                "secret_key",
                "(hidden)",
                f"must be at least {SECRET_KEY_MIN_CHARS} characters, or leave it empty to have one generated",
            )


@dataclass
class AuthConfig:
    SECTION: ClassVar[str] = "auth"

    session_hours: Annotated[float, Range(0.05, 24 * 30, unit="hours")] = field(
        default=12.0,
        metadata={"doc": "a login ends after this long without any request (an open dashboard page keeps it alive)"},
    )
    max_failed_logins: Annotated[int, Range(1, 1000)] = field(
        default=5,
        metadata={"doc": "failed logins for one user name from one address before it is locked out for a while"},
    )
    lockout_minutes: Annotated[float, Range(0, 24 * 60, above=True, unit="minutes")] = field(
        default=10.0, metadata={"doc": "how long such a lockout lasts"}
    )


@dataclass
class DashboardConfig:
    SECTION: ClassVar[str] = "dashboard"

    refresh_s: Annotated[float, Range(1, 600, unit="seconds")] = field(
        default=5.0, metadata={"doc": "how often open pages fetch new data"}
    )
    stale_after_s: Annotated[float, Range(5, 86400, unit="seconds")] = field(
        default=120.0,
        metadata={"doc": "a box whose last score is older than this is shown as 'no data for N min', not as a score"},
    )
    warn_score: Annotated[float, OT_SCALE] = field(
        default=4.0,
        metadata={
            "doc": "a score at or above this makes a box 'high'; the overview ranks boxes by their minutes above it"
        },
    )
    plot_threshold: Annotated[float, OT_SCALE] = field(
        default=6.0, metadata={"doc": "threshold line drawn on history plots when no alert rule applies to the animal"}
    )
    history_hours: Annotated[float, Range(0.1, 24 * 365, unit="hours")] = field(
        default=6.0, metadata={"doc": "time range a history page opens with"}
    )
    clock_skew_s: Annotated[float, Range(0, 86400, unit="seconds")] = field(
        default=300.0,
        metadata={
            "doc": "a box whose last window ends more than this after the server's clock shows 'clock ahead', "
            "not a current score"
        },
    )
    timezone: str = field(
        default="UTC",
        metadata={"doc": "IANA time zone every page, report and export shows times in, e.g. Europe/Berlin"},
    )
    severity_steps: list[float] = field(
        default_factory=lambda: [2.0, 4.0, 6.0, 7.5],
        metadata={
            "doc": "four ascending scores where the overview colour scale steps up: slight, moderate, marked, severe"
        },
    )

    def check(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise fail(
                "dashboard.timezone", self.timezone, "must be an IANA time zone name such as UTC or Europe/Berlin"
            ) from None
        steps = self.severity_steps
        if len(steps) != 4 or any(not 0 < s <= 9 for s in steps) or sorted(set(steps)) != list(steps):
            raise fail("dashboard.severity_steps", steps, "must be four strictly ascending scores from 0 to 9")


@dataclass
class ReviewConfig:
    SECTION: ClassVar[str] = "review"

    raters_per_sample: Annotated[int, Range(1, 20)] = field(
        default=2,
        metadata={"doc": "ratings a sample needs before it leaves the review queue and counts on the agreement page"},
    )
    show_model_score: bool = field(
        default=False,
        metadata={"doc": "show the model's score on the review page (false = raters score blind to the model)"},
    )


@dataclass
class ServerConfig:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    videos: VideosConfig = field(default_factory=VideosConfig)
    review: ReviewConfig = field(default_factory=ReviewConfig)
    samples: SamplesConfig = field(default_factory=SamplesConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)

    def resolve_paths(self, base: Path) -> None:
        """Make relative paths relative to `base` (the config file's folder)."""
        if not self.database.path.is_absolute():
            self.database.path = base / self.database.path
        if str(self.http.secret_key_file) not in ("", ".") and not self.http.secret_key_file.is_absolute():
            self.http.secret_key_file = base / self.http.secret_key_file


def load_server_config(path: str | os.PathLike[str]) -> ServerConfig:
    """Read and validate `server.toml`; raises ConfigError naming the key on any problem."""
    config = load_config(ServerConfig, path)
    config.resolve_paths(Path(path).resolve().parent)
    return config


def secret_key(config: ServerConfig) -> str:
    """The configured session secret, or the one kept in the secret key file (created once)."""
    if config.http.secret_key:
        return config.http.secret_key
    path = config.http.secret_key_file
    if str(path) in ("", "."):
        path = config.database.path.parent / "secret_key"
    existing = _read_secret(path)
    if existing is not None:
        return existing
    key = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(key + "\n")
    except FileExistsError:  # another process created it first: use theirs
        return _read_secret(path) or key
    except OSError as exc:
        raise ConfigError(
            f"cannot create the session secret {path}: {exc.strerror}; make its folder writable "
            "or set [http] secret_key"
        ) from None
    log.info("generated a new session secret in %s", path)
    return key


def _read_secret(path: Path) -> str | None:
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the session secret {path}: {exc.strerror}; fix its permissions or set [http] secret_key"
        ) from None
    if len(existing) < SECRET_KEY_MIN_CHARS:
        raise ConfigError(
            f"session secret file {path} holds fewer than {SECRET_KEY_MIN_CHARS} characters; "
            "delete it to have a new one generated (everyone will have to log in again)"
        )
    return existing
