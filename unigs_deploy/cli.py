"""`unigs-run`: run a UniGS engine on one input; every output written atomically.

Heavy modules (onnxruntime, numba, OpenCV) are imported inside `main`, so that a Ctrl-C or a
failure while they load ends as one line too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

_ctrl_c = threading.Event()


def _note_ctrl_c(*_):
    _ctrl_c.set()


def _ours_to_set() -> bool:
    """Only where Python's own handler is in place (and signals can be set: the main thread),
    so importers and test runners keep theirs."""
    return threading.current_thread() is threading.main_thread() \
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler


@contextlib.contextmanager
def _ctrl_c_deferred():
    """Ctrl-C while modules and the engine load is noted, and raised as KeyboardInterrupt once
    they have loaded: raised inside them it can be lost, or turned into another error, by C code
    that calls back into Python (onnxruntime's session set-up reported "initialization failed")."""
    if not _ours_to_set():
        yield
        return
    _ctrl_c.clear()
    signal.signal(signal.SIGINT, _note_ctrl_c)
    try:
        yield
    except Exception:
        if _ctrl_c.is_set():  # the error may be the interruption's doing: report the interruption
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if _ctrl_c.is_set():
        raise KeyboardInterrupt


_starting = _ours_to_set()  # the imports below are what a Ctrl-C at start-up meets
if _starting:
    signal.signal(signal.SIGINT, _note_ctrl_c)

import click  # noqa: E402

from . import tasks  # noqa: E402
from .errors import one_line_errors  # noqa: E402
from .scheduler import SCHEDULERS, SPACINGS  # noqa: E402


def _resolution(ctx, param, value: str):
    if value in ("native", "input"):
        return value
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise click.BadParameter(f"{value!r}: give native, input or a side in pixels (e.g. 512)")


def _interval(ctx, param, value: str | None):
    if value is None:
        return None
    from .pipeline import check_interval

    try:
        return check_interval(value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give LOW,HIGH timesteps, e.g. 600,1000 (guidance on the noisiest "
                                 "steps only) or 0,1000 (every step)") from None


def _check_writable(out: Path) -> None:
    """Before any model work: the outputs must be writable into `out`."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".unigs-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"cannot write to {out}: {e.strerror}; choose another --out folder") from None


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
@click.option("--task", required=True, type=click.Choice(tasks.NAMES))
@click.option("--image", type=click.Path(path_type=Path, dir_okay=False), help="Input image (any PNG/JPEG).")
@click.option("--mask", "masks", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Coarse region, non-zero inside; repeat for several inpainting regions.")
@click.option("--colormap", type=click.Path(path_type=Path, dir_okay=False), help="Colormap for synthesize.")
@click.option("--prompt", "prompts", multiple=True, help="Text; for inpaint one per --mask, in the same order.")
@click.option("--negative-prompt", default="",
              help="Text to steer away from: classifier-free guidance's unconditional prompt (needs guidance > 1).")
@click.option("--steps", type=int,
              help="Denoising steps [default: the model's for the task (its manifest), else unigs_deploy/tasks.py].")
@click.option("--guidance", type=float, help="Classifier-free guidance scale, 1 = off [default: the task's].")
@click.option("--guidance-interval", callback=_interval, metavar="LOW,HIGH",
              help="Guide only the steps whose timestep lies in LOW..HIGH (e.g. 600,1000); the others run the "
                   "conditional pass alone, at half the UNet's cost [default: the task's, else every step].")
@click.option("--seed", default=0, show_default=True, help="Same seed, same output.")
@click.option("--eta", type=float, help="DDIM eta, 0 = deterministic sampler [default: the task's].")
@click.option("--scheduler", type=click.Choice(list(SCHEDULERS)), help="Sampler [default: the task's].")
@click.option("--spacing", type=click.Choice(SPACINGS),
              help="Timestep spacing [default: the task's, else the model's scheduler config].")
@click.option("--resolution", default="native", show_default=True, callback=_resolution,
              help="Working resolution: native (the model's training resolution; outputs mapped back to the "
                   "input's size), input (the image's own size) or N (longer side N pixels).")
@click.option("--decode-image", is_flag=True, help="Also decode the image half for refer and segment.")
@click.option("--tiny-vae", type=click.Choice(["off", "colormap", "all"]),
              help="Where the engine's tiny VAE (unigs-export --tiny-vae) replaces the full one: colormap (its "
                   "decode), all (also the image encode and decode) [default: the model's for the task, else "
                   "colormap if the engine has one].")
@click.option("--threshold", type=float,
              help="Colour distance at which the decoder stops splitting [default: the model's for the task, else 32].")
@click.option("--stop", type=click.Choice(["centres", "spread"]),
              help="Decoder split rule: centres (2-means halves apart) or spread (the paper's) [default: the task's].")
@click.option("--locate", type=click.Choice(["colormap", "refer"]),
              help="inpaint: read each region's entity from the generated colormap, or find it in the generated "
                   "image with refer (one more refer pass a region) [default: the model's, else colormap].")
@click.option("--keep-unmasked/--redraw-unmasked", default=None,
              help="inpaint: image.png keeps the input's pixels outside the masks (the model redraws the whole "
                   "image; this pastes the input back, with a hard seam at the masks' edge), or shows the model's "
                   "own image everywhere [default: the model's, else redraw].")
@click.option("--candidates", type=int,
              help="inpaint: draw this many (seeds SEED, SEED+1, ...) and keep the one whose entities agree most "
                   "with the others' [default: the model's, else 1].")
@click.option("--rerank/--no-rerank", default=None,
              help="inpaint: choose among --candidates by the engine's reranker (how well each entity matches its "
                   "text), not by agreement alone [default: the model's, where the engine has a reranker].")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("out"), show_default=True,
              help="Output folder; outputs of an earlier run there are replaced (other files are kept).")
@click.option("--image-id", default=0, show_default=True, help="image_id written into masks.json (COCO results).")
@click.option("--threads", default=0, show_default=True, help="Intra-op threads for ONNX Runtime (0 = all cores).")
@click.option("--provider", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]),
              help="ONNX Runtime provider (auto: CUDA when available).")
@click.option("--backend", default="onnxruntime", show_default=True, type=click.Choice(["onnxruntime", "openvino"]),
              help="Runtime for .onnx engines (openvino: pip install 'unigs-deploy[openvino]'); .plan runs TensorRT.")
@click.option("--int8", is_flag=True, help="The int8 UNet (unigs-export --int8) on OpenVINO.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@one_line_errors("unigs-run", (ValueError, MemoryError),
                 interrupted="interrupted; outputs already written are complete, the rest were not written")
def main(engine, task, image, masks, colormap, prompts, negative_prompt, steps, guidance, guidance_interval, seed, eta,
         scheduler, spacing, resolution, decode_image, tiny_vae, threshold, stop, locate, keep_unmasked, candidates,
         rerank, out, image_id, threads, provider, backend, int8, quiet):
    """Run UniGS with the lean runtime (no torch): inpaint, synthesize, refer or segment, and write
    colormap.png, labels.png, masks.json (COCO results), panoptic.png + panoptic.json, image.png
    (inpaint, synthesize, or --decode-image), mask.png (refer, inpaint) and run.json (settings,
    seed, timings, notes) into OUT."""
    for flag, given in (("--locate", locate), ("--keep-unmasked/--redraw-unmasked", keep_unmasked),
                        ("--candidates", candidates), ("--rerank/--no-rerank", rerank)):
        if given is not None and task != "inpaint":
            raise ValueError(f"{flag} is for inpaint only; drop it for {task}")
    if candidates is not None and candidates < 1:
        raise ValueError(f"--candidates must be at least 1, got {candidates}")
    with _ctrl_c_deferred():
        pipe, inputs, notes = _load(engine, task, image, masks, colormap, prompts, steps, guidance, out, provider,
                                    threads, backend, int8)
    kw = dict(steps=steps, guidance=guidance, guidance_interval=guidance_interval, seed=seed, eta=eta,
              scheduler=scheduler, spacing=spacing, resolution=resolution, decode_image=decode_image or None,
              tiny_vae=tiny_vae, threshold=threshold, stop=stop, negative_prompt=negative_prompt, progress=not quiet)
    if task == "inpaint":
        from .pipeline import MissingComponent

        try:
            res = pipe.inpaint(inputs["image"], list(zip(inputs["masks"], inputs["prompts"], strict=True)),
                               locate=locate, keep_unmasked=keep_unmasked, candidates=candidates, rerank=rerank, **kw)
        except MissingComponent as e:
            flag = e.setting.replace("_", "-")
            raise ValueError(f"--{flag} {e.reason}: use --no-{flag}") from None
    elif task == "synthesize":
        res = pipe.synthesize(inputs["colormap"], " ".join(prompts), **kw)
    elif task == "refer":
        res = pipe.refer(inputs["image"], inputs["masks"][0], " ".join(prompts), **kw)
    else:
        res = pipe.segment(inputs["image"], " ".join(prompts), **kw)
    from .results import write_result

    res.notes[:0] = notes  # the input's own notes (grayscale expanded, alpha dropped, ...) first
    for note in res.notes:
        click.echo(f"note: {note}", err=True)
    written = write_result(out, res, engine=engine, provider=pipe.provider, image_id=image_id)
    t = res.timings
    click.echo(f"{task}: {res.settings['steps']} steps in {t['denoise_s']:.2f}s ({t['total_s']:.2f}s total), "
               f"{int(res.labels.max())} entities")
    for p in written:
        click.echo(f"  wrote {p}")


def _load(engine, task, image, masks, colormap, prompts, steps, guidance, out, provider, threads, backend, int8):
    """Everything before the model runs: arguments, inputs, the output folder, the engine."""
    from .pipeline import UniGSPipeline

    if steps is not None and steps < 1:
        raise ValueError(f"--steps must be at least 1, got {steps}")
    if guidance is not None and not guidance >= 1:  # also catches nan
        raise ValueError(f"--guidance must be a number >= 1 (1 = off), got {guidance}")
    inputs, notes = _read_inputs(task, image, masks, colormap, prompts)
    _check_writable(out)
    pipe = UniGSPipeline.from_engine(engine, provider=provider, threads=threads, backend=backend, int8=int8)
    return pipe, inputs, notes


def _read_inputs(task, image, masks, colormap, prompts):
    from . import io

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
        if not prompts or not any(p.strip() for p in prompts):
            raise ValueError(f"{task} needs a non-empty --prompt")
    if task == "inpaint":
        if len(prompts) != len(masks):
            raise ValueError(f"{len(masks)} masks but {len(prompts)} prompts: give one --prompt per --mask")
        inputs["prompts"] = list(prompts)
    return inputs, notes


if _starting:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if _ctrl_c.is_set():
        sys.stderr.write("unigs-run: interrupted while starting; nothing was written\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
