"""`mgs-device`: the program an edge box runs next to a rack."""

from __future__ import annotations

from collections.abc import Sequence

from mgs_core.clitools import Command, dispatch

COMMANDS = [
    Command("run", "device.commands.run", "score the rack from the camera and publish over MQTT (runs all day)"),
    Command(
        "detect-boxes",
        "device.commands.detect_boxes",
        "find the four boxes in a rack frame and write them to the config",
    ),
    Command("score", "device.commands.score", "score recorded videos offline: CSVs, plots, summaries, annotated MP4"),
    Command("bench", "device.commands.bench", "end-to-end throughput and latency on a generated rack video"),
    Command("gpu-host", "device.commands.gpu_host", "serve offloaded ROIs from devices that cannot keep up"),
]


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("mgs-device", "mgs-rack edge device", COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
