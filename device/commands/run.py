"""`mgs-device run`: score the rack and publish, until stopped (systemd runs this all day)."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=Path("device.toml"),
        help="device config file (default ./device.toml; see device.example.toml)",
    )
    parser.add_argument("--max-seconds", type=float, help="stop after this many seconds (tests, demos)")
    parser.add_argument("--max-frames", type=int, help="stop after scoring this many frames (tests, demos)")
    parser.add_argument("--check", action="store_true", help="only validate the config file and exit")


def run(args: argparse.Namespace) -> int:
    from device.config import load_device_config
    from mgs_core.errors import MgsError

    if args.max_seconds is not None and args.max_seconds <= 0:
        raise MgsError("--max-seconds must be more than 0")
    if args.max_frames is not None and args.max_frames <= 0:
        raise MgsError("--max-frames must be more than 0")
    config = load_device_config(args.config)
    if args.check:
        print(
            f"{args.config}: OK (device {config.name}, {len(config.rois.boxes)} box(es), broker "
            f"{config.mqtt.host}:{config.mqtt.port})"
        )
        return 0
    from device.runner import DeviceRunner

    return DeviceRunner(config, max_frames=args.max_frames, max_seconds=args.max_seconds).run()
