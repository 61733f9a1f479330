"""The progressive dichotomy decoder in plain numpy (+ OpenCV's connected components): the
readable statement of the algorithm that the Numba product (`dichotomy.py`) must equal.

Slow, for tests and benchmarks. It clusters pixels where the product clusters histogram bins,
so the two agree exactly on clean colormaps and closely on noisy ones.
"""

from __future__ import annotations

import numpy as np

from .dichotomy import (
    _BG_LEVEL,
    _CORE_RADIUS,
    _EDGE_TOL,
    _LLOYD_ITERS,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MIN_AREA,
    DEFAULT_THRESHOLD,
    TIE_REL,
    _check,
    check_split,
)


def decode_colormap(
    colormap: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_area: int = DEFAULT_MIN_AREA,
    max_depth: int = DEFAULT_MAX_DEPTH,
    keep_background: bool = False,
    stop: str = "centres",
) -> np.ndarray:
    """The same algorithm on every pixel in plain numpy (+ OpenCV's connected components).

    Slow and plain, for tests. It clusters pixels where the product clusters histogram bins,
    so the two agree exactly on clean colormaps and closely on noisy ones.
    """
    check_split(threshold, stop)
    split = {"centres": split_2means, "spread": split_spread}[stop]
    return decode_with_split(colormap, split, threshold=threshold, min_area=min_area, max_depth=max_depth,
                             keep_background=keep_background)


def decode_with_split(colormap, split, *, threshold=DEFAULT_THRESHOLD, min_area=DEFAULT_MIN_AREA,
                      max_depth=DEFAULT_MAX_DEPTH, keep_background=False) -> np.ndarray:
    """The reference with another 2-means: `split(points, init_weights, threshold, min_w)` returns
    the 'second half' boolean mask, or None to stop (the benchmarks plug scikit-learn in here)."""
    cm = _check(colormap, min_area, max_depth)
    h, w, _ = cm.shape
    pts = cm.reshape(-1, 3).astype(np.float64)
    wts = _edge_weights(cm, _EDGE_TOL if min_area > 0 else 0).ravel()
    if wts.sum() == 0:
        wts = np.ones_like(wts)
    bin_id = _bins(cm.reshape(-1, 3))
    score_w = np.bincount(bin_id, weights=wts, minlength=32768)[bin_id]  # a pixel's bin weight
    min_w = max(min_area, 1)

    centres, weights = [], []
    stack = [(np.flatnonzero(wts > 0), 0)]
    while stack:
        members, depth = stack.pop()
        second = split(pts[members], score_w[members], threshold, min_w) if depth < max_depth else None
        if second is None:
            centres.append(pts[members].mean(0))
            weights.append(len(members))
        else:
            stack.append((members[second], depth + 1))
            stack.append((members[~second], depth + 1))
    centres = _refine_reference(pts[wts > 0], np.array(centres), np.array(weights, float), threshold)

    def nearest(p):
        return np.stack([((p - c) ** 2).sum(1) for c in centres], 1).argmin(1)

    lab = nearest(pts).reshape(h, w)
    if min_area > 0 and len(centres) > 1:
        lab = _dissolve_reference(lab, cm, centres, min_area)
    is_bg = (centres < _BG_LEVEL).all(1)
    leaves, first = np.unique(lab, return_index=True)
    label_of = np.zeros(len(centres), np.int32)
    nxt = 1
    for leaf in leaves[np.argsort(first)]:
        if keep_background or not is_bg[leaf]:
            label_of[leaf] = nxt
            nxt += 1
    return label_of[lab]


def _edge_weights(cm: np.ndarray, tol: int) -> np.ndarray:
    """1 where a pixel is within tol of its right and lower neighbours in every channel."""
    x = cm.astype(np.int16)
    ok = np.ones(cm.shape[:2], bool)
    if tol > 0:
        ok[:, :-1] &= (np.abs(x[:, 1:] - x[:, :-1]) <= tol).all(-1)
        ok[:-1, :] &= (np.abs(x[1:] - x[:-1]) <= tol).all(-1)
    return ok.astype(np.float64)


def init_pair(p: np.ndarray, score_w: np.ndarray, threshold: float):
    """The product's deterministic 2-means init (weight x squared distance, twice), or None
    when the points' diameter is under the threshold."""
    if len(p) < 2:
        return None
    a = p[_first_max(score_w * ((p - p.mean(0)) ** 2).sum(1), p)]
    d2 = ((p - a) ** 2).sum(1)
    if d2.max() < threshold**2:
        return None
    return a, p[_first_max(score_w * d2, p)]


def _first_max(v: np.ndarray, p: np.ndarray) -> int:
    """argmax, a tie (within TIE_REL of the maximum: rounding differs from the product's) going
    to the colour of the lowest histogram bin: the product scans bins in that order (symmetric
    colours tie exactly, and raster order would pick another)."""
    best = v.max()
    top = np.flatnonzero(v >= best - TIE_REL * abs(best))
    return int(top[np.argmin(_bins(p[top]))])


def _bins(rgb: np.ndarray) -> np.ndarray:
    """The product's histogram bin of each colour (N, 3): 8 levels per channel, 15 bits."""
    q = rgb.astype(np.int64) >> 3
    return q[:, 0] << 10 | q[:, 1] << 5 | q[:, 2]


def split_2means(p: np.ndarray, score_w: np.ndarray, threshold: float, min_w: float):
    """2-means with the product's init and tests; a boolean 'second half' mask, or None."""
    pair = init_pair(p, score_w, threshold)
    if pair is None:
        return None
    a, b = pair
    side = None
    for _ in range(_LLOYD_ITERS):
        new = ((p - b) ** 2).sum(1) < ((p - a) ** 2).sum(1)
        if new.all() or not new.any():
            return None
        a, b = p[~new].mean(0), p[new].mean(0)
        if side is not None and (new == side).all():
            break
        side = new
    if ((a - b) ** 2).sum() < threshold**2 or new.sum() < min_w or (~new).sum() < min_w:
        return None
    return new


def split_spread(p: np.ndarray, score_w: np.ndarray, threshold: float, min_w: float):
    """The paper's stop rule: split (2-means) while the colours' mean distance to their centre is
    at least `threshold`."""
    if len(p) < 2 or np.sqrt(((p - p.mean(0)) ** 2).sum(1)).mean() < threshold:
        return None
    return split_2means(p, score_w, 0.0, min_w)


def _refine_reference(p, centres, weights, threshold):
    alive = np.ones(len(centres), bool)
    while alive.sum() > 1:
        d = ((centres[:, None] - centres[None]) ** 2).sum(-1)
        d[~alive] = np.inf
        d[:, ~alive] = np.inf
        d[np.tril_indices(len(centres))] = np.inf
        i, j = np.unravel_index(np.argmin(d), d.shape)
        if d[i, j] >= threshold**2:
            break
        centres[i] = (weights[i] * centres[i] + weights[j] * centres[j]) / (weights[i] + weights[j])
        weights[i] += weights[j]
        alive[j] = False
    centres = centres[alive]
    for _ in range(3):
        lab = np.stack([((p - c) ** 2).sum(1) for c in centres], 1).argmin(1)
        keep = np.bincount(lab, minlength=len(centres)) > 0
        centres = np.array([p[lab == k].mean(0) for k in np.flatnonzero(keep)])
    return centres


def _dissolve_reference(lab, cm, centres, min_area):
    import cv2

    h, w = lab.shape
    r = _CORE_RADIUS
    pad = np.pad(lab, r, mode="constant", constant_values=-1)
    core = np.ones((h, w), bool)
    for d in range(1, r + 1):
        for nb in (pad[r - d : r - d + h, r : r + w], pad[r + d : r + d + h, r : r + w],
                   pad[r : r + h, r - d : r - d + w], pad[r : r + h, r + d : r + d + w]):
            core &= (nb == lab) | (nb == -1)
    unstable = np.zeros((h, w), bool)
    for k in np.unique(lab):
        n, comp = cv2.connectedComponents((lab == k).astype(np.uint8), connectivity=4)
        cores = np.bincount(comp[(lab == k) & core], minlength=n)
        unstable |= (lab == k) & (cores[comp] < min_area)
    if unstable.all():
        return lab
    cur = np.where(unstable, -1, lab)
    col = cm.astype(np.float64)
    dist = np.stack([((col - c) ** 2).sum(-1) for c in centres], -1)  # (H, W, K)
    while (cur < 0).any():
        best = np.full((h, w), np.inf)
        nxt = cur.copy()
        padc = np.pad(cur, 1, constant_values=-1)
        for nb in (padc[:-2, 1:-1], padc[2:, 1:-1], padc[1:-1, :-2], padc[1:-1, 2:]):
            d = np.where(nb >= 0, np.take_along_axis(dist, np.maximum(nb, 0)[..., None], -1)[..., 0], np.inf)
            take = (cur < 0) & (d < best)
            best[take] = d[take]
            nxt[take] = nb[take]
        cur = nxt
    return cur
