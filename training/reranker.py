"""The demo model's reranker: a small classifier naming an entity's colour and kind from its crop.

Inpaint's candidates are chosen by it (unigs_deploy/rerank.py says why). Trained on the shapes
world's true entities (a seed stream neither training nor the held-out images use), each
softened the way the demo model's drawings are (a blur, a latent-grid resample and a new
threshold), so a blob reads as the kind it is nearest to and a clean star as a star. It never
sees the model's samples or the benchmark's detector: it is a second opinion, not the judge.

    python -m unigs_deploy.training.reranker --out unigs_deploy/weights/demo   # ~20 minutes on 2 cores
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from unigs_deploy.modeling.reranker import FOLDER, Reranker, save
from unigs_deploy.rerank import crop
from unigs_deploy.synthetic.coarse import coarse_mask
from unigs_deploy.synthetic.shapes import COLOUR_NAMES, KINDS, shapes_image

GROUPS = {"colour": list(COLOUR_NAMES), "kind": list(KINDS)}
CROP = 32
SEED_STREAM = 77  # examples are drawn from default_rng([SEED_STREAM, seed, i])


def soften(mask: np.ndarray, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A true entity mask and image as the demo model might draw them: blurred (some through the
    8x latent grid), thresholded anew, the image blurred."""
    m = mask.astype(np.float32)
    if rng.random() < 0.5:
        h, w = m.shape
        m = cv2.resize(cv2.resize(m, (w // 8, h // 8), interpolation=cv2.INTER_AREA), (w, h),
                       interpolation=cv2.INTER_LINEAR)
    sigma = rng.uniform(0, 3)
    if sigma > 0.3:
        m = cv2.GaussianBlur(m, (0, 0), sigma)
    soft = m > rng.uniform(0.3, 0.7)
    if not soft.any():
        soft = mask
    s = rng.uniform(0, 1.5)
    img = cv2.GaussianBlur(image, (0, 0), s) if s > 0.3 else image
    return soft, img


def examples(n: int, size: int, seed: int, *, softened: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """n entity crops (each to a coarse region drawn around it) and their [colour, kind] indices."""
    x, y = [], []
    for i in range(n):
        rng = np.random.default_rng([SEED_STREAM, seed, i])
        image, masks, captions = shapes_image(rng, size)
        j = int(rng.integers(len(masks)))
        region, _ = coarse_mask(masks[j], rng)
        entity, img = soften(masks[j], image, rng) if softened else (masks[j], image)
        x.append(crop(img, entity, region, CROP))
        _, colour, kind = captions[j].split()
        y.append((GROUPS["colour"].index(colour), GROUPS["kind"].index(kind)))
    return torch.from_numpy(np.stack(x)), torch.tensor(y)


def loss_and_accuracy(model: Reranker, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    logits, start, loss, acc = model(x), 0, 0.0, []
    for g, vocab in enumerate(model.groups.values()):
        part = logits[:, start:start + len(vocab)]
        loss = loss + nn.functional.cross_entropy(part, y[:, g])
        acc.append(float((part.argmax(1) == y[:, g]).float().mean()))
        start += len(vocab)
    return loss, acc


def train(*, size: int = 128, n: int = 32000, steps: int = 8000, batch: int = 128, seed: int = 0,
          progress: bool = True) -> tuple[Reranker, dict]:
    """-> (the reranker, its accuracy per group on 2,000 held-out softened and crisp entities)."""
    from tqdm.auto import tqdm

    x, y = examples(n, size, seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Reranker(GROUPS, crop=CROP)  # the crop its examples were made at
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(range(steps), desc="reranker", unit="step", disable=not progress)
    for _ in bar:
        idx = torch.randint(0, n, (batch,), generator=gen)
        xb = x[idx]
        # a mirrored or quarter-turned shape is the same kind (and the square crop turns with it)
        flip = torch.rand(batch, generator=gen) < 0.5
        xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
        xb = torch.rot90(xb, int(torch.randint(0, 4, (), generator=gen)), dims=(-2, -1))
        loss, _ = loss_and_accuracy(model, xb, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{float(loss):.3f}")
    model.eval().requires_grad_(False)
    accuracy = {}
    with torch.no_grad():
        for name, soft in (("softened", True), ("crisp", False)):
            xv, yv = examples(2000, size, seed + 1, softened=soft)
            _, acc = loss_and_accuracy(model, xv, yv)
            accuracy[name] = dict(zip(model.groups, [round(a, 4) for a in acc], strict=True))
    return model, accuracy


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="model folder to write reranker/ into")
    p.add_argument("--size", type=int, default=128, help="shapes image side (the model's)")
    p.add_argument("--examples", type=int, default=32000)
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    model, accuracy = train(size=a.size, n=a.examples, steps=a.steps, seed=a.seed)
    record = {"size": a.size, "examples": a.examples, "steps": a.steps, "seed": a.seed,
              "held_out_accuracy": accuracy, "command": "python -m unigs_deploy.training.reranker " +
              " ".join(argv if argv is not None else __import__("sys").argv[1:])}
    out = save(model, a.out / FOLDER, record)
    print(f"reranker written to {out}; held-out accuracy {json.dumps(accuracy)}")


if __name__ == "__main__":
    main()
