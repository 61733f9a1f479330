"""Losses on a decoded colormap beyond plain regression.

An x0 prediction trained with MSE alone answers with the mean of what it is unsure of: an entity
whose palette cell (its centre of mass) the model cannot pin down gets a blend of the candidate
colours, and two neighbouring blends are alike, so the dichotomy decoder merges them (the stage 8
demo model missed 112 of 415 true entities against 37 false positives; on a sheet of its misses,
such merges). Segmentation only needs each entity's colour
flat and different from the others', so this term asks for exactly that (De Brabandere et al.
2017's discriminative loss, with the push margin taken from the truth itself).
"""

from __future__ import annotations

import torch

PULL_MARGIN = 0.125  # 16 of 255 levels in [-1, 1] units: half the decoder's default threshold (32)
PUSH_CAP = 1.0  # 128 levels: entity means need be no further apart than this


def entity_separation(rec: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """rec, target: (B, 3, H, W) in [-1, 1]; target's distinct colours are its entities
    (background included). Pull: each pixel within PULL_MARGIN of its entity's mean colour.
    Push: two entities' mean colours at least as far apart as their true colours are (capped at
    PUSH_CAP), so the truth itself scores 0 and no pair is pushed past what the palette gives it."""
    losses = []
    for r, t in zip(rec, target, strict=True):
        colours, labels = torch.unique(t.reshape(3, -1).T, dim=0, return_inverse=True)
        pixels = r.reshape(3, -1).T
        k = len(colours)
        counts = torch.bincount(labels, minlength=k).to(pixels.dtype)[:, None]
        means = torch.zeros(k, 3, dtype=pixels.dtype).index_add(0, labels, pixels) / counts
        spread = (pixels - means[labels]).norm(dim=1)
        per_entity = torch.zeros(k, dtype=pixels.dtype).index_add(
            0, labels, torch.relu(spread - PULL_MARGIN) ** 2) / counts[:, 0]
        pull = per_entity.mean()
        if k < 2:
            losses.append(pull)
            continue
        a, b = torch.triu_indices(k, k, 1)
        want = torch.clamp((colours[a] - colours[b]).norm(dim=1), max=PUSH_CAP)
        push = (torch.relu(want - (means[a] - means[b]).norm(dim=1)) ** 2).mean()
        losses.append(pull + push)
    return torch.stack(losses).mean()


CONTRAST_SCALE = 0.1  # a 10% lower error under the true prompt is a logit of 1


def caption_contrast(err_true: torch.Tensor, err_wrong: torch.Tensor) -> torch.Tensor:
    """A logistic loss on the same inputs' denoising errors under the true prompt and under a
    wrong one, relative to their size (errors shrink with the noise level): log 2 when the prompt
    makes no difference, towards 0 as the true prompt's error falls below the wrong one's. As in
    diffusion classifiers (Li et al. 2023), the error under a prompt scores how well it fits."""
    scale = CONTRAST_SCALE * ((err_true + err_wrong) / 2).detach().clamp(min=1e-8)
    return torch.nn.functional.softplus((err_true - err_wrong) / scale).mean()


def soft_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """One minus the soft IoU of (B, 1, H, W) masks in [0, 1], averaged over the batch: unlike a
    per-pixel loss it does not shrink as the entity does."""
    inter = (pred * target).sum((1, 2, 3))
    union = (pred + target - pred * target).sum((1, 2, 3))
    return (1 - inter / union.clamp(min=1e-6)).mean()
