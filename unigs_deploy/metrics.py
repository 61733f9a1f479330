"""Class-agnostic segmentation metrics on label maps (0 = background, not a segment)."""

from __future__ import annotations

import numpy as np


def _as_labels(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:  # masks (K, H, W): later masks win, like the palette
        lab = np.zeros(x.shape[1:], np.int64)
        for k, m in enumerate(x.astype(bool), start=1):
            lab[m] = k
        return lab
    return x.astype(np.int64)


def mask_iou(a, b) -> float:
    """IoU of two boolean masks (0 when both are empty)."""
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 0.0


def iou_matrix(pred, true) -> np.ndarray:
    """IoU between every predicted and every true segment, (P, T)."""
    p, t = _as_labels(pred), _as_labels(true)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and truth {t.shape} differ in size")
    np_, nt = int(p.max()) + 1, int(t.max()) + 1
    inter = np.bincount((p * nt + t).ravel(), minlength=np_ * nt).reshape(np_, nt)
    area_p, area_t = inter.sum(1), inter.sum(0)
    union = area_p[:, None] + area_t[None] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    keep_p = np.flatnonzero(area_p[1:] > 0) + 1
    keep_t = np.flatnonzero(area_t[1:] > 0) + 1
    return iou[np.ix_(keep_p, keep_t)]


def panoptic_quality(pred, true) -> dict:
    """PQ, SQ, RQ with IoU > 0.5 matching (unique by construction), class-agnostic."""
    iou = iou_matrix(pred, true)
    match = iou > 0.5
    tp = int(match.sum())
    fp = iou.shape[0] - tp
    fn = iou.shape[1] - tp
    denom = tp + 0.5 * fp + 0.5 * fn
    sum_iou = float(iou[match].sum())
    if denom == 0:
        return {"pq": 1.0, "sq": 1.0, "rq": 1.0, "tp": 0, "fp": 0, "fn": 0}
    sq = sum_iou / tp if tp else 0.0
    return {"pq": sum_iou / denom, "sq": sq, "rq": tp / denom, "tp": tp, "fp": fp, "fn": fn}


def same_partition(a, b) -> bool:
    """True when two label maps split the pixels identically, whatever the label numbers."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape:
        return False
    pairs = np.unique(np.stack([a, b], 1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))
