"""Orthographic projection of ellipsoids: the mouse is built from a few rotated 3-D blobs.

Working in 3-D (then dropping depth) lets one yaw angle give profile, three-quarter, frontal and
turned-away views from the same anatomy, and tells which eye faces the camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Orientation:
    """Head or body orientation in degrees: yaw turns the snout from the camera (0) to the right (+90)."""

    yaw: float
    pitch: float = 0.0
    roll: float = 0.0

    def matrix(self) -> np.ndarray:
        """Rotation applied as roll (image plane) after pitch after yaw; y points down, z to the camera."""
        y, p, r = np.radians([self.yaw, self.pitch, self.roll])
        ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
        rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
        rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
        return rz @ rx @ ry


def surface_direction(lon_deg: float, lat_deg: float) -> np.ndarray:
    """Unit direction on a sphere: lon turns from the snout axis (+z) towards +x, lat lifts upwards (-y)."""
    lon, lat = np.radians([lon_deg, lat_deg])
    return np.array([np.sin(lon) * np.cos(lat), -np.sin(lat), np.cos(lon) * np.cos(lat)])


def ellipsoid_points(axes: tuple[float, float, float], steps: int = 18) -> np.ndarray:
    """Points on an ellipsoid surface (N x 3), enough for a convex silhouette."""
    lon = np.linspace(0, 2 * np.pi, 2 * steps, endpoint=False)
    lat = np.linspace(-np.pi / 2, np.pi / 2, steps)
    lo, la = np.meshgrid(lon, lat)
    pts = np.stack([np.sin(lo) * np.cos(la), np.sin(la), np.cos(lo) * np.cos(la)], axis=-1).reshape(-1, 3)
    return pts * np.asarray(axes, dtype=np.float64)


def silhouette(points3d: np.ndarray) -> np.ndarray:
    """Convex outline (M x 2) of projected 3-D points."""
    hull = cv2.convexHull(points3d[:, :2].astype(np.float32))
    return hull.reshape(-1, 2).astype(np.float64)


def ellipse_polygon(
    centre: tuple[float, float], axes: tuple[float, float], angle_deg: float, n: int = 40
) -> np.ndarray:
    """A 2-D ellipse as a polygon (n x 2), for parts that are flat in the image (ears, nose, feet)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    a = np.radians(angle_deg)
    x, y = axes[0] * np.cos(t), axes[1] * np.sin(t)
    return np.stack([centre[0] + x * np.cos(a) - y * np.sin(a), centre[1] + x * np.sin(a) + y * np.cos(a)], axis=-1)
