"""The configuration reference in docs/ must be what the code accepts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from device.config import DeviceConfig
from mgs_core.tomlconfig import describe, load_config
from server.config import ServerConfig

ROOT = Path(__file__).resolve().parent.parent


def test_generated_reference_is_up_to_date() -> None:
    result = subprocess.run([sys.executable, "scripts/gen_config_reference.py", "--check"], cwd=ROOT)
    assert result.returncode == 0, (
        "docs/configuration.md is stale: run .venv/bin/python scripts/gen_config_reference.py"
    )


def test_reference_walks_sections_and_lists_of_sections() -> None:
    keys = {row[0] for row in describe(DeviceConfig)}
    assert "name" in keys
    assert any(k.startswith("rois.") for k in keys), sorted(keys)
    assert any(k.startswith("mqtt.") for k in keys)


def test_example_configs_load() -> None:
    assert load_config(DeviceConfig, ROOT / "device.example.toml").name
    assert load_config(ServerConfig, ROOT / "server.example.toml")
