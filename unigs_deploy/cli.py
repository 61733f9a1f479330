"""`unigs-run`: run a UniGS engine on one input; every output written atomically."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from . import io
from .dichotomy import labels_to_masks


def _fail_cleanly(fn):
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        from .backends import EngineError
        from .manifest import ManifestError

        try:
            return fn(*a, **kw)
        except (ValueError, EngineError, ManifestError) as e:
            click.echo(f"unigs-run: error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("unigs-run: interrupted; outputs already written are complete, the rest were not written",
                       err=True)
            sys.exit(130)

    return wrapper


TASK_HELP = """\b
Tasks and their inputs:
  inpaint     --image, one or more --mask with a --prompt each (multi-region)
  synthesize  --colormap (location-aware palette colours), optional --prompt
  refer       --image, --mask (a coarse region), --prompt (what to find)
  segment     --image; every entity, background included
"""


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=TASK_HELP)
@click.option("--engine", required=True, type=click.Path(path_type=Path),
              help="engines/unigs.onnx, engines/unigs.plan (TensorRT) or the engine folder.")
@click.option("--task", required=True, type=click.Choice(["inpaint", "synthesize", "refer", "segment"]))
@click.option("--image", type=click.Path(path_type=Path, dir_okay=False), help="Input image (any PNG/JPEG).")
@click.option("--mask", "masks", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Coarse region, non-zero inside; repeat for several inpainting regions.")
@click.option("--colormap", type=click.Path(path_type=Path, dir_okay=False), help="Colormap for synthesize.")
@click.option("--prompt", "prompts", multiple=True, help="Text; for inpaint one per --mask, in the same order.")
@click.option("--steps", default=25, show_default=True, help="DDIM steps.")
@click.option("--guidance", default=7.5, show_default=True, help="Classifier-free guidance scale (1 = off).")
@click.option("--seed", default=0, show_default=True, help="Same seed, same output.")
@click.option("--eta", default=0.0, show_default=True, help="DDIM eta (0 = deterministic sampler).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("out"), show_default=True)
@click.option("--threads", default=0, show_default=True, help="Intra-op threads for ONNX Runtime (0 = all cores).")
@click.option("--provider", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]),
              help="ONNX Runtime provider (auto: CUDA when available).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_fail_cleanly
def main(engine, task, image, masks, colormap, prompts, steps, guidance, seed, eta, out, threads, provider, quiet):
    """Run UniGS with the lean runtime (no torch): inpaint, synthesize, refer or segment, and write
    image.png, colormap.png, labels.png, masks.json (COCO RLE), panoptic.png + panoptic.json and
    run.json (settings, seed, timings) into OUT."""
    from .pipeline import UniGSPipeline

    if steps < 1:
        raise ValueError(f"--steps must be at least 1, got {steps}")
    inputs, notes = _read_inputs(task, image, masks, colormap, prompts)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot write to {out}: {e.strerror}; choose another --out folder") from None
    pipe = UniGSPipeline.from_engine(engine, provider=provider, threads=threads)
    kw = dict(steps=steps, guidance=guidance, seed=seed, eta=eta, progress=not quiet)
    if task == "inpaint":
        res = pipe.inpaint(inputs["image"], list(zip(inputs["masks"], inputs["prompts"], strict=True)), **kw)
    elif task == "synthesize":
        res = pipe.synthesize(inputs["colormap"], " ".join(prompts), **kw)
    elif task == "refer":
        res = pipe.refer(inputs["image"], inputs["masks"][0], " ".join(prompts), **kw)
    else:
        res = pipe.segment(inputs["image"], " ".join(prompts), **kw)
    for note in notes + res.notes:
        click.echo(f"note: {note}", err=True)
    written = _write(out, res, engine, provider=next(iter(pipe.components.values())).provider)
    t = res.timings
    click.echo(f"{task}: {steps} steps in {t['denoise_s']:.2f}s ({t['total_s']:.2f}s total), "
               f"{int(res.labels.max())} entities")
    for p in written:
        click.echo(f"  wrote {p}")


def _read_inputs(task, image, masks, colormap, prompts):
    notes = []
    inputs = {}
    if task == "synthesize":
        if not colormap:
            raise ValueError("synthesize needs --colormap (an RGB image in the palette's colours)")
        inputs["colormap"], n = io.read_any_image(colormap)
        notes += n
    else:
        if not image:
            raise ValueError(f"{task} needs --image")
        inputs["image"], n = io.read_any_image(image)
        notes += n
    if task in ("inpaint", "refer"):
        if not masks:
            raise ValueError(f"{task} needs --mask (a coarse region, non-zero inside)")
        inputs["masks"] = [io.read_mask(m) for m in masks]
        if task == "refer" and len(masks) > 1:
            raise ValueError("refer takes one --mask")
        if not prompts:
            raise ValueError(f"{task} needs --prompt")
    if task == "inpaint":
        if len(prompts) not in (1, len(masks)):
            raise ValueError(f"{len(masks)} masks but {len(prompts)} prompts: give one --prompt per --mask")
        inputs["prompts"] = list(prompts) * len(masks) if len(prompts) == 1 else list(prompts)
    return inputs, notes


def _write(out: Path, res, engine: Path, provider: str) -> list[Path]:
    masks = labels_to_masks(res.labels)
    files = [
        io.write_image(out / "image.png", res.image),
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


if __name__ == "__main__":
    main()
