"""`device.toml`: the one config file of an edge box, read and checked before anything starts.

Each section is the config dataclass of the module that uses it; this module only puts them
together. A bad value stops `mgs-device run` with the key, the value and the reason. Relative
paths are relative to the working directory (the systemd unit sets it to /var/lib/mgs-device).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar

from device.aggregate import AggregationConfig
from device.alerts import AlertConfig
from device.capture import CaptureConfig
from device.inference import BackendConfig
from device.offload import OffloadConfig
from device.outbox import OutboxConfig
from device.pipeline import PipelineConfig
from device.publisher import MqttConfig
from device.rois import RoiConfig
from device.rollout import RolloutConfig
from device.sampling import SamplingConfig
from device.server_link import ServerLinkConfig
from mgs_core.messages import validate_name
from mgs_core.tomlconfig import Check, Range, fail, load_config


@dataclass(frozen=True)
class ModelsConfig:
    SECTION: ClassVar[str] = "models"

    dir: Path | None = field(
        default=None,
        metadata={
            "doc": "folder with manifest.json and the ONNX files; empty = $MGS_MODELS_DIR, else the installed models/"
        },
    )


@dataclass(frozen=True)
class StatusConfig:
    SECTION: ClassVar[str] = "status"

    interval_s: Annotated[float, Range(1, 3600, unit="seconds")] = field(
        default=10.0, metadata={"doc": "seconds between retained status messages"}
    )


@dataclass(frozen=True)
class HttpConfig:
    SECTION: ClassVar[str] = "http"

    enabled: bool = field(default=True, metadata={"doc": "serve the local health page and camera preview"})
    host: str = field(
        default="0.0.0.0", metadata={"doc": "address to listen on (127.0.0.1 = only on the device itself)"}
    )
    port: Annotated[int, Range(0, 65535, note="0 = any free port")] = field(
        default=8080, metadata={"doc": "port of the local page (http://DEVICE:8080/)"}
    )
    preview_interval_s: Annotated[float, Range(0.1, 60, unit="seconds")] = field(
        default=1.0, metadata={"doc": "how often the preview page reloads the picture"}
    )


@dataclass
class DeviceConfig:
    """`device.toml`; see device.example.toml for a commented example."""

    name: Annotated[str, Check(validate_name)] = field(
        metadata={"doc": "device name: a topic level and the server's key for this rack (letters, digits, _ - .)"}
    )
    target_fps: Annotated[float, Range(0, 120, above=True)] = field(
        default=10.0,
        metadata={"doc": "frames per second the device should score; status shows it next to the measured rate"},
    )
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
    server: ServerLinkConfig = field(default_factory=ServerLinkConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def check(self) -> None:
        if not self.rois.boxes:
            raise fail(
                "rois.boxes",
                self.rois.boxes,
                "no boxes configured; run `mgs-device detect-boxes --config FILE` or type them in as [x, y, w, h]",
            )


def load_device_config(path: str | os.PathLike[str]) -> DeviceConfig:
    return load_config(DeviceConfig, path)
