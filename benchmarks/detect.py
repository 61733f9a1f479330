"""A classical detector for the shapes world: the colour name and shape kind of an entity.

Used to score inpainting (does the generated entity have the asked colour and shape?). Colour
is the nearest named colour to the entity's median pixel; the kind comes from the contour:
solidity (a star is concave) and how much of its tightest rotated box it fills
(rectangle ~1, ellipse ~0.79, triangle ~0.5).
"""

from __future__ import annotations

import cv2
import numpy as np

from unigs_deploy.synthetic.shapes import COLOURS


def colour_name(image: np.ndarray, mask: np.ndarray) -> str:
    """Nearest named colour to the median of the entity's pixels (in RGB)."""
    if not mask.any():
        raise ValueError("empty mask: no entity to name the colour of")
    med = np.median(image[mask].astype(np.float32), axis=0)
    names = list(COLOURS)
    d = [np.linalg.norm(med - np.asarray(COLOURS[n], np.float32)) for n in names]
    return names[int(np.argmin(d))]


def shape_kind(mask: np.ndarray) -> str:
    """ellipse, rectangle, triangle or star from the largest contour of the mask."""
    if not mask.any():
        raise ValueError("empty mask: no entity to classify")
    m = mask.astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    c = max(contours, key=cv2.contourArea)
    area = cv2.contourArea(c)
    hull_area = cv2.contourArea(cv2.convexHull(c))
    solidity = area / hull_area if hull_area > 0 else 1.0
    if solidity < 0.8:
        return "star"
    (_, _), (rw, rh), _ = cv2.minAreaRect(c)
    extent = area / (rw * rh) if rw * rh > 0 else 1.0  # rectangle ~1, ellipse ~0.79, triangle ~0.5
    if extent > 0.88:
        return "rectangle"
    if extent < 0.65:
        return "triangle"
    return "ellipse"
