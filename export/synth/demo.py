"""The one entry point `mgs-server demo` uses into the export toolchain: its rack video and that video's story.

The server depends on nothing else in export/ (tests/test_imports.py checks it). Only numpy and
OpenCV are needed, both installed with the device and server extras; never torch.
"""

from __future__ import annotations

from export.synth.trajectory import DEMO_RISING_BOX, demo_threshold_crossing_s
from export.synth.video import read_video_truth, truth_path, write_video

__all__ = ["DEMO_RISING_BOX", "demo_threshold_crossing_s", "read_video_truth", "truth_path", "write_video"]
