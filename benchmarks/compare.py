"""`unigs-bench compare`: two `unigs-bench quality` runs on the same images, told apart image by image.

Held-out image i (and its seed) is the same in every quality run, so runs of 100 and 300 images
are compared on images 0..99.

Two models scored on the same held-out images with the same seeds differ far less from each other
than either does from its own mean: a shape-kind match of 0.34 on 100 images is +-0.09 (95%) on
its own, but most images are judged alike under both models, so the difference is known better.
A paired bootstrap resamples images (the same draw for both runs) and recomputes each metric's
difference from its per-image record, PQ from the resampled images' [IoU sum, tp, fp, fn] as
panopticapi sums them. Mask AP is not compared (COCOeval over the whole set, not per image).
"""

from __future__ import annotations

import numpy as np

from .common import markdown_table

# (task, metric as quality's rows name it, per_image key, how a set of images scores)
METRICS = [("segment", "PQ", "segment", "pq"),
           ("refer", "mIoU", "refer", "mean"),
           ("inpaint", "region IoU", "inpaint_region_iou", "mean"),
           ("inpaint", "colour match", "inpaint_colour", "mean"),
           ("inpaint", "shape-kind match", "inpaint_kind", "mean"),
           ("synthesize", "PQ (segmented back)", "synthesize", "pq")]


def _score(values: np.ndarray, how: str) -> np.ndarray:
    """values (..., n) for a mean, (..., n, 4) for PQ -> the score of each leading index."""
    if how == "mean":
        return values.mean(axis=-1)
    iou, tp, fp, fn = np.moveaxis(values.sum(axis=-2), -1, 0)
    denom = tp + 0.5 * fp + 0.5 * fn
    return np.divide(iou, denom, out=np.zeros_like(iou), where=denom > 0)


def _per_image(run: dict, name: str) -> dict:
    if "per_image" not in run:
        raise ValueError(f"{name} has no per-image scores (a quality run from before they were recorded): "
                         f"run `unigs-bench quality --json` again")
    return run["per_image"]


def compare(a: dict, b: dict, *, resamples: int = 10_000, seed: int = 0, names: tuple[str, str] = ("A", "B"),
            level: float = 0.95) -> dict:
    """B - A for every per-image metric, with a paired-bootstrap interval and, for the yes/no
    metrics, the images where only one of the two got it right."""
    for run, name in zip((a, b), names, strict=True):
        if run.get("benchmark") != "quality":
            raise ValueError(f"{name} is a {run.get('benchmark')!r} result, not unigs-bench quality's")
    pa, pb = _per_image(a, names[0]), _per_image(b, names[1])
    if a["size"] != b["size"]:
        raise ValueError(f"{names[0]} scored images at {a['size']} px and {names[1]} at {b['size']} px: "
                         f"compare runs at the same size (unigs-bench quality --size S)")
    n = min(a["images"], b["images"])  # held-out image i is the same in every run: compare 0..n-1
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    rows = []
    for task, metric, key, how in METRICS:
        va, vb = (np.asarray(p[key][:n], dtype=np.float64) for p in (pa, pb))
        value_a, value_b = float(_score(va, how)), float(_score(vb, how))
        diffs = _score(vb[idx], how) - _score(va[idx], how)
        lo, hi = (float(q) for q in np.quantile(diffs, [lo_q, hi_q]))
        row = {"task": task, "metric": metric, "a": value_a, "b": value_b, "difference": value_b - value_a,
               "low": lo, "high": hi, "apart": bool(lo > 0 or hi < 0)}
        if key in ("inpaint_colour", "inpaint_kind"):
            row["only_a"] = int(np.sum((va > 0) & (vb == 0)))
            row["only_b"] = int(np.sum((vb > 0) & (va == 0)))
        rows.append(row)
    return {"benchmark": "compare", "a": a.get("engine"), "b": b.get("engine"), "names": list(names),
            "images": n, "size": a["size"], "resamples": resamples, "level": level, "rows": rows}


def render(r: dict) -> str:
    a, b = r["names"]
    rows = [{**row, "interval": f"{row['low']:+.3f} .. {row['high']:+.3f}",
             "difference": f"{row['difference']:+.3f}",
             "verdict": (f"{b} better" if row["low"] > 0 else f"{a} better" if row["high"] < 0 else "not apart"),
             "split": f"{row['only_a']} / {row['only_b']}" if "only_a" in row else ""}
            for row in r["rows"]]
    level = f"{r['level']:.0%}"
    table = markdown_table(rows, [("task", "task"), ("metric", "metric"), ("a", a), ("b", b),
                                  ("difference", f"{b} - {a}"), ("interval", f"{level} interval (paired)"),
                                  ("verdict", "verdict"), ("split", f"right only under {a} / {b}")])
    return (f"Held-out images 0..{r['images'] - 1} at {r['size']} px, paired bootstrap ({r['resamples']:,} resamples). "
            f"{a}: `{r['a']}`; {b}: `{r['b']}`.\n\n{table}\n")
