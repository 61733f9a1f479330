"""COCO-format readers: panoptic (JSON + PNG folder), instances (JSON with masks as polygons or
RLE) and refer (RefCOCO-style records), each checked with one clear line when it is not what it
should be."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .panoptic import rgb2id


class DataError(ValueError):
    """A dataset file that cannot be used; the message says what is wrong and what to give."""


def read_json(path: str | Path, what: str) -> dict | list:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{what} {path} is not valid JSON ({e})") from None
    except UnicodeDecodeError:
        raise DataError(f"{what} {path} is not a JSON text file") from None


def kind(data) -> str:
    """panoptic | instances | refer | unknown."""
    if isinstance(data, dict) and isinstance(data.get("refs"), list):
        return "refer"
    if isinstance(data, list):
        return "refer" if data and isinstance(data[0], dict) and "sentence" in data[0] else "unknown"
    anns = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(anns, list):
        return "unknown"
    if not anns:
        return "unknown"
    if "segments_info" in anns[0]:
        return "panoptic"
    if "segmentation" in anns[0]:
        return "instances"
    return "unknown"


@dataclass
class Image:
    id: int
    file_name: str
    height: int
    width: int


@dataclass
class PanopticTruth:
    """Segments of one image: an id map and its segments_info (id, category_id, iscrowd)."""

    ids: np.ndarray
    segments: list


class PanopticSet:
    """COCO panoptic JSON + PNG folder (ground truth or predictions)."""

    def __init__(self, json_path: str | Path, png_dir: str | Path, what: str = "ground truth"):
        data = read_json(json_path, f"{what} JSON")
        k = kind(data)
        if k != "panoptic":
            raise DataError(f"{what} JSON {json_path} is {'a ' + k + ' file' if k != 'unknown' else 'not COCO'}, "
                            "not COCO panoptic (annotations with file_name and segments_info)")
        self.png_dir = Path(png_dir)
        if not self.png_dir.is_dir():
            raise DataError(f"{what} PNG folder {png_dir} does not exist")
        self.what = what
        self.images = {int(im["id"]): Image(int(im["id"]), im["file_name"], int(im["height"]), int(im["width"]))
                       for im in data.get("images", [])}
        self.annotations = {int(a["image_id"]): a for a in data["annotations"]}
        self.categories = {int(c["id"]): c for c in data.get("categories", [])}

    def truth(self, image_id: int) -> PanopticTruth:
        from unigs_deploy.io import read_image

        ann = self.annotations[image_id]
        path = self.png_dir / ann["file_name"]
        if not path.is_file():
            raise DataError(f"{self.what} PNG {path} (image {image_id}) does not exist")
        return PanopticTruth(rgb2id(read_image(path)), ann["segments_info"])


class InstanceSet:
    """COCO instances JSON: every annotation an entity (crowd annotations kept as crowd), painted
    into an id map largest first so a small entity on a large one stays visible."""

    def __init__(self, json_path: str | Path):
        data = read_json(json_path, "instances JSON")
        if kind(data) != "instances":
            raise DataError(f"{json_path} is not COCO instances (annotations with segmentation)")
        self.images = {int(im["id"]): Image(int(im["id"]), im["file_name"], int(im["height"]), int(im["width"]))
                       for im in data.get("images", [])}
        self.by_image: dict[int, list] = {i: [] for i in self.images}
        for a in data["annotations"]:
            if int(a["image_id"]) not in self.by_image:
                raise DataError(f"{json_path}: annotation {a.get('id')} is for image {a['image_id']}, which the "
                                "JSON's images list does not have")
            self.by_image[int(a["image_id"])].append(a)
        self.categories = {int(c["id"]): c for c in data.get("categories", [])}

    def truth(self, image_id: int) -> PanopticTruth:
        im = self.images[image_id]
        ids = np.zeros((im.height, im.width), np.int64)
        segments = []
        anns = sorted(self.by_image[image_id], key=lambda a: -float(a.get("area", 0)))
        for k, a in enumerate(anns, 1):
            ids[decode_segmentation(a["segmentation"], im.height, im.width)] = k
            segments.append({"id": k, "category_id": int(a.get("category_id", 1)), "iscrowd": int(a.get("iscrowd", 0))})
        return PanopticTruth(ids, segments)


def decode_segmentation(seg, h: int, w: int) -> np.ndarray:
    """COCO polygons, uncompressed or compressed RLE -> (h, w) bool."""
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        rles = mask_utils.frPyObjects(seg, h, w)
        rle = mask_utils.merge(rles) if rles else None
        return mask_utils.decode(rle).astype(bool) if rle else np.zeros((h, w), bool)
    if isinstance(seg, dict) and isinstance(seg.get("counts"), list):
        seg = mask_utils.frPyObjects(seg, h, w)
    elif isinstance(seg, dict) and isinstance(seg.get("counts"), str):
        seg = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
    if not isinstance(seg, dict) or "counts" not in seg:
        raise DataError("a segmentation is neither polygons nor RLE")
    if list(seg["size"]) != [h, w]:
        raise DataError(f"an RLE of size {seg['size']} belongs to a {h}x{w} image")
    return mask_utils.decode(seg).astype(bool)


@dataclass
class Ref:
    """One referring expression: the image, a coarse region (box or mask), the sentence, the target."""

    ref_id: int
    image_id: int
    file_name: str
    sentence: str
    height: int
    width: int
    region: object  # [x, y, w, h] box, or a segmentation
    target: object  # segmentation of the referred entity


def load_refs(json_path: str | Path) -> list[Ref]:
    """{"refs": [...]} or a list of records with ref_id, image_id, file_name, sentence, height,
    width, segmentation (the target), and the coarse region as "region" (a segmentation) or "bbox"
    ([x, y, w, h]; RefCOCO's), default the target's box."""
    data = read_json(json_path, "refer JSON")
    if kind(data) != "refer":
        raise DataError(f"{json_path} is not a refer JSON: give {{\"refs\": [...]}} records with ref_id, image_id, "
                        "file_name, sentence, height, width, segmentation and bbox")
    refs = data["refs"] if isinstance(data, dict) else data
    out = []
    for i, r in enumerate(refs):
        missing = [k for k in ("file_name", "sentence", "height", "width", "segmentation") if k not in r]
        if missing:
            raise DataError(f"{json_path}: ref {i} lacks {', '.join(missing)}")
        out.append(Ref(int(r.get("ref_id", i)), int(r.get("image_id", i)), r["file_name"], r["sentence"],
                       int(r["height"]), int(r["width"]), r.get("region", r.get("bbox")), r["segmentation"]))
    return out


def box_mask(box, h: int, w: int) -> np.ndarray:
    x, y, bw, bh = (float(v) for v in box)
    m = np.zeros((h, w), bool)
    y0, y1 = max(0, int(np.floor(y))), min(h, int(np.ceil(y + bh)))
    x0, x1 = max(0, int(np.floor(x))), min(w, int(np.ceil(x + bw)))
    m[y0:y1, x0:x1] = True
    return m


class Truths:
    """image_id -> PanopticTruth read on demand (a dataset's maps are not all held in memory)."""

    def __init__(self, source):
        self.source = source

    def __iter__(self):
        return iter(self.source.annotations if hasattr(self.source, "annotations") else self.source.images)

    def __getitem__(self, image_id: int) -> PanopticTruth:
        return self.source.truth(image_id)
