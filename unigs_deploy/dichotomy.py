"""Progressive dichotomy: a (noisy, generated) colormap -> entity label map, no K needed.

The colours are split depth-first by 2-means until no cluster splits any more. A cluster's
*spread* is the distance between the centres of its two 2-means halves: it stays near
1.6 sigma for pixel noise of std sigma (12.8 at sigma 8) while two palette colours are at least
64 apart, and unlike the mean distance to the centre it does not shrink when a small entity sits
inside a large one. So a cluster splits while its spread is at least `threshold`.

Leaves then pull every colour to the nearest leaf centre (one k-means assignment step). A leaf
whose *core* (pixels whose label reaches two pixels in all four directions) is under `min_area` is dissolved
into the nearest surviving leaves by colour: that removes the thin bands a blur leaves between
two entities, and specks, while every pixel still ends with a label.

The product is `decode_colormap` (Numba, on a weighted histogram of colours quantised to 8
levels per bin: a 512x512 colormap has ~1e3-1e4 distinct bins against 262,144 pixels).
`decode_colormap_reference` is the same algorithm in plain numpy on every pixel, kept for tests.
"""

from __future__ import annotations

import numpy as np
from numba import njit

DEFAULT_THRESHOLD = 32.0
DEFAULT_MIN_AREA = 32
DEFAULT_MAX_DEPTH = 32
_BG_LEVEL = 32.0  # a leaf whose every channel is under this snaps to black: the background
_LLOYD_ITERS = 50
_EDGE_TOL = 24
_CORE_RADIUS = 2  # a core pixel's label reaches this far in all four directions


def _check(colormap, threshold, min_area, max_depth) -> np.ndarray:
    if not isinstance(colormap, np.ndarray):
        raise ValueError(f"colormap must be a numpy array, got {type(colormap).__name__}")
    if colormap.ndim != 3 or colormap.shape[2] != 3:
        raise ValueError(f"colormap must be (H, W, 3) RGB, got shape {colormap.shape}")
    if colormap.shape[0] == 0 or colormap.shape[1] == 0:
        raise ValueError(f"colormap is empty (shape {colormap.shape})")
    if colormap.dtype != np.uint8:
        if np.issubdtype(colormap.dtype, np.floating) and not np.isfinite(colormap).all():
            raise ValueError("colormap contains NaN or inf: check the VAE decoder output")
        raise ValueError(
            f"colormap must be uint8 in [0, 255], got {colormap.dtype}; "
            "convert [-1, 1] floats with palette.unit_to_colormap"
        )
    if not (threshold > 0 and np.isfinite(threshold)):
        raise ValueError(f"threshold must be a positive number, got {threshold}")
    if min_area < 0:
        raise ValueError(f"min_area must be >= 0, got {min_area}")
    if max_depth < 0:
        raise ValueError(f"max_depth must be >= 0, got {max_depth}")
    return np.ascontiguousarray(colormap)


def decode_colormap(
    colormap: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_area: int = DEFAULT_MIN_AREA,
    max_depth: int = DEFAULT_MAX_DEPTH,
    keep_background: bool = False,
) -> np.ndarray:
    """Colormap (H, W, 3) uint8 -> label map (H, W) int32.

    0 is the background (the cluster near black) and 1..K the entities, numbered in raster
    order of their first pixel. With `keep_background=True` (entity segmentation) every
    cluster, the black one too, is an entity and 0 does not occur. `min_area=0` keeps every
    cluster.
    """
    cm = _check(colormap, threshold, min_area, max_depth)
    return _decode(cm, float(threshold), int(min_area), int(max_depth), bool(keep_background))


def labels_to_masks(labels: np.ndarray) -> np.ndarray:
    """Label map (H, W) -> masks (K, H, W) bool, mask k-1 for label k (0 is background)."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an (H, W) integer array, got {labels.dtype} {labels.shape}")
    k = int(labels.max()) if labels.size else 0
    return labels[None] == np.arange(1, k + 1, dtype=labels.dtype)[:, None, None]


# ---------------------------------------------------------------- numba product


@njit(cache=True, nogil=True)
def _histogram(cm, edge_tol):
    """Bins of 8 levels per channel: bin of every pixel, and the bins' mean colours and weights.

    With edge_tol > 0 a pixel that differs from its right or lower neighbour by more than
    edge_tol in a channel has no weight: blur and JPEG ramps between entities then cannot form
    clusters of their own, and every pixel is still labelled by its nearest centre afterwards.
    """
    h, w, _ = cm.shape
    n = h * w
    flat = cm.reshape(n * 3)
    bins = np.empty(n, np.int32)
    counts = np.zeros(32768, np.int32)
    seen = np.zeros(32768, np.bool_)
    sums = np.zeros((32768, 3), np.int64)
    tol = np.int32(edge_tol)
    for y in range(h):
        for x in range(w):
            i = y * w + x
            p = 3 * i
            r, g, b = np.int32(flat[p]), np.int32(flat[p + 1]), np.int32(flat[p + 2])
            k = ((r >> 3) << 10) | ((g >> 3) << 5) | (b >> 3)
            bins[i] = k
            seen[k] = True
            wgt = np.int32(1)
            if tol > 0:  # branch-free: the weight is 0 at a strong edge
                if x + 1 < w:
                    q = p + 3
                    e = max(abs(r - np.int32(flat[q])), abs(g - np.int32(flat[q + 1])),
                            abs(b - np.int32(flat[q + 2])))
                    wgt &= np.int32(e <= tol)
                if y + 1 < h:
                    q = p + 3 * w
                    e = max(abs(r - np.int32(flat[q])), abs(g - np.int32(flat[q + 1])),
                            abs(b - np.int32(flat[q + 2])))
                    wgt &= np.int32(e <= tol)
            counts[k] += wgt
            sums[k, 0] += r * wgt
            sums[k, 1] += g * wgt
            sums[k, 2] += b * wgt
    m = 0
    for k in range(32768):
        if seen[k]:
            m += 1
    pts = np.empty((m, 3), np.float64)
    wts = np.empty(m, np.float64)
    remap = np.full(32768, -1, np.int32)
    j = 0
    for k in range(32768):
        if seen[k]:
            c = counts[k]
            if c > 0:
                pts[j, 0] = sums[k, 0] / c
                pts[j, 1] = sums[k, 1] / c
                pts[j, 2] = sums[k, 2] / c
            else:  # only edge pixels: the bin's centre stands for them
                pts[j, 0] = (k >> 10) * 8 + 3.5
                pts[j, 1] = ((k >> 5) & 31) * 8 + 3.5
                pts[j, 2] = (k & 31) * 8 + 3.5
            wts[j] = c
            remap[k] = j
            j += 1
    for i in range(n):
        bins[i] = remap[bins[i]]
    return bins, pts, wts


@njit(cache=True, nogil=True, inline="always")
def _d2(p, i, c0, c1, c2):
    a = p[i, 0] - c0
    b = p[i, 1] - c1
    c = p[i, 2] - c2
    return a * a + b * b + c * c


@njit(cache=True, nogil=True)
def _split(pts, wts, idx, lo, hi, side, thr2, min_w):
    """2-means of idx[lo:hi]; True and idx partitioned (side 0 first) -> mid, if spread >= thr."""
    sw = 0.0
    m0 = m1 = m2 = 0.0
    for t in range(lo, hi):
        i = idx[t]
        sw += wts[i]
        m0 += wts[i] * pts[i, 0]
        m1 += wts[i] * pts[i, 1]
        m2 += wts[i] * pts[i, 2]
    m0 /= sw
    m1 /= sw
    m2 /= sw
    # deterministic init, k-means++ made greedy: the bin with the largest weight * squared
    # distance from the centre, then the same from that one (a lone noisy bin cannot win)
    best = -1.0
    a = idx[lo]
    for t in range(lo, hi):
        d = wts[idx[t]] * _d2(pts, idx[t], m0, m1, m2)
        if d > best:
            best = d
            a = idx[t]
    a0, a1, a2 = pts[a, 0], pts[a, 1], pts[a, 2]
    best = -1.0
    diam = 0.0
    b = idx[lo]
    for t in range(lo, hi):
        d2 = _d2(pts, idx[t], a0, a1, a2)
        diam = max(diam, d2)
        d = wts[idx[t]] * d2
        if d > best:
            best = d
            b = idx[t]
    if diam < thr2:  # the spread cannot exceed the diameter
        return -1
    b0, b1, b2 = pts[b, 0], pts[b, 1], pts[b, 2]
    for t in range(lo, hi):
        side[idx[t]] = -1
    for _ in range(_LLOYD_ITERS):
        changed = False
        s0 = s1 = 0.0
        x0 = x1 = x2 = y0 = y1 = y2 = 0.0
        for t in range(lo, hi):
            i = idx[t]
            s = 1 if _d2(pts, i, b0, b1, b2) < _d2(pts, i, a0, a1, a2) else 0
            if s != side[i]:
                side[i] = s
                changed = True
            wi = wts[i]
            if s == 0:
                s0 += wi
                x0 += wi * pts[i, 0]
                x1 += wi * pts[i, 1]
                x2 += wi * pts[i, 2]
            else:
                s1 += wi
                y0 += wi * pts[i, 0]
                y1 += wi * pts[i, 1]
                y2 += wi * pts[i, 2]
        if s0 == 0.0 or s1 == 0.0:
            return -1
        a0, a1, a2 = x0 / s0, x1 / s0, x2 / s0
        b0, b1, b2 = y0 / s1, y1 / s1, y2 / s1
        if not changed:
            break
    if (a0 - b0) ** 2 + (a1 - b1) ** 2 + (a2 - b2) ** 2 < thr2 or s0 < min_w or s1 < min_w:
        return -1
    # stable partition: side 0 first
    tmp = idx[lo:hi].copy()
    k = lo
    for t in range(tmp.size):
        if side[tmp[t]] == 0:
            idx[k] = tmp[t]
            k += 1
    mid = k
    for t in range(tmp.size):
        if side[tmp[t]] == 1:
            idx[k] = tmp[t]
            k += 1
    return mid


@njit(cache=True, nogil=True)
def _dichotomy(pts, wts, thr, max_depth, min_w):
    """Depth-first splits; returns leaf centres (K, 3)."""
    m = pts.shape[0]
    idx = np.arange(m)
    side = np.zeros(m, np.int8)
    thr2 = thr * thr
    stack_lo = [0]
    stack_hi = [m]
    stack_d = [0]
    centres = []
    while len(stack_lo) > 0:
        lo = stack_lo.pop()
        hi = stack_hi.pop()
        d = stack_d.pop()
        mid = -1
        if d < max_depth and hi - lo > 1:
            mid = _split(pts, wts, idx, lo, hi, side, thr2, min_w)
        if mid < 0:
            sw = 0.0
            c = np.zeros(3)
            for t in range(lo, hi):
                i = idx[t]
                sw += wts[i]
                for ch in range(3):
                    c[ch] += wts[i] * pts[i, ch]
            centres.append(c / sw)
        else:  # push the second half first so the first is explored first (depth-first)
            stack_lo.append(mid)
            stack_hi.append(hi)
            stack_d.append(d + 1)
            stack_lo.append(lo)
            stack_hi.append(mid)
            stack_d.append(d + 1)
    out = np.empty((len(centres), 3))
    for k in range(len(centres)):
        out[k] = centres[k]
    return out


@njit(cache=True, nogil=True)
def _nearest(pts, centres):
    out = np.empty(pts.shape[0], np.int32)
    for i in range(pts.shape[0]):
        best = np.inf
        bk = 0
        for k in range(centres.shape[0]):
            d = _d2(pts, i, centres[k, 0], centres[k, 1], centres[k, 2])
            if d < best:
                best = d
                bk = k
        out[i] = bk
    return out


@njit(cache=True, nogil=True)
def _refine(pts, wts, centres, thr):
    """Merge leaves closer than `thr` (a mode severed by an early cut), then k-means steps."""
    c = centres.copy()
    k = c.shape[0]
    cw = np.zeros(k)
    lab = _nearest(pts, c)
    for i in range(pts.shape[0]):
        cw[lab[i]] += wts[i]
    alive = cw > 0
    thr2 = thr * thr
    while True:
        best = thr2
        bi = bj = -1
        for i in range(k):
            if not alive[i]:
                continue
            for j in range(i + 1, k):
                if alive[j]:
                    d = (c[i, 0] - c[j, 0]) ** 2 + (c[i, 1] - c[j, 1]) ** 2 + (c[i, 2] - c[j, 2]) ** 2
                    if d < best:
                        best = d
                        bi, bj = i, j
        if bi < 0:
            break
        tot = cw[bi] + cw[bj]
        c[bi] = (cw[bi] * c[bi] + cw[bj] * c[bj]) / tot
        cw[bi] = tot
        alive[bj] = False
    c = c[alive]
    for _ in range(3):
        lab = _nearest(pts, c)
        acc = np.zeros((c.shape[0], 3))
        cw = np.zeros(c.shape[0])
        for i in range(pts.shape[0]):
            j = lab[i]
            for ch in range(3):
                acc[j, ch] += wts[i] * pts[i, ch]
            cw[j] += wts[i]
        keep = cw > 0
        for j in range(c.shape[0]):
            if keep[j]:
                c[j] = acc[j] / cw[j]
        c = c[keep]
    return c


@njit(cache=True, nogil=True)
def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(cache=True, nogil=True)
def _components(lab):
    """4-connected components of equal labels (union-find over row runs): component id per
    pixel, and each component's core size (pixels whose label reaches _CORE_RADIUS in all four directions)."""
    h, w = lab.shape
    run_of = np.empty((h, w), np.int32)
    run_start = []
    run_end = []
    row_first = np.empty(h + 1, np.int64)
    for y in range(h):
        row_first[y] = len(run_start)
        x = 0
        while x < w:
            v = lab[y, x]
            x0 = x
            while x < w and lab[y, x] == v:
                run_of[y, x] = len(run_start)
                x += 1
            run_start.append(x0)
            run_end.append(x)
    nr = len(run_start)
    row_first[h] = nr
    parent = np.arange(nr)
    for y in range(1, h):
        a, a_end = row_first[y - 1], row_first[y]
        for r in range(row_first[y], row_first[y + 1]):
            x0, x1 = run_start[r], run_end[r]
            while a < a_end and run_end[a] <= x0:
                a += 1
            t = a
            while t < a_end and run_start[t] < x1:
                if lab[y - 1, run_start[t]] == lab[y, x0]:
                    ra, rb = _find(parent, t), _find(parent, r)
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
                t += 1
    comp_of_run = np.empty(nr, np.int32)
    n = 0
    for r in range(nr):
        root = _find(parent, r)
        if root == r:
            comp_of_run[r] = n
            n += 1
        else:
            comp_of_run[r] = comp_of_run[root]
    cores = np.zeros(n, np.int64)
    comp = np.empty((h, w), np.int32)
    for y in range(h):
        for x in range(w):
            c = comp_of_run[run_of[y, x]]
            comp[y, x] = c
            v = lab[y, x]
            core = True
            for d in range(1, _CORE_RADIUS + 1):
                core = core and (y < d or lab[y - d, x] == v) and (y + d >= h or lab[y + d, x] == v)
                core = core and (x < d or lab[y, x - d] == v) and (x + d >= w or lab[y, x + d] == v)
            cores[c] += core
    return comp, cores


@njit(cache=True, nogil=True)
def _dissolve(lab, comp, cores, min_area, cm, centres):
    """Pixels of components whose core is under min_area take, sweep by sweep from the stable
    regions inward, the label of a neighbour whose centre is nearest to their own colour."""
    h, w = lab.shape
    cur = lab.copy()
    pending = []
    for y in range(h):
        for x in range(w):
            if cores[comp[y, x]] < min_area:
                cur[y, x] = -1
                pending.append(y * w + x)
    if len(pending) == h * w:
        return lab.copy()
    while len(pending) > 0:
        nxt = cur.copy()
        rest = []
        for p in pending:
            y = p // w
            x = p % w
            best = np.inf
            bl = -1
            for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and cur[yy, xx] >= 0:
                    k = cur[yy, xx]
                    d = 0.0
                    for ch in range(3):
                        d += (cm[y, x, ch] - centres[k, ch]) ** 2
                    if d < best:
                        best = d
                        bl = k
            if bl >= 0:
                nxt[y, x] = bl
            else:
                rest.append(p)
        cur = nxt
        pending = rest
    return cur


@njit(cache=True, nogil=True)
def _number(lab, is_bg, keep_background):
    """Leaf ids per pixel -> labels 1..K in raster order of first pixel (background 0)."""
    h, w = lab.shape
    label_of = np.full(is_bg.size, -1, np.int32)
    nxt = 1
    out = np.empty((h, w), np.int32)
    for y in range(h):
        for x in range(w):
            leaf = lab[y, x]
            if label_of[leaf] < 0:
                if is_bg[leaf] and not keep_background:
                    label_of[leaf] = 0
                else:
                    label_of[leaf] = nxt
                    nxt += 1
            out[y, x] = label_of[leaf]
    return out


@njit(cache=True, nogil=True)
def _decode(cm, thr, min_area, max_depth, keep_background):
    h, w, _ = cm.shape
    pix_bin, pts, wts = _histogram(cm, _EDGE_TOL if min_area > 0 else 0)
    sel = wts > 0
    if not sel.any():  # nothing but edges (a fine checkerboard): let every pixel count
        pix_bin, pts, wts = _histogram(cm, 0)
        sel = wts > 0
    cp, cw = pts[sel], wts[sel]
    centres = _refine(cp, cw, _dichotomy(cp, cw, thr, max_depth, max(min_area, 1.0)), thr)
    leaf_of_bin = _nearest(pts, centres)
    lab = np.empty(h * w, np.int32)
    for i in range(h * w):
        lab[i] = leaf_of_bin[pix_bin[i]]
    lab = lab.reshape(h, w)
    if min_area > 0 and centres.shape[0] > 1:
        comp, cores = _components(lab)
        lab = _dissolve(lab, comp, cores, min_area, cm, centres)
    k = centres.shape[0]
    is_bg = np.zeros(k, np.bool_)
    for j in range(k):
        is_bg[j] = centres[j, 0] < _BG_LEVEL and centres[j, 1] < _BG_LEVEL and centres[j, 2] < _BG_LEVEL
    return _number(lab, is_bg, keep_background)


# ---------------------------------------------------------------- numpy reference


def decode_colormap_reference(
    colormap: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_area: int = DEFAULT_MIN_AREA,
    max_depth: int = DEFAULT_MAX_DEPTH,
    keep_background: bool = False,
) -> np.ndarray:
    """The same algorithm on every pixel in plain numpy (+ OpenCV's connected components).

    Slow and plain, for tests. It clusters pixels where the product clusters histogram bins,
    so the two agree exactly on clean colormaps and closely on noisy ones.
    """
    return _decode_reference(colormap, threshold, min_area, max_depth, keep_background, _split_reference)


def _decode_reference(colormap, threshold, min_area, max_depth, keep_background, split):
    """`split(points, init_weights, threshold, min_w)` -> 'second half' mask or None."""
    cm = _check(colormap, threshold, min_area, max_depth)
    h, w, _ = cm.shape
    pts = cm.reshape(-1, 3).astype(np.float64)
    wts = _edge_weights(cm, _EDGE_TOL if min_area > 0 else 0).ravel()
    if wts.sum() == 0:
        wts = np.ones_like(wts)
    bin_id = ((cm[..., 0] >> 3).astype(np.int64) << 10 | (cm[..., 1] >> 3).astype(np.int64) << 5
              | (cm[..., 2] >> 3)).ravel()
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


def _init_pair(p: np.ndarray, score_w: np.ndarray, threshold: float):
    """The product's deterministic 2-means init (weight x squared distance, twice), or None
    when the points' diameter is under the threshold."""
    if len(p) < 2:
        return None
    a = p[np.argmax(score_w * ((p - p.mean(0)) ** 2).sum(1))]
    d2 = ((p - a) ** 2).sum(1)
    if d2.max() < threshold**2:
        return None
    return a, p[np.argmax(score_w * d2)]


def _split_reference(p: np.ndarray, score_w: np.ndarray, threshold: float, min_w: float):
    """2-means with the product's init and tests; a boolean 'second half' mask, or None."""
    pair = _init_pair(p, score_w, threshold)
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
