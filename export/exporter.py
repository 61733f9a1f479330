"""The export library: a UniGS model -> validated ONNX components, tokenizer and manifest in a
folder. `unigs-export` (cli.py) is its command line; tests and training call `export_model`.
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
import time
from importlib import metadata
from pathlib import Path

import click

from unigs_deploy.manifest import MANIFEST_NAME, Manifest, ModelInfo
from unigs_deploy.tasks import NAMES as TASKS


class ExportError(RuntimeError):
    pass


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


def _stages(optimize: bool, fp16: bool) -> list[tuple]:
    """(name, what, transform, hint) after the plain export, in order; transform(src, dst,
    component=) writes dst and returns what the manifest records under `name`."""
    from . import fp16 as fp16_mod
    from . import optimize as opt_mod

    stages = []
    if optimize:
        stages.append(("optimized", "onnxruntime fusions", opt_mod.optimize, "export without --optimize"))
    if fp16:
        stages.append(("fp16", "fp16", fp16_mod.convert, "export without --fp16"))
    return stages


def export_model(model, out: Path, *, fp16: bool = False, optimize: bool = False, batch: int = 2,
                 release: bool = False) -> Manifest:
    """Export, validate and write every component and the manifest into `out`, atomically.

    Work happens in a hidden staging folder inside `out`; files move into place only when all
    components have passed validation, the old manifest first removed and the new one written
    last, so an interrupted export never leaves a folder that looks complete.

    Memory: torch's outputs for validation are computed before each export, and validation
    sessions are opened one at a time without weight pre-packing. `release=True` (the CLI) also
    drops each torch module from `model` once exported, so the optimizer and the validation of
    a multi-GB UNet do not run beside its torch copy; `model` is then spent.
    """
    import gc

    from .components import example_inputs, specs
    from .to_onnx import export_component, files_of, move
    from .validate import compare, ort_session, reference, table

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
    info = _model_info(model)  # before any module is released
    stages = _stages(optimize, fp16)
    progress = Progress(len(comps) * (1 + len(stages)) + 1)
    checks, entries = [], {}
    with tempfile.TemporaryDirectory(dir=out, prefix=".unigs-export-") as staging:
        staging = Path(staging)
        for spec in comps:
            progress.step(f"{spec.name}: torch -> ONNX")
            sizes = _sizes(spec)
            inputs = [example_inputs(spec, model, batch=b, size=s, seed=i)
                      for i, (b, s) in enumerate(((batch, sizes[0]), (1, sizes[1])))]
            refs = [reference(spec.module, x) for x in inputs]
            # onnxruntime's fusions match the exporter's own patterns, which onnxslim rewrites
            path = export_component(spec, inputs[0], staging / spec.file, slim=not optimize)
            if release:
                _release(model, spec, comps)
                gc.collect()
            comp_checks = [compare(spec.name, "export", ort_session(path), r, x)
                           for r, x in zip(refs, inputs, strict=True)]
            progress.done(f"max abs error {max(c.max_abs for c in comp_checks):.1e}")
            entry = {"files": [], "optimized": None}
            for stage, what, transform, hint in stages:
                progress.step(f"{spec.name}: {what}")
                new = staging / f"{spec.file}.{stage}"
                try:
                    entry[stage] = transform(path, new, component=spec.name)
                except Exception as e:  # converters and pattern matchers fail with assorted errors
                    raise ExportError(f"{what} failed on {spec.name} ({type(e).__name__}: {e}); {hint}") from None
                gc.collect()
                stage_checks = [compare(spec.name, stage, ort_session(new), r, x)
                                for r, x in zip(refs, inputs, strict=True)]
                comp_checks += stage_checks
                for f in files_of(path):
                    f.unlink()
                move(new, path)
                note = ", ".join(f"{k} {v}" for k, v in entry[stage].items()) if stage == "optimized" else ""
                progress.done(note or f"max abs error {max(c.max_abs for c in stage_checks):.1e}")
            entry.update(
                files=[f.name for f in files_of(staging / spec.file)],
                inputs={n: {"dtype": d, "shape": s} for n, (d, s) in spec.inputs.items()},
                outputs={n: {"dtype": d, "shape": s} for n, (d, s) in spec.outputs.items()},
                spatial_multiple=spec.latent_multiple,
                validation=[c.as_dict() for c in comp_checks],
                validated_file=comp_checks[-1].stage,
                **spec.extra,
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
        manifest = _manifest(model, info, entries, "fp16" if fp16 else "fp32")
        (out / MANIFEST_NAME).unlink(missing_ok=True)
        for f in sorted(staging.iterdir()):
            if f.is_file():
                os.replace(f, out / f.name)
        manifest.write(out)
        manifest.folder = out
        progress.done()
    return manifest


def _release(model, spec, comps) -> None:
    """Drop the torch module behind `spec` from `model` unless a later component still needs it
    (the VAE serves both its encoder and its decoder)."""
    later = comps[comps.index(spec) + 1:]
    for attr in ("unet", "vae", "text_encoder", "tiny_vae", "reranker"):
        module = getattr(model, attr)
        if module is None or not any(p is module for p in spec.module.modules()):
            continue
        if not any(s.module is not None and any(p is module for p in s.module.modules()) for s in later):
            setattr(model, attr, None)
            spec.module = None
        return


def _sizes(spec) -> tuple[int, int]:
    """Two validation sizes (in the component's own spatial units)."""
    if spec.name == "unet":
        down = spec.latent_multiple
        return max(8, 2 * down), max(8, 2 * down) + 2 * down
    if spec.name in ("vae_encoder", "tiny_vae_encoder"):
        return 8 * spec.latent_multiple, 12 * spec.latent_multiple
    return 8, 12


def _model_info(model) -> ModelInfo:
    unet, vae, text = model.unet, model.vae, model.text_encoder
    return ModelInfo(
        unet_in_channels=unet.config.in_channels,
        unet_out_channels=unet.config.out_channels,
        latent_channels=vae.config.latent_channels,
        vae_scale_factor=2 ** (len(vae.config.block_out_channels) - 1),
        vae_scaling_factor=float(vae.config.scaling_factor),
        unet_spatial_multiple=2 ** (len(unet.config.block_out_channels) - 1),
        text_hidden_size=text.config.hidden_size,
        max_text_length=text.config.max_position_embeddings,
        task_embedding=model.task_embedding,
        tasks=list(TASKS),
        resolution=int(unet.config.sample_size) * 2 ** (len(vae.config.block_out_channels) - 1),
        self_attention=_self_attention(unet),
    )


def _manifest(model, info: ModelInfo, entries: dict, precision: str) -> Manifest:
    return Manifest(model=info, components=entries, scheduler=dict(model.scheduler_config), precision=precision,
                    created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    source=model.source, tools=_versions(), task_defaults=dict(model.task_defaults))


def _self_attention(unet) -> list[dict]:
    """Where the UNet attends over its own tokens: what the runtime's memory guard needs."""
    heads = unet.config.attention_head_dim  # diffusers' legacy name for the number of heads
    levels = []
    for i, kind in enumerate(unet.config.down_block_types):
        if "CrossAttn" in kind:
            h = heads[i] if isinstance(heads, (list, tuple)) else heads
            levels.append({"factor": 2**i, "heads": int(h)})
    if "CrossAttn" in (unet.config.mid_block_type or ""):
        h = heads[-1] if isinstance(heads, (list, tuple)) else heads
        levels.append({"factor": 2 ** (len(unet.config.down_block_types) - 1), "heads": int(h)})
    return levels


def _versions() -> dict:
    out = {}
    for pkg in ("unigs-deploy", "torch", "diffusers", "transformers", "onnx", "onnxruntime", "onnxslim",
                "onnxconverter-common", "polygraphy", "tensorrt"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out
