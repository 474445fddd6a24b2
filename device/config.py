"""`device.toml`: the one config file of an edge box, read and checked before anything starts.

Each section is the config dataclass of the module that uses it; this module only puts them
together. A bad value stops `mgs-device run` with the key, the value and the reason. Relative
paths are relative to the working directory (the systemd unit sets it to /var/lib/mgs-device).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from device.aggregate import AggregationConfig
from device.alerts import AlertConfig
from device.capture import CaptureConfig
from mgs_core.errors import MessageError
from device.inference import BackendConfig
from mgs_core.messages import validate_name
from device.offload import OffloadConfig
from device.outbox import OutboxConfig
from device.pipeline import PipelineConfig
from device.publisher import MqttConfig
from device.rois import RoiConfig
from mgs_core.tomlconfig import fail, load_config


@dataclass(frozen=True)
class ModelsConfig:
    dir: Path | None = field(default=None, metadata={
        "doc": "folder with manifest.json and the ONNX files; empty = $MGS_MODELS_DIR, else the installed models/"})


@dataclass(frozen=True)
class StatusConfig:
    interval_s: float = field(default=10.0, metadata={"doc": "seconds between retained status messages"})

    def check(self) -> None:
        if not 1 <= self.interval_s <= 3600:
            raise fail("status.interval_s", self.interval_s, "must be 1-3600 seconds")


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = field(default=True, metadata={"doc": "serve the local health page and camera preview"})
    host: str = field(default="0.0.0.0", metadata={"doc": "address to listen on (127.0.0.1 = only on the device itself)"})
    port: int = field(default=8080, metadata={"doc": "port of the local page (http://DEVICE:8080/)"})
    preview_interval_s: float = field(default=1.0, metadata={"doc": "how often the preview page reloads the picture"})

    def check(self) -> None:
        if not 0 <= self.port < 65536:
            raise fail("http.port", self.port, "must be 0-65535 (0 = any free port)")
        if not 0.1 <= self.preview_interval_s <= 60:
            raise fail("http.preview_interval_s", self.preview_interval_s, "must be 0.1-60 seconds")


@dataclass
class DeviceConfig:
    """`device.toml`; see device.example.toml for a commented example."""

    name: str = field(metadata={"doc": "device name: a topic level and the server's key for this rack (letters, digits, _ - .)"})
    target_fps: float = field(default=10.0, metadata={"doc": "frames per second the device should score; status shows it next to the measured rate"})
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    camera: CaptureConfig = field(default_factory=CaptureConfig)
    rois: RoiConfig = field(default_factory=RoiConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    offload: OffloadConfig = field(default_factory=OffloadConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    alerts: AlertConfig = field(default_factory=AlertConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    http: HttpConfig = field(default_factory=HttpConfig)

    def check(self) -> None:
        try:
            validate_name(self.name)
        except MessageError as exc:
            raise fail("name", self.name, str(exc)) from None
        if not 0 < self.target_fps <= 120:
            raise fail("target_fps", self.target_fps, "must be above 0 and at most 120")
        if not self.rois.boxes:
            raise fail("rois.boxes", self.rois.boxes,
                       "no boxes configured; run `mgs-device detect-boxes --config FILE` or type them in as [x, y, w, h]")


def load_device_config(path: str | os.PathLike[str]) -> DeviceConfig:
    return load_config(DeviceConfig, path)
