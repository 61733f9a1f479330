"""Speed: Table 1 (SD-inpainting vs UniGS UNet, same loop), backends (torch vs ONNX Runtime
vs TensorRT) and per-component shares of a whole run. Random weights: speed does not depend
on them. Everything compared is measured side by side in one process."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .common import machine, peak_rss_mb, time_call


def _unet(in_channels: int, out_channels: int, scale: str, task_embedding: bool = False):
    import torch
    from diffusers import UNet2DConditionModel

    from unigs_deploy import modeling

    torch.manual_seed(0)
    cfg = modeling.unet_config(scale, in_channels=in_channels, out_channels=out_channels,
                               task_embedding=task_embedding)
    return UNet2DConditionModel(**cfg).eval().requires_grad_(False)


def parameter_counts(scale: str = "sd15") -> dict:
    import torch
    from diffusers import UNet2DConditionModel

    from unigs_deploy import modeling

    out = {}
    with torch.device("meta"):
        for name, cin, cout, task in (("sd_inpainting", 9, 4, False), ("unigs", 13, 8, False),
                                      ("unigs_task_embedding", 13, 8, True)):
            m = UNet2DConditionModel(**modeling.unet_config(scale, in_channels=cin, out_channels=cout,
                                                            task_embedding=task))
            out[name] = modeling.count_parameters(m)
    return out


def _export_unet(unet, path: Path, hidden: int) -> Path:
    """UNet alone to ONNX (the same exporter as unigs-export), once per work folder."""
    import torch
    from unigs_deploy.export.components import UNetWrapper
    from unigs_deploy.export.to_onnx import export_component

    if path.is_file():
        return path
    cin, cout = unet.config.in_channels, unet.config.out_channels

    class _Spec:
        name, file = "unet", path.name
        module = UNetWrapper(unet)
        inputs = {"sample": ("float32", ["batch", cin, "height", "width"]), "timestep": ("float32", ["batch"]),
                  "encoder_hidden_states": ("float32", ["batch", "sequence", hidden])}
        outputs = {"out_sample": ("float32", ["batch", cout, "height", "width"])}
        dynamic_axes = {"sample": {0: "batch", 2: "height", 3: "width"}, "timestep": {0: "batch"},
                        "encoder_hidden_states": {0: "batch", 1: "sequence"},
                        "out_sample": {0: "batch", 2: "height", 3: "width"}}

    example = {"sample": torch.randn(2, cin, 16, 16), "timestep": torch.tensor([1.0, 1.0]),
               "encoder_hidden_states": torch.randn(2, 77, hidden)}
    path.parent.mkdir(parents=True, exist_ok=True)
    return export_component(_Spec(), example, path, slim=False)


def _loop(session, in_channels: int, out_channels: int, latent: int, steps: int, hidden: int) -> float:
    """One image's denoising loop (CFG batch 2, DDIM) on an ORT UNet; seconds."""
    from unigs_deploy.modeling import SD15_SCHEDULER
    from unigs_deploy.scheduler import DDIMScheduler

    rng = np.random.default_rng(0)
    sched = DDIMScheduler(**SD15_SCHEDULER)
    ts = sched.set_timesteps(steps)
    z = rng.standard_normal((1, out_channels, latent, latent), dtype=np.float32)
    fixed = rng.standard_normal((1, in_channels - out_channels, latent, latent), dtype=np.float32)
    text = rng.standard_normal((2, 77, hidden), dtype=np.float32)
    sample = np.empty((2, in_channels, latent, latent), np.float32)
    sample[:, out_channels:] = fixed
    t0 = time.perf_counter()
    for t in ts:
        sample[:, :out_channels] = z
        eps = session(sample=sample, timestep=np.full(2, t, np.float32), encoder_hidden_states=text)
        eps = eps[:1] + 7.5 * (eps[1:] - eps[:1])
        z = sched.step(eps, int(t), z)
    return time.perf_counter() - t0


def table1(*, scale: str = "sd15", size: int = 256, steps: int = 10, repeats: int = 2, workdir: Path,
           threads: int = 0) -> dict:
    """The paper's Table 1 on our machinery: parameters, and seconds per image of the denoising
    loop for the SD-inpainting UNet and the UniGS UNet on ONNX Runtime, same everything else."""
    from unigs_deploy.backends.onnxruntime import OrtSession

    hidden = 768 if scale == "sd15" else {"demo": 128, "tiny": 32}[scale]
    latent = size // 8 if scale == "sd15" else size // 4
    rows, times = [], {}
    for name, cin, cout in (("Stable Diffusion inpainting", 9, 4), ("UniGS", 13, 8)):
        path = _export_unet(_unet(cin, cout, scale), workdir / f"{scale}-{cin}to{cout}" / "unet.onnx", hidden)
        sess = OrtSession(path, threads=threads)
        _loop(sess, cin, cout, latent, 1, hidden)  # warm-up
        runs = [_loop(sess, cin, cout, latent, steps, hidden) for _ in range(repeats)]
        times[name] = float(np.median(runs))
        rows.append({"method": name, "in_out": f"{cin}->{cout}", "seconds_per_image": times[name],
                     "min_s": float(min(runs)), "peak_rss_mb": peak_rss_mb()})
        del sess
    counts = parameter_counts(scale)
    rows[0]["parameters"] = counts["sd_inpainting"]
    rows[1]["parameters"] = counts["unigs"]
    ratio = times["UniGS"] / times["Stable Diffusion inpainting"]
    return {"benchmark": "table1", "machine": machine(threads=threads or None), "scale": scale,
            "note": f"ONNX Runtime CPU, {size}x{size}, {steps} DDIM steps, CFG batch 2, denoising loop only "
                    "(the paper: 512x512, 200 steps on a GPU)",
            "rows": rows, "parameters": counts, "unigs_over_sd_time": ratio,
            "paper": {"sd_parameters_m": 859.54, "unigs_parameters_m": 859.56, "sd_s": 14.48, "unigs_s": 14.40,
                      "ratio": 14.40 / 14.48}}


def backends(*, scale: str = "sd15", sizes=(256, 512), repeats: int = 3, workdir: Path, threads: int = 0) -> dict:
    """One UniGS UNet step (batch 2) on torch eager vs ONNX Runtime (plain and with the CPU-safe
    fusions) vs TensorRT where it imports; ratios to torch."""
    import torch
    from unigs_deploy.export.optimize import optimize

    from unigs_deploy.backends.onnxruntime import OrtSession

    if threads:
        torch.set_num_threads(threads)
    hidden = 768 if scale == "sd15" else {"demo": 128, "tiny": 32}[scale]
    unet = _unet(13, 8, scale)
    plain = _export_unet(unet, workdir / f"{scale}-13to8" / "unet.onnx", hidden)
    fused = workdir / f"{scale}-13to8" / "unet.opt.onnx"
    if not fused.is_file():
        optimize(plain, fused, component="unet")
    rows = []
    factor = 8 if scale == "sd15" else 4
    for size in sizes:
        lat = size // factor
        rng = np.random.default_rng(0)
        feed = {"sample": rng.standard_normal((2, 13, lat, lat), dtype=np.float32),
                "timestep": np.array([500, 500], np.float32),
                "encoder_hidden_states": rng.standard_normal((2, 77, hidden), dtype=np.float32)}
        tfeed = {k: torch.from_numpy(v) for k, v in feed.items()}
        with torch.no_grad():
            t = time_call(lambda tf=tfeed: unet(tf["sample"], tf["timestep"], tf["encoder_hidden_states"]),
                          repeat=repeats, warmup=1)
        base = t["median_ms"]
        rows.append({"size": size, "backend": "torch eager fp32", **t, "speedup_vs_torch": 1.0})
        for name, path in (("onnxruntime", plain), ("onnxruntime + CPU fusions", fused)):
            sess = OrtSession(path, threads=threads)
            t = time_call(lambda s=sess, f=feed: s(**f), repeat=repeats, warmup=1)
            rows.append({"size": size, "backend": name, **t, "speedup_vs_torch": base / t["median_ms"]})
            del sess
    from unigs_deploy.backends import tensorrt as trt_backend

    return {"benchmark": "backends", "machine": machine(threads=threads or None), "scale": scale, "rows": rows,
            "tensorrt": "measured" if trt_backend.available() else "not importable here (needs an NVIDIA GPU)"}


class _Timed:
    """Wraps a runner and adds up the time spent inside it."""

    def __init__(self, runner):
        self.runner, self.seconds, self.calls = runner, 0.0, 0
        self.provider = getattr(runner, "provider", "")

    def __call__(self, **feed):
        t0 = time.perf_counter()
        out = self.runner(**feed)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def components(engine: str | Path, *, size: int = 256, steps: int = 10, threads: int = 0) -> dict:
    """Where the time of one whole segmentation goes: each component, the decoder, and the
    denoising loop's own overhead (time in the loop outside the UNet calls)."""
    from unigs_deploy.pipeline import UniGSPipeline

    pipe = UniGSPipeline.from_engine(engine, threads=threads)
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    pipe.segment(image, steps=1)  # warm-up (sessions, JIT)
    pipe.components = {k: _Timed(v) for k, v in pipe.components.items()}
    res = pipe.segment(image, steps=steps)
    t = res.timings
    unet = pipe.components["unet"]
    rows = [
        {"stage": "text encoder", "seconds": pipe.components["text_encoder"].seconds},
        {"stage": "VAE encoder", "seconds": pipe.components["vae_encoder"].seconds},
        {"stage": f"UNet ({unet.calls} calls)", "seconds": unet.seconds},
        {"stage": "VAE decoder (image + colormap)", "seconds": pipe.components["vae_decoder"].seconds},
        {"stage": "dichotomy decoder", "seconds": t["dichotomy_s"]},
        {"stage": "loop overhead (scheduler, CFG, copies)", "seconds": t["denoise_s"] - unet.seconds},
    ]
    total = t["total_s"]
    for r in rows:
        r["share"] = r["seconds"] / total
    return {"benchmark": "components", "machine": machine(threads=threads or None), "engine": str(engine),
            "size": size, "steps": steps, "rows": rows, "total_s": total,
            "loop_overhead_share_of_loop": (t["denoise_s"] - unet.seconds) / t["denoise_s"]}
