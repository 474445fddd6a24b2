"""The shipped systemd units pass `systemd-analyze verify` and keep their hardening.

The units name the production install path (/opt/mgs-rack/venv); the test points them at this
checkout's virtualenv in a temporary copy so `verify` can resolve the ExecStart binaries.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"
INSTALL_BIN = "/opt/mgs-rack/venv/bin"
VENV_BIN = str(Path(sys.executable).parent)
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
UNIT_NAMES = ["mgs-device.service", "mgs-server.service", "mgs-gpu-host.service"]


def _service(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser["Service"]


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE
    return subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_unit_verifies_without_warnings(name: str, tmp_path: Path) -> None:
    if not SYSTEMD_ANALYZE:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    text = (UNITS / name).read_text()
    assert INSTALL_BIN in text
    unit = tmp_path / name
    unit.write_text(text.replace(INSTALL_BIN, VENV_BIN))
    result = _verify(unit)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_verify_catches_a_missing_binary(tmp_path: Path) -> None:
    """Guards the test above: with the production path unresolved here, verify must complain."""
    if not SYSTEMD_ANALYZE:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    unit = tmp_path / "mgs-device.service"
    unit.write_text((UNITS / "mgs-device.service").read_text().replace(INSTALL_BIN, str(tmp_path / "nowhere")))
    result = _verify(unit)
    assert result.returncode != 0 and "not executable" in result.stderr


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_unit_runs_unprivileged_and_hardened(name: str) -> None:
    svc = _service(name)
    assert svc["User"] == "mgs" and svc["Group"] == "mgs"
    assert svc["Restart"] == "on-failure" and svc["RestartPreventExitStatus"] == "2"
    assert svc["ProtectSystem"] == "strict"
    assert svc["WorkingDirectory"] == f"/var/lib/{svc['StateDirectory']}"
    for key in (
        "NoNewPrivileges",
        "PrivateTmp",
        "ProtectHome",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "RestrictNamespaces",
        "RestrictSUIDSGID",
    ):
        assert svc[key] == "yes", key
    assert svc["CapabilityBoundingSet"] == ""
    assert "AF_PACKET" not in svc["RestrictAddressFamilies"]


def test_device_unit_may_open_the_camera_but_no_other_device() -> None:
    svc = _service("mgs-device.service")
    assert "PrivateDevices" not in svc
    assert svc["DevicePolicy"] == "closed" and svc["SupplementaryGroups"] == "video"
    assert svc["DeviceAllow"].startswith("char-")
    assert "run --config /etc/mgs-rack/device.toml" in svc["ExecStart"]


def test_device_unit_uses_the_runners_notifications() -> None:
    """device/runner.py sends READY=1 and WATCHDOG=1 over NOTIFY_SOCKET: the unit must ask for both."""
    svc = _service("mgs-device.service")
    runner = (UNITS.parent / "device" / "runner.py").read_text()
    assert 'sd_notify("READY=1")' in runner and 'sd_notify("WATCHDOG=1")' in runner
    assert svc["Type"] == "notify" and svc["NotifyAccess"] == "main" and int(svc["WatchdogSec"]) >= 30


def test_server_unit_has_no_devices() -> None:
    svc = _service("mgs-server.service")
    assert svc["PrivateDevices"] == "yes"
    assert "run --config /etc/mgs-rack/server.toml" in svc["ExecStart"]
