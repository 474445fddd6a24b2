"""Per-animal orbital-tightening score over a video: what a welfare officer would see.

Baselines sit at 2-4, where most real frames score (docs/synth.md); after a painful procedure a
score rises above 6 and an analgesic brings it back. Times are fractions of the video, so the
same story plays in a 2-minute demo and a 2-hour soak test, except `demo`, which is fixed in
seconds so the first alert fires within about a minute.
"""

from __future__ import annotations

import numpy as np

TRAJECTORIES = ("postop", "demo", "baseline", "sweep")

# The `demo` story: the animal in DEMO_RISING_BOX ramps from its baseline to DEMO_PEAK between
# min(10 s, 15 %) and min(50 s, 60 %) of the video; the others stay at baseline.
DEMO_RISING_BOX = 1
DEMO_PEAK = 7.6
DEMO_RAMP_START = (10.0, 0.15)
DEMO_RAMP_END = (50.0, 0.6)
BASELINE_RANGE = (2.2, 3.8)


def smooth_noise(rng: np.random.Generator, t: np.ndarray, periods: tuple[float, float], n: int = 3) -> np.ndarray:
    """Sum of `n` sinusoids with periods (s) in the given range, scaled to about [-1, 1]."""
    out = np.zeros_like(t, dtype=np.float64)
    for _ in range(n):
        period = rng.uniform(*periods)
        out += np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    return out / n


def ramp(t: np.ndarray, start: float, end: float) -> np.ndarray:
    """0 before start, 1 after end, a smooth S in between."""
    x = np.clip((t - start) / max(end - start, 1e-6), 0.0, 1.0)
    return x * x * (3 - 2 * x)


def demo_ramp(total_s: float) -> tuple[float, float]:
    """(start, end) in seconds of the rising animal's ramp in a `demo` video of `total_s` seconds."""
    return min(DEMO_RAMP_START[0], DEMO_RAMP_START[1] * total_s), min(DEMO_RAMP_END[0], DEMO_RAMP_END[1] * total_s)


def demo_threshold_crossing_s(total_s: float, threshold: float) -> float:
    """When the rising animal of a `demo` video passes `threshold`, for a baseline in the middle of its range.

    Solves the S-curve of `ramp` for the fraction of the way up that reaches the threshold.
    """
    start, end = demo_ramp(total_s)
    base = sum(BASELINE_RANGE) / 2
    y = min(max((threshold - base) / (DEMO_PEAK - base), 0.0), 1.0)
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mid * mid * (3 - 2 * mid) < y else (lo, mid)
    return start + lo * (end - start)


def scores(name: str, t: np.ndarray, n_animals: int, rng: np.random.Generator) -> np.ndarray:
    """[len(t), n_animals] true scores, clipped to 0-9."""
    if name not in TRAJECTORIES:
        raise ValueError(f"unknown trajectory {name!r}; choose one of {', '.join(TRAJECTORIES)}")
    total = float(t[-1]) if len(t) else 1.0
    out = np.empty((len(t), n_animals))
    control = int(rng.integers(0, n_animals))
    for i in range(n_animals):
        base = rng.uniform(*BASELINE_RANGE) + 0.4 * smooth_noise(rng, t, (20.0, 90.0))
        if name == "postop":
            surgery = rng.uniform(0.1, 0.2) * total
            peak = rng.uniform(6.6, 8.0) if i != control else rng.uniform(4.0, 4.8)
            analgesic = rng.uniform(0.45, 0.6) * total
            rise = ramp(t, surgery, surgery + 0.1 * total)
            relief = 1.0 - 0.8 * ramp(t, analgesic, analgesic + 0.2 * total)
            out[:, i] = base + (peak - base) * rise * relief
        elif name == "demo":
            start, end = demo_ramp(total)
            out[:, i] = base + (DEMO_PEAK - base) * ramp(t, start, end) if i == DEMO_RISING_BOX else base
        elif name == "sweep":
            phase = (t / max(total, 1e-6) + i / n_animals) % 1.0
            out[:, i] = 9.0 * (1.0 - np.abs(2.0 * phase - 1.0))
        else:
            out[:, i] = base
    return np.clip(out, 0.0, 9.0)
