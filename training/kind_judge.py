"""A small differentiable shape-kind classifier, for `train.kind_loss`.

Teacher-forced, the demo model reads an entity's shape from the noisy latent down to t ~ 700 and
consults the caption only above it, where its x0 is a blurred mean (`unigs-bench teacher-forced`,
docs/demo-model.md stage 17). This judge, trained on the shapes world's true entity masks cropped to their
coarse regions, scores the x0 colormap's entity mask at those timesteps, so the caption's kind
gets a gradient of its own.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from unigs_deploy.synthetic.coarse import coarse_mask
from unigs_deploy.synthetic.shapes import KINDS, shapes_image

log = logging.getLogger(__name__)

CROP = 32  # the judge's input side: the region's box resampled
SOFTNESS = 0.25  # colour distance (in [-1, 1] units) at which a pixel counts e^-0.5 towards the entity


class KindJudge(nn.Module):
    """(B, 1, CROP, CROP) entity mask in [0, 1] -> (B, len(KINDS)) logits."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.SiLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, len(KINDS)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def region_crops(masks: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """masks (B, 1, H, W) -> (B, 1, CROP, CROP): each resampled from its region's bounding box
    (bilinear, differentiable in the mask)."""
    b, _, h, w = masks.shape
    theta = torch.zeros(b, 2, 3, dtype=masks.dtype)
    for i, r in enumerate(regions[:, 0] > 0.5):
        ys, xs = torch.nonzero(r, as_tuple=True)
        y0, y1, x0, x1 = ys.min().item(), ys.max().item() + 1, xs.min().item(), xs.max().item() + 1
        # grid_sample's [-1, 1] spans the image's pixel edges (align_corners=False)
        theta[i, 0, 0], theta[i, 0, 2] = (x1 - x0) / w, (x0 + x1) / w - 1
        theta[i, 1, 1], theta[i, 1, 2] = (y1 - y0) / h, (y0 + y1) / h - 1
    grid = torch.nn.functional.affine_grid(theta, (b, 1, CROP, CROP), align_corners=False)
    return torch.nn.functional.grid_sample(masks, grid, mode="bilinear", align_corners=False)


def soft_entity_mask(rec: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """rec (B, 3, H, W) decoded colormaps in [-1, 1], colours (B, 3): how close each pixel is to its
    example's entity colour, (B, 1, H, W) in [0, 1]."""
    d2 = ((rec - colours[:, :, None, None]) ** 2).sum(1, keepdim=True)
    return torch.exp(-d2 / (2 * SOFTNESS ** 2))


def soft_foreground_mask(rec: torch.Tensor) -> torch.Tensor:
    """rec (B, 3, H, W) decoded colormaps in [-1, 1]: how far each pixel is from the background's
    black, (B, 1, H, W) in [0, 1]. A sampled one-entity colormap's entity takes the palette colour
    of wherever the model drew it, not the truth's, so anything not background counts."""
    d2 = ((rec + 1) ** 2).sum(1, keepdim=True)
    return 1 - torch.exp(-d2 / (2 * SOFTNESS ** 2))


def _examples(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n true entity masks, each cropped to a coarse region drawn around it, and their kinds."""
    masks, regions, kinds = [], [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        _, ms, captions = shapes_image(rng, size)
        j = int(rng.integers(len(ms)))
        region, _ = coarse_mask(ms[j], rng)
        masks.append(ms[j])
        regions.append(region)
        kinds.append(KINDS.index(captions[j].split()[-1]))
    as_tensor = lambda a: torch.from_numpy(np.stack(a)[:, None].astype(np.float32))  # noqa: E731
    return region_crops(as_tensor(masks), as_tensor(regions)), torch.tensor(kinds)


def _blurred(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Masks softened as a decoded x0 is: a random blur (box filter of 1, 3 or 5) and contrast."""
    k = int(torch.randint(0, 3, (), generator=gen)) * 2 + 1
    if k > 1:
        x = torch.nn.functional.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)
    return x * (0.6 + 0.4 * torch.rand(len(x), 1, 1, 1, generator=gen))


def train_judge(*, size: int = 128, n: int = 6000, steps: int = 1500, seed: int = 0,
                progress: bool = True) -> tuple[KindJudge, float]:
    """-> (the judge, its accuracy on 1,000 held-out true masks). Deterministic for a seed."""
    from tqdm.auto import tqdm

    x, y = _examples(n, size, seed)
    x_val, y_val = _examples(1000, size, seed + 1)
    with torch.random.fork_rng():  # the initial weights, without moving the caller's global generator
        torch.manual_seed(seed)
        judge = KindJudge()
    opt = torch.optim.AdamW(judge.parameters(), lr=2e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(steps), desc="kind judge", unit="step", disable=not progress):
        idx = torch.randint(0, n, (64,), generator=gen)
        loss = torch.nn.functional.cross_entropy(judge(_blurred(x[idx], gen)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    judge.eval().requires_grad_(False)
    with torch.no_grad():
        accuracy = float((judge(x_val).argmax(1) == y_val).float().mean())
    return judge, accuracy


def load_or_train(path: Path, *, size: int, seed: int = 0) -> KindJudge:
    """The judge a run trained (kept beside its checkpoints, so --resume uses the same one)."""
    judge = KindJudge()
    if path.is_file():
        judge.load_state_dict(torch.load(path, weights_only=True))
        return judge.eval().requires_grad_(False)
    judge, accuracy = train_judge(size=size, seed=seed)
    log.info("kind judge: %.3f of 1000 held-out true entity masks named right", accuracy)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(judge.state_dict(), tmp)
    tmp.replace(path)
    return judge
