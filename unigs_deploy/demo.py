"""`unigs-demo`: the four UniGS tasks on generated examples with the shipped demo model, as one
`demo.png` sheet plus each task's outputs; `--codec` shows the colormap codec alone."""

from __future__ import annotations

import time
from pathlib import Path

import click
import cv2
import numpy as np

from . import dichotomy, io, metrics, palette
from .labels import masks_to_labels
from .results import write_result
from .synthetic import shapes


def _codec(out_dir: Path, entities: int, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    masks, kinds = shapes.random_layout(rng, size, size, entities)
    truth = masks_to_labels(masks)
    colormap = palette.encode_colormap(masks)
    noisy = shapes.corrupt_colormap(colormap, rng)
    dichotomy.decode_colormap(noisy)  # JIT / cache load, not part of the timing
    t0 = time.perf_counter()
    labels = dichotomy.decode_colormap(noisy)
    ms = (time.perf_counter() - t0) * 1e3
    pq = metrics.panoptic_quality(labels, truth)
    written = [
        io.write_image(out_dir / "masks.png", io.colorize_labels(truth)),
        io.write_image(out_dir / "colormap.png", colormap),
        io.write_image(out_dir / "colormap_noisy.png", noisy),
        io.write_image(out_dir / "decoded.png", io.colorize_labels(labels)),
        io.write_labels(out_dir / "labels.png", labels),
        io.write_json(out_dir / "masks.json", io.masks_to_rle(dichotomy.labels_to_masks(labels))),
    ]
    click.echo(f"{len(masks)} entities ({', '.join(sorted(set(kinds)))}) -> colormap -> noise sigma 8, "
               f"5x5 blur, JPEG 75, colour shift <= 12 -> {labels.max()} decoded entities in {ms:.1f} ms")
    click.echo(f"panoptic quality vs the true masks: PQ {pq['pq']:.3f} (SQ {pq['sq']:.3f}, RQ {pq['rq']:.3f})")
    for p in written:
        click.echo(f"  wrote {p}")


def _big(x: np.ndarray, scale: int) -> np.ndarray:
    if x.ndim == 2:
        x = np.repeat((x * 255).astype(np.uint8)[..., None], 3, 2) if x.dtype == bool else io.colorize_labels(x)
    return cv2.resize(x, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    tile = tile.copy()
    cv2.putText(tile, text, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def _caption_bar(width: int, text: str) -> np.ndarray:
    bar = np.zeros((20, width, 3), np.uint8)
    cv2.putText(bar, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return bar


def _held_out_quality(engine: Path) -> dict:
    """task -> 'metric value' from the quality.json shipped with the model (unigs-bench quality)."""
    import json

    from .manifest import Manifest

    try:
        src = Path(Manifest.load(engine).source.get("path", ""))
        rows = json.loads((src / "quality.json").read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for r in rows.get("rows", []):
        out.setdefault(r["task"], []).append(f"{r['metric'].split(' (')[0]} {r['value']:.2f}")
    return {k: ", ".join(v) + f" ({rows.get('images', '?')} held-out)" for k, v in out.items()}


def _tasks(engine: Path, out_dir: Path, steps: int, seed: int, size: int) -> None:
    from .labels import dominant_in, masks_to_labels
    from .pipeline import UniGSPipeline
    pipe = UniGSPipeline.from_engine(engine)
    image, masks, captions, region, j = shapes.held_out_example(seed, size)
    overlay = image.copy()
    overlay[region] = (overlay[region] * 0.5 + np.array([255, 255, 255]) * 0.5).astype(np.uint8)
    kw = dict(steps=steps, seed=seed, progress=True, decode_image=True)  # the model's own defaults otherwise
    runs = [
        ("inpaint", f"inpaint '{captions[j]}'", overlay, pipe.inpaint(image, [(region, captions[j])], **kw)),
        ("synthesize", "synthesize from colormap", palette.encode_colormap(masks),
         pipe.synthesize(palette.encode_colormap(masks), ", ".join(captions), **kw)),
        ("refer", f"refer '{captions[j]}'", overlay, pipe.refer(image, region, captions[j], **kw)),
        ("segment", "segment", image, pipe.segment(image, **kw)),
    ]
    truth = masks_to_labels(masks, background=len(masks) + 1)
    back = pipe.segment(runs[1][3].image, seed=seed).labels
    here = {"segment": f"PQ {metrics.panoptic_quality(runs[3][3].labels, truth)['pq']:.2f}",
            "refer": f"IoU {metrics.mask_iou(runs[2][3].mask, masks[j]):.2f}",
            "inpaint": f"region IoU {metrics.mask_iou(dominant_in(runs[0][3].labels, region), masks[j]):.2f}",
            "synthesize": f"PQ segmented back {metrics.panoptic_quality(back, truth)['pq']:.2f}"}
    held_out = _held_out_quality(engine)
    scale = max(1, 192 // image.shape[0])
    rows = []
    for task, title, shown, res in runs:
        write_result(out_dir / task, res, engine=engine, provider=pipe.provider)
        result = res.mask if res.mask is not None and task == "refer" else res.labels
        tiles = [_label(_big(shown, scale), title), _label(_big(res.image, scale), "image"),
                 _label(_big(res.colormap, scale), "colormap"), _label(_big(result, scale), "masks")]
        row = np.concatenate(tiles, 1)
        text = f"{task}: this example {here[task]}" + (f"  |  {held_out[task]}" if task in held_out else "")
        rows.append(np.concatenate([row, _caption_bar(row.shape[1], text)], 0))
        click.echo(f"{task:<11} {res.timings['total_s']:.2f}s, {int(res.labels.max())} entities -> {out_dir / task}")
    sheet = io.write_image(out_dir / "demo.png", np.concatenate(rows, 0))
    click.echo(f"wrote {sheet}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--engine", type=click.Path(path_type=Path), default=Path("engines/unigs.onnx"), show_default=True,
              help="The exported demo model (make demo exports it).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo_out"), show_default=True)
@click.option("--steps", type=int, help="Denoising steps [default: each task's, see unigs_deploy/tasks.py].")
@click.option("--seed", default=0, show_default=True)
@click.option("--codec", is_flag=True, help="Only the colormap codec (no model needed).")
@click.option("--entities", default=12, show_default=True, help="--codec: entities in the layout.")
@click.option("--size", type=int, help="Image side in pixels (default: 64, the demo model's, or 512 with --codec).")
def main(engine: Path, out: Path, steps: int, seed: int, codec: bool, entities: int, size: int | None) -> None:
    """Run all four UniGS tasks with the demo model on a generated shapes-world example and write
    demo.png (inputs, generated image, colormap and masks side by side) and each task's outputs."""
    if codec:
        _codec(out, entities, size or 512, seed)
        return
    from .backends import EngineError
    from .manifest import ManifestError

    try:
        _tasks(engine, out, steps, seed, size or 64)
    except (EngineError, ManifestError, ValueError) as e:
        raise click.ClickException(f"{e}\n(make demo exports the shipped demo model to engines/ first)") from None


if __name__ == "__main__":
    main()
