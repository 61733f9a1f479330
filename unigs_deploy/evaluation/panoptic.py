"""Panoptic quality over a whole dataset, as panopticapi's `pq_compute` defines it.

Sums of IoU, TP, FP and FN are kept per category over all images and PQ = sum IoU / (TP + FP/2 +
FN/2) per category, averaged over the categories that occur (per-image averaging, which the
shapes-world benchmark used to do, weighs a 2-segment image like a 50-segment one). Matching is
IoU > 0.5 (unique by construction). Void (id 0) and crowd regions: the part of a predicted
segment lying in void is left out of its union; an unmatched prediction that lies more than half
in void or in a crowd region of its category is not a false positive; crowd truths are never
false negatives. Class-agnostic (the default, as entity segmentation is judged) maps every
category to one "entity" category first.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

VOID = 0
OFFSET = 256 * 256 * 256
AGNOSTIC = 1  # the one category of class-agnostic scoring


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG (H, W, 3) uint8 -> segment ids: R + 256 G + 256^2 B."""
    rgb = np.asarray(rgb, np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids, np.uint32)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], -1).astype(np.uint8)


@dataclass
class _Stat:
    iou: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0


@dataclass
class PQAccumulator:
    """Add images one at a time (`add`), read the dataset-level result with `result()`."""

    agnostic: bool = True
    isthing: dict = field(default_factory=dict)  # category id -> bool (per-category mode)
    stats: dict = field(default_factory=lambda: defaultdict(_Stat))
    images: int = 0

    def _cat(self, c) -> int:
        return AGNOSTIC if self.agnostic else int(c)

    def add(self, gt_ids: np.ndarray, gt_segments: list[dict], pred_ids: np.ndarray, pred_segments: list[dict],
            *, image: str = "") -> list[float]:
        """gt_ids / pred_ids: (H, W) segment-id maps (0 = void); *_segments: COCO panoptic
        segments_info entries (id, category_id, iscrowd). Returns the image's own share of the
        totals summed over categories, [matched IoU sum, tp, fp, fn]: any subset of images'
        class-agnostic PQ is computed from these (a bootstrap over images resamples them)."""
        before = self._totals()
        if gt_ids.shape != pred_ids.shape:
            raise ValueError(f"{image}: prediction is {pred_ids.shape[1]}x{pred_ids.shape[0]} but the ground truth "
                             f"is {gt_ids.shape[1]}x{gt_ids.shape[0]}: predict at the image's size")
        gt = {int(s["id"]): s for s in gt_segments}
        pred = {int(s["id"]): s for s in pred_segments}
        gt_area = _areas(gt_ids, gt, image, "ground truth")
        pred_area = _areas(pred_ids, pred, image, "prediction")
        joint = gt_ids.astype(np.uint64) * OFFSET + pred_ids.astype(np.uint64)
        labels, counts = np.unique(joint, return_counts=True)
        inter = {(int(lab // OFFSET), int(lab % OFFSET)): int(n) for lab, n in zip(labels, counts, strict=True)}
        gt_matched, pred_matched = set(), set()
        for (g, p), n in inter.items():
            if g not in gt or p not in pred or gt[g].get("iscrowd", 0) == 1:
                continue
            if self._cat(gt[g]["category_id"]) != self._cat(pred[p]["category_id"]):
                continue
            union = pred_area[p] + gt_area[g] - n - inter.get((VOID, p), 0)
            iou = n / union
            if iou > 0.5:
                st = self.stats[self._cat(gt[g]["category_id"])]
                st.tp += 1
                st.iou += iou
                gt_matched.add(g)
                pred_matched.add(p)
        crowd = defaultdict(list)
        for g, s in gt.items():
            if g in gt_matched or gt_area[g] == 0:
                continue
            if s.get("iscrowd", 0) == 1:
                crowd[self._cat(s["category_id"])].append(g)
                continue
            self.stats[self._cat(s["category_id"])].fn += 1
        for p, s in pred.items():
            if p in pred_matched or pred_area[p] == 0:
                continue
            cat = self._cat(s["category_id"])
            ignored = inter.get((VOID, p), 0) + sum(inter.get((g, p), 0) for g in crowd.get(cat, ()))
            if ignored / pred_area[p] > 0.5:
                continue
            self.stats[cat].fp += 1
        self.images += 1
        return [float(a - b) for a, b in zip(self._totals(), before, strict=True)]

    def _totals(self) -> list[float]:
        return [sum(getattr(st, k) for st in self.stats.values()) for k in ("iou", "tp", "fp", "fn")]

    def result(self) -> dict:
        """{"all": {pq, sq, rq, n}, "things"/"stuff" (per-category mode), "per_category": {...}}."""
        per = {}
        for c, st in sorted(self.stats.items()):
            if st.tp + st.fp + st.fn == 0:
                continue
            sq = st.iou / st.tp if st.tp else 0.0
            rq = st.tp / (st.tp + 0.5 * st.fp + 0.5 * st.fn)
            per[c] = {"pq": sq * rq, "sq": sq, "rq": rq, "tp": st.tp, "fp": st.fp, "fn": st.fn}
        out = {"all": _average(per.values()), "images": self.images}
        if not self.agnostic and self.isthing:
            out["things"] = _average(v for c, v in per.items() if self.isthing.get(c))
            out["stuff"] = _average(v for c, v in per.items() if not self.isthing.get(c))
        out["per_category"] = {str(c): v for c, v in per.items()}
        return out


def _average(rows) -> dict:
    rows = list(rows)
    if not rows:
        return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
    return {k: float(np.mean([r[k] for r in rows])) for k in ("pq", "sq", "rq")} | {"n": len(rows)}


def _areas(ids: np.ndarray, segments: dict, image: str, what: str) -> dict:
    labels, counts = np.unique(ids, return_counts=True)
    area = {}
    for lab, n in zip(labels.tolist(), counts.tolist(), strict=True):
        if lab == VOID:
            continue
        if lab not in segments:
            raise ValueError(f"{image}: the {what} PNG has segment id {lab} that its JSON does not list: "
                             "the PNG and the JSON do not belong together")
        area[lab] = n
    for s in set(segments) - set(area):  # listed but not drawn: nothing to match, nothing missed
        area[s] = 0
    return area


def labels_to_panoptic(labels: np.ndarray, *, category_id: int = AGNOSTIC) -> tuple[np.ndarray, list[dict]]:
    """A label map (0 = nothing) -> (segment-id map, segments_info) with ids 1..K."""
    ids = np.unique(labels[labels > 0])
    remap = np.zeros(int(labels.max()) + 1 if labels.size else 1, np.int64)
    remap[ids] = np.arange(1, len(ids) + 1)
    seg = remap[labels]
    infos = []
    for k in range(1, len(ids) + 1):
        ys, xs = np.nonzero(seg == k)
        infos.append({"id": k, "category_id": category_id, "iscrowd": 0, "area": int(len(ys)),
                      "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                               int(ys.max() - ys.min() + 1)]})
    return seg, infos
