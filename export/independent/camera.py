"""A pinhole camera: world millimetres (X right, Y down, Z away from the camera) to frame pixels.

Everything in a scene is placed in 3D and projected, so boxes away from the optical axis show
their side walls and lids, far objects shrink, and a mouse turned away from the camera is
foreshortened, as a real lens does it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """World-to-camera rotation: yaw about Y, then pitch about X, then roll about Z."""
    y, p, r = (math.radians(v) for v in (yaw_deg, pitch_deg, roll_deg))
    ry = np.array([[math.cos(y), 0, -math.sin(y)], [0, 1, 0], [math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), math.sin(r), 0], [-math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


@dataclass(frozen=True)
class Camera:
    focal_px: float
    cx: float
    cy: float
    rot: np.ndarray  # world -> camera, 3x3

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, np.float64).reshape(-1, 3) @ self.rot.T

    def project(self, points: np.ndarray) -> np.ndarray:
        """[N, 3] world mm -> [N, 2] pixel (x, y)."""
        p = self.to_camera(points)
        return self.focal_px * p[:, :2] / p[:, 2:3] + np.array([self.cx, self.cy])

    def px_per_mm(self, point: np.ndarray) -> float:
        """Image scale of a small object at `point` (mm across -> px across)."""
        return self.focal_px / float(self.to_camera(point)[0, 2])
