"""A run's outputs as files (what `unigs-run` and `unigs-demo` write), each written atomically.

A folder holds one run's outputs: files a previous run wrote there under these names and this
run does not write are removed; run.json, written last, lists what this run wrote.
"""

from __future__ import annotations

from pathlib import Path

from . import io
from .labels import labels_to_masks

OUTPUTS = ("image.png", "colormap.png", "labels.png", "masks.json", "panoptic.png", "panoptic.json", "mask.png",
           "run.json")


def coco_results(labels, *, image_id: int = 0) -> list[dict]:
    """Every entity as a COCO segmentation result (pycocotools' `loadRes` reads the list as it is
    and derives area and box from the RLE). Class-agnostic: category 1, score 1."""
    masks = labels_to_masks(labels)
    return [{"image_id": int(image_id), "category_id": 1, "segmentation": rle, "score": 1.0}
            for rle in (io.masks_to_rle(masks) if len(masks) else [])]


def write_result(out: Path, res, *, engine: str | Path, provider: str, image_id: int = 0) -> list[Path]:
    """image.png (when the image half was decoded), colormap.png, labels.png, masks.json (COCO
    results), panoptic.png + .json, mask.png (refer, inpaint) and run.json (settings, timings, notes)."""
    out = Path(out)
    files = [io.write_image(out / "image.png", res.image)] if res.image is not None else []
    files += [
        io.write_image(out / "colormap.png", res.colormap),
        io.write_labels(out / "labels.png", res.labels),
        io.write_json(out / "masks.json", coco_results(res.labels, image_id=image_id)),
    ]
    files += list(io.write_panoptic(out / "panoptic.png", out / "panoptic.json", res.labels))
    if res.mask is not None:
        files.append(io.write_image(out / "mask.png", (res.mask * 255).astype("uint8")))
    names = {p.name for p in files} | {"run.json"}
    for stale in OUTPUTS:
        if stale not in names:
            (out / stale).unlink(missing_ok=True)
    files.append(io.write_json(out / "run.json", {
        "engine": str(engine), "provider": provider, "settings": res.settings, "timings": res.timings,
        "entities": int(res.labels.max()), "notes": res.notes, "files": sorted(names)}))
    return files
