"""`unigs-eval run`: an engine over a dataset, one JSONL line per finished item (resume), each
process of `accelerate launch` (or RANK/WORLD_SIZE) a disjoint slice, merged by rank 0.

An item's seed is its position in the dataset, so the merged result does not depend on how the
work was split or resumed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from unigs_deploy import io

from . import datasets, scoring
from .datasets import PanopticTruth
from .panoptic import id2rgb, labels_to_panoptic, rgb2id


def shard() -> tuple[int, int]:
    """(rank, world size) from accelerate's / torchrun's environment, else (0, 1)."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return rank, world


def read_jsonl(folder: Path) -> dict:
    """Every finished item of every earlier or concurrent shard: key -> record. A line cut short
    by a crash is ignored (that item runs again)."""
    done = {}
    for f in sorted(folder.glob("progress.*.jsonl")):
        for line in f.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[rec["key"]] = rec
    return done


class _Appender:
    def __init__(self, path: Path):
        text = path.read_text() if path.exists() else ""
        if text and not text.endswith("\n"):  # a line cut short: drop it before appending
            path.write_text(text[: text.rfind("\n") + 1])
        self.f = open(path, "a")  # noqa: SIM115 - kept open for the run

    def write(self, rec: dict) -> None:
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


def _wait_for_shards(out: Path, world: int, log) -> None:
    markers = [out / f"done.rank{r}-of-{world}" for r in range(world)]
    said = False
    while not all(m.exists() for m in markers):
        if not said:
            log(f"waiting for {sum(not m.exists() for m in markers)} other process(es) to finish ...")
            said = True
        time.sleep(1.0)


def run(pipe, task: str, data: Path, images_dir: Path, out: Path, *, gt_dir: Path | None = None,
        limit: int | None = None, progress: bool = True, log=print, **run_kw) -> dict | None:
    """Predict every item not yet in out/progress.*.jsonl, then (rank 0) merge and score."""
    from tqdm.auto import tqdm

    rank, world = shard()
    out.mkdir(parents=True, exist_ok=True)
    if task == "segment":
        gt = _segment_truth(data, gt_dir)
        items = [(im_id, gt.images[im_id]) for im_id in sorted(gt.images)]
    elif task == "refer":
        items = [(r.ref_id, r) for r in datasets.load_refs(data)]
    else:
        raise ValueError(f"unigs-eval run scores segment or refer, not {task}")
    if not images_dir.is_dir():
        raise datasets.DataError(f"image folder {images_dir} does not exist")
    items = items[:limit] if limit else items
    done = read_jsonl(out)
    mine = [(i, key, item) for i, (key, item) in enumerate(items) if i % world == rank and str(key) not in done]
    (out / f"done.rank{rank}-of-{world}").unlink(missing_ok=True)
    appender = _Appender(out / f"progress.rank{rank}-of-{world}.jsonl")
    try:
        for i, key, item in tqdm(mine, desc=f"{task} (rank {rank}/{world})" if world > 1 else task, unit="item",
                                 disable=not progress or rank != 0):
            rec = (_segment_one if task == "segment" else _refer_one)(pipe, item, i, images_dir, out, run_kw)
            appender.write({"key": str(key), "index": i, **rec})
    finally:
        appender.close()
    io.write_bytes(out / f"done.rank{rank}-of-{world}", b"")
    if rank != 0:
        return None
    _wait_for_shards(out, world, log)
    done = read_jsonl(out)
    missing = [k for k, _ in items if str(k) not in done]
    if missing:
        raise RuntimeError(f"{len(missing)} item(s) have no result after all processes finished: run again "
                           "to resume")
    return _merge_segment(gt, items, done, out) if task == "segment" else _merge_refer(items, done, out)


# ------------------------------------------------------------------ segment


def _segment_truth(data: Path, gt_dir: Path | None):
    k = datasets.kind(datasets.read_json(data, "dataset JSON"))
    if k == "panoptic":
        if gt_dir is None:
            raise datasets.DataError(f"{data} is COCO panoptic: also give --gt-dir, the folder of its PNGs")
        return datasets.PanopticSet(data, gt_dir)
    if k == "instances":
        return datasets.InstanceSet(data)
    raise datasets.DataError(f"{data} is {'a ' + k + ' file' if k != 'unknown' else 'not COCO'}: segment needs "
                             "COCO panoptic (with --gt-dir) or COCO instances")


def _read(images_dir: Path, name: str, h: int, w: int) -> np.ndarray:
    path = images_dir / name
    if not path.is_file():
        raise datasets.DataError(f"image {path} does not exist: check --images")
    rgb, _ = io.read_any_image(path)
    if rgb.shape[:2] != (h, w):
        raise datasets.DataError(f"image {path} is {rgb.shape[1]}x{rgb.shape[0]} but the dataset says {w}x{h}")
    return rgb


def _segment_one(pipe, im, i: int, images_dir: Path, out: Path, kw: dict) -> dict:
    rgb = _read(images_dir, im.file_name, im.height, im.width)
    res = pipe.segment(rgb, seed=i, **kw)
    ids, segments = labels_to_panoptic(res.labels)
    png = f"{Path(im.file_name).stem}.png"
    io.write_image(out / "panoptic" / png, id2rgb(ids))
    return {"image_id": im.id, "file_name": png, "segments_info": segments}


def _merge_segment(gt, items, done: dict, out: Path) -> dict:
    from unigs_deploy.io import read_image

    anns = [{k: done[str(key)][k] for k in ("image_id", "file_name", "segments_info")} for key, _ in items]
    images = [{"id": im.id, "file_name": im.file_name, "height": im.height, "width": im.width} for _, im in items]
    io.write_json(out / "panoptic.json", {"images": images, "annotations": anns,
                                          "categories": [{"id": 1, "name": "entity", "isthing": 1}]})
    preds = {a["image_id"]: PanopticTruth(rgb2id(read_image(out / "panoptic" / a["file_name"])), a["segments_info"])
             for a in anns}
    keep = {key for key, _ in items}
    gt.images = {k: v for k, v in gt.images.items() if k in keep}  # --limit scores what ran
    results = []
    scores = scoring.score_panoptic(gt, preds, results=results)
    io.write_json(out / "results.json", results)
    io.write_json(out / "scores.json", scores)
    return scores


# ------------------------------------------------------------------ refer


def _refer_one(pipe, ref, i: int, images_dir: Path, out: Path, kw: dict) -> dict:
    rgb = _read(images_dir, ref.file_name, ref.height, ref.width)
    target = datasets.decode_segmentation(ref.target, ref.height, ref.width)
    if ref.region is None:
        ys, xs = np.nonzero(target)
        box = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1] if len(xs) else [0, 0, 0, 0]
        region = datasets.box_mask(box, ref.height, ref.width)
    elif isinstance(ref.region, list) and len(ref.region) == 4 and not isinstance(ref.region[0], list):
        region = datasets.box_mask(ref.region, ref.height, ref.width)
    else:
        region = datasets.decode_segmentation(ref.region, ref.height, ref.width)
    mask = pipe.refer(rgb, region, ref.sentence, seed=i, **kw).mask
    inter, union = scoring.iou_stats(mask, target)
    return {"ref_id": ref.ref_id, "image_id": ref.image_id, "intersection": inter, "union": union,
            "segmentation": io.masks_to_rle(mask[None])[0]}


def _merge_refer(items, done: dict, out: Path) -> dict:
    recs = [done[str(key)] for key, _ in items]
    io.write_json(out / "results.json", [{"image_id": r["image_id"], "ref_id": r["ref_id"], "category_id": 1,
                                          "segmentation": r["segmentation"], "score": 1.0} for r in recs])
    scores = {"refer": scoring.score_refer([(r["intersection"], r["union"]) for r in recs])}
    io.write_json(out / "scores.json", scores)
    return scores
