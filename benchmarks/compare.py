"""`unigs-bench compare`: two scored runs on the same images, told apart image by image.

A run is a `unigs-bench quality` result or one row (one setting) of a `unigs-bench generative` or
`unigs-bench thresholds` result. Held-out image i (and its seed) is the same in every run, so runs
of 100 and 300 images are compared on images 0..99; generative runs start at their `offset`.

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


# what tells a generative or thresholds run's rows apart
SETTINGS = ("steps", "guidance", "guidance_interval", "locate", "candidates", "rerank", "stop", "threshold")
ROWED = ("generative", "thresholds")  # results with one row per setting


def select(result: dict, row: int | None, name: str) -> dict:
    """The run to compare: a quality result as it is (its one row, 0), or row `row` of a
    generative or thresholds result (None: its only row)."""
    kind = result.get("benchmark") if isinstance(result, dict) else None
    if kind == "row":  # selected already
        return result
    if kind == "quality":
        if row not in (None, 0):
            raise ValueError(f"{name} is a quality run, which has one row (0), not row {row}")
        if "per_image" not in result:
            raise ValueError(f"{name} has no per-image scores (a quality run from before they were recorded): "
                             f"run `unigs-bench quality --json` again")
        return {**result, "offset": 0}
    if kind not in ROWED:
        raise ValueError(f"{name} is a {kind!r} result, not unigs-bench quality's, generative's or thresholds'")
    rows = result["rows"]
    if row is None and len(rows) > 1:
        raise ValueError(f"{name} has {len(rows)} rows (one per setting): pick one of each file with --rows, "
                         f"e.g. --rows 0,1")
    row = row or 0
    if not 0 <= row < len(rows):
        raise ValueError(f"{name} has rows 0..{len(rows) - 1}, not row {row}")
    if "per_image" not in rows[row]:
        raise ValueError(f"{name} has no per-image scores (a {kind} run from before they were recorded): "
                         f"run `unigs-bench {kind} --json` again")
    return {"benchmark": "row", "of": kind, "images": result["images"], "size": result["size"],
            "offset": result["offset"], "engine": result.get("engine"), "per_image": rows[row]["per_image"],
            "settings": {k: rows[row][k] for k in SETTINGS if k in rows[row]}}


def _setting(value) -> str:
    if isinstance(value, list | tuple):  # a guidance interval
        return "..".join(_setting(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def default_names(runs: list[dict], stems: list[str], *, one_file: bool) -> list[str]:
    """Two rows of one file are named by the settings they differ in (guidance 3 / guidance 7.5);
    anything else by its file's name."""
    if one_file and all(run["benchmark"] == "row" for run in runs):
        first, second = (run["settings"] for run in runs)
        differ = [k for k in SETTINGS if first.get(k) != second.get(k)]
        if differ:
            return [", ".join(f"{k} {_setting(s.get(k))}" for k in differ) for s in (first, second)]
    return stems


def compare(a: dict, b: dict, *, resamples: int = 10_000, seed: int = 0, names: tuple[str, str] = ("A", "B"),
            level: float = 0.95) -> dict:
    """B - A for every per-image metric both runs scored (`select`ed runs, or quality results),
    with a paired-bootstrap interval and, for the yes/no metrics, the images where only one of
    the two got it right."""
    a, b = (select(run, None, name) for run, name in zip((a, b), names, strict=True))
    pa, pb = a["per_image"], b["per_image"]
    if a["size"] != b["size"]:
        raise ValueError(f"{names[0]} scored images at {a['size']} px and {names[1]} at {b['size']} px: "
                         f"compare runs at the same size (unigs-bench quality --size S)")
    if a["offset"] != b["offset"]:
        raise ValueError(f"{names[0]} scored held-out images from {a['offset']} and {names[1]} from {b['offset']}: "
                         f"compare runs on the same images (--offset N of generative and thresholds)")
    metrics = [m for m in METRICS if m[2] in pa and m[2] in pb]
    if not metrics:
        raise ValueError(f"{names[0]} and {names[1]} scored no task in common: nothing to compare")
    n = min(a["images"], b["images"])  # held-out image i is the same in every run: compare the first n
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    rows = []
    for task, metric, key, how in metrics:
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
            "settings": [a.get("settings"), b.get("settings")], "images": n, "offset": a["offset"],
            "size": a["size"], "resamples": resamples, "level": level, "rows": rows}


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
    first = r.get("offset", 0)
    return (f"Held-out images {first}..{first + r['images'] - 1} at {r['size']} px, "
            f"paired bootstrap ({r['resamples']:,} resamples). "
            f"{a}: `{r['a']}`; {b}: `{r['b']}`.\n\n{table}\n")
