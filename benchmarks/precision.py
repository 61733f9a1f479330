"""One UNet step per runtime and precision, alternating in one process: onnxruntime fp32,
OpenVINO fp32 and OpenVINO int8 (the UNet `unigs-export --int8` made) on the same inputs."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .common import machine


def run(engine, *, size: int = 512, batch: int = 1, rounds: int = 3, threads: int = 0, int8_file=None) -> dict:
    from unigs_deploy.backends.onnxruntime import OrtSession
    from unigs_deploy.backends.openvino import OvSession
    from unigs_deploy.manifest import Manifest

    m = Manifest.load(engine)
    int8_path = Path(int8_file) if int8_file else (
        m.folder / m.components["unet"]["int8"]["file"] if m.components["unet"].get("int8") else None)
    runners = {"onnxruntime fp32": OrtSession(m.path("unet"), threads=threads),
               "openvino fp32": OvSession(m.path("unet"), threads=threads)}
    if int8_path is not None:
        runners["openvino int8"] = OvSession(int8_path, threads=threads)
    lat = size // m.model.vae_scale_factor
    rng = np.random.default_rng(0)
    feed = {"sample": rng.standard_normal((batch, m.model.unet_in_channels, lat, lat), dtype=np.float32),
            "timestep": np.full(batch, 999, np.float32),
            "encoder_hidden_states": rng.standard_normal((batch, m.model.max_text_length, m.model.text_hidden_size),
                                                         dtype=np.float32)}
    if m.model.task_embedding:
        feed["class_labels"] = np.full(batch, 3, np.int64)
    outs = {name: np.array(r(**feed), copy=True) for name, r in runners.items()}  # warm-up, and the outputs
    times = {name: [] for name in runners}
    names = list(runners)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            runners[name](**feed)
            times[name].append(time.perf_counter() - t0)
    base = names[0]
    ref = outs[base]
    rows = [{"runtime": n, "median_s": float(np.median(times[n])), "min_s": float(np.min(times[n])),
             "x_onnxruntime": float(np.median([b / t for b, t in zip(times[base], times[n], strict=True)])),
             "max_abs_vs_fp32": float(np.abs(outs[n] - ref).max()),
             "corr_vs_fp32": float(np.corrcoef(outs[n].ravel(), ref.ravel())[0, 1])} for n in names]
    return {"benchmark": "precision", "machine": machine(threads=threads or None), "engine": str(engine),
            "size": size, "batch": batch, "rounds": rounds, "rows": rows}


def render(r: dict) -> str:
    from .common import markdown_table

    return markdown_table(r["rows"], [("runtime", "UNet on"), ("median_s", "median s"), ("min_s", "min s"),
                                      ("x_onnxruntime", "x onnxruntime"), ("max_abs_vs_fp32", "max abs vs fp32"),
                                      ("corr_vs_fp32", "corr vs fp32")]) + (
        f"\n\nOne UNet step at {r['size']}x{r['size']}, batch {r['batch']}, {r['rounds']} rounds alternating "
        f"(x = median of per-round ratios), `{r['engine']}`.")
