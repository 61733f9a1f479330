"""`unigs-export`: a UniGS model -> validated ONNX (fp32 or fp16) and TensorRT engines + manifest."""

from __future__ import annotations

import datetime as _dt
import functools
import os
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import click

from unigs_deploy import manifest as mf
from unigs_deploy.modeling import SCALES, TASKS, ModelError

from . import tensorrt as trt_build


class ExportError(RuntimeError):
    pass


def _fail_cleanly(fn):
    """Known failures end as one line and a non-zero exit, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except (ModelError, mf.ManifestError, ExportError, trt_build.TensorRTUnavailable) as e:
            click.echo(f"unigs-export: error: {e}", err=True)
            sys.exit(2)
        except PermissionError as e:
            click.echo(f"unigs-export: error: cannot write {e.filename}: permission denied; "
                       "choose another --out folder", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("unigs-export: interrupted; nothing half-written was left in the output folder", err=True)
            sys.exit(130)

    return wrapper


def _versions() -> dict:
    out = {}
    for pkg in ("unigs-deploy", "torch", "diffusers", "transformers", "onnx", "onnxruntime", "onnxslim",
                "onnxconverter-common", "polygraphy", "tensorrt"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _sizes(model, spec) -> tuple[int, int]:
    """Two validation sizes (in the component's own spatial units)."""
    if spec.name == "unet":
        down = spec.latent_multiple
        return max(8, 2 * down), max(8, 2 * down) + 2 * down
    if spec.name == "vae_encoder":
        return 8 * spec.latent_multiple, 12 * spec.latent_multiple
    return 8, 12


class Progress:
    def __init__(self, total: int):
        self.total, self.i, self.t0 = total, 0, time.perf_counter()

    def step(self, what: str) -> None:
        self.i += 1
        click.echo(f"[{self.i}/{self.total}] {what} ...", nl=False)
        self.ts = time.perf_counter()

    def done(self, note: str = "") -> None:
        click.echo(f" {time.perf_counter() - self.ts:.1f}s{(' ' + note) if note else ''}"
                   f" (total {time.perf_counter() - self.t0:.0f}s)")


def export_model(model, out: Path, *, fp16: bool = False, optimize: bool = False, batch: int = 2) -> dict:
    """Export, validate and write every component and the manifest into `out`, atomically.

    Work happens in a hidden staging folder inside `out`; files move into place only when all
    components have passed validation, the old manifest first removed and the new one written
    last, so an interrupted export never leaves a folder that looks complete.
    """
    from . import fp16 as fp16_mod
    from . import optimize as opt_mod
    from .components import example_inputs, specs
    from .to_onnx import export_component, files_of
    from .validate import compare, ort_session, table

    if fp16 and optimize:
        raise ExportError("--optimize makes CPU graphs and --fp16 GPU graphs: choose one "
                          "(on a GPU, --fp16 --trt lets TensorRT do the fusing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot write to {out}: {e.strerror}; choose another --out folder") from None
    if not os.access(out, os.W_OK):
        raise PermissionError(13, "permission denied", str(out))
    comps = specs(model)
    precision = "fp16" if fp16 else "fp32"
    progress = Progress(len(comps) * (1 + optimize + fp16) + 1)
    checks, entries = [], {}
    with tempfile.TemporaryDirectory(dir=out, prefix=".unigs-export-") as staging:
        staging = Path(staging)
        for spec in comps:
            progress.step(f"{spec.name}: torch -> ONNX")
            sizes = _sizes(model, spec)
            inputs = [example_inputs(spec, model, batch=b, size=s, seed=i)
                      for i, (b, s) in enumerate(((batch, sizes[0]), (1, sizes[1])))]
            # onnxruntime's fusions match the exporter's own patterns, which onnxslim rewrites
            path = export_component(spec, inputs[0], staging / spec.file, slim=not optimize)
            comp_checks = [compare(spec.name, "export", ort_session(path), spec.module, x) for x in inputs]
            progress.done(f"max abs error {max(c.max_abs for c in comp_checks):.1e}")
            entry = {"files": [], "optimized": None}
            if optimize:
                progress.step(f"{spec.name}: onnxruntime fusions")
                opt_path = staging / f"{spec.file}.opt"
                try:
                    fused = opt_mod.optimize(path, opt_path, component=spec.name)
                except Exception as e:  # the optimizer's pattern matchers fail with assorted errors
                    raise ExportError(f"onnxruntime's optimizer failed on {spec.name} ({type(e).__name__}: {e}); "
                                      "export without --optimize") from None
                comp_checks += [compare(spec.name, "optimized", ort_session(opt_path), spec.module, x) for x in inputs]
                for f in files_of(path):
                    f.unlink()
                for f in files_of(opt_path):
                    f.rename(staging / f.name.replace(f"{spec.file}.opt", spec.file))
                entry["optimized"] = fused
                progress.done(", ".join(f"{k} {v}" for k, v in fused.items()) or "no fusion applied")
            if fp16:
                progress.step(f"{spec.name}: fp16")
                half = staging / f"{spec.file}.fp16"
                entry["fp16"] = fp16_mod.convert(path, half, component=spec.name)
                comp_checks += [compare(spec.name, "fp16", ort_session(half), spec.module, x) for x in inputs]
                for f in files_of(path):
                    f.unlink()
                for f in files_of(half):
                    f.rename(staging / f.name.replace(f"{spec.file}.fp16", spec.file))
                progress.done(f"max abs error {max(c.max_abs for c in comp_checks if c.stage == 'fp16'):.1e}")
            entry.update(
                files=[f.name for f in files_of(staging / spec.file)],
                inputs={n: {"dtype": d, "shape": s} for n, (d, s) in spec.inputs.items()},
                outputs={n: {"dtype": d, "shape": s} for n, (d, s) in spec.outputs.items()},
                spatial_multiple=spec.latent_multiple,
                validation=[c.as_dict() for c in comp_checks],
                validated_file=comp_checks[-1].stage,
            )
            entries[spec.name] = entry
            checks += comp_checks
        click.echo("\nvalidation, ONNX Runtime vs torch (fp32 reference), same inputs:")
        click.echo(table(checks))
        bad = [c for c in checks if not c.ok]
        if bad:
            raise ExportError(f"{len(bad)} validation check(s) failed ({', '.join(sorted({c.component for c in bad}))}"
                              "): see the table above; nothing was written")
        progress.step("tokenizer, manifest")
        model.tokenizer.save(str(staging / "tokenizer.json"))
        data = _manifest(model, entries, precision)
        (out / mf.MANIFEST_NAME).unlink(missing_ok=True)
        for f in sorted(staging.iterdir()):
            if f.is_file():
                os.replace(f, out / f.name)
        mf.write(out, data)
        progress.done()
    return data


def _manifest(model, entries: dict, precision: str) -> dict:
    unet, vae, text = model.unet, model.vae, model.text_encoder
    return {
        "format": mf.FORMAT,
        "format_version": mf.FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "precision": precision,
        "model": {
            "unet_in_channels": unet.config.in_channels,
            "unet_out_channels": unet.config.out_channels,
            "latent_channels": vae.config.latent_channels,
            "vae_scale_factor": 2 ** (len(vae.config.block_out_channels) - 1),
            "vae_scaling_factor": float(vae.config.scaling_factor),
            "unet_spatial_multiple": 2 ** (len(unet.config.block_out_channels) - 1),
            "text_hidden_size": text.config.hidden_size,
            "max_text_length": text.config.max_position_embeddings,
            "task_embedding": model.task_embedding,
            "tasks": list(TASKS),
        },
        "scheduler": dict(model.scheduler_config),
        "tokenizer": "tokenizer.json",
        "components": entries,
        "source": model.source,
        "tools": _versions(),
    }


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
@_fail_cleanly
def main(weights, scale, task_embedding, out, fp16, optimize, trt, from_onnx, batch, height, width, seed):
    """Export a UniGS model (UNet, VAE encoder/decoder, text encoder) to validated ONNX files, a
    tokenizer and a manifest in OUT, and optionally to TensorRT engines.

    \b
    Examples:
      unigs-export --scale tiny --out engines/        # a tiny random model, seconds
      unigs-export --weights ./sd-inpainting --fp16   # expand SD-inpainting to UniGS, fp16
      unigs-export --from-onnx engines/ --trt         # on a GPU machine: build the engines
    """
    ranges = trt_build.Ranges(_range(batch), _range(height), _range(width))
    if from_onnx:
        if not trt:
            raise ExportError("--from-onnx only builds TensorRT engines: add --trt")
        data = mf.load(from_onnx)
        _build_trt(from_onnx, data, fp16=fp16 or data["precision"] == "fp16", ranges=ranges)
        return
    if bool(weights) == bool(scale):
        raise ExportError("give either --weights PATH (a local model) or --scale {tiny,demo,sd15}")
    from unigs_deploy import modeling

    t0 = time.perf_counter()
    if weights:
        click.echo(f"loading {weights} ...")
        model = modeling.load(weights, task_embedding=task_embedding)
    elif scale == "demo":
        model = modeling.load_demo()
    else:
        model = modeling.build(scale, task_embedding=bool(task_embedding), seed=seed)
    click.echo(f"model ready in {time.perf_counter() - t0:.1f}s: UNet "
               f"{modeling.count_parameters(model.unet) / 1e6:.2f}M parameters, "
               f"{model.unet.config.in_channels} -> {model.unet.config.out_channels} channels"
               f"{', task embedding' if model.task_embedding else ''}")
    data = export_model(model, out, fp16=fp16, optimize=optimize)
    _summary(out, data)
    if trt:
        if not trt_build.available():
            click.echo(f"\nONNX files are in {out}. TensorRT engines need TensorRT on an NVIDIA GPU, which this "
                       f"machine lacks; finish there with:\n  unigs-export --from-onnx {out} --trt"
                       f"{' --fp16' if fp16 else ''}")
            sys.exit(3)
        _build_trt(out, data, fp16=fp16, ranges=ranges)


def _build_trt(folder: Path, data: dict, *, fp16: bool, ranges) -> None:
    trt_build.require()
    built = trt_build.build_engines(folder, data, fp16=fp16, ranges=ranges, log=click.echo)
    data["engines"] = {"tensorrt": {"files": built, "fp16": fp16, "batch": ranges.batch,
                                    "height": ranges.height, "width": ranges.width,
                                    "timing_cache": trt_build.TIMING_CACHE}}
    mf.write(folder, data)
    click.echo(f"TensorRT engines written to {folder}")


def _summary(out: Path, data: dict) -> None:
    click.echo(f"\n{'component':<14}{'files':<40}{'size':>10}  {'precision':<9}{'max abs error':>14}")
    for name, c in data["components"].items():
        size = sum((out / f).stat().st_size for f in c["files"])
        err = max(v["max_abs_error"] for v in c["validation"] if v["stage"] == c["validated_file"])
        click.echo(f"{name:<14}{', '.join(c['files']):<40}{size / 1e6:>8.1f}MB  {data['precision']:<9}{err:>14.2e}")
    click.echo(f"manifest: {out / mf.MANIFEST_NAME}")


if __name__ == "__main__":
    main()
