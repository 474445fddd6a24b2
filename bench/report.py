"""What the benches share: their synthetic score window, the JSON report file and the load line.

One place for them keeps the benches' reports alike and their windows the same load for the server.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from mgs_core.messages import ScoreWindow, utc_iso

SHA = "5e" * 32


def synthetic_window(device: str, box: int, seq: int, t: float, score: float | None) -> ScoreWindow:
    """A one-second window starting at `t`; `score` None is a window with no face visible."""
    return ScoreWindow(
        device=device,
        box=box,
        seq=seq,
        window_start=utc_iso(t),
        window_end=utc_iso(t + 1.0),
        frames=12,
        valid_eyes=0 if score is None else 2,
        score=score,
        median=score,
        p90=score,
        face_visible_fraction=0.0 if score is None else 0.9,
        model_sha256=SHA,
    )


def machine(**extra: Any) -> dict[str, Any]:
    """What a report says of the machine it ran on, with the load at its end (a shared machine's
    other work slows every figure); `extra` adds or replaces entries (library versions, cores used)."""
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_avg": list(os.getloadavg()),
        **extra,
    }


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def print_load_average(caveat: str) -> None:
    """The load during the run: other processes on a shared machine make every figure slower."""
    print(f"load average during the run: {', '.join(f'{v:.2f}' for v in os.getloadavg())} ({caveat})")
