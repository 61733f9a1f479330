"""The shapes world's held-out images as COCO-format datasets (panoptic JSON + PNGs, instances
JSON, a refer JSON): fixtures for `unigs-eval` that match `unigs-bench quality` image for image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import io
from .shapes import held_out_example

CATEGORIES = [{"id": 1, "name": "shape", "isthing": 1}, {"id": 2, "name": "background", "isthing": 0}]


def write_dataset(folder: str | Path, n: int, size: int = 64, *, start: int = 0) -> dict:
    """Held-out images start..start+n-1 (the same as unigs-bench quality's) into `folder`:
    images/, panoptic/ + panoptic.json (every shape a thing, the background a stuff segment),
    instances.json (shapes only, RLE) and refs.json (each image's region and caption). -> paths."""
    from ..evaluation.panoptic import id2rgb

    folder = Path(folder)
    images, pan, inst, refs = [], [], [], []
    for k in range(n):
        i = start + k
        image, masks, captions, region, j = held_out_example(i, size)
        name = f"{i:06d}"
        io.write_image(folder / "images" / f"{name}.png", image)
        ids = np.full((size, size), len(masks) + 1, np.int64)  # the background: a segment of its own
        for s, m in enumerate(masks, 1):
            ids[m] = s
        io.write_image(folder / "panoptic" / f"{name}.png", id2rgb(ids))
        images.append({"id": i, "file_name": f"{name}.png", "height": size, "width": size})
        segs = [{"id": s, "category_id": 1, "iscrowd": 0, "area": int(m.sum())} for s, m in enumerate(masks, 1)]
        segs.append({"id": len(masks) + 1, "category_id": 2, "iscrowd": 0, "area": int((ids == len(masks) + 1).sum())})
        pan.append({"image_id": i, "file_name": f"{name}.png", "segments_info": segs})
        for m, rle in zip(masks, io.masks_to_rle(np.asarray(masks)), strict=True):
            ys, xs = np.nonzero(m)
            inst.append({"id": len(inst) + 1, "image_id": i, "category_id": 1, "segmentation": rle, "iscrowd": 0,
                         "area": int(m.sum()), "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1,
                                                         int(np.ptp(ys)) + 1]})
        refs.append({"ref_id": i, "image_id": i, "file_name": f"{name}.png", "height": size, "width": size,
                     "sentence": captions[j], "segmentation": io.masks_to_rle(masks[j][None])[0],
                     "region": io.masks_to_rle(region[None])[0]})
    paths = {"images": folder / "images", "panoptic_dir": folder / "panoptic",
             "panoptic_json": folder / "panoptic.json", "instances_json": folder / "instances.json",
             "refs_json": folder / "refs.json"}
    io.write_json(paths["panoptic_json"], {"images": images, "annotations": pan, "categories": CATEGORIES})
    io.write_json(paths["instances_json"], {"images": images, "annotations": inst, "categories": CATEGORIES[:1]})
    io.write_json(paths["refs_json"], {"refs": refs})
    return paths
