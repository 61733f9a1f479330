"""`train.kind_target = "fit"`: the asked kind's best-fitting shape as the target of a drawn entity.

The kind judge (training/kind_judge.py) was gamed when it scored the model's own samples: the
demo model learned stripes and blotches the judge rated as the asked kind (docs/demo-model.md,
stages 23-24). Here the drawn entity is instead pulled towards one concrete outline: the shape of
the asked kind that overlaps it most (the quality detector's own Nelder-Mead fit,
benchmarks/detect.py), clipped to the region. A blob asked to be a star is pulled towards the star
that covers it best, so arms grow and the rest is erased; a stripe or a fill fits no star.
Fitted on the colormap half (`"fit"`), any colour counts as drawn, and on the demo model the image
half's colour went (stage 26); `"fit-image"` fits the image half's pixels near the caption's
colour, what `unigs-bench quality` locates and judges.
"""

from __future__ import annotations

import numpy as np
import torch

from unigs_deploy import palette
from unigs_deploy.benchmarks import detect
from unigs_deploy.synthetic.shapes import COLOURS, KINDS, draw_shape

MIN_PIXELS = 16  # a drawing smaller than this has no outline to fit: the truth is the target


def fitted_targets(drawn: torch.Tensor, regions: torch.Tensor, kinds: list[int],
                   truths: torch.Tensor) -> torch.Tensor:
    """drawn (B, 1, H, W) soft entity masks in [0, 1], regions (B, 1, H, W), kinds: the asked
    kind's index in KINDS per example, truths (B, 1, H, W) the true entity masks -> (B, 1, H, W)
    targets: the asked kind's best fit to the drawn mask (> 0.5) inside the region, clipped to it;
    the truth where too little was drawn there."""
    out = torch.zeros_like(drawn)
    h, w = drawn.shape[-2:]
    for i, k in enumerate(kinds):
        region = regions[i, 0].detach().cpu().numpy() > 0.5
        mask = (drawn[i, 0].detach().cpu().numpy() > 0.5) & region
        if mask.sum() < MIN_PIXELS:
            out[i, 0] = truths[i, 0]
            continue
        _, params = detect.fit_kind(mask, KINDS[k])
        out[i, 0] = torch.from_numpy(draw_shape(h, w, KINDS[k], *params) & region)
    return out


def caption_colours(names: list[str]) -> torch.Tensor:
    """Colour names ("red", ...) -> (B, 3) their RGB in [-1, 1], as soft_entity_mask takes them."""
    return torch.from_numpy(palette.colormap_to_unit(np.array([COLOURS[n] for n in names], np.uint8)))
