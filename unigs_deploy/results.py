"""A run's outputs as files (what `unigs-run` and `unigs-demo` write), each written atomically."""

from __future__ import annotations

from pathlib import Path

from . import io
from .labels import labels_to_masks


def write_result(out: Path, res, *, engine: str | Path, provider: str) -> list[Path]:
    """image.png (when the image half was decoded), colormap.png, labels.png, masks.json (COCO
    RLE), panoptic.png + .json, mask.png (refer, inpaint) and run.json (settings, timings, notes)."""
    masks = labels_to_masks(res.labels)
    files = [io.write_image(out / "image.png", res.image)] if res.image is not None else []
    files += [
        io.write_image(out / "colormap.png", res.colormap),
        io.write_labels(out / "labels.png", res.labels),
        io.write_json(out / "masks.json", io.masks_to_rle(masks) if len(masks) else []),
    ]
    files += list(io.write_panoptic(out / "panoptic.png", out / "panoptic.json", res.labels))
    if res.mask is not None:
        files.append(io.write_image(out / "mask.png", (res.mask * 255).astype("uint8")))
    files.append(io.write_json(out / "run.json", {
        "engine": str(engine), "provider": provider, "settings": res.settings, "timings": res.timings,
        "entities": int(res.labels.max()), "notes": res.notes}))
    return files
