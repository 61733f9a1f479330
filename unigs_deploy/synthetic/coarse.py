"""Coarse masks around an entity, as in the UniGS supplementary (Algorithm 1, from Paint-by-Example):
either the box extended into the free space, or a polygon through four quadratic Bezier curves
bulging from the box to the extended box, with jittered points."""

from __future__ import annotations

import cv2
import numpy as np


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), x1/y1 exclusive."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def extend_box(box, h: int, w: int, rng: np.random.Generator, max_frac: float = 0.5):
    """Grow each side by a random fraction of the free space on that side."""
    x0, y0, x1, y1 = box
    f = rng.uniform(0, max_frac, 4)
    return (int(x0 - f[0] * x0), int(y0 - f[1] * y0), int(x1 + f[2] * (w - x1)), int(y1 + f[3] * (h - y1)))


def _bezier(p0, p1, p2, n: int = 19) -> np.ndarray:
    t = np.arange(1, n + 1)[:, None] * 0.05
    return (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t**2 * np.asarray(p2)


def coarse_mask(mask: np.ndarray, rng: np.random.Generator, *, curve_prob: float = 0.5, jitter: int = 5,
                max_frac: float = 0.5) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A coarse region around `mask` (H, W) bool, and the extended box it stays inside."""
    h, w = mask.shape
    box = bbox(mask)
    ext = extend_box(box, h, w, rng, max_frac)
    out = np.zeros((h, w), np.uint8)
    if rng.uniform() < curve_prob:
        x0, y0, x1, y1 = box
        ex0, ey0, ex1, ey1 = ext
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        curves = [
            ((x0, y0), (cx, ey0), (x1, y0)),  # top, bulging up to the extended box
            ((x1, y0), (ex1, cy), (x1, y1)),  # right
            ((x1, y1), (cx, ey1), (x0, y1)),  # bottom
            ((x0, y1), (ex0, cy), (x0, y0)),  # left
        ]
        pts = np.concatenate([_bezier(*c) for c in curves])
        pts = pts + rng.integers(-jitter, jitter + 1, pts.shape)
        pts[:, 0] = np.clip(pts[:, 0], ext[0], ext[2] - 1)
        pts[:, 1] = np.clip(pts[:, 1], ext[1], ext[3] - 1)
        cv2.fillPoly(out, [np.round(pts).astype(np.int32)], 1)
        out = out.astype(bool) | _box(h, w, box)  # the curves bulge outwards: the box is always inside
    else:
        out = _box(h, w, ext)
    return out.astype(bool), ext


def _box(h, w, box) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[box[1] : box[3], box[0] : box[2]] = True
    return m
