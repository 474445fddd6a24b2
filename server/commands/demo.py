"""`mgs-server demo`: broker, server and one device on a generated rack video, on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path

from mgs_core.errors import MgsError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8080, help="dashboard port (default 8080; 0 = any free port)")
    parser.add_argument("--headless", action="store_true", help="do not open a web browser; for tests and servers")
    parser.add_argument(
        "--seconds", type=float, help="stop by itself after this many seconds (default: run until Ctrl-C)"
    )
    parser.add_argument(
        "--video-seconds",
        type=float,
        default=60.0,
        help="length of the generated rack video, played in a loop (default 60)",
    )
    parser.add_argument("--video-fps", type=float, default=10.0, help="frame rate of the generated video (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated video (default 0)")
    parser.add_argument(
        "--cache-dir", type=Path, help="where the rendered video is kept between runs (default ~/.cache/mgs-rack/demo)"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the database, configs and logs here (default: a temporary folder removed at exit)",
    )
    parser.add_argument(
        "--broker",
        choices=("auto", "mosquitto", "amqtt"),
        default="auto",
        help="MQTT broker: Mosquitto if installed, else the embedded amqtt (auto, the default), or either one",
    )


def run(args: argparse.Namespace) -> int:
    from server.demo import DemoOptions, run_demo

    if not 0 <= args.port <= 65535:
        raise MgsError(f"--port {args.port}: use 1-65535, or 0 for any free port")
    if args.seconds is not None and args.seconds <= 0:
        raise MgsError(f"--seconds {args.seconds:g}: must be more than 0")
    if not 5 <= args.video_seconds <= 3600:
        raise MgsError(f"--video-seconds {args.video_seconds:g}: use 5 to 3600 seconds")
    if not 1 <= args.video_fps <= 30:
        raise MgsError(f"--video-fps {args.video_fps:g}: use 1 to 30 frames per second")
    return run_demo(
        DemoOptions(
            port=args.port,
            headless=args.headless,
            seconds=args.seconds,
            video_seconds=args.video_seconds,
            video_fps=args.video_fps,
            seed=args.seed,
            cache_dir=args.cache_dir,
            workdir=args.workdir,
            broker=args.broker,
        )
    )
