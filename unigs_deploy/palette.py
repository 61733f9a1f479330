"""Location-aware palette: entity masks -> colormap.

Each entity's colour is chosen by where its centre of mass falls on an 11x11 grid over the
image, so the same place always gets the same colour (what lets a diffusion model learn the
colour of an entity from its position). The 121 grid cells are mapped onto the 5-level colour
cube {0,64,128,192,255}^3 minus black with a stride permutation chosen so that neighbouring
cells get colours at least 143 apart (adjacent entities are the hard case for the decoder);
the three darkest colours, closest to the black background, are kept as overflow slots used
only once all 121 cells are taken, which gives 124 entities at most.
"""

from __future__ import annotations

import numpy as np

LEVELS = (0, 64, 128, 192, 255)
GRID = 11
MAX_ENTITIES = 124
_STRIDE, _OFFSET = 41, 4  # best min neighbour distance (143.1) over all stride permutations
_OVERFLOW = ((64, 0, 0), (0, 64, 0), (0, 0, 64))


def _build_palette() -> np.ndarray:
    cube = [(r, g, b) for r in LEVELS for g in LEVELS for b in LEVELS if (r, g, b) != (0, 0, 0)]
    grid_colours = [c for c in cube if c not in _OVERFLOW]
    n = len(grid_colours)  # 121
    ordered = [grid_colours[(_OFFSET + s * _STRIDE) % n] for s in range(n)]
    return np.array(ordered + list(_OVERFLOW), dtype=np.uint8)


_PALETTE = _build_palette()
_PALETTE.setflags(write=False)
_cells = np.arange(GRID * GRID)
_CELL_RC = np.stack([_cells // GRID, _cells % GRID], axis=1).astype(np.float64)


def palette() -> np.ndarray:
    """The 124 slot colours, (124, 3) uint8: slots 0..120 are grid cells in raster order."""
    return _PALETTE.copy()


def _check_masks(masks) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
    if masks.dtype != bool:
        if not np.issubdtype(masks.dtype, np.integer) or masks.size and (masks.min() < 0 or masks.max() > 1):
            raise ValueError(f"masks must be boolean (or 0/1 integers), got dtype {masks.dtype}")
        masks = masks.astype(bool)
    if masks.shape[1] == 0 or masks.shape[2] == 0:
        raise ValueError(f"masks have an empty image size {masks.shape[1:]}")
    if masks.shape[0] > MAX_ENTITIES:
        raise ValueError(
            f"{masks.shape[0]} entities, but the palette has {MAX_ENTITIES} colours: "
            "merge or drop the smallest entities first"
        )
    return masks


def visible_masks(masks) -> np.ndarray:
    """Resolve overlaps: a pixel belongs to the last mask that covers it."""
    masks = _check_masks(masks)
    owner = np.full(masks.shape[1:], -1, dtype=np.int32)
    for i, m in enumerate(masks):
        owner[m] = i
    return owner[None] == np.arange(masks.shape[0])[:, None, None]


def assign_slots(masks) -> np.ndarray:
    """Palette slot of each entity, (N,) int; -1 for an entity with no visible pixel.

    The centre of mass of the visible pixels picks a grid cell; a taken cell moves to the
    nearest free one (ties: lowest slot), and the overflow slots are used only when the grid is
    full. Entities are served in order, so the result is deterministic.
    """
    vis = visible_masks(masks)
    n, h, w = vis.shape
    free = np.ones(MAX_ENTITIES, dtype=bool)
    slots = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        ys, xs = np.nonzero(vis[i])
        if ys.size == 0:
            continue
        r = min(int(ys.mean() * GRID / h), GRID - 1)
        c = min(int(xs.mean() * GRID / w), GRID - 1)
        want = r * GRID + c
        if free[want]:
            slot = want
        elif free[: GRID * GRID].any():
            d = ((_CELL_RC - (r, c)) ** 2).sum(1)
            d[~free[: GRID * GRID]] = np.inf
            slot = int(np.argmin(d))
        else:
            slot = int(np.flatnonzero(free)[0])
        free[slot] = False
        slots[i] = slot
    return slots


def encode_colormap(masks) -> np.ndarray:
    """Entity masks (N, H, W) bool -> colormap (H, W, 3) uint8, background black.

    Overlapping masks: the later mask wins (it is drawn on top), and the centre of mass is
    taken over the pixels an entity keeps.
    """
    masks = _check_masks(masks)
    slots = assign_slots(masks)
    colormap = np.zeros(masks.shape[1:] + (3,), dtype=np.uint8)
    for m, s in zip(masks, slots, strict=True):
        if s >= 0:
            colormap[m] = _PALETTE[s]
    return colormap


def colormap_to_unit(x) -> np.ndarray:
    """uint8 colormap [0, 255] -> float32 [-1, 1], the range the VAE sees."""
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise ValueError(f"colormap must be uint8, got {x.dtype}")
    return x.astype(np.float32) / 127.5 - 1.0


def unit_to_colormap(x) -> np.ndarray:
    """float [-1, 1] -> uint8 [0, 255], clipping and rounding (the VAE's output is not exact)."""
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError("colormap values contain NaN or inf: the VAE decoder output is broken")
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)
