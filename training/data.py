"""Training data: the synthetic shapes world (written as COCO), COCO-format datasets through
pycocotools, and the per-task sampling of UniGS training examples.

Every example is a pure function of (seed, step, index): no loader state, so `--resume`
continues with exactly the data an uninterrupted run would have seen.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from unigs_deploy import palette, tasks
from unigs_deploy.io import atomic_path
from unigs_deploy.synthetic.coarse import coarse_mask
from unigs_deploy.synthetic.shapes import ENTITIES, KINDS, shapes_image

log = logging.getLogger(__name__)



def write_shapes_coco(folder: str | Path, n_images: int, *, size: int = 128, seed: int = 0) -> Path:
    """Write n images and a COCO instances JSON (with a `caption` per annotation) into folder."""
    from pycocotools import mask as mask_utils

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, anns, cats = [], [], {}
    rng = np.random.default_rng(seed)
    for i in range(n_images):
        img, masks, captions = shapes_image(rng, size)
        name = f"{i:06d}.png"
        cv2.imwrite(str(folder / "images" / name), img[..., ::-1])
        images.append({"id": i, "file_name": name, "height": size, "width": size})
        for m, cap in zip(masks, captions, strict=True):
            kind = cap.split()[-1]
            cats.setdefault(kind, len(cats) + 1)
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            x, y, w, h = mask_utils.toBbox(rle).tolist()
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cats[kind], "segmentation": rle,
                         "area": int(m.sum()), "bbox": [x, y, w, h], "iscrowd": 0, "caption": cap})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": v, "name": k} for k, v in cats.items()]}
    with atomic_path(folder / "annotations.json") as tmp:
        tmp.write_text(json.dumps(coco))
    return folder / "annotations.json"


# ------------------------------------------------------------------ COCO-format datasets


class CocoEntities:
    """Images + entity masks + captions from a COCO-format JSON (COCO, EntitySeg, the shapes world).

    A caption is the annotation's `caption` if present, else "a <category name>". Images that
    are missing or unreadable, and images without entities, are skipped and counted.
    """

    def __init__(self, annotations: str | Path, images: str | Path | None = None, *, size: int = 128):
        from pycocotools.coco import COCO

        annotations = Path(annotations)
        if not annotations.is_file():
            raise ValueError(f"annotation file {annotations} does not exist")
        self.root = Path(images) if images else annotations.parent / "images"
        self.size = size
        import contextlib
        import io as _io

        with contextlib.redirect_stdout(_io.StringIO()):
            self.coco = COCO(str(annotations))
        self.cat_names = {c["id"]: c["name"] for c in self.coco.loadCats(self.coco.getCatIds())}
        self.ids = [i for i in sorted(self.coco.getImgIds()) if self.coco.getAnnIds(imgIds=i, iscrowd=False)]
        self.skipped = {"no_entity": len(self.coco.getImgIds()) - len(self.ids), "unreadable": 0}
        if not self.ids:
            raise ValueError(f"{annotations} has no image with an entity annotation")

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int):
        """-> (image, masks, captions) resized to size x size, or None if the image is unreadable."""
        info = self.coco.loadImgs(self.ids[index % len(self.ids)])[0]
        img = cv2.imread(str(self.root / info["file_name"]), cv2.IMREAD_COLOR)
        if img is None:
            self.skipped["unreadable"] += 1
            return None
        img = cv2.resize(img[..., ::-1], (self.size, self.size), interpolation=cv2.INTER_AREA)
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=info["id"], iscrowd=False))
        masks, caps = [], []
        for a in anns:
            m = self.coco.annToMask(a)
            m = cv2.resize(m, (self.size, self.size), interpolation=cv2.INTER_NEAREST).astype(bool)
            if m.sum() >= 4:
                masks.append(m)
                caps.append(a.get("caption") or f"a {self.cat_names[a['category_id']]}")
        if not masks:
            return None
        return np.ascontiguousarray(img), np.stack(masks), caps


def _item(img: np.ndarray, pairs, skipped: dict):
    """(image, masks, captions) of the entities of at least 4 pixels, or None (counted)."""
    kept = [(m, c) for m, c in pairs if m.sum() >= 4]
    if not kept:
        skipped["no_entity"] += 1
        return None
    return np.ascontiguousarray(img), np.stack([m for m, _ in kept]), [c for _, c in kept]


class OpenImagesEntities:
    """Open Images segmentation: its CSV (MaskPath, ImageID, LabelName, ...) with the mask PNGs
    (any resolution: resized to the image) and the images as <ImageID>.jpg. Captions come from
    class-descriptions (LabelName -> DisplayName) when given, else the label itself. Rows whose
    image or mask is missing or unreadable are skipped and counted."""

    def __init__(self, csv_path: str | Path, images: str | Path, masks: str | Path,
                 classes: str | Path | None = None, *, size: int = 128):
        import csv

        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise ValueError(f"Open Images CSV {csv_path} does not exist")
        self.images, self.masks, self.size = Path(images), Path(masks), size
        names = {}
        if classes:
            with open(classes, newline="") as f:
                names = {row[0]: row[1] for row in csv.reader(f) if len(row) >= 2}
        by_image: dict[str, list[tuple[str, str]]] = {}
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            missing = {"MaskPath", "ImageID", "LabelName"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{csv_path} lacks the Open Images columns {', '.join(sorted(missing))}")
            for row in reader:
                label = row["LabelName"]
                by_image.setdefault(row["ImageID"], []).append((row["MaskPath"], names.get(label, label)))
        self.ids = sorted(by_image)
        self.entities = by_image
        self.skipped = {"no_entity": 0, "unreadable": 0}
        if not self.ids:
            raise ValueError(f"{csv_path} has no mask rows")

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int):
        image_id = self.ids[index % len(self.ids)]
        img = cv2.imread(str(self.images / f"{image_id}.jpg"), cv2.IMREAD_COLOR)
        if img is None:
            self.skipped["unreadable"] += 1
            return None
        img = cv2.resize(img[..., ::-1], (self.size, self.size), interpolation=cv2.INTER_AREA)
        pairs = []
        for mask_path, name in self.entities[image_id]:
            m = cv2.imread(str(self.masks / mask_path), cv2.IMREAD_GRAYSCALE)
            if m is None:
                self.skipped["unreadable"] += 1
                continue
            pairs.append((cv2.resize(m, (self.size, self.size), interpolation=cv2.INTER_NEAREST) > 0,
                          f"a {name.lower()}"))
        return _item(img, pairs, self.skipped)


class PanopticEntities:
    """COCO panoptic JSON + PNG folder: every non-crowd segment (things and stuff) an entity,
    captioned "a <category name>", as entity segmentation treats them."""

    def __init__(self, json_path: str | Path, png_dir: str | Path, images: str | Path | None = None, *,
                 size: int = 128):
        from unigs_deploy.evaluation.datasets import DataError, PanopticSet

        try:
            self.set = PanopticSet(json_path, png_dir)
        except DataError as e:
            raise ValueError(str(e)) from None
        self.ids = sorted(i for i in self.set.images if i in self.set.annotations)
        if not self.ids:
            raise ValueError(f"{json_path} has no annotated image")
        self.root = Path(images) if images else Path(json_path).parent / "images"
        self.size = size
        self.names = {c: v.get("name", str(c)) for c, v in self.set.categories.items()}
        self.skipped = {"no_entity": 0, "unreadable": 0}

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int):
        from unigs_deploy.evaluation.datasets import DataError

        image_id = self.ids[index % len(self.ids)]
        img = cv2.imread(str(self.root / self.set.images[image_id].file_name), cv2.IMREAD_COLOR)
        try:
            truth = self.set.truth(image_id)
        except DataError:
            truth = None
        if img is None or truth is None:
            self.skipped["unreadable"] += 1
            return None
        img = cv2.resize(img[..., ::-1], (self.size, self.size), interpolation=cv2.INTER_AREA)
        ids = cv2.resize(truth.ids.astype(np.int32), (self.size, self.size), interpolation=cv2.INTER_NEAREST)
        pairs = [(ids == int(seg["id"]), f"a {self.names.get(int(seg['category_id']), 'thing')}")
                 for seg in truth.segments if seg.get("iscrowd", 0) == 0]
        return _item(img, pairs, self.skipped)


class ReferExpressions:
    """A refer JSON (RefCOCO-style records, the format `unigs-eval run --task refer` reads): each
    item is one image with its referred entity and sentence as the only entity."""

    def __init__(self, json_path: str | Path, images: str | Path | None = None, *, size: int = 128):
        from unigs_deploy.evaluation.datasets import DataError, load_refs

        try:
            self.refs = load_refs(json_path)
        except DataError as e:
            raise ValueError(str(e)) from None
        if not self.refs:
            raise ValueError(f"{json_path} has no referring expressions")
        self.root = Path(images) if images else Path(json_path).parent / "images"
        self.size = size
        self.skipped = {"no_entity": 0, "unreadable": 0}

    def __len__(self) -> int:
        return len(self.refs)

    def load(self, index: int):
        from unigs_deploy.evaluation.datasets import decode_segmentation

        ref = self.refs[index % len(self.refs)]
        img = cv2.imread(str(self.root / ref.file_name), cv2.IMREAD_COLOR)
        if img is None:
            self.skipped["unreadable"] += 1
            return None
        m = decode_segmentation(ref.target, ref.height, ref.width).astype(np.uint8)
        img = cv2.resize(img[..., ::-1], (self.size, self.size), interpolation=cv2.INTER_AREA)
        m = cv2.resize(m, (self.size, self.size), interpolation=cv2.INTER_NEAREST).astype(bool)
        if m.sum() < 4:
            self.skipped["no_entity"] += 1
            return None
        return np.ascontiguousarray(img), m[None], [ref.sentence]


class Mix:
    """Several datasets, each with a weight per task (the paper trains inpainting, synthesis and
    referring on COCO + Open Images, entity segmentation on COCO + EntitySeg): `pick(task, rng)`
    chooses the dataset an example of `task` comes from."""

    def __init__(self, named: list[tuple[str, object, dict]]):
        self.named = named
        self.skipped: dict = {}
        for name, ds, _ in named:
            ds.skipped = self.skipped.setdefault(name, ds.skipped)
        self.by_task = {}
        for t in tasks.NAMES:
            w = np.array([weights.get(t, 0.0) for _, _, weights in named], float)
            if w.sum() > 0:
                self.by_task[t] = w / w.sum()

    def pick(self, task: str, rng: np.random.Generator):
        return self.named[int(rng.choice(len(self.named), p=self.by_task[task]))][1]


# ------------------------------------------------------------------ UniGS examples


@dataclass
class Example:
    task: str
    image: np.ndarray  # (H, W, 3) uint8: the image half's target
    colormap: np.ndarray  # (H, W, 3) uint8: the colormap half's target
    control: np.ndarray  # (H, W, 3) float32 in [-1, 1]: what the control latent encodes
    mask: np.ndarray  # (H, W) float32: coarse region or ones
    prompt: str
    negative: str = ""  # inpaint: the prompt with one entity's shape kind swapped ("" if none names one)
    kind: int = -1  # inpaint of one entity whose caption names a shape kind: its index in KINDS


def keep_largest(masks: np.ndarray, captions: list, limit: int = palette.MAX_ENTITIES):
    """At most `limit` entities (the palette's colours): the largest kept in their order, the rest
    folded into the background. -> (masks, captions, how many were folded)."""
    if len(masks) <= limit:
        return masks, captions, 0
    keep = np.sort(np.argsort(-masks.reshape(len(masks), -1).sum(1), kind="stable")[:limit])
    return masks[keep], [captions[i] for i in keep], len(masks) - limit


def make_example(task: str, image, masks, captions, rng: np.random.Generator, *, max_entities: int = 4,
                 inpaint_one_entity: float = 0.0) -> Example:
    """One training example: entities picked for the task, then `tasks.model_inputs`.
    inpaint_one_entity: the share of inpaint examples that fill one region (one named kind, what
    the caption kind loss learns from); 0 draws nothing extra, so earlier stages' examples stay."""
    masks, captions, _ = keep_largest(masks, captions)
    n = len(masks)
    h, w = image.shape[:2]
    unit = palette.colormap_to_unit(image)
    if task == "segment":
        pick = np.arange(n)
    elif task == "refer" or (task == "inpaint" and inpaint_one_entity and rng.random() < inpaint_one_entity):
        pick = rng.choice(n, 1)
    else:
        pick = np.sort(rng.choice(n, int(rng.integers(1, min(n, max_entities) + 1)), replace=False))
    cmap = palette.encode_colormap(masks[pick])
    prompt = ", ".join(captions[i] for i in pick)
    region = None
    if tasks.get(task).uses_region:
        region = np.logical_or.reduce([coarse_mask(masks[i], rng)[0] for i in pick])
    if task == "segment":
        prompt = ""
    control, mask = tasks.model_inputs(task, unit, region, palette.colormap_to_unit(cmap))
    # drawn last from the example's own generator: the rest of it is what earlier stages drew
    negative = kind_swapped([captions[i] for i in pick], rng) if task == "inpaint" else ""
    named = prompt.split()[-1] if task == "inpaint" and len(pick) == 1 and prompt else ""
    return Example(task, image, cmap, control, mask, prompt, negative, KINDS.index(named) if named in KINDS else -1)


def kind_swapped(captions: list[str], rng: np.random.Generator) -> str:
    """The prompt with one entity's shape kind ("a red star") replaced by another kind: a caption
    the image does not match, for train.caption_contrast; "" when no caption ends in a kind."""
    swappable = [i for i, c in enumerate(captions) if c.split() and c.split()[-1] in KINDS]
    if not swappable:
        return ""
    i = swappable[int(rng.integers(len(swappable)))]
    *words, kind = captions[i].split()
    others = [k for k in KINDS if k != kind]
    swapped = list(captions)
    swapped[i] = " ".join([*words, others[int(rng.integers(len(others)))]])
    return ", ".join(swapped)


class ExampleSource:
    """Deterministic examples: example(step, i) depends only on (seed, step, i, rank)."""

    def __init__(self, dataset, *, seed: int, task_ratios: dict, rank: int = 0, max_entities: int = 4,
                 inpaint_one_entity: float = 0.0):
        self.dataset, self.seed, self.rank = dataset, seed, rank
        self.picking = {"max_entities": max_entities, "inpaint_one_entity": inpaint_one_entity}
        self.tasks = [t for t in tasks.NAMES if task_ratios.get(t, 0) > 0]
        p = np.array([task_ratios[t] for t in self.tasks], float)
        self.p = p / p.sum()

    def example(self, step: int, i: int) -> Example:
        if isinstance(self.dataset, Mix):
            return self._mixed(step, i)
        for attempt in range(100):
            rng = np.random.default_rng([self.seed, step, i, self.rank, attempt])
            item = self.dataset.load(int(rng.integers(1 << 62)))
            if item is not None:
                folded = keep_largest(item[1], item[2])[2]
                if folded:  # more entities than the palette has colours: counted, never a crash
                    skipped = getattr(self.dataset, "skipped", None)
                    if skipped is not None:
                        skipped["entities_folded_into_background"] = (
                            skipped.get("entities_folded_into_background", 0) + folded)
                task = self.tasks[int(rng.choice(len(self.tasks), p=self.p))]
                return make_example(task, *item, rng, **self.picking)
        raise RuntimeError("100 unreadable images in a row: check the dataset paths")

    def _mixed(self, step: int, i: int) -> Example:
        """The task first, then a dataset that serves it, then an item of that dataset."""
        for attempt in range(100):
            rng = np.random.default_rng([self.seed, step, i, self.rank, attempt])
            task = self.tasks[int(rng.choice(len(self.tasks), p=self.p))]
            dataset = self.dataset.pick(task, rng)
            item = dataset.load(int(rng.integers(1 << 62)))
            if item is not None:
                folded = keep_largest(item[1], item[2])[2]
                if folded:
                    dataset.skipped["entities_folded_into_background"] = (
                        dataset.skipped.get("entities_folded_into_background", 0) + folded)
                return make_example(task, *item, rng, **self.picking)
        raise RuntimeError("100 unreadable images in a row: check the dataset paths")


class ShapesOnTheFly:
    """The shapes world generated on demand (no files): load(i) is a pure function of i."""

    def __init__(self, size: int = 128, seed: int = 0, entities: tuple[int, int] = ENTITIES, upright: float = 0.0):
        self.size, self.seed, self.entities, self.upright = size, seed, tuple(entities), upright
        self.skipped = {"no_entity": 0, "unreadable": 0}

    def __len__(self) -> int:
        return 1 << 62

    def load(self, index: int):
        return shapes_image(np.random.default_rng([self.seed, index]), self.size, *self.entities,
                            upright=self.upright)
