"""The demo model's reranker: a small classifier naming an entity's colour and kind from its crop.

Inpaint's candidates are chosen by it (unigs_deploy/rerank.py says why). Trained on the shapes
world's true entities (a seed stream neither training nor the held-out images use), each
softened the way the demo model's drawings are (a blur, a latent-grid resample and a new
threshold), so a clean star reads as a star. Trained on the four kinds alone it must call an
irregular blob one of them, and it did, mostly a star (docs/demo-model.md, "Reranker variants"); with
`--outliers` a share of the examples are blobs drawn where the entity lay, taught to name no kind
(a uniform kind distribution: outlier exposure, Hendrycks et al. 2019), so a drawing with a kind's
outline outscores a blob. It never sees the model's samples or the benchmark's detector: it is a
second opinion, not the judge.

    # 50 minutes on 2 cores with another job beside it
    python -m unigs_deploy.training.reranker --out unigs_deploy/weights/demo --outliers 0.3
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from unigs_deploy.modeling.reranker import FOLDER, Reranker, save
from unigs_deploy.rerank import crop, group_slices
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


def blob(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """An irregular blob where a true entity lies, of about its size: overlapping ellipses in the
    middle of its box, or smoothed noise thresholded there (one connected piece). No kind's outline:
    what a reranker that only ever saw the four kinds calls one of them anyway. None: no blob came out."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    h, w = y1 - y0, x1 - x0
    out = np.zeros(mask.shape, np.uint8)
    if rng.random() < 0.5:
        for _ in range(int(rng.integers(3, 6))):
            c = (int(x0 + w * rng.uniform(0.25, 0.75)), int(y0 + h * rng.uniform(0.25, 0.75)))
            axes = (max(1, int(rng.uniform(0.2, 0.45) * w)), max(1, int(rng.uniform(0.2, 0.45) * h)))
            cv2.ellipse(out, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        noise = cv2.GaussianBlur(rng.random(mask.shape).astype(np.float32), (0, 0), max(h, w) / 4)
        box = np.zeros(mask.shape, bool)
        box[max(0, y0 - h // 5):y1 + h // 5, max(0, x0 - w // 5):x1 + w // 5] = True
        area = max(1, int(mask.sum() * rng.uniform(0.8, 1.3)))
        out = ((noise >= np.sort(noise[box])[::-1][min(area, box.sum()) - 1]) & box).astype(np.uint8)
    n, lab = cv2.connectedComponents(out)
    if n < 2:
        return None
    piece = lab == 1 + np.argmax(np.bincount(lab.ravel())[1:])
    return piece if piece.sum() >= 0.3 * mask.sum() else None


def examples(n: int, size: int, seed: int, *, softened: bool = True,
             outliers: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """n entity crops (each to a coarse region drawn around it) and their [colour, kind] indices;
    a share `outliers` of them a blob in the entity's colour drawn in its place (`blob`), kind -1."""
    x, y = [], []
    for i in range(n):
        rng = np.random.default_rng([SEED_STREAM, seed, i])
        image, masks, captions = shapes_image(rng, size)
        j = int(rng.integers(len(masks)))
        region, _ = coarse_mask(masks[j], rng)
        _, colour, kind = captions[j].split()
        entity, k = masks[j], GROUPS["kind"].index(kind)
        drawn = blob(entity, rng) if outliers and rng.random() < outliers else None
        if drawn is not None:
            grown = cv2.dilate(entity.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2)
            paint = np.median(image[entity], axis=0)
            image = cv2.inpaint(image, grown, 3, cv2.INPAINT_TELEA)
            image[drawn] = paint
            entity, k = drawn, -1
        entity, img = soften(entity, image, rng) if softened else (entity, image)
        x.append(crop(img, entity, region, CROP))
        y.append((GROUPS["colour"].index(colour), k))
    return torch.from_numpy(np.stack(x)), torch.tensor(y)


def loss_and_accuracy(model: Reranker, x: torch.Tensor, y: torch.Tensor,
                      outlier_weight: float = 0.0) -> tuple[torch.Tensor, list[float]]:
    """Cross-entropy per group; a word index -1 (an outlier) asks for the uniform distribution over
    the group instead (outlier exposure, Hendrycks et al. 2019), at outlier_weight. Accuracy over the rest."""
    logits, loss, acc = model(x), 0.0, []
    for g, where in enumerate(group_slices(model.groups).values()):
        part, known = logits[:, where], y[:, g] >= 0
        if known.any():
            loss = loss + nn.functional.cross_entropy(part[known], y[known, g])
        if outlier_weight and not known.all():
            loss = loss - outlier_weight * part[~known].log_softmax(1).mean()
        acc.append(float((part[known].argmax(1) == y[known, g]).float().mean()))
    return loss, acc


def train(*, size: int = 128, n: int = 32000, steps: int = 8000, batch: int = 128, seed: int = 0,
          outliers: float = 0.0, outlier_weight: float = 0.5, progress: bool = True) -> tuple[Reranker, dict]:
    """-> (the reranker, its accuracy per group on 2,000 held-out softened and crisp entities).
    outliers: the share of examples that are blobs (`blob`), taught to name no kind."""
    from tqdm.auto import tqdm

    x, y = examples(n, size, seed, outliers=outliers)
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
        loss, _ = loss_and_accuracy(model, xb, y[idx], outlier_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{float(loss):.3f}")
    model.eval().requires_grad_(False)
    accuracy, held_out = {}, {}
    with torch.no_grad():
        for name, soft in (("softened", True), ("crisp", False)):
            held_out[name], yv = examples(2000, size, seed + 1, softened=soft)
            _, acc = loss_and_accuracy(model, held_out[name], yv)
            accuracy[name] = dict(zip(model.groups, [round(a, 4) for a in acc], strict=True))
        if outliers:  # how sure it is of a kind: true entities against held-out blobs (softened alike)
            held_out["blobs"], _ = examples(2000, size, seed + 1, outliers=1.0)
            kind = group_slices(model.groups)["kind"]
            accuracy["kind_confidence"] = {name: round(float(model(x)[:, kind].softmax(1).max(1).values.mean()), 4)
                                           for name, x in held_out.items()}
    return model, accuracy


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="model folder to write reranker/ into")
    p.add_argument("--size", type=int, default=128, help="shapes image side (the model's)")
    p.add_argument("--examples", type=int, default=32000)
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--outliers", type=float, default=0.0,
                   help="share of examples that are irregular blobs, taught to name no kind (0: none)")
    p.add_argument("--outlier-weight", type=float, default=0.5)
    a = p.parse_args(argv)
    if not 0 <= a.outliers < 1:
        p.error(f"--outliers {a.outliers}: give a share in [0, 1), e.g. 0.3")
    if a.outliers and not a.outlier_weight > 0:
        p.error(f"--outlier-weight {a.outlier_weight}: give a weight > 0, e.g. 0.5")
    model, accuracy = train(size=a.size, n=a.examples, steps=a.steps, seed=a.seed, outliers=a.outliers,
                            outlier_weight=a.outlier_weight)
    record = {"size": a.size, "examples": a.examples, "steps": a.steps, "seed": a.seed,
              **({"outliers": a.outliers, "outlier_weight": a.outlier_weight} if a.outliers else {}),
              "held_out_accuracy": accuracy, "command": "python -m unigs_deploy.training.reranker " +
              " ".join(argv if argv is not None else __import__("sys").argv[1:])}
    out = save(model, a.out / FOLDER, record)
    print(f"reranker written to {out}; held-out accuracy {json.dumps(accuracy)}")


if __name__ == "__main__":
    main()
