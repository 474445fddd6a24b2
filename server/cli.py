"""`mgs-server`: the central server, user and device administration, and the one-command demo."""

from __future__ import annotations

from collections.abc import Sequence

from mgs_core.clitools import Command, dispatch

COMMANDS = [
    Command("run", "server.commands.run", "run the ingest worker and the dashboard"),
    Command("create-user", "server.commands.create_user", "create a dashboard login (viewer, officer or admin)"),
    Command("create-token", "server.commands.create_token", "create an API token for scripts"),
    Command(
        "provision-device",
        "server.commands.provision_device",
        "create broker credentials and a config for a new device",
    ),
    Command(
        "export-dataset",
        "server.commands.export_dataset",
        "write reviewed samples as a labelled dataset for mgs-export (fine-tuning, evaluation)",
    ),
    Command(
        "demo", "server.commands.demo", "run broker, server and one device on a generated rack video on this machine"
    ),
]


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("mgs-server", "mgs-rack central server", COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
