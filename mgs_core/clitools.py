"""Lazy sub-command dispatch shared by `mgs-device`, `mgs-server` and `mgs-export`.

Each sub-command lives in its own module with `configure(parser)` and `run(args) -> int`. Modules
are imported only when their command runs, so `mgs-export synth` works without torch installed and
`mgs-device --help` starts instantly on a Raspberry Pi. A `MgsError` is printed as one line and
exits 2: lab staff get the message that says what to do, not a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from mgs_core.errors import MgsError


@dataclass(frozen=True)
class Command:
    name: str
    module: str
    help: str


def dispatch(prog: str, description: str, commands: Sequence[Command], argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    by_name = {c.name: c for c in commands}
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for c in commands:
        p = sub.add_parser(c.name, help=c.help, description=c.help)
        if c.name == chosen:
            importlib.import_module(c.module).configure(p)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    module = importlib.import_module(by_name[args.command].module)
    try:
        return int(module.run(args) or 0)
    except MgsError as exc:
        print(f"{prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog} {args.command}: interrupted", file=sys.stderr)
        return 130
