"""A classical detector for the shapes world: the colour name and shape kind of an entity.

Used to score inpainting (does the generated entity have the asked colour and shape?). Colour
is the nearest named colour to the entity's median pixel. The kind is the one whose best-fitting
shape (position, radii and angle searched by Nelder-Mead) overlaps the entity most, counted only
where the entity could be seen: a shape may leave the image or pass under other entities, so a
rectangle cut by the border is still a rectangle (a contour rule named only 0.60 of the true
entities of `unigs-bench quality` right, nearly all of the misses at the border).
"""

from __future__ import annotations

import cv2
import numpy as np

from unigs_deploy.synthetic.shapes import COLOURS, KINDS, polygon

_RESTARTS, _MAX_EVALS = 3, 300  # Nelder-Mead starts per kind, and evaluations per start
# a shape looks the same turned by its symmetry angle: the restarts spread over that
_SYMMETRY = {"ellipse": np.pi, "rectangle": np.pi / 2, "triangle": 2 * np.pi / 3, "star": 2 * np.pi / 5}


def colour_name(image: np.ndarray, mask: np.ndarray) -> str:
    """Nearest named colour to the median of the entity's pixels (in RGB)."""
    if not mask.any():
        raise ValueError("empty mask: no entity to name the colour of")
    med = np.median(image[mask].astype(np.float32), axis=0)
    names = list(COLOURS)
    d = [np.linalg.norm(med - np.asarray(COLOURS[n], np.float32)) for n in names]
    return names[int(np.argmin(d))]


def fit_kind(mask: np.ndarray, kind: str, hidden: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """(IoU, (cx, cy, rx, ry, angle)) of the best shape of one kind with `mask`, over the pixels
    not `hidden` (other entities that may cover it) and inside the image; `polygon(kind, *params)`
    draws it."""
    from scipy.optimize import minimize

    if not mask.any():
        raise ValueError("empty mask: no entity to classify")
    h, w = mask.shape
    seen = np.ones((h, w), bool) if hidden is None else ~np.asarray(hidden, bool)
    target = mask & seen
    ys, xs = np.nonzero(mask)
    r0 = max(2.0, float(np.sqrt(mask.sum() / np.pi)))
    canvas = np.zeros((3 * h, 3 * w), np.uint8)  # the image in the middle: room to leave it

    def overlap(p):
        canvas[:] = 0
        cv2.fillPoly(canvas, [polygon(kind, p[0] + w, p[1] + h, abs(p[2]), abs(p[3]), p[4])], 1)
        shape = canvas[h:2 * h, w:2 * w].astype(bool) & seen
        return (shape & target).sum() / max(1, (shape | target).sum())

    best, params = -1.0, None
    for angle in np.arange(_RESTARTS) * _SYMMETRY[kind] / _RESTARTS:
        start = np.array([xs.mean(), ys.mean(), r0, r0, angle])
        simplex = np.vstack([start, start + np.diag([r0 / 3, r0 / 3, r0 / 3, -r0 / 3, 0.4])])
        res = minimize(lambda p: -overlap(p), start, method="Nelder-Mead",
                       options={"initial_simplex": simplex, "maxfev": _MAX_EVALS, "xatol": 0.3, "fatol": 1e-4})
        if -float(res.fun) > best:
            best, params = -float(res.fun), np.array([res.x[0], res.x[1], abs(res.x[2]), abs(res.x[3]), res.x[4]])
    return best, params


def shape_fit(mask: np.ndarray, hidden: np.ndarray | None = None) -> dict[str, float]:
    """{kind: IoU of the best shape of that kind with `mask`}, over the pixels not `hidden`
    (other entities that may cover it) and inside the image."""
    return {kind: fit_kind(mask, kind, hidden)[0] for kind in KINDS}


def shape_kind(mask: np.ndarray, hidden: np.ndarray | None = None) -> str:
    """ellipse, rectangle, triangle or star: the kind that fits the visible mask best."""
    fits = shape_fit(mask, hidden)
    return max(fits, key=fits.get)
