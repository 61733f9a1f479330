"""End-to-end seconds per 512x512 segmentation: the 0.1 runtime defaults against today's, side by
side in one process (rounds alternate, this machine's speed drifts), on an sd15-shaped engine;
and the demo model's segment PQ under each configuration (quality needs trained weights).

0.1 ran segment with 25 DDIM steps (leading spacing), classifier-free guidance at batch 2 even
though both prompts were empty, decoded the image latent as well as the colormap, and worked at
the input's size. Today: the model's task defaults (manifest, else tasks.py), guidance only where
it changes the result, the colormap alone decoded, the native resolution.
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
           decode_image=True)
# name -> (pipeline variant, segment call)
CONFIGS = {
    "0.1 defaults": ("onnxruntime", OLD),
    "new defaults": ("onnxruntime", dict(prompt="")),
    "new defaults, --optimize engine": ("fused", dict(prompt="")),
    "new defaults, OpenVINO": ("openvino", dict(prompt="")),
    "new defaults, int8 UNet (OpenVINO)": ("int8", dict(prompt="")),
}


def _segment(pipe, image, cfg: dict, seed: int):
    kw = dict(cfg)
    return pipe.segment(image, kw.pop("prompt"), seed=seed, **kw)


def _pipelines(engine, fused_engine, threads: int) -> dict:
    """The pipeline variants this engine allows (int8 only where the export made one)."""
    from unigs_deploy.backends import openvino as ov_backend
    from unigs_deploy.manifest import Manifest
    from unigs_deploy.pipeline import UniGSPipeline

    pipes = {"onnxruntime": UniGSPipeline.from_engine(engine, threads=threads)}
    if fused_engine:
        pipes["fused"] = UniGSPipeline.from_engine(fused_engine, threads=threads)
    if ov_backend.available():
        pipes["openvino"] = UniGSPipeline.from_engine(engine, threads=threads, backend="openvino")
        if Manifest.load(engine).components["unet"].get("int8"):
            pipes["int8"] = UniGSPipeline.from_engine(engine, threads=threads, int8=True)
    return pipes


def speed(engine, fused_engine=None, *, size: int = 512, rounds: int = 2, threads: int = 0) -> dict:
    pipes = _pipelines(engine, fused_engine, threads)
    configs = {n: c for n, c in CONFIGS.items() if c[0] in pipes}
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
    pipes = _pipelines(engine, None, threads)
    configs = {k: c for k, c in CONFIGS.items() if c[0] in pipes}
    pq = {name: [] for name in configs}
    for i in range(n):
        image, masks, *_ = held_out_example(i, size)
        truth = masks_to_labels(masks, background=len(masks) + 1)
        for name, (variant, cfg) in configs.items():
            pq[name].append(metrics.panoptic_quality(_segment(pipes[variant], image, cfg, i).labels, truth)["pq"])
    base = float(np.mean(pq[next(iter(configs))]))
    return {"engine": str(engine), "images": n, "rows": [
        {"config": k, "segment_pq": float(np.mean(v)), "x_of_0.1": float(np.mean(v)) / base} for k, v in pq.items()]}


def run(engine, demo_engine, fused_engine=None, *, size: int = 512, rounds: int = 2, images: int = 40,
        threads: int = 0) -> dict:
    return {"benchmark": "fast", "machine": machine(threads=threads or None),
            "speed": speed(engine, fused_engine, size=size, rounds=rounds, threads=threads),
            "quality": quality(demo_engine, n=images, threads=threads) if demo_engine else None}


def render(r: dict) -> str:
    from .common import markdown_table

    s = r["speed"]
    t = markdown_table(s["rows"], [("config", "segment"), ("median_s", "median s"), ("min_s", "min s"),
                                   ("x_faster", "x faster")])
    t += (f"\n\n{s['size']}x{s['size']} segmentation end to end (text, VAE encode, denoise, decode, dichotomy) on "
          f"`{s['engine']}`, {s['rounds']} rounds alternating; x faster = median of per-round ratios.")
    if r["quality"]:
        q = r["quality"]
        t += "\n\n" + markdown_table(q["rows"], [("config", "segment"), ("segment_pq", "demo segment PQ"),
                                                 ("x_of_0.1", "x 0.1")])
        t += f"\n\nDemo model, {q['images']} held-out 64x64 images (seed = index)."
    return t
