"""Label maps and masks, the two ways entities are held: (H, W) int32 labels (0 = background,
1..K entities) and (K, H, W) bool masks (mask k-1 is label k)."""

from __future__ import annotations

import numpy as np


def masks_to_labels(masks, *, background: int = 0) -> np.ndarray:
    """(K, H, W) bool -> (H, W) int32, label k for mask k-1; a later mask wins where they overlap.
    Pixels of no mask get `background`."""
    masks = np.asarray(masks, bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be a (K, H, W) array, got shape {masks.shape}")
    labels = np.full(masks.shape[1:], background, np.int32)
    for k, m in enumerate(masks, 1):
        labels[m] = k
    return labels


def dominant_in(labels: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The mask of the entity covering most of `region` (ties: the lower label); empty when no
    entity touches it. What refer answers, and which entity an inpainted region became."""
    inside = labels[region & (labels > 0)]
    if not inside.size:
        return np.zeros(labels.shape, bool)
    return labels == np.bincount(inside).argmax()


def labels_to_masks(labels: np.ndarray) -> np.ndarray:
    """Label map (H, W) -> masks (K, H, W) bool, mask k-1 for label k (0 is background)."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an (H, W) integer array, got {labels.dtype} {labels.shape}")
    k = int(labels.max()) if labels.size else 0
    return labels[None] == np.arange(1, k + 1, dtype=labels.dtype)[:, None, None]
