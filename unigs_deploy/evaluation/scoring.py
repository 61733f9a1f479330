"""Scores: panoptic PQ/SQ/RQ + class-agnostic mask AP over a dataset; refer mIoU and cIoU."""

from __future__ import annotations

import numpy as np

from .ap import mask_ap, segments_to_coco
from .datasets import DataError
from .panoptic import PQAccumulator


def score_panoptic(gt, predictions: dict, *, per_category: bool = False, progress: bool = False,
                   results: list | None = None) -> dict:
    """gt: a PanopticSet or InstanceSet; predictions: image_id -> PanopticTruth-like (ids, segments).
    `results`, if given, receives the predictions as COCO results (the RLEs AP is scored on)."""
    from tqdm.auto import tqdm

    unknown = sorted(set(predictions) - set(gt.images))
    if unknown:
        raise DataError(f"predictions for {len(unknown)} image(s) the ground truth does not have (ids "
                        f"{', '.join(map(str, unknown[:5]))}{'...' if len(unknown) > 5 else ''}): "
                        "score against the ground truth they were made for")
    missing = sorted(set(gt.images) - set(predictions))
    if missing:
        raise DataError(f"no prediction for {len(missing)} ground-truth image(s) (ids "
                        f"{', '.join(map(str, missing[:5]))}{'...' if len(missing) > 5 else ''}): "
                        "predict every image (unigs-eval run resumes an interrupted run)")
    isthing = {c: bool(v.get("isthing", 1)) for c, v in getattr(gt, "categories", {}).items()}
    acc = PQAccumulator(agnostic=not per_category, isthing=isthing)
    images, truths, dts = [], [], []
    for image_id in tqdm(sorted(gt.images), desc="scoring", unit="image", disable=not progress):
        im = gt.images[image_id]
        t = gt.truth(image_id)
        p = predictions[image_id]
        acc.add(t.ids, t.segments, p.ids, p.segments, image=f"image {image_id} ({im.file_name})")
        images.append({"id": image_id, "height": int(t.ids.shape[0]), "width": int(t.ids.shape[1])})
        truths += segments_to_coco(image_id, t.ids, t.segments, truth=True)
        dts += segments_to_coco(image_id, p.ids, p.segments, truth=False)
    if results is not None:
        results += [{**d, "category_id": 1} for d in dts]
    return {"panoptic": acc.result(), "mask_ap": mask_ap(images, truths, dts), "class_agnostic": not per_category}


def iou_stats(pred: np.ndarray, target: np.ndarray) -> tuple[int, int]:
    """(intersection, union) in pixels."""
    return int(np.logical_and(pred, target).sum()), int(np.logical_or(pred, target).sum())


def score_refer(pairs: list[tuple[int, int]]) -> dict:
    """pairs: (intersection, union) per expression. mIoU: mean of per-expression IoU; cIoU: total
    intersection / total union (RefCOCO's overall IoU)."""
    if not pairs:
        return {"miou": 0.0, "ciou": 0.0, "n": 0}
    ious = [i / u if u else 1.0 for i, u in pairs]  # an empty target predicted empty is right
    total_u = sum(u for _, u in pairs)
    return {"miou": float(np.mean(ious)), "ciou": sum(i for i, _ in pairs) / total_u if total_u else 1.0,
            "n": len(pairs)}


def markdown(scores: dict) -> str:
    if "refer" in scores:
        r = scores["refer"]
        return f"| expressions | mIoU | cIoU |\n|---|---|---|\n| {r['n']} | {r['miou']:.3f} | {r['ciou']:.3f} |"
    pan, ap = scores["panoptic"], scores["mask_ap"]
    rows = ["| | PQ | SQ | RQ | categories |", "|---|---|---|---|---|"]
    for name in ("all", "things", "stuff"):
        if name in pan:
            v = pan[name]
            rows.append(f"| {name} | {100 * v['pq']:.1f} | {100 * v['sq']:.1f} | {100 * v['rq']:.1f} | {v['n']} |")
    agn = "class-agnostic" if scores["class_agnostic"] else "per category"
    rows += ["", f"{pan['images']} images, {agn}. Mask AP (class-agnostic, COCOeval): AP {100 * ap['ap']:.1f}, "
                 f"AP50 {100 * ap['ap50']:.1f}, AP75 {100 * ap['ap75']:.1f}"]
    return "\n".join(rows)
