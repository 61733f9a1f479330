"""`unigs-export`: the command line of the export library (exporter.py) and the TensorRT builder."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from unigs_deploy import manifest as mf
from unigs_deploy.errors import one_line_errors
from unigs_deploy.modeling import SCALES, ModelError

from . import tensorrt as trt_build
from .exporter import ExportError, export_model


def _range(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or not parts[0] <= parts[1] <= parts[2] or parts[0] < 1:
        raise click.BadParameter(f"{text!r}: give N or MIN:OPT:MAX with MIN <= OPT <= MAX")
    return tuple(parts)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--weights", type=click.Path(path_type=Path),
              help="Local diffusers folder (SD-inpainting, SD or UniGS) or single-file checkpoint.")
@click.option("--scale", type=click.Choice(SCALES), help="Build a model of this shape instead (random weights).")
@click.option("--task-embedding/--no-task-embedding", default=None,
              help="Add the 4-task embedding (joint model). Default: as the weights have it; off for --scale.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("engines"), show_default=True)
@click.option("--fp16", is_flag=True, help="Mixed-precision fp16 graphs (for GPUs; validated on CPU here).")
@click.option("--optimize", is_flag=True, help="onnxruntime transformer fusions that have CPU kernels.")
@click.option("--trt", is_flag=True, help="Also build TensorRT engines (needs tensorrt and an NVIDIA GPU).")
@click.option("--from-onnx", type=click.Path(path_type=Path, file_okay=False),
              help="Skip torch: build TensorRT engines from an existing export folder (with --trt).")
@click.option("--batch", default="1:2:4", show_default=True, help="TensorRT batch range MIN:OPT:MAX.")
@click.option("--height", default="256:512:768", show_default=True, help="TensorRT image height range (pixels).")
@click.option("--width", default="256:512:768", show_default=True, help="TensorRT image width range (pixels).")
@click.option("--seed", default=0, show_default=True, help="Seed of random weights (--scale).")
@click.option("--overwrite", is_flag=True, help="Replace an export of another model in --out.")
@click.option("--int8", is_flag=True, help="Also an int8 UNet (NNCF + OpenVINO), calibrated on --calibration images.")
@click.option("--calibration", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Folder of typical input images for --int8 (default for --scale models: the shapes world).")
@click.option("--calibration-images", default=16, show_default=True, help="--int8: calibration images to use.")
@click.option("--tiny-vae", metavar="DIR|random",
              help="Also export a diffusers AutoencoderTiny (e.g. TAESD for SD 1.5) as fast VAE components; "
                   "'random' makes one of the --scale's shape (speed measurements). A model folder's own "
                   "tiny_vae/ is exported without this.")
@click.option("--tf32", is_flag=True, help="Let TensorRT use TF32 in fp32 engines (Ampere and newer; ~1e-3 error).")
@one_line_errors("unigs-export", (ModelError, mf.ManifestError, ExportError, trt_build.TensorRTUnavailable),
                 interrupted="interrupted; nothing half-written was left in the output folder")
def main(weights, scale, task_embedding, out, fp16, optimize, trt, from_onnx, batch, height, width, seed, overwrite,
         int8, calibration, calibration_images, tiny_vae, tf32):
    """Export a UniGS model (UNet, VAE encoder/decoder, text encoder) to validated ONNX files, a
    tokenizer and a manifest in OUT, and optionally to TensorRT engines.

    \b
    Examples:
      unigs-export --scale tiny --out engines/tiny     # a tiny random model, seconds
      unigs-export --weights ./sd-inpainting --fp16   # expand SD-inpainting to UniGS, fp16
      unigs-export --from-onnx engines/ --trt         # on a GPU machine: build the engines
    """
    ranges = trt_build.Ranges(_range(batch), _range(height), _range(width))
    if int8 and (optimize or fp16):
        raise ExportError("--int8 quantizes the plain fp32 graph: drop --optimize / --fp16")
    if int8 and weights and not calibration:
        raise ExportError("--int8 on your own weights needs --calibration DIR (a folder of typical input images); "
                          "the shapes world only suits the models this project makes")
    if from_onnx and int8:
        _int8(from_onnx, calibration, calibration_images)
        if not trt:
            return
    if from_onnx:
        if not trt:
            raise ExportError("--from-onnx builds TensorRT engines (--trt) or an int8 UNet (--int8)")
        manifest = mf.load(from_onnx)
        if manifest.components["unet"].get("optimized"):
            raise ExportError(f"{from_onnx} was exported with --optimize: its onnxruntime-only ops do not parse in "
                              "TensorRT; export again without --optimize for --trt")
        _build_trt(manifest, fp16=fp16 or manifest.precision == "fp16", ranges=ranges, tf32=tf32)
        return
    if bool(weights) == bool(scale):
        raise ExportError("give either --weights PATH (a local model) or --scale {tiny,demo,sd15}")
    if optimize and trt:
        raise ExportError("--optimize writes onnxruntime-only ops that TensorRT cannot parse: use --trt without "
                          "--optimize (TensorRT does its own fusing)")
    from unigs_deploy import modeling

    t0 = time.perf_counter()
    if weights:
        click.echo(f"loading {weights} ...")
        model = modeling.load(weights, task_embedding=task_embedding)
    elif scale == "demo":
        model = modeling.load_demo()
    else:
        model = modeling.build(scale, task_embedding=bool(task_embedding), seed=seed)
    if tiny_vae == "random":
        from diffusers import AutoencoderTiny

        if not scale:
            raise ExportError("--tiny-vae random is for --scale models; give your tiny VAE's folder for --weights")
        model.tiny_vae = AutoencoderTiny(**modeling.tiny_vae_config(model.vae)).eval()
    elif tiny_vae:
        model.tiny_vae = modeling.load_tiny_vae(tiny_vae, model.vae)
    click.echo(f"model ready in {time.perf_counter() - t0:.1f}s: UNet "
               f"{modeling.count_parameters(model.unet) / 1e6:.2f}M parameters, "
               f"{model.unet.config.in_channels} -> {model.unet.config.out_channels} channels"
               f"{', task embedding' if model.task_embedding else ''}")
    if not overwrite:
        _refuse_other_model(out, model.source)
    manifest = export_model(model, out, fp16=fp16, optimize=optimize, release=True)
    del model
    _summary(manifest)
    from unigs_deploy import dichotomy

    click.echo(f"colormap decoder compiled and cached for the runtime ({dichotomy.warm_up():.1f}s)")
    if int8:
        _int8(out, calibration, calibration_images)
    if trt:
        if not trt_build.available():
            click.echo(f"\nONNX files are in {out}. TensorRT engines need TensorRT on an NVIDIA GPU, which this "
                       f"machine lacks; finish there with:\n  unigs-export --from-onnx {out} --trt"
                       f"{' --fp16' if fp16 else ''}")
            sys.exit(3)
        _build_trt(manifest, fp16=fp16, ranges=ranges, tf32=tf32)


def _int8(folder: Path, calibration: Path | None, images: int) -> None:
    from . import int8 as int8_mod

    click.echo("int8 UNet (NNCF + OpenVINO):")
    try:
        r = int8_mod.quantize(folder, calibration=calibration, images=images, log=click.echo)
    except ImportError as e:
        raise ExportError(f"--int8 needs nncf and openvino ({e.name} is missing): pip install nncf openvino") from None
    except (ValueError, MemoryError) as e:
        raise ExportError(str(e)) from None
    click.echo(f"  {r['file']}: max abs error vs fp32 {r['max_abs_error_vs_fp32']:.3g}, segmentations agree with "
               f"fp32's at PQ {r['segment_agreement_pq']:.3f} (accepted from {r['min_agreement']}); "
               "run it with unigs-run --int8")


def _refuse_other_model(out: Path, source: dict) -> None:
    """An export never silently replaces another model's engines (e.g. the demo model's in engines/)."""
    try:
        old = mf.load(out).source
    except mf.ManifestError:
        return
    keys = ("kind", "path", "scale", "seed")
    if {k: old.get(k) for k in keys} != {k: source.get(k) for k in keys}:
        what = old.get("path") or f"a random {old.get('scale')} model (seed {old.get('seed')})"
        raise ExportError(f"{out} already holds the engines of {what}: choose another --out, or pass --overwrite "
                          "to replace them")


def _build_trt(manifest: mf.Manifest, *, fp16: bool, ranges, tf32: bool = False) -> None:
    trt_build.require()
    manifest.engines = {"tensorrt": {"files": {}, "fp16": fp16, "tf32": tf32 and not fp16, "batch": ranges.batch,
                                     "height": ranges.height, "width": ranges.width,
                                     "timing_cache": trt_build.TIMING_CACHE}}

    def record(component: str, plan: str) -> None:  # the manifest knows every plan as soon as it exists
        manifest.engines["tensorrt"]["files"][component] = plan
        manifest.write()

    trt_build.build_engines(manifest.folder, manifest, fp16=fp16, ranges=ranges, tf32=tf32, log=click.echo,
                            on_built=record)
    click.echo(f"TensorRT engines written to {manifest.folder}")


def _summary(manifest: mf.Manifest) -> None:
    click.echo(f"\n{'component':<18}{'files':<40}{'size':>10}  {'precision':<9}{'max abs error':>14}")
    for name, c in manifest.components.items():
        size = sum((manifest.folder / f).stat().st_size for f in c["files"])
        err = max(v["max_abs_error"] for v in c["validation"] if v["stage"] == c["validated_file"])
        click.echo(f"{name:<18}{', '.join(c['files']):<40}{size / 1e6:>8.1f}MB  {manifest.precision:<9}"
                   f"{err:>14.2e}")
    click.echo(f"manifest: {manifest.folder / mf.MANIFEST_NAME}")


if __name__ == "__main__":
    main()
