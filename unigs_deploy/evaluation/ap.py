"""Class-agnostic mask AP (COCO's AP, AP50, AP75) with pycocotools' COCOeval."""

from __future__ import annotations

import contextlib
import io as _io

import numpy as np


def mask_ap(images: list[dict], truths: list[dict], predictions: list[dict]) -> dict:
    """images: [{id, height, width}]; truths: COCO annotations (segmentation as RLE, iscrowd);
    predictions: COCO results (image_id, segmentation RLE, score). Every category is one."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    anns = [{**a, "id": i + 1, "category_id": 1} for i, a in enumerate(truths)]
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "entity"}]}
    with contextlib.redirect_stdout(_io.StringIO()):
        gt.createIndex()
        if not predictions:
            return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}
        dt = gt.loadRes([{**p, "category_id": 1} for p in predictions])
        ev = COCOeval(gt, dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"ap": float(ev.stats[0]), "ap50": float(ev.stats[1]), "ap75": float(ev.stats[2])}


def segments_to_coco(image_id: int, ids: np.ndarray, segments: list[dict], *, truth: bool) -> list[dict]:
    """A panoptic (id map, segments_info) -> COCO annotations (truth) or results (prediction;
    score from the segment's "score", else 1)."""
    from unigs_deploy.io import masks_to_rle

    out = []
    for s in segments:
        m = ids == int(s["id"])
        if not m.any():
            continue
        ys, xs = np.nonzero(m)
        box = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        rec = {"image_id": int(image_id), "segmentation": masks_to_rle(m[None])[0], "bbox": box}
        if truth:
            rec.update(area=int(m.sum()), iscrowd=int(s.get("iscrowd", 0)))
        else:
            rec.update(score=float(s.get("score", 1.0)))
        out.append(rec)
    return out
