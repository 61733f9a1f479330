"""End-to-end seconds per 512x512 segmentation: the 0.1 runtime defaults against today's, side by
side in one process (rounds alternate, this machine's speed drifts), on an sd15-shaped engine;
and the demo model's segment PQ under each configuration (quality needs trained weights).

0.1 ran segment with 25 DDIM steps (leading spacing), classifier-free guidance at batch 2 even
though both prompts were empty, decoded the image latent as well as the colormap, and worked at
the input's size. Today: the model's task defaults (manifest, else tasks.py), guidance only where
it changes the result, the colormap alone decoded, the native resolution. Torch eager runs the
same numpy loop on the torch modules (export/eager.py), rebuilt from the manifest's source. The
tiny VAE rows need an engine exported with `--tiny-vae` (random for the sd15 shape: speed only;
the demo model's own distilled one for quality).
"""

from __future__ import annotations

import time

import numpy as np

from unigs_deploy import metrics
from unigs_deploy.labels import masks_to_labels
from unigs_deploy.synthetic.shapes import held_out_example

from .common import machine

# " " tokenises as "" (CLIP strips it), so the guided path runs at batch 2 on identical embeddings:
# exactly the work 0.1 did for a prompt-less segmentation
OLD = dict(prompt=" ", steps=25, scheduler="ddim", spacing="leading", guidance=7.5, resolution="input",
           decode_image=True, tiny_vae="off")
NEW = dict(prompt="", tiny_vae="off")
# name -> (pipeline variant, segment call); a row runs where its variant (and tiny VAE) exists
CONFIGS = {
    "0.1 defaults": ("onnxruntime", OLD),
    "0.1 defaults, torch eager": ("torch", OLD),
    "new defaults": ("onnxruntime", NEW),
    "new defaults, --optimize engine": ("fused", NEW),
    "new defaults, OpenVINO": ("openvino", NEW),
    "new defaults, int8 UNet (OpenVINO)": ("int8", NEW),
    "new defaults, tiny VAE colormap decode": ("onnxruntime", dict(NEW, tiny_vae="colormap")),
    "new defaults, tiny VAE": ("onnxruntime", dict(NEW, tiny_vae="all")),
    "new defaults, --optimize engine, tiny VAE": ("fused", dict(NEW, tiny_vae="all")),
    "new defaults, int8 UNet, tiny VAE": ("int8", dict(NEW, tiny_vae="all")),
}


def _segment(pipe, image, cfg: dict, seed: int):
    kw = dict(cfg)
    return pipe.segment(image, kw.pop("prompt"), seed=seed, **kw)


def _torch_model(manifest):
    """The torch model behind an engine, from its manifest's source, or None (not reproducible here)."""
    from unigs_deploy import modeling

    src = manifest.source
    if src.get("kind") == "random":
        return modeling.build(src["scale"], task_embedding=manifest.model.task_embedding, seed=src["seed"])
    if src.get("kind") == "diffusers" and src.get("path"):
        from pathlib import Path

        if Path(src["path"]).is_dir():
            return modeling.load(src["path"])
    return None


def _pipelines(engine, fused_engine, threads: int, torch_eager: bool = True, without: tuple = ()) -> dict:
    """The pipeline variants this engine allows (int8 only where the export made one), minus
    `without`. The int8 variant shares the onnxruntime pipeline's text encoder and VAEs (only
    its UNet differs): five sd15-sized pipelines do not fit in 24 GB otherwise."""
    from unigs_deploy.backends import openvino as ov_backend
    from unigs_deploy.manifest import Manifest
    from unigs_deploy.pipeline import UniGSPipeline

    pipes = {"onnxruntime": UniGSPipeline.from_engine(engine, threads=threads)}
    if torch_eager and "torch" not in without:
        import torch

        from unigs_deploy.export import eager

        if threads:
            torch.set_num_threads(threads)
        model = _torch_model(Manifest.load(engine))
        if model is not None:
            pipes["torch"] = eager.pipeline(model)
    if fused_engine and "fused" not in without:
        pipes["fused"] = UniGSPipeline.from_engine(fused_engine, threads=threads)
    if ov_backend.available():
        if "openvino" not in without:
            pipes["openvino"] = UniGSPipeline.from_engine(engine, threads=threads, backend="openvino")
        info = Manifest.load(engine).components["unet"].get("int8")
        if info and "int8" not in without:
            base = pipes["onnxruntime"]
            unet = ov_backend.OvSession(base.manifest.folder / info["file"], threads=threads)
            pipes["int8"] = UniGSPipeline({**base.components, "unet": unet}, base.manifest, base.tokenizer)
    return pipes


def _runnable(pipes: dict) -> dict:
    return {n: (v, c) for n, (v, c) in CONFIGS.items()
            if v in pipes and (c.get("tiny_vae", "off") == "off" or pipes[v].has_tiny_vae)}


def speed(engine, fused_engine=None, *, size: int = 512, rounds: int = 2, threads: int = 0,
          torch_eager: bool = True, without: tuple = ()) -> dict:
    pipes = _pipelines(engine, fused_engine, threads, torch_eager, without)
    configs = _runnable(pipes)
    image = held_out_example(0, size)[0]
    for variant, cfg in configs.values():  # warm-up: sessions, JIT, first-call allocations
        _segment(pipes[variant], image, {**cfg, "steps": 1}, 0)
    times, settings = {name: [] for name in configs}, {}
    names = list(configs)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            variant, cfg = configs[name]
            t0 = time.perf_counter()
            res = _segment(pipes[variant], image, cfg, r)
            times[name].append(time.perf_counter() - t0)
            settings[name] = {**res.settings, "unet_on": pipes[variant].provider}
    base = names[0]
    rows = [{"config": n, "median_s": float(np.median(times[n])), "min_s": float(np.min(times[n])),
             "x_faster": float(np.median([b / t for b, t in zip(times[base], times[n], strict=True)])),
             "settings": settings[n]} for n in names]
    return {"engine": str(engine), "size": size, "rounds": rounds, "rows": rows}


def quality(engine, *, n: int = 40, size: int = 64, threads: int = 0) -> dict:
    """Dataset-level segment PQ and refer mIoU of each configuration on held-out images."""
    from unigs_deploy.evaluation.panoptic import PQAccumulator, labels_to_panoptic

    pipes = _pipelines(engine, None, threads)
    configs = _runnable(pipes)
    pq = {name: PQAccumulator() for name in configs}
    iou = {name: [] for name in configs}
    for i in range(n):
        image, masks, captions, region, j = held_out_example(i, size)
        truth = masks_to_labels(masks, background=len(masks) + 1)
        for name, (variant, cfg) in configs.items():
            labels = _segment(pipes[variant], image, cfg, i).labels
            pq[name].add(*labels_to_panoptic(truth), *labels_to_panoptic(labels))
            kw = {k: v for k, v in cfg.items() if k != "prompt"}
            m = pipes[variant].refer(image, region, captions[j], seed=i, **kw).mask
            iou[name].append(metrics.mask_iou(m, masks[j]))
    first = next(iter(configs))
    base_pq, base_iou = pq[first].result()["all"]["pq"], float(np.mean(iou[first]))
    rows = []
    for name in configs:
        p, m = pq[name].result()["all"]["pq"], float(np.mean(iou[name]))
        rows.append({"config": name, "segment_pq": p, "x_of_0.1": p / base_pq if base_pq else 0.0,
                     "refer_miou": m, "refer_x_of_0.1": m / base_iou if base_iou else 0.0})
    return {"engine": str(engine), "images": n, "rows": rows}


def run(engine, demo_engine, fused_engine=None, *, size: int = 512, rounds: int = 2, images: int = 40,
        threads: int = 0, torch_eager: bool = True, without: tuple = ()) -> dict:
    return {"benchmark": "fast", "machine": machine(threads=threads or None),
            "speed": speed(engine, fused_engine, size=size, rounds=rounds, threads=threads, torch_eager=torch_eager,
                           without=without)
            if rounds else None,
            "quality": quality(demo_engine, n=images, threads=threads) if demo_engine else None}


def render(r: dict) -> str:
    from .common import markdown_table

    parts = []
    s = r["speed"]
    if s is not None:
        parts.append(markdown_table(s["rows"], [("config", "segment"), ("median_s", "median s"), ("min_s", "min s"),
                                                ("x_faster", "x faster")]))
        parts.append(f"{s['size']}x{s['size']} segmentation end to end (text, VAE encode, denoise, decode, "
                     f"dichotomy) on `{s['engine']}`, {s['rounds']} rounds alternating; x faster = median of "
                     "per-round ratios.")
    if r["quality"]:
        q = r["quality"]
        parts.append(markdown_table(q["rows"], [("config", "configuration"), ("segment_pq", "demo segment PQ"),
                                                ("x_of_0.1", "x 0.1"), ("refer_miou", "demo refer mIoU"),
                                                ("refer_x_of_0.1", "x 0.1")]))
        parts.append(f"Demo model, {q['images']} held-out 64x64 images (seed = index); PQ at dataset level, "
                     "refer with each configuration's settings (the caption as prompt).")
    return "\n\n".join(parts)
