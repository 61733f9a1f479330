"""Quality vs denoising steps per scheduler on the demo model: what the per-task defaults in
unigs_deploy/tasks.py are chosen from. Segment PQ and refer mIoU on held-out shapes-world
images (seed = image index), and seconds per image, for each (scheduler, spacing, steps).
"""

from __future__ import annotations

import time

import numpy as np

from unigs_deploy import metrics
from unigs_deploy.labels import masks_to_labels
from unigs_deploy.synthetic.shapes import held_out_example

from .common import held_out_size, machine

CONFIGS = (("ddim", "leading"), ("ddim", "trailing"), ("euler", "trailing"), ("dpm++2m", "trailing"))


def run(engine, *, n: int = 40, steps=(1, 2, 4, 8, 25), configs=CONFIGS, guidance: float = 3.0, size: int | None = None,
        threads: int = 0) -> dict:
    from tqdm.auto import tqdm

    from unigs_deploy.evaluation.panoptic import PQAccumulator, labels_to_panoptic
    from unigs_deploy.pipeline import UniGSPipeline

    pipe = UniGSPipeline.from_engine(engine, threads=threads)
    size = held_out_size(pipe, size)
    examples = [held_out_example(i, size) for i in range(n)]
    rows = []
    todo = [(s, sp, k) for s, sp in configs for k in steps]
    for scheduler, spacing, k in tqdm(todo, desc="steps", unit="config"):
        kw = dict(steps=k, scheduler=scheduler, spacing=spacing, guidance=guidance)
        acc, iou, t_seg, t_ref = PQAccumulator(), [], [], []
        for i, (image, masks, captions, region, j) in enumerate(examples):
            t0 = time.perf_counter()
            res = pipe.segment(image, seed=i, **kw)
            t_seg.append(time.perf_counter() - t0)
            acc.add(*labels_to_panoptic(masks_to_labels(masks, background=len(masks) + 1)),
                    *labels_to_panoptic(res.labels))
            t0 = time.perf_counter()
            res = pipe.refer(image, region, captions[j], seed=i, **kw)
            t_ref.append(time.perf_counter() - t0)
            iou.append(metrics.mask_iou(res.mask, masks[j]))
        rows.append({"scheduler": scheduler, "spacing": spacing, "steps": k, "segment_pq": acc.result()["all"]["pq"],
                     "refer_miou": float(np.mean(iou)), "segment_s": float(np.median(t_seg)),
                     "refer_s": float(np.median(t_ref))})
    return {"benchmark": "steps", "machine": machine(threads=threads or None), "images": n, "size": size,
            "guidance": guidance, "engine": str(engine), "rows": rows}


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for (metric, title), ax in zip((("segment_pq", "segment PQ"), ("refer_miou", "refer mIoU")), axes, strict=True):
        for scheduler, spacing in sorted({(r["scheduler"], r["spacing"]) for r in result["rows"]}):
            rs = sorted((r for r in result["rows"] if (r["scheduler"], r["spacing"]) == (scheduler, spacing)),
                        key=lambda r: r["steps"])
            ax.plot([r["steps"] for r in rs], [r[metric] for r in rs], marker="o", label=f"{scheduler} {spacing}")
        ax.set_xscale("log")
        ax.set_xlabel("denoising steps")
        ax.set_title(f"{title}, demo model, {result['images']} held-out images")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
