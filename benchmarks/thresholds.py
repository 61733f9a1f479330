"""The dichotomy decoder's split rule and threshold on a trained model's own colormaps (segment
PQ, refer mIoU, inpaint region IoU as unigs-bench quality scores them): what a
model's `threshold` / `stop` task defaults are chosen from.

A model that is unsure of an entity's palette colour predicts a muted mix, so its entities sit
closer in colour than the palette puts them; the threshold that separates them best is the
model's, not the codec's. Each image runs once at the task's defaults and its colormap is decoded
with every (stop, threshold). Images come from held-out indices `offset`.. (default 5000, seeds
15000..: training's evaluation stream), not the 0..99 `unigs-bench quality` reports on, so a
choice made here is checked on images it was not chosen on.
"""

from __future__ import annotations

import numpy as np

from unigs_deploy import dichotomy, metrics
from unigs_deploy import tasks as task_specs
from unigs_deploy.labels import dominant_in, masks_to_labels
from unigs_deploy.synthetic.shapes import held_out_example

from .common import held_out_size, machine

TASKS = ("segment", "refer", "inpaint")
METRICS = {"segment": "segment_pq", "refer": "refer_miou", "inpaint": "inpaint_iou"}


def run(engine, *, n: int = 60, offset: int = 5000, thresholds=(16, 20, 24, 28, 32, 40, 64, 128),
        stops=("centres", "spread"), tasks=TASKS,
        steps: int | None = None, tiny_vae: str | None = None, size: int | None = None, threads: int = 0) -> dict:
    """steps / tiny_vae None: each task's default; tasks: a subset of TASKS (inpaint, 25 steps, is
    most of the time)."""
    from tqdm.auto import tqdm

    from unigs_deploy.evaluation.panoptic import PQAccumulator, labels_to_panoptic
    from unigs_deploy.pipeline import UniGSPipeline

    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(sorted(unknown))}: choose from {', '.join(TASKS)}")
    pipe = UniGSPipeline.from_engine(engine, threads=threads)
    size = held_out_size(pipe, size)
    grid = [(s, float(t)) for s in stops for t in thresholds]
    pq = {g: PQAccumulator() for g in grid}
    pq_share = {g: [] for g in grid}  # each image's [matched IoU sum, tp, fp, fn], for unigs-bench compare
    iou = {g: [] for g in grid}
    inp = {g: [] for g in grid}
    min_area = dichotomy.min_area_for(size, size)
    keep_bg = {t: task_specs.get(t).keep_background for t in TASKS}
    for i in tqdm(range(n), desc="thresholds", unit="image"):
        image, masks, captions, region, j = held_out_example(offset + i, size)
        truth = labels_to_panoptic(masks_to_labels(masks, background=len(masks) + 1))
        # at the image's own size, so the colormap is the one the pipeline decoded (the model's native side)
        run = dict(seed=i, resolution="input", steps=steps, tiny_vae=tiny_vae)
        seg = pipe.segment(image, **run).colormap if "segment" in tasks else None
        ref = pipe.refer(image, region, captions[j], **run).colormap if "refer" in tasks else None
        gen = pipe.inpaint(image, [(region, captions[j])], **run).colormap if "inpaint" in tasks else None
        for stop, thr in grid:
            kw = dict(min_area=min_area, threshold=thr, stop=stop)
            if seg is not None:
                labels = dichotomy.decode_colormap(seg, keep_background=keep_bg["segment"], **kw)
                pq_share[stop, thr].append(pq[stop, thr].add(*truth, *labels_to_panoptic(labels)))
            if ref is not None:
                labels = dichotomy.decode_colormap(ref, keep_background=keep_bg["refer"], **kw)
                iou[stop, thr].append(metrics.mask_iou(dominant_in(labels, region), masks[j]))
            if gen is not None:
                labels = dichotomy.decode_colormap(gen, keep_background=keep_bg["inpaint"], **kw)
                inp[stop, thr].append(metrics.mask_iou(dominant_in(labels, region), masks[j]))
    rows = []
    for s, t in grid:
        row, per_image = {"stop": s, "threshold": t}, {}
        if "segment" in tasks:
            row["segment_pq"] = pq[s, t].result()["all"]["pq"]
            per_image["segment"] = pq_share[s, t]
        if "refer" in tasks:
            row["refer_miou"] = float(np.mean(iou[s, t]))
            per_image["refer"] = [float(v) for v in iou[s, t]]
        if "inpaint" in tasks:
            row["inpaint_iou"] = float(np.mean(inp[s, t]))
            per_image["inpaint_region_iou"] = [float(v) for v in inp[s, t]]
        # quality's per-image record (its keys), so `unigs-bench compare --rows` can pair two settings
        row["per_image"] = per_image
        rows.append(row)
    best = {METRICS[t]: max(rows, key=lambda r: r[METRICS[t]]) for t in TASKS if t in tasks}
    return {"benchmark": "thresholds", "machine": machine(threads=threads or None), "images": n, "offset": offset,
            "size": size, "steps": steps, "tiny_vae": tiny_vae, "engine": str(engine), "rows": rows,
            "best": {k: {"stop": r["stop"], "threshold": r["threshold"], k: r[k]} for k, r in best.items()}}


def render(r: dict) -> str:
    from .report import markdown_table

    names = {"segment_pq": "segment PQ", "refer_miou": "refer mIoU", "inpaint_iou": "inpaint region IoU"}
    t = markdown_table(r["rows"], [("stop", "stop"), ("threshold", "threshold")]
                       + [(k, v) for k, v in names.items() if k in r["rows"][0]])
    at = "its default steps" if r.get("steps") is None else f"{r['steps']} steps"
    if r.get("tiny_vae"):
        at += f", tiny VAE {r['tiny_vae']}"
    return t + (f"\n\n{r['images']} held-out {r['size']}x{r['size']} images from index {r['offset']}, each task at "
                f"{at}, one run per image decoded with every setting. Best: "
                + "; ".join(f"{k} {v[k]:.3f} at {v['stop']} {v['threshold']:g}" for k, v in r["best"].items()))
