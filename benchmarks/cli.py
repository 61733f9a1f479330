"""`unigs-bench`: every sub-command prints a Markdown table and can write JSON."""

from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import click

from unigs_deploy import io
from unigs_deploy.scheduler import SCHEDULERS, SPACINGS
from unigs_deploy.synthetic.shapes import ENTITIES

from . import report
from .common import machine

SCALES = click.Choice(["sd15", "demo", "tiny"])


def _emit(result: dict, json_path: str | None) -> None:
    click.echo(report.RENDER[result["benchmark"]](result))
    if json_path:
        io.write_json(json_path, result)
        click.echo(f"wrote {json_path}")


def _switches(text: str) -> tuple:
    """"on,off" -> (True, False); "" -> (None,): the model's default."""
    if not text:
        return (None,)
    values = {"on": True, "off": False}
    bad = [t for t in text.split(",") if t.strip() not in values]
    if bad:
        raise click.BadParameter(f"{', '.join(bad)}: give on and / or off, comma-separated")
    return tuple(values[t.strip()] for t in text.split(","))


def _intervals(text: str) -> tuple:
    """"0:1000,600:1000" -> ((0.0, 1000.0), (600.0, 1000.0)); "" -> (None,): the model's default."""
    if not text:
        return (None,)
    from unigs_deploy.pipeline import check_interval

    try:
        return tuple(check_interval(t.split(":")) for t in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r}: give LOW:HIGH timesteps, comma-separated, e.g. 0:1000,600:1000") \
            from None


def _ints(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r}: give comma-separated integers, e.g. 256,512") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r}: give comma-separated numbers, e.g. 3,7.5") from None


def _names(text: str, allowed, option: str, what: str, *, required: bool) -> list[str]:
    """A comma-separated list of names from `allowed` (click's one-line error otherwise)."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = sorted(set(names) - set(allowed))
    if unknown or (required and not names):
        raise click.BadParameter(f"unknown {what}{', '.join(unknown) or '(none given)'}: choose from "
                                 f"{', '.join(allowed)}", param_hint=option)
    return names


def _locates(text: str) -> list[str | None]:
    from unigs_deploy.pipeline import LOCATE

    return _names(text, LOCATE, "--locate", "", required=False) or [None]


def _tasks(text: str, allowed) -> list[str]:
    return _names(text, allowed, "--tasks", "task(s) ", required=True)


def _calibration_images(images: int):
    """--engine, --images and --offset of the sweeps that choose a model's task defaults."""
    def options(f):
        f = click.option("--offset", default=5000, show_default=True,
                         help="First held-out index (5000: training's evaluation images, not unigs-bench "
                              "quality's 0..99).")(f)
        f = click.option("--images", default=images, show_default=True, help="Held-out images.")(f)
        return click.option("--engine", default="engines/unigs.onnx", show_default=True, type=click.Path(),
                            help="The exported (demo) model.")(f)
    return options


@click.group()
def main() -> None:
    """Measure UniGS deployment: speed, size and quality, each as a Markdown table and JSON."""


@main.command()
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON.")
@click.option("--quick", is_flag=True, help="Fewer repeats, skip the slowest 1024x1024 runs.")
def decoder(json_path: str | None, quick: bool) -> None:
    """Progressive dichotomy decoder: Numba vs numpy reference vs scikit-learn, one core."""
    from . import decoder as bench

    _emit(bench.run(quick=quick), json_path)


@main.command()
@click.option("--engine", default="engines/unigs.onnx", show_default=True, type=click.Path(),
              help="The exported demo model.")
@click.option("--images", default=100, show_default=True, help="Held-out images per task.")
@click.option("--steps", type=int, help="Denoising steps for every task [default: each task's default].")
@click.option("--guidance", type=float, help="Guidance for every task [default: each task's default].")
@click.option("--tiny-vae", type=click.Choice(["off", "colormap", "all"]), help="[default: the pipeline's].")
@click.option("--size", type=int, help="Held-out image side [default: the model's training side, its manifest].")
@click.option("--threads", default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON.")
def quality(engine, images, steps, guidance, tiny_vae, size, threads, json_path):
    """The demo model on held-out shapes-world images: all four tasks, against the targets, at the
    pipeline's default settings unless told otherwise."""
    from . import quality as bench

    _emit(bench.run(engine, n=images, steps=steps, guidance=guidance, tiny_vae=tiny_vae, size=size, threads=threads),
          json_path)


@main.command()
@click.argument("a", type=click.Path(exists=True, dir_okay=False))
@click.argument("b", type=click.Path(exists=True, dir_okay=False))
@click.option("--rows", help="Which row of each file, e.g. 0,2: a generative or thresholds run has one per setting "
                             "(a quality run one, 0) [default: each file's only row].")
@click.option("--names", help="What to call the two runs in the table, e.g. stage21,probeM [default: the files' "
                               "names, or the settings two rows of one file differ in].")
@click.option("--resamples", default=10_000, show_default=True, help="Bootstrap resamples.")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON.")
def compare(a, b, rows, names, resamples, seed, json_path):
    """Two runs on the same images (`unigs-bench quality --json`, or rows of `unigs-bench
    generative --json` or `thresholds --json`): B - A for every metric, with a paired-bootstrap 95%
    interval (is the difference more than the images' noise?)."""
    from unigs_deploy.evaluation.datasets import read_json

    from . import compare as bench

    picks = [None, None]
    if rows:
        try:
            picks = [int(t) for t in rows.split(",")]
        except ValueError:
            picks = []
        if len(picks) != 2:
            raise click.BadParameter(f"{rows!r}: give two row numbers, e.g. 0,2", param_hint="--rows")
    one_file = Path(a).resolve() == Path(b).resolve()
    stems = [Path(a).stem, Path(b).stem]
    if stems[0] == stems[1]:
        stems = ["A", "B"] if picks[0] == picks[1] else [f"{stems[0]}[{p}]" for p in picks]
    try:
        runs = [bench.select(read_json(path, "benchmark result"), pick, Path(path).name)
                for path, pick in zip((a, b), picks, strict=True)]
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if names:
        labels = [t.strip() for t in names.split(",")]
        if len(labels) != 2 or not all(labels):
            raise click.BadParameter(f"{names!r}: give two names, e.g. stage21,probeM", param_hint="--names")
    else:
        labels = bench.default_names(runs, stems, one_file=one_file)
    try:
        result = bench.compare(*runs, resamples=resamples, seed=seed, names=tuple(labels))
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    _emit(result, json_path)


@main.command()
@click.option("--engine", default="engines/unigs.onnx", show_default=True, type=click.Path(),
              help="The exported demo model.")
@click.option("--images", default=40, show_default=True, help="Held-out images.")
@click.option("--steps", "step_counts", default="1,2,4,8,25", show_default=True, help="Step counts to measure.")
@click.option("--guidance", default=3.0, show_default=True)
@click.option("--size", type=int, help="Held-out image side [default: the model's training side, its manifest].")
@click.option("--threads", default=0, show_default=True)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write the curves as a PNG.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON.")
def steps(engine, images, step_counts, guidance, size, threads, plot_path, json_path):
    """Segment PQ and refer mIoU vs denoising steps per scheduler, on the demo model."""
    from . import steps as bench

    result = bench.run(engine, n=images, steps=_ints(step_counts), guidance=guidance, size=size, threads=threads)
    _emit(result, json_path)
    if plot_path:
        bench.plot(result, plot_path)
        click.echo(f"wrote {plot_path}")


@main.command()
@click.option("--engine", required=True, type=click.Path(), help="A plain (not --optimize) export, with --int8.")
@click.option("--int8-file", type=click.Path(dir_okay=False), help="An int8 IR not (yet) in the manifest.")
@click.option("--size", default=512, show_default=True)
@click.option("--batch", default=1, show_default=True)
@click.option("--rounds", default=3, show_default=True)
@click.option("--threads", default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
def precision(engine, int8_file, size, batch, rounds, threads, json_path):
    """One UNet step: onnxruntime fp32 vs OpenVINO fp32 vs OpenVINO int8, alternating."""
    from . import precision as bench

    _emit(bench.run(engine, size=size, batch=batch, rounds=rounds, threads=threads, int8_file=int8_file), json_path)


@main.command()
@click.option("--engine", required=True, type=click.Path(), help="An sd15-shaped engine (unigs-export --scale sd15).")
@click.option("--demo-engine", type=click.Path(), help="The exported demo model, for the quality column.")
@click.option("--fused-engine", type=click.Path(), help="The same model exported with --optimize (optional).")
@click.option("--size", default=512, show_default=True)
@click.option("--rounds", default=2, show_default=True, help="Timed rounds (0: only the demo quality).")
@click.option("--images", default=40, show_default=True, help="Held-out images for the demo model's PQ.")
@click.option("--threads", default=0, show_default=True)
@click.option("--torch-eager/--no-torch-eager", default=True, show_default=True,
              help="Also time torch eager (rebuilds the engine's torch model: as much memory again).")
@click.option("--without", multiple=True, type=click.Choice(["torch", "fused", "openvino", "int8"]),
              help="Leave a variant out of the timed run (each sd15 pipeline holds ~4 GB).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
def fast(engine, demo_engine, fused_engine, size, rounds, images, threads, torch_eager, without, json_path):
    """A segmentation end to end: the 0.1 runtime defaults vs today's, side by side."""
    from . import fast as bench

    _emit(bench.run(engine, demo_engine, fused_engine, size=size, rounds=rounds, images=images, threads=threads,
                    torch_eager=torch_eager, without=tuple(without)), json_path)


@main.command()
@_calibration_images(60)
@click.option("--thresholds", "thresholds_", default="16,20,24,28,32,40,64,128", show_default=True,
              help="Thresholds to try, comma-separated.")
@click.option("--tasks", "tasks_", default="segment,refer,inpaint", show_default=True)
@click.option("--steps", type=int, help="Denoising steps for every task [default: each task's].")
@click.option("--tiny-vae", type=click.Choice(["off", "colormap", "all"]), help="[default: the pipeline's].")
@click.option("--size", type=int, help="Held-out image side [default: the model's training side, its manifest].")
@click.option("--threads", default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON.")
def thresholds(engine, images, offset, thresholds_, tasks_, steps, tiny_vae, size, threads, json_path):
    """The decoder's stop rule and threshold on a model's own segment, refer and inpaint colormaps:
    where a model's `threshold` / `stop` task defaults come from."""
    from . import thresholds as bench

    _emit(bench.run(engine, n=images, offset=offset, thresholds=_ints(thresholds_),
                    tasks=_tasks(tasks_, bench.TASKS), steps=steps, tiny_vae=tiny_vae, size=size, threads=threads),
          json_path)


@main.command()
@_calibration_images(40)
@click.option("--steps", "step_counts", default="25", show_default=True, help="Step counts, comma-separated.")
@click.option("--guidance", "guidances", default="3,7.5", show_default=True, help="Guidance scales, comma-separated.")
@click.option("--guidance-interval", "intervals", default="", help="Timesteps LOW:HIGH where guidance applies "
              "(the others run unguided), comma-separated, e.g. 0:1000,600:1000 [default: each task's].")
@click.option("--scheduler", type=click.Choice(list(SCHEDULERS)), help="[default: each task's].")
@click.option("--spacing", type=click.Choice(list(SPACINGS)), help="[default: each task's].")
@click.option("--locate", "locates", default="", help="inpaint: where each entity is read from, comma-separated "
              "(colormap, refer) [default: the model's].")
@click.option("--candidates", "candidate_counts", default="", help="inpaint: candidates drawn a region, "
              "comma-separated (the most agreed-on is kept, or the reranker's pick with --rerank on) "
              "[default: the model's].")
@click.option("--rerank", "reranks", default="", help="inpaint: choose among the candidates by the engine's "
              "reranker, comma-separated on / off [default: the model's].")
@click.option("--tasks", "tasks_", default="inpaint,synthesize", show_default=True)
@click.option("--size", type=int, help="Held-out image side [default: the model's training side, its manifest].")
@click.option("--threads", default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON.")
def generative(engine, images, offset, step_counts, guidances, intervals, scheduler, spacing, locates, candidate_counts,
               reranks, tasks_, size, threads, json_path):
    """Inpaint and synthesize quality for every steps x guidance pair: where a model's generative
    task defaults come from."""
    from . import generative as bench

    _emit(bench.run(engine, n=images, offset=offset, steps=_ints(step_counts), guidance=_floats(guidances),
                    guidance_interval=_intervals(intervals), scheduler=scheduler, spacing=spacing,
                    locate=_locates(locates),
                    candidates=_ints(candidate_counts) if candidate_counts else (None,), rerank=_switches(reranks),
                    tasks=_tasks(tasks_, bench.TASKS), size=size, threads=threads),
          json_path)


@main.command()
@_calibration_images(15)
@click.option("--size", type=int, help="Held-out image side [default: the model's training side, its manifest].")
@click.option("--entities", default=",".join(map(str, ENTITIES)), show_default=True,
              help="FEWEST,MOST entities a held-out scene asks for (1,1: one unoccluded entity, as training's "
                   "data.entities = [1, 1]).")
@click.option("--guidance", type=float, help="Inpaint's guidance [default: the task's default].")
@click.option("--threads", default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON.")
def kinds(engine, images, offset, size, entities, guidance, threads, json_path):
    """Does the caption's shape kind steer inpainting? Each region inpainted once per kind, same seed."""
    from . import generative as bench

    span = _ints(entities)
    if len(span) != 2 or not 1 <= span[0] <= span[1]:
        raise click.BadParameter(f"{entities!r}: give FEWEST,MOST with 1 <= FEWEST <= MOST, e.g. 1,1",
                                 param_hint="--entities")
    _emit(bench.kinds(engine, n=images, offset=offset, size=size, entities=tuple(span), guidance=guidance,
                      threads=threads), json_path)


@main.command("inpaint-reference")
@click.option("--images", default=100, show_default=True, help="Held-out images 0..N-1 (unigs-bench quality's).")
@click.option("--size", default=128, show_default=True, help="Held-out image side.")
@click.option("--draws", default=20_000, show_default=True, help="Proposals per box-region image.")
@click.option("--curved-draws", default=5000, show_default=True, help="Proposals per curved-region image.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON.")
def inpaint_reference(images, size, draws, curved_draws, json_path):
    """The region IoU a perfect inpainter would expect on the held-out images (no model needed)."""
    from . import posterior

    _emit(posterior.run(n=images, size=size, draws=draws, curved_draws=curved_draws), json_path)


@main.command("kind-means")
@click.option("--images", default=60, show_default=True, help="Held-out images (their box regions are used).")
@click.option("--offset", default=5000, show_default=True, help="First held-out index.")
@click.option("--size", default=128, show_default=True, help="Held-out image side.")
@click.option("--draws", default=4000, show_default=True, help="Proposals per region and kind.")
@click.option("--unrotated", is_flag=True, help="Draw every shape at angle 0 (a world without rotation).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON.")
def kind_means(images, offset, size, draws, unrotated, json_path):
    """Is the shapes world's posterior mean entity, per kind asked, judged that kind (no model needed)?"""
    from . import posterior

    _emit(posterior.kind_means(n=images, offset=offset, size=size, draws=draws, rotate=not unrotated), json_path)


@main.command("teacher-forced")
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="A model folder (a training run's model/, or unigs_deploy/weights/demo): torch, not an engine.")
@click.option("--images", default=20, show_default=True, help="Held-out images.")
@click.option("--offset", default=5000, show_default=True, help="First held-out index.")
@click.option("--size", default=128, show_default=True, help="Held-out image side.")
@click.option("--timesteps", default="100,300,500,700,900", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON.")
def teacher_forced(model_dir, images, offset, size, timesteps, json_path):
    """Where does inpainting consult the caption? The truth noised to t, x0 under each kind's caption."""
    from . import teacher_forced as bench

    _emit(bench.run(model_dir, n=images, offset=offset, size=size, timesteps=_ints(timesteps)), json_path)


@main.command("stop-rules")
@click.option("--layouts", default=200, show_default=True)
@click.option("--size", default=512, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
def stop_rules(layouts, size, json_path):
    """The dichotomy decoder's split rule: this project's (centres) vs the paper's (spread)."""
    from . import decoder

    _emit(decoder.stop_rules(layouts, size), json_path)


@main.command("gpu-check")
@click.option("--workdir", default="benchmarks/work/gpu", show_default=True, type=click.Path(path_type=Path))
@click.option("--scales", default="tiny,sd15", show_default=True)
@click.option("--json", "json_path", default="benchmarks/results/gpu-check.json", show_default=True,
              type=click.Path(dir_okay=False))
@click.option("--report", "report_path", default="benchmarks/results/gpu-check.md", show_default=True,
              type=click.Path(dir_okay=False))
def gpu_check(workdir, scales, json_path, report_path):
    """On an NVIDIA GPU: build fp32/fp16 TensorRT engines (tiny, sd15), check all four tasks against
    onnxruntime, the profile limits, and time a UNet step. Elsewhere: one line, exit code 3."""
    from . import gpu_check as check

    try:
        result = check.run(workdir, scales=tuple(s for s in scales.split(",") if s), log=click.echo)
    except check.NeedsGPU as e:
        click.echo(f"unigs-bench gpu-check: skipped: {e}", err=True)
        sys.exit(check.NO_GPU_EXIT)
    _emit(result, json_path)
    io.write_bytes(report_path, (check.render(result) + "\n").encode())
    click.echo(f"wrote {report_path}")
    if not result["ok"]:
        sys.exit(1)


@main.command()
@click.option("--scale", default="sd15", show_default=True, type=SCALES)
@click.option("--sizes", default="512,768,1024", show_default=True, help="Image sides of the UNet step.")
@click.option("--batch", default=1, show_default=True)
@click.option("--exports/--no-exports", default=True, show_default=True,
              help="Also export the scale plain, --optimize and --fp16 and report each peak.")
@click.option("--workdir", default="benchmarks/work", show_default=True, type=click.Path(path_type=Path))
@click.option("--threads", default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
def memory(scale, sizes, batch, exports, workdir, threads, json_path):
    """Peak RSS: exports, and one UNet step vs resolution with plain vs flash attention."""
    from . import memory as bench

    Path(workdir).mkdir(parents=True, exist_ok=True)
    _emit(bench.run(scale=scale, sizes=_ints(sizes), batch=batch, workdir=str(workdir), threads=threads,
                    exports=exports), json_path)


@main.command()
@click.option("--repeats", default=20, show_default=True, help="Calls per round.")
@click.option("--rounds", default=15, show_default=True, help="Alternating C / Python rounds.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON.")
def capi(repeats, rounds, json_path):
    """The C boundary's cost: unigs_decode_colormap from C vs decode_colormap from Python, 512x512."""
    from . import capi as bench

    _emit(bench.run(repeats=repeats, rounds=rounds), json_path)


@main.command()
@click.option("--scale", default="sd15", show_default=True, type=SCALES)
@click.option("--size", default=256, show_default=True, help="Image side (the paper: 512).")
@click.option("--steps", default=10, show_default=True, help="DDIM steps (the paper: 200).")
@click.option("--repeats", default=4, show_default=True, help="Rounds, alternating the two models.")
@click.option("--workdir", default="benchmarks/work", show_default=True, type=click.Path(path_type=Path),
              help="Where the UNet ONNX files go.")
@click.option("--threads", default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
def table1(scale, size, steps, repeats, workdir, threads, json_path):
    """The paper's Table 1: parameters and s/image, SD-inpainting vs UniGS UNet, same loop."""
    from . import speed

    _emit(speed.table1(scale=scale, size=size, steps=steps, repeats=repeats, workdir=workdir, threads=threads),
          json_path)


@main.command()
@click.option("--scale", default="sd15", show_default=True, type=SCALES)
@click.option("--sizes", default="256,512", show_default=True)
@click.option("--repeats", default=2, show_default=True, help="Timed UNet steps per process.")
@click.option("--rounds", default=3, show_default=True, help="Rounds per size, backend order rotating.")
@click.option("--image-steps", default=4, show_default=True, help="Steps of the whole-image loop (0: skip it).")
@click.option("--image-sizes", default="256", show_default=True, help="Sizes that also time a whole image.")
@click.option("--profile/--no-profile", default=True, show_default=True,
              help="Profile torch and the best ONNX Runtime by operator at the largest size.")
@click.option("--workdir", default="benchmarks/work", show_default=True, type=click.Path(path_type=Path))
@click.option("--threads", default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
def backends(scale, sizes, repeats, rounds, image_steps, image_sizes, profile, workdir, threads, json_path):
    """One UniGS UNet step and a whole image: torch eager vs ONNX Runtime (plain, fused) vs TensorRT."""
    from . import speed

    _emit(speed.backends(scale=scale, sizes=_ints(sizes), repeats=repeats, rounds=rounds, workdir=workdir,
                         threads=threads,
                         image_steps=image_steps, image_sizes=_ints(image_sizes), profile=profile), json_path)


@main.command()
@click.option("--engine", default="engines/unigs.onnx", show_default=True)
@click.option("--size", default=256, show_default=True)
@click.option("--steps", default=10, show_default=True)
@click.option("--threads", default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
def components(engine, size, steps, threads, json_path):
    """Share of one whole segmentation per component, and the loop's own overhead."""
    from . import speed

    _emit(speed.components(engine, size=size, steps=steps, threads=threads), json_path)


@main.command()
@click.option("--scale", default="sd15", show_default=True, type=SCALES)
@click.option("--sizes", default="128,192,256,384,512", show_default=True)
@click.option("--steps", default="1,2,4,8", show_default=True, help="Step counts of the whole-loop series.")
@click.option("--steps-size", default=256, show_default=True, help="Image side of the step series.")
@click.option("--repeats", default=2, show_default=True)
@click.option("--workdir", default="benchmarks/work", show_default=True, type=click.Path(path_type=Path))
@click.option("--threads", default=0, show_default=True)
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write the log-log plot (PNG).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
def scaling(scale, sizes, steps, steps_size, repeats, workdir, threads, plot, json_path):
    """Time and peak memory vs resolution (fitted power law) and vs steps."""
    from . import scaling as bench

    r = bench.run(scale=scale, sizes=_ints(sizes), steps=_ints(steps), steps_size=steps_size, repeats=repeats,
                  workdir=workdir, threads=threads, plot=plot)
    _emit(r, json_path)
    if plot:
        click.echo(f"wrote {plot}")


def _sd15_engine(workdir: Path, scale: str) -> Path:
    """A full random-weight export (text encoder, VAE, UNet) for `components`, made once."""
    out = workdir / f"{scale}-engine"
    if not (out / "manifest.json").is_file():
        click.echo(f"exporting a random-weight {scale} engine to {out} (once) ...")
        subprocess.run([sys.executable, "-m", "unigs_deploy.export.cli", "--scale", scale, "--out", str(out)],
                       check=True, stdout=subprocess.DEVNULL)
    return out


@main.command(name="all")
@click.option("--scale", default="sd15", show_default=True, type=SCALES, help="Model shape of the speed runs.")
@click.option("--quick", is_flag=True, help="A smoke run: tiny model, small sizes, few repeats (minutes).")
@click.option("--workdir", default="benchmarks/work", show_default=True, type=click.Path(path_type=Path))
@click.option("--out-dir", default="benchmarks/results", show_default=True, type=click.Path(path_type=Path))
@click.option("--engine", type=click.Path(), help="Engine for `components` (default: a random-weight export of "
              "--scale in WORKDIR, made once).")
@click.option("--quality-engine", type=click.Path(), help="Also run `quality` on this exported demo model.")
@click.option("--readme", type=click.Path(dir_okay=False, path_type=Path),
              help="Regenerate this README's Performance block from the run.")
@click.option("--only", help="Comma-separated parts to (re)run, merged into this host's latest JSON "
              "(e.g. decoder,capi after a decoder change); the others keep their numbers.")
@click.option("--threads", default=0, show_default=True)
def all_(scale, quick, workdir, out_dir, engine, quality_engine, readme, only, threads):
    """Every benchmark in one run: <out-dir>/<date>-<host>.json, a REPORT.md section, a plot."""
    from . import capi as capi_bench
    from . import decoder as decoder_bench
    from . import quality as quality_bench
    from . import scaling as scaling_bench
    from . import speed

    if quick:
        scale = "tiny"
    host = platform.node() + ("-quick" if quick else "")
    key = f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d}-{host}"
    if only:  # the host's latest run, not today's: a run may cross midnight before its parts are redone
        runs = sorted(out_dir.glob(f"????-??-??-{host}.json"))
        if not runs:
            raise click.ClickException(f"--only merges into this host's latest {out_dir}/<date>-{host}.json, "
                                       "and there is none: run without --only")
        key = runs[-1].stem
    json_path = out_dir / f"{key}.json"
    plot = out_dir / f"{key}-scaling.png"
    run = {"key": key, "json": str(json_path), "machine": machine(threads=threads or None), "results": {},
           "skipped": {}, "seconds": {}}
    if only:
        run = json.loads(json_path.read_text())
        run.setdefault("reruns", []).append({"parts": only, "machine": machine(threads=threads or None)})
    sizes = [64, 128] if quick else [256, 512]
    plan = [
        ("table1", lambda: speed.table1(scale=scale, size=sizes[0], steps=2 if quick else 10,
                                        repeats=2 if quick else 4, workdir=workdir, threads=threads)),
        ("backends", lambda: speed.backends(scale=scale, sizes=sizes, repeats=2, rounds=1 if quick else 3,
                                            workdir=workdir, threads=threads, image_steps=2 if quick else 4,
                                            image_sizes=sizes[:1])),
        ("scaling", lambda: scaling_bench.run(scale=scale, sizes=[32, 64, 128] if quick else [128, 192, 256, 384, 512],
                                              steps=[1, 2, 4] if quick else [1, 2, 4, 8],
                                              steps_size=64 if quick else 256, repeats=1 if quick else 2,
                                              workdir=workdir, threads=threads, plot=plot)),
        ("components", lambda: speed.components(engine or _sd15_engine(workdir, scale), size=sizes[0],
                                                steps=2 if quick else 10, threads=threads)),
        ("decoder", lambda: decoder_bench.run(quick=quick)),
        ("capi", lambda: capi_bench.run(repeats=10 if quick else 20, rounds=3 if quick else 15)),
    ]
    if quality_engine:
        plan.append(("quality", lambda: quality_bench.run(quality_engine, n=10 if quick else 100)))
    if only:
        wanted = [p.strip() for p in only.split(",") if p.strip()]
        unknown = sorted(set(wanted) - {name for name, _ in plan})
        if unknown:
            raise click.BadParameter(f"unknown part(s) {', '.join(unknown)}; parts: "
                                     f"{', '.join(name for name, _ in plan)}", param_hint="--only")
        plan = [(name, fn) for name, fn in plan if name in wanted]
    for name, fn in plan:
        click.echo(f"== {name} ...")
        t0 = time.perf_counter()
        run["skipped"].pop(name, None)
        if only and name in run["results"]:  # a re-run keeps what it replaces
            run["reruns"][-1].setdefault("replaced", {})[name] = run["results"].pop(name)
        try:
            run["results"][name] = fn()
            click.echo(report.RENDER[name](run["results"][name]))
        except Exception as e:  # one broken part must not lose the others
            run["skipped"][name] = f"failed: {type(e).__name__}: {e}"
            click.echo(f"{name} failed: {type(e).__name__}: {e}", err=True)
            traceback.print_exc()
        run["seconds"][name] = time.perf_counter() - t0
        io.write_json(json_path, run)  # after every part: an interrupted run keeps what it measured
    plot_rel = plot.name if "scaling" in run["results"] and plot.is_file() else None
    report.update_report(out_dir / "REPORT.md", run, plot_rel)
    click.echo(f"wrote {json_path}, {out_dir / 'REPORT.md'}" + (f", {plot}" if plot_rel else ""))
    if readme:
        base = readme.resolve().parent
        rel = str(plot.resolve().relative_to(base)) if plot_rel and plot.resolve().is_relative_to(base) else None
        report.update_readme(readme, run, rel)
        click.echo(f"updated the Performance block of {readme}")
    if run["skipped"]:
        raise click.ClickException(f"{len(run['skipped'])} part(s) failed: {', '.join(run['skipped'])}")


if __name__ == "__main__":
    main()
