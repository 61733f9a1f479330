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
levels per bin: a 512x512 colormap has ~1e3-1e4 distinct bins against 262,144 pixels). On
images of 256x256 and more with min_area >= 16 the histogram takes every second row and
column (mean PQ 0.977 -> 0.976 at the standard corruption, 2.5x faster with the other changes).
`dichotomy_reference.py` is the same algorithm in plain numpy on every pixel, for tests.
"""

from __future__ import annotations

import threading

import numpy as np
from numba import njit

from .labels import labels_to_masks  # noqa: F401  (public here too: the decoder's inverse)

DEFAULT_THRESHOLD = 32.0
DEFAULT_MIN_AREA = 32
DEFAULT_MAX_DEPTH = 32
STOPS = {"centres": 0, "spread": 1}  # the split rule: this project's, the paper's
DEFAULT_STOP = "centres"
_BG_LEVEL = 32.0  # a leaf whose every channel is under this snaps to black: the background
_LLOYD_ITERS = 50
_EDGE_TOL = 24
_CORE_RADIUS = 2  # a core pixel's label reaches this far in all four directions
_SAMPLE_MIN_AREA = 16
TIE_REL = 1e-9  # init scores this close (relative) are a tie: rounding, not the colours, made them differ
# reassociating sums lets LLVM vectorise the 2-means loops (2x); no fast-math on NaN or inf
_SUMS = {"reassoc", "contract", "nsz", "arcp"}


def check_split(threshold, stop) -> None:
    """The split rule's settings, checked (the pipeline calls it before any model work)."""
    if not (threshold > 0 and np.isfinite(threshold)):
        raise ValueError(f"threshold must be a colour distance > 0 (default {DEFAULT_THRESHOLD:g}), got {threshold}")
    if stop not in STOPS:
        raise ValueError(f"stop must be one of {', '.join(STOPS)}, got {stop!r}")


def min_area_for(h: int, w: int) -> int:
    """DEFAULT_MIN_AREA (meant for 512x512) scaled to an h x w colormap: specks are judged
    relative to the image, and never below 2 pixels."""
    return max(2, round(DEFAULT_MIN_AREA * h * w / 512**2))


def _check(colormap, min_area, max_depth) -> np.ndarray:
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
    out: np.ndarray | None = None,
    stop: str = DEFAULT_STOP,
) -> np.ndarray:
    """Colormap (H, W, 3) uint8 -> label map (H, W) int32.

    0 is the background (the cluster near black) and 1..K the entities, numbered in raster
    order of their first pixel. With `keep_background=True` (entity segmentation) every
    cluster, the black one too, is an entity and 0 does not occur. `min_area=0` keeps every
    cluster. `out`, a C-contiguous (H, W) int32 array, receives the labels without an
    allocation (a caller's buffer, e.g. the C API's); it is returned. `stop`: when a cluster
    stops splitting: "centres" (its 2-means halves' centres closer than `threshold`, the
    default) or "spread" (the paper's: its colours' mean distance to its centre under
    `threshold`); measured against each other in docs/design.md.
    """
    return decode_colormap_counted(colormap, threshold=threshold, min_area=min_area, max_depth=max_depth,
                                   keep_background=keep_background, out=out, stop=stop)[0]


def warm_up() -> float:
    """Compile (or load from numba's cache) every decoder kernel now; seconds taken. The first
    compile takes ~30 s: unigs-export and `make demo` pay it once, so no run stalls on it."""
    import time

    t0 = time.perf_counter()
    cm = np.zeros((64, 64, 3), np.uint8)
    cm[:32] = 255
    for min_area in (0, 16):
        decode_colormap(cm, min_area=min_area)
    return time.perf_counter() - t0


def decode_colormap_counted(colormap, *, threshold=DEFAULT_THRESHOLD, min_area=DEFAULT_MIN_AREA,
                            max_depth=DEFAULT_MAX_DEPTH, keep_background=False, out=None,
                            stop: str = DEFAULT_STOP) -> tuple[np.ndarray, int]:
    """`decode_colormap` and the number of labels K, without a pass over the result to count them."""
    check_split(threshold, stop)
    cm = _check(colormap, min_area, max_depth)
    out = _check_out(out, cm.shape[:2])
    k = _decode(cm, float(threshold), int(min_area), int(max_depth), bool(keep_background), out,
                *_workspace(*cm.shape[:2]), STOPS[stop])
    return out, int(k)


_workspaces = threading.local()


def _workspace(h: int, w: int) -> tuple:
    """Per-thread scratch arrays for the last image size. Reusing them keeps a decode free of
    large allocations, whose fresh pages otherwise cost a page fault each in hosts whose malloc
    returns big blocks to the OS (measured: 872 faults, +3.5 ms per 512x512 decode in a C host)."""
    if getattr(_workspaces, "size", None) != (h, w):
        _workspaces.ws = (np.empty((32768, 4), np.int64), np.empty((4, h * w), np.int32))
        _workspaces.size = (h, w)
    return _workspaces.ws


def _check_out(out, shape) -> np.ndarray:
    if out is None:
        return np.empty(shape, np.int32)
    if not isinstance(out, np.ndarray) or out.dtype != np.int32 or out.shape != tuple(shape) \
            or not out.flags.c_contiguous or not out.flags.writeable:
        got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"out must be a writeable C-contiguous int32 array of shape {tuple(shape)}, got {got}")
    return out


# ---------------------------------------------------------------- numba product


@njit(cache=True, nogil=True)
def _histogram(cm, edge_tol, step, acc):
    """Per bin of 8 levels per channel (`_bin_row`), the weight and the weighted colour sums
    (32768, 4) of every `step`-th row and column, into acc.

    With edge_tol > 0 a pixel that differs from its right or lower neighbour by more than
    edge_tol in a channel has no weight: blur and JPEG ramps between entities then cannot form
    clusters of their own, and every pixel is still labelled by its nearest centre afterwards.
    A sampled pixel weighs step**2, so weights still count pixels.
    """
    h, w, _ = cm.shape
    rw = 3 * w
    flat = cm.reshape(h * rw)
    acc[:] = 0
    d = np.empty(rw, np.float32)
    wrow = np.ones(w, np.int64)
    brow = np.empty(w, np.uint16)
    tol = np.float32(edge_tol)
    unit = np.int64(step * step)
    for y in range(0, h, step):
        cur = flat[y * rw : (y + 1) * rw]
        _bin_row(cur, brow)
        if edge_tol > 0:
            below = flat[(y + 1) * rw : (y + 2) * rw] if y + 1 < h else cur
            _edge_weights_row(cur, below, y + 1 < h, d, wrow, tol)
        for x in range(0, w, step):
            k = np.int64(brow[x])
            wg = wrow[x] * unit
            acc[k, 0] += wg
            acc[k, 1] += np.int64(cur[3 * x]) * wg
            acc[k, 2] += np.int64(cur[3 * x + 1]) * wg
            acc[k, 3] += np.int64(cur[3 * x + 2]) * wg


@njit(cache=True, nogil=True)
def _bin_row(rgb, brow):
    """brow[x] = the histogram bin (8 levels per channel, 0..32767) of pixel x of an RGB row."""
    for x in range(brow.size):
        brow[x] = ((np.uint16(rgb[3 * x]) >> 3) << 10) | ((np.uint16(rgb[3 * x + 1]) >> 3) << 5) | (
            np.uint16(rgb[3 * x + 2]) >> 3)


@njit(cache=True, nogil=True)
def _leaf_row(rgb, leaf_of_bin, centres, brow, dst):
    """dst[x] = the leaf of pixel x of an RGB row. A bin no weighted pixel fell into (edges,
    unsampled pixels) gets the centre nearest to the first pixel met in it: on a clean colormap
    that pixel's colour is the whole bin's, so ties break as the reference's per-pixel argmin."""
    _bin_row(rgb, brow)
    for x in range(dst.size):
        leaf = leaf_of_bin[brow[x]]
        if leaf < 0:
            leaf = _nearest_to_colour(rgb[3 * x], rgb[3 * x + 1], rgb[3 * x + 2], centres)
            leaf_of_bin[brow[x]] = leaf
        dst[x] = leaf


@njit(cache=True, nogil=True)
def _edge_weights_row(cur, below, has_below, d, wrow, tol):
    """wrow[x] = 1 unless pixel x differs from its right or lower neighbour by more than tol.

    Works on row slices with float32 lanes so LLVM vectorises it (computed offsets into the
    flat image make numba emit wraparound checks that stop vectorisation).
    """
    rw = cur.size
    for j in range(rw - 3):
        d[j] = np.abs(np.float32(cur[j]) - np.float32(cur[j + 3]))
    for j in range(rw - 3, rw):
        d[j] = 0.0
    if has_below:
        for j in range(rw):
            d[j] = max(d[j], np.abs(np.float32(cur[j]) - np.float32(below[j])))
    for x in range(rw // 3):
        wrow[x] = np.int64(max(max(d[3 * x], d[3 * x + 1]), d[3 * x + 2]) <= tol)


@njit(cache=True, nogil=True)
def _bin_points(acc):
    """The bins with weight as points: ids (m,), mean colours (m, 3), weights (m,)."""
    m = 0
    for k in range(32768):
        m += acc[k, 0] > 0
    ids = np.empty(m, np.int64)
    j = 0
    for k in range(32768):
        if acc[k, 0] > 0:
            ids[j] = k
            j += 1
    pts = np.empty((m, 3), np.float64)
    wts = np.empty(m, np.float64)
    for j in range(m):
        k = ids[j]
        c = acc[k, 0]
        pts[j, 0] = acc[k, 1] / c
        pts[j, 1] = acc[k, 2] / c
        pts[j, 2] = acc[k, 3] / c
        wts[j] = c
    return ids, pts, wts


@njit(cache=True, nogil=True)
def _nearest_to_colour(r, g, b, centres):
    """The nearest centre to one colour (ties to the lower index): for bins whose every pixel
    sits on an edge (or was not sampled), which have no mean colour of their own."""
    r, g, b = np.float64(r), np.float64(g), np.float64(b)
    best, bk = np.inf, 0
    for j in range(centres.shape[0]):
        d = (r - centres[j, 0]) ** 2 + (g - centres[j, 1]) ** 2 + (b - centres[j, 2]) ** 2
        if d < best:
            best, bk = d, j
    return bk


@njit(cache=True, nogil=True)
def _first_near_max(v):
    """The first index whose value is within TIE_REL of the maximum. Points are in histogram-bin
    order, so a tie goes to the lowest bin; symmetric colours tie exactly in exact arithmetic but
    not after rounding, which differs between summation orders (and from the reference's)."""
    top = v.max()
    cut = top - TIE_REL * abs(top)
    for t in range(v.size):
        if v[t] >= cut:
            return t
    return 0


@njit(cache=True, nogil=True, fastmath=_SUMS)
def _split(pts, wts, idx, lo, hi, thr2, min_w, stop):
    """2-means of idx[lo:hi]; True and idx partitioned (side 0 first) -> mid, if the cluster may
    split: stop 0 (STOPS["centres"]) its halves' centres are >= thr apart, stop 1 ("spread",
    the paper's rule) its colours' mean distance to its centre is >= thr."""
    m = hi - lo
    p0 = np.empty(m)
    p1 = np.empty(m)
    p2 = np.empty(m)
    pw = np.empty(m)
    for t in range(m):
        i = idx[lo + t]
        p0[t] = pts[i, 0]
        p1[t] = pts[i, 1]
        p2[t] = pts[i, 2]
        pw[t] = wts[i]
    sw = pw.sum()
    m0 = (pw * p0).sum() / sw
    m1 = (pw * p1).sum() / sw
    m2 = (pw * p2).sum() / sw
    if stop == 1:
        spread = 0.0
        for t in range(m):
            spread += pw[t] * np.sqrt((p0[t] - m0) ** 2 + (p1[t] - m1) ** 2 + (p2[t] - m2) ** 2)
        if spread * spread < thr2 * sw * sw:
            return -1
    # deterministic init, k-means++ made greedy: the bin with the largest weight * squared
    # distance from the centre, then the same from that one (a lone noisy bin cannot win)
    score = np.empty(m)
    for t in range(m):
        score[t] = pw[t] * ((p0[t] - m0) ** 2 + (p1[t] - m1) ** 2 + (p2[t] - m2) ** 2)
    a = _first_near_max(score)
    a0, a1, a2 = p0[a], p1[a], p2[a]
    diam = 0.0
    for t in range(m):
        d2 = (p0[t] - a0) ** 2 + (p1[t] - a1) ** 2 + (p2[t] - a2) ** 2
        diam = max(diam, d2)
        score[t] = pw[t] * d2
    b = _first_near_max(score)
    if stop == 0 and diam < thr2:  # the halves' distance cannot exceed the diameter
        return -1
    b0, b1, b2 = p0[b], p1[b], p2[b]
    s = np.full(m, np.int8(-1))
    for _ in range(_LLOYD_ITERS):
        changed = 0
        s1 = x0 = x1 = x2 = y0 = y1 = y2 = 0.0
        for t in range(m):
            da = (p0[t] - a0) ** 2 + (p1[t] - a1) ** 2 + (p2[t] - a2) ** 2
            db = (p0[t] - b0) ** 2 + (p1[t] - b1) ** 2 + (p2[t] - b2) ** 2
            one = np.int8(db < da)
            changed |= one ^ s[t]
            s[t] = one
            f = np.float64(one) * pw[t]
            s1 += f
            y0 += f * p0[t]
            y1 += f * p1[t]
            y2 += f * p2[t]
        s0 = 0.0
        for t in range(m):
            f = np.float64(1 - s[t]) * pw[t]
            s0 += f
            x0 += f * p0[t]
            x1 += f * p1[t]
            x2 += f * p2[t]
        if s0 == 0.0 or s1 == 0.0:
            return -1
        a0, a1, a2 = x0 / s0, x1 / s0, x2 / s0
        b0, b1, b2 = y0 / s1, y1 / s1, y2 / s1
        if changed == 0:
            break
    if s0 < min_w or s1 < min_w or stop == 0 and (a0 - b0) ** 2 + (a1 - b1) ** 2 + (a2 - b2) ** 2 < thr2:
        return -1
    # stable partition: side 0 first
    tmp = idx[lo:hi].copy()
    k = lo
    for t in range(m):
        if s[t] == 0:
            idx[k] = tmp[t]
            k += 1
    mid = k
    for t in range(m):
        if s[t] == 1:
            idx[k] = tmp[t]
            k += 1
    return mid


@njit(cache=True, nogil=True)
def _dichotomy(pts, wts, thr, max_depth, min_w, stop):
    """Depth-first splits; returns leaf centres (K, 3)."""
    m = pts.shape[0]
    idx = np.arange(m)
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
            mid = _split(pts, wts, idx, lo, hi, thr2, min_w, stop)
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
    """Index of the nearest centre per point (ties to the lower index); centre-major so the
    inner loop over points vectorises."""
    m = pts.shape[0]
    out = np.zeros(m, np.int32)
    best = np.full(m, np.inf)
    p0 = np.ascontiguousarray(pts[:, 0])
    p1 = np.ascontiguousarray(pts[:, 1])
    p2 = np.ascontiguousarray(pts[:, 2])
    for k in range(centres.shape[0]):
        c0, c1, c2 = centres[k, 0], centres[k, 1], centres[k, 2]
        kk = np.int32(k)
        for i in range(m):
            d = (p0[i] - c0) ** 2 + (p1[i] - c1) ** 2 + (p2[i] - c2) ** 2
            if d < best[i]:
                best[i] = d
                out[i] = kk
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
def _unstable_pixels(cm, leaf_of_bin, centres, min_area, lab, runs, first):
    """Flat indices, in raster order, of the pixels whose 4-connected component of equal leaves
    has a core under min_area pixels: union-find over row runs, the leaves written into lab row by
    row as they are needed. first[leaf] receives the first stable pixel of each leaf in
    raster order (h * w if none). If no pixel is stable there is nothing to dissolve into: no
    pixel is returned and every pixel counts as stable.

    A core pixel's leaf reaches _CORE_RADIUS pixels in all four directions; the border counts
    as the same leaf. Horizontally that is a run's interior; vertically a per-column count of
    equal leaves above, read _CORE_RADIUS rows late (when the rows below are known).
    """
    h, w = lab.shape
    rw = 3 * w
    rgb = cm.reshape(h * rw)
    brow = np.empty(w, np.uint16)
    r_ = _CORE_RADIUS
    run_start, run_end, run_core, run_leaf = runs[0], runs[1], runs[2], runs[3]
    row_first = np.empty(h + 1, np.int64)
    words = (w + 7) // 8
    edge = np.zeros(8 * words, np.uint8)  # edge[x]: a run ends at x (x = w - 1 always)
    edge_words = edge.view(np.uint64)
    above = np.empty(w, np.int32)  # equal leaves above, the border counting as r_ of them
    core_cum = np.zeros(w + 1, np.int32)
    nr = 0
    for s in range(h + r_):
        if s < h:
            row_first[s] = nr
            v = lab[s]
            _leaf_row(rgb[s * rw : (s + 1) * rw], leaf_of_bin, centres, brow, v)
            if s == 0:
                above[:] = r_
            else:
                up = lab[s - 1]
                for x in range(w):
                    above[x] = (above[x] + 1) * np.int32(v[x] == up[x])
            nxt = v[1:]
            cur = v[: w - 1]
            for x in range(w - 1):
                edge[x] = nxt[x] != cur[x]
            edge[w - 1] = 1
            for k in range(words):  # few words hold an edge: skip the rest, store without branches
                if edge_words[k] != 0:
                    for x in range(8 * k, min(8 * k + 8, w)):
                        run_end[nr] = x + 1
                        nr += edge[x]
            x0 = 0
            for r in range(row_first[s], nr):
                run_start[r] = x0
                run_leaf[r] = v[x0]
                x0 = run_end[r]
        else:  # the rows below the image repeat its last row
            for x in range(w):
                above[x] += 1
        y = s - r_
        if y < 0:
            continue
        for x in range(w):
            core_cum[x + 1] = core_cum[x] + np.int32(above[x] >= 2 * r_)
        for r in range(row_first[y], row_first[y + 1] if y + 1 < h else nr):
            a = run_start[r] + r_ if run_start[r] > 0 else 0
            b = run_end[r] - r_ if run_end[r] < w else w
            run_core[r] = core_cum[b] - core_cum[a] if b > a else 0
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
                if run_leaf[t] == run_leaf[r]:
                    ra, rb = _find(parent, t), _find(parent, r)
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
                t += 1
            if t > a:  # the last run above that overlaps this one may overlap the next one too
                a = t - 1
    total = np.zeros(nr, np.int64)
    for r in range(nr):  # parents point to lower runs, so parent[parent[r]] is already a root
        parent[r] = parent[parent[r]]
        total[parent[r]] += run_core[r]
    m = 0
    for r in range(nr):
        if total[parent[r]] < min_area:
            m += run_end[r] - run_start[r]
    stable_cut = min_area if m < h * w else 0
    out = np.empty(m if m < h * w else 0, np.int32)
    first[:] = h * w
    j = 0
    for y in range(h):
        for r in range(row_first[y], row_first[y + 1]):
            if total[parent[r]] < stable_cut:
                for x in range(run_start[r], run_end[r]):
                    out[j] = y * w + x
                    j += 1
            else:
                leaf = run_leaf[r]
                first[leaf] = min(first[leaf], y * w + run_start[r])
    return out


@njit(cache=True, nogil=True)
def _dissolve(lab, pending, cm, centres):
    """In place: the pending pixels take, sweep by sweep from the stable regions inward, the
    label of a 4-neighbour whose centre is nearest to their own colour. Each sweep reads only the
    previous sweep's labels, so the result does not depend on the visiting order."""
    h, w = lab.shape
    n = h * w
    if pending.size == n or pending.size == 0:
        return
    cur = lab.reshape(n)
    for t in range(pending.size):
        cur[pending[t]] = -1
    flat = cm.reshape(n * 3)
    todo = pending.copy()
    got = np.empty(todo.size, np.int32)
    m = todo.size
    while m > 0:
        for t in range(m):
            p = todo[t]
            y = p // w
            x = p - y * w
            c0, c1, c2 = np.float64(flat[3 * p]), np.float64(flat[3 * p + 1]), np.float64(flat[3 * p + 2])
            best = np.inf
            bl = -1
            for q, ok in ((p - w, y > 0), (p + w, y + 1 < h), (p - 1, x > 0), (p + 1, x + 1 < w)):
                if ok:
                    k = cur[q]
                    if k >= 0:
                        dd = (c0 - centres[k, 0]) ** 2 + (c1 - centres[k, 1]) ** 2 + (c2 - centres[k, 2]) ** 2
                        if dd < best:
                            best = dd
                            bl = k
            got[t] = bl
        keep = 0
        for t in range(m):
            if got[t] >= 0:
                cur[todo[t]] = got[t]
            else:
                todo[keep] = todo[t]
                keep += 1
        if keep == m:  # cannot happen while a stable pixel exists; guards an endless loop
            break
        m = keep


@njit(cache=True, nogil=True)
def _first_pixels(lab, first):
    """first[leaf] = the first pixel of each leaf in raster order (h * w if none)."""
    flat = lab.reshape(lab.size)
    first[:] = flat.size
    todo = first.size
    for i in range(flat.size):
        leaf = flat[i]
        if first[leaf] == flat.size:
            first[leaf] = i
            todo -= 1
            if todo == 0:
                break


@njit(cache=True, nogil=True)
def _label_of(first, n, centres, keep_background):
    """Leaf -> label: 1..K in raster order of each leaf's first pixel, 0 for the background
    leaves (unless keep_background) and for leaves without pixels (first == n). Returns K too."""
    label_of = np.zeros(first.size, np.int32)
    nxt = 0
    for leaf in np.argsort(first, kind="mergesort"):
        c = centres[leaf]
        is_bg = c[0] < _BG_LEVEL and c[1] < _BG_LEVEL and c[2] < _BG_LEVEL
        if first[leaf] < n and (keep_background or not is_bg):
            nxt += 1
            label_of[leaf] = nxt
    return label_of, nxt


@njit(cache=True, nogil=True)
def _sample_step(h, w, min_area):
    """Every 2nd row and column feeds the colour histogram of a large image when clusters under
    min_area >= _SAMPLE_MIN_AREA pixels are dissolved anyway: such a cluster still has >= 4
    samples, and the histogram only has to find the colour modes (every pixel is labelled)."""
    return 2 if min_area >= _SAMPLE_MIN_AREA and h >= 256 and w >= 256 else 1


@njit(cache=True, nogil=True)
def _decode(cm, thr, min_area, max_depth, keep_background, out, acc, runs, stop):
    """Labels into out (also the working label map); returns K. The rest are scratch arrays."""
    h, w, _ = cm.shape
    step = _sample_step(h, w, min_area)
    _histogram(cm, _EDGE_TOL if min_area > 0 else 0, step, acc)
    ids, pts, wts = _bin_points(acc)
    if ids.size == 0:  # nothing but edges (a fine checkerboard): let every pixel count
        _histogram(cm, 0, 1, acc)
        ids, pts, wts = _bin_points(acc)
    centres = _refine(pts, wts, _dichotomy(pts, wts, thr, max_depth, max(min_area, 1.0), stop), thr)
    leaf_of_bin = np.full(32768, -1, np.int32)
    leaf_of_bin[ids] = _nearest(pts, centres)
    n = h * w
    lab = out.reshape(n)
    first = np.empty(centres.shape[0], np.int64)
    if min_area > 0 and centres.shape[0] > 1:
        pending = _unstable_pixels(cm, leaf_of_bin, centres, min_area, out, runs, first)
        _dissolve(out, pending, cm, centres)
        for p in pending:  # raster order: the first pending pixel of a leaf is its earliest
            first[lab[p]] = min(first[lab[p]], p)
    else:
        rgb = cm.reshape(n * 3)
        brow = np.empty(w, np.uint16)
        for y in range(h):
            _leaf_row(rgb[3 * y * w : 3 * (y + 1) * w], leaf_of_bin, centres, brow, out[y])
        _first_pixels(out, first)
    label_of, k = _label_of(first, n, centres, keep_background)
    for i in range(n):
        lab[i] = label_of[lab[i]]
    return k
