"""What region IoU a perfect inpainter would score on the held-out shapes images.

An inpainter sees the image outside the coarse region, the region and the caption, not where in
the region the entity lay. A perfect one draws the entity from the shapes world's posterior given
what it sees; its expected region IoU is the reference the model's is judged against. Estimated
by importance sampling from the generator's own prior (kind from the caption, radii, centre,
angle), keeping the entities drawn over it, weighted by the chance of the region the coarse-mask
process would make around each sample. Written down for the box regions only (half of the
examples: `coarse.coarse_mask`'s box branch); the curved ones return None. Approximations: the
entities under it are not re-checked for their minimum size; a curved region whose bulges the
border clipped flat (2.5% of them) passes for a box; and the entities over it are taken as they
are, though the inpainter sees them only outside the region: in that the reference is generous.
"""

from __future__ import annotations

import numpy as np

from unigs_deploy import metrics
from unigs_deploy.synthetic.coarse import bbox
from unigs_deploy.synthetic.shapes import (
    ENTITIES,
    HELD_OUT_SEED,
    RADII,
    draw_shape,
    entity_min_pixels,
    held_out_example,
)

DRAWS = 20_000  # proposals per image


def is_box(region: np.ndarray) -> bool:
    x0, y0, x1, y1 = bbox(region)
    return int(region.sum()) == (x1 - x0) * (y1 - y0)


def box_likelihood(mask: np.ndarray, region: np.ndarray) -> float:
    """p(region | the entity's visible mask) under the box branch, up to a constant: each side of
    the mask's box moved out by a uniform share in [0, 0.5) of the free space on that side
    (`coarse.extend_box`, truncated to whole pixels); 0 where no such move gives the region."""
    h, w = region.shape
    rx0, ry0, rx1, ry1 = bbox(region)
    mx0, my0, mx1, my1 = bbox(mask)
    lik = 1.0
    for moved, free in ((mx0 - rx0, mx0), (my0 - ry0, my0), (rx1 - mx1, w - mx1), (ry1 - my1, h - my1)):
        if not 0 <= moved <= 0.5 * free + 1:
            return 0.0
        lik /= 0.5 * free + 1
    return lik


def posterior_region_iou(i: int, size: int, *, draws: int = DRAWS, seed: int = 0) -> float | None:
    """Held-out example i's expected region IoU of a posterior sample with the truth; None for a
    curved region, or when no draw fits the region."""
    _, masks, captions, region, j = held_out_example(i, size)
    if not is_box(region):
        return None
    # shapes_image's first draw: how many entities it asked for, which set their size
    n = int(np.random.default_rng(HELD_OUT_SEED + i).integers(ENTITIES[0], ENTITIES[1] + 1))
    scale = np.sqrt(size * size / n)
    kind = captions[j].split()[2]
    over = masks[j + 1:].any(axis=0) if j + 1 < len(masks) else np.zeros_like(region)
    x0, y0, x1, y1 = bbox(region)
    in_box = size * size / ((x1 - x0) * (y1 - y0))  # the prior's centre density there, over the image's
    rng = np.random.default_rng(seed)
    total = weighted = 0.0
    for _ in range(draws):
        rx, ry = rng.uniform(*RADII, 2) * scale
        # the prior's centre is uniform over the image; the proposal draws half of them inside the
        # region's box, where most consistent ones lie (a shape cut by the border or covered may
        # centre outside it), and each draw is weighted by prior / proposal
        if rng.uniform() < 0.5:
            cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        else:
            cx, cy = rng.uniform(0, size, 2)
        m = draw_shape(size, size, kind, cx, cy, rx, ry, rng.uniform(0, np.pi)) & ~over
        if m.sum() < entity_min_pixels(size) or (m & ~region).any():
            continue
        inside = x0 <= cx < x1 and y0 <= cy < y1
        lik = box_likelihood(m, region) / (0.5 * in_box * inside + 0.5)
        total += lik
        weighted += lik * metrics.mask_iou(m, masks[j])
    return weighted / total if total else None
