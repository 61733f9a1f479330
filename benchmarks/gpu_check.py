"""`make gpu-check` (`unigs-bench gpu-check`): the TensorRT path run for real, on a machine with
an NVIDIA GPU and TensorRT 10.

For the tiny and sd15 scales, fp32 and fp16: export and build the engines (`unigs-export ...
--trt`), run all four tasks through TrtSession at two in-range sizes and compare with onnxruntime
fp32 on the CPU (the reference: same inputs, same seeds), check that an out-of-range size fails
with the one-line profile error and that --resolution N is fitted into the profile, and time a
UNet step on TensorRT vs onnxruntime CUDA (where installed) vs CPU. Writes JSON + a Markdown
report. Without a GPU it stops at once with one line (exit code 3), having built nothing.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

NO_GPU_EXIT = 3
# max |TensorRT - onnxruntime| of the final latents, relative to max |onnxruntime|
TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2}
TASKS = ("segment", "refer", "inpaint", "synthesize")


class NeedsGPU(RuntimeError):
    pass


def require_gpu() -> None:
    from unigs_deploy.backends import tensorrt as trt_backend

    if not trt_backend.available():
        raise NeedsGPU("gpu-check needs an NVIDIA GPU with TensorRT 10 and polygraphy (pip install -e '.[trt]'); "
                       "tensorrt does not import here, so nothing was built")
    import tensorrt as trt

    try:
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    except Exception as e:  # CUDA initialisation failure and the like
        raise NeedsGPU(f"gpu-check needs an NVIDIA GPU: TensorRT imports but cannot start ({e})") from None
    if builder is None:
        raise NeedsGPU("gpu-check needs an NVIDIA GPU: TensorRT imports but found no CUDA device")


def _inputs(h: int, w: int, seed: int = 0) -> dict:
    """A shapes-world image, colormap and region at (h, w)."""
    import cv2

    from unigs_deploy import palette
    from unigs_deploy.synthetic.shapes import held_out_example

    image, masks, captions, region, j = held_out_example(seed, 64)
    big = lambda x, nearest: cv2.resize(x, (w, h), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_CUBIC)  # noqa: E731
    return {"image": big(image, False), "colormap": big(palette.encode_colormap(masks), True),
            "region": big(region.astype(np.uint8), True) > 0, "prompt": captions[j]}


def _task(pipe, task: str, x: dict, **kw):
    if task == "segment":
        return pipe.segment(x["image"], **kw)
    if task == "refer":
        return pipe.refer(x["image"], x["region"], x["prompt"], **kw)
    if task == "inpaint":
        return pipe.inpaint(x["image"], [(x["region"], x["prompt"])], **kw)
    return pipe.synthesize(x["colormap"], x["prompt"], **kw)


def compare(pipe, reference, *, sizes, precision: str, steps: int = 2) -> list[dict]:
    """Every task at every size on `pipe` against `reference` (same seeds): latent error and label agreement."""
    from unigs_deploy import metrics

    rows = []
    for h, w in sizes:
        x = _inputs(h, w)
        for task in TASKS:
            kw = dict(steps=steps, seed=0, resolution="input")
            a, b = _task(pipe, task, x, **kw), _task(reference, task, x, **kw)
            err = float(np.abs(a.latents - b.latents).max())
            scale = float(np.abs(b.latents).max()) or 1.0
            rows.append({"task": task, "size": f"{w}x{h}", "precision": precision, "max_abs_error": err,
                         "relative": err / scale, "ok": err / scale <= TOLERANCE[precision],
                         "label_pq_vs_reference": metrics.panoptic_quality(a.labels, b.labels)["pq"]})
    return rows


def out_of_range(pipe, size: tuple[int, int]) -> dict:
    """At --resolution input the session must refuse with the profile's range; at N it must fit."""
    x = _inputs(*size)
    try:
        pipe.segment(x["image"], steps=1, resolution="input")
        refused = None
    except ValueError as e:
        refused = str(e)
    fitted = pipe.segment(x["image"], steps=1, resolution=max(size))
    return {"size": f"{size[1]}x{size[0]}", "refused": refused, "ok": bool(refused and "profile" in refused),
            "fitted_working_size": fitted.settings["working_size"]}


def time_unet(pipes: dict, *, size: int = 512, batch: int = 2, rounds: int = 5) -> list[dict]:
    """Median seconds per UNet call at (batch, size), pipelines alternating round by round."""
    times = {n: [] for n in pipes}
    feeds = {}
    for name, pipe in pipes.items():
        m = pipe.manifest.model
        lat = size // m.vae_scale_factor
        rng = np.random.default_rng(0)
        feed = {"sample": rng.standard_normal((batch, m.unet_in_channels, lat, lat), dtype=np.float32),
                "timestep": np.full(batch, 999, np.float32),
                "encoder_hidden_states": rng.standard_normal((batch, m.max_text_length, m.text_hidden_size),
                                                             dtype=np.float32)}
        if m.task_embedding:
            feed["class_labels"] = np.zeros(batch, np.int64)
        feeds[name] = feed
        pipe.components["unet"](**feed)  # warm-up
    for _ in range(rounds):
        for name, pipe in pipes.items():
            t0 = time.perf_counter()
            pipe.components["unet"](**feeds[name])
            times[name].append(time.perf_counter() - t0)
    return [{"runtime": n, "median_s": float(np.median(t)), "min_s": float(np.min(t))} for n, t in times.items()]


def _export(folder: Path, scale: str, fp16: bool, log) -> None:
    from unigs_deploy.manifest import Manifest

    if (folder / "unigs.json").is_file() and Manifest.load(folder).plan("unet") is not None:
        return
    cmd = [sys.executable, "-m", "unigs_deploy.export.cli", "--scale", scale, "--task-embedding", "--out",
           str(folder), "--overwrite", "--trt"] + (["--fp16"] if fp16 else [])
    log("$ unigs-export " + " ".join(cmd[3:]))
    subprocess.run(cmd, check=True)


def run(workdir: str | Path, *, scales=("tiny", "sd15"), sizes=((256, 256), (384, 512)), too_big=(1024, 1024),
        steps: int = 2, log=print) -> dict:
    require_gpu()
    import onnxruntime as ort

    from unigs_deploy.pipeline import UniGSPipeline

    workdir = Path(workdir)
    report = {"benchmark": "gpu-check", "tolerance": TOLERANCE, "rows": [], "out_of_range": [], "timing": []}
    for scale in scales:
        ref_dir = workdir / f"{scale}-fp32"
        for precision in ("fp32", "fp16"):
            folder = workdir / f"{scale}-{precision}"
            _export(folder, scale, precision == "fp16", log)
            trt_pipe = UniGSPipeline.from_engine(folder / "unigs.plan")
            reference = UniGSPipeline.from_engine(ref_dir / "unigs.onnx", provider="cpu")
            log(f"{scale} {precision}: four tasks at {', '.join(f'{w}x{h}' for h, w in sizes)} vs onnxruntime fp32")
            report["rows"] += [{"scale": scale, **r} for r in compare(trt_pipe, reference, sizes=sizes,
                                                                      precision=precision, steps=steps)]
            report["out_of_range"].append({"scale": scale, "precision": precision, **out_of_range(trt_pipe, too_big)})
            pipes = {f"TensorRT {precision}": trt_pipe, "onnxruntime CPU fp32": reference}
            if "CUDAExecutionProvider" in ort.get_available_providers():
                pipes["onnxruntime CUDA fp32"] = UniGSPipeline.from_engine(ref_dir / "unigs.onnx", provider="cuda")
            report["timing"] += [{"scale": scale, "precision": precision, **t} for t in time_unet(pipes)]
            for p in pipes.values():
                for c in p.components.values():
                    c.close()
    report["ok"] = all(r["ok"] for r in report["rows"]) and all(r["ok"] for r in report["out_of_range"])
    return report


def render(r: dict) -> str:
    from .common import markdown_table

    out = ["## TensorRT vs onnxruntime fp32 (final latents, same seeds)", "",
           markdown_table(r["rows"], [("scale", "scale"), ("precision", "precision"), ("task", "task"),
                                      ("size", "size"), ("max_abs_error", "max abs error"), ("relative", "relative"),
                                      ("label_pq_vs_reference", "labels PQ vs ref"), ("ok", "ok")]),
           "", f"Tolerance (relative to max |reference|): {r['tolerance']}.", "", "## Out of the profile", "",
           markdown_table(r["out_of_range"], [("scale", "scale"), ("precision", "precision"), ("size", "size"),
                                              ("ok", "refused with the range"),
                                              ("fitted_working_size", "--resolution N ran at")]),
           "", "## UNet step (batch 2, 512x512)", "",
           markdown_table(r["timing"], [("scale", "scale"), ("precision", "precision"), ("runtime", "runtime"),
                                        ("median_s", "median s"), ("min_s", "min s")]),
           "", f"**{'all checks passed' if r['ok'] else 'FAILED: see the rows marked False'}**"]
    return "\n".join(out)
