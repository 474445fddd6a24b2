"""The in-place progress line both synthetic writers draw on stderr, so a long render shows it is alive."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field


@dataclass
class FrameProgress:
    """Redraws "done/total frames, rate, time left" every `every` frames and at the last one."""

    total: int
    every: int
    enabled: bool = True
    start: float = field(default_factory=time.perf_counter)

    def update(self, done: int) -> None:
        if not self.enabled or (done != self.total and done % self.every):
            return
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        print(
            f"\r  {done}/{self.total} frames  {rate:.1f} frames/s  ETA {(self.total - done) / rate:.0f} s   ",
            end="",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        """Ends the line, so what is printed next starts on its own."""
        if self.enabled:
            print(file=sys.stderr)
