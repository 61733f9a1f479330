"""Speed: Table 1 (SD-inpainting vs UniGS UNet, same loop), backends (torch vs ONNX Runtime
vs TensorRT) and per-component shares of a whole run. Random weights: speed does not depend
on them. Runs go to child processes (in_child), so peak RSS is per run and no run inherits
another's memory; what is compared is alternated (table1: step by step in one process,
backends: rounds of processes) because this machine's speed drifts.
"""

from __future__ import annotations

import json
import subprocess
import sys
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

    from unigs_deploy.export.components import unet_spec
    from unigs_deploy.export.to_onnx import export_component

    if path.is_file():
        return path
    example = {"sample": torch.randn(2, unet.config.in_channels, 16, 16), "timestep": torch.tensor([1.0, 1.0]),
               "encoder_hidden_states": torch.randn(2, 77, hidden)}
    path.parent.mkdir(parents=True, exist_ok=True)
    return export_component(unet_spec(unet, hidden, path.name), example, path, slim=False)


class _Denoiser:
    """One image's denoising loop (CFG batch 2, DDIM) on a UNet runner, a step at a time, so two
    models' loops can be interleaved step by step. Not the pipeline's loop: Table 1 runs the
    SD-inpainting UNet (9 -> 4 channels) beside UniGS, which the UniGS pipeline cannot feed."""

    def __init__(self, session, in_channels: int, out_channels: int, latent: int, steps: int, hidden: int):
        from unigs_deploy.modeling import SD15_SCHEDULER
        from unigs_deploy.scheduler import DDIMScheduler

        rng = np.random.default_rng(0)
        self.session, self.out_channels = session, out_channels
        self.sched = DDIMScheduler(**SD15_SCHEDULER)
        self.timesteps = list(self.sched.set_timesteps(steps))
        self.z = rng.standard_normal((1, out_channels, latent, latent), dtype=np.float32)
        self.text = rng.standard_normal((2, 77, hidden), dtype=np.float32)
        self.sample = np.empty((2, in_channels, latent, latent), np.float32)
        self.sample[:, out_channels:] = rng.standard_normal((1, in_channels - out_channels, latent, latent),
                                                            dtype=np.float32)

    def step(self, i: int) -> float:
        """Step i; its seconds."""
        t = self.timesteps[i]
        t0 = time.perf_counter()
        self.sample[:, : self.out_channels] = self.z
        eps = self.session(sample=self.sample, timestep=np.full(2, t, np.float32), encoder_hidden_states=self.text)
        eps = eps[:1] + 7.5 * (eps[1:] - eps[:1])
        self.z = self.sched.step(eps, int(t), self.z)
        return time.perf_counter() - t0


def _loop(session, in_channels: int, out_channels: int, latent: int, steps: int, hidden: int) -> float:
    """One image's denoising loop (CFG batch 2, DDIM) on a UNet runner; seconds."""
    d = _Denoiser(session, in_channels, out_channels, latent, steps, hidden)
    return sum(d.step(i) for i in range(steps))


def table1_pair(scale: str, size: int, steps: int, repeats: int, workdir: str, threads: int) -> dict:
    """Both models' denoising loops on ONNX Runtime in one process, interleaved step by step (which
    goes first alternating): this machine's speed drifts by several percent within a minute, and
    a loop-by-loop comparison measured the drift (per-round ratios 0.84-1.03)."""
    from unigs_deploy.backends.onnxruntime import OrtSession

    hidden, latent = _hidden(scale), _latent(scale, size)
    models = []
    for name, cin, cout in (("Stable Diffusion inpainting", 9, 4), ("UniGS", 13, 8)):
        path = _export_unet(_unet(cin, cout, scale), Path(workdir) / f"{scale}-{cin}to{cout}" / "unet.onnx", hidden)
        sess = OrtSession(path, threads=threads)
        _loop(sess, cin, cout, latent, 1, hidden)  # warm-up
        models.append((name, cin, cout, sess))
    times: list[list[float]] = [[], []]
    for _ in range(repeats):
        loops = [_Denoiser(sess, cin, cout, latent, steps, hidden) for _, cin, cout, sess in models]
        total = [0.0, 0.0]
        for i in range(steps):
            for m in ((0, 1) if i % 2 == 0 else (1, 0)):
                total[m] += loops[m].step(i)
        times[0].append(total[0])
        times[1].append(total[1])
    rows = [{"method": name, "in_out": f"{cin}->{cout}", "seconds_per_image": float(np.median(t)),
             "min_s": float(min(t))} for (name, cin, cout, _), t in zip(models, times, strict=True)]
    ratios = [u / s for s, u in zip(times[0], times[1], strict=True)]
    return {"rows": rows, "ratios": ratios, "peak_rss_mb": peak_rss_mb()}


def table1(*, scale: str = "sd15", size: int = 256, steps: int = 10, repeats: int = 4, workdir: Path,
           threads: int = 0) -> dict:
    """The paper's Table 1 on our machinery: parameters, and seconds per image of the denoising
    loop for the SD-inpainting UNet and the UniGS UNet on ONNX Runtime, same everything else."""
    pair = in_child("table1_pair", scale=scale, size=size, steps=steps, repeats=repeats, workdir=str(workdir),
                    threads=threads)
    rows = pair["rows"]
    counts = parameter_counts(scale)
    rows[0]["parameters"] = counts["sd_inpainting"]
    rows[1]["parameters"] = counts["unigs"]
    return {"benchmark": "table1", "machine": machine(threads=threads or None), "scale": scale,
            "note": f"ONNX Runtime CPU, {size}x{size}, {steps} DDIM steps, CFG batch 2, denoising loop only; "
                    f"{repeats} rounds, the two models' loops interleaved step by step in one process (peak RSS "
                    f"{pair['peak_rss_mb']:,.0f} MB with both loaded), ratio = median of the per-round "
                    "ratios (the paper: 512x512, 200 steps on a GPU)",
            "rows": rows, "parameters": counts, "unigs_over_sd_time": float(np.median(pair["ratios"])),
            "round_ratios": pair["ratios"], "peak_rss_mb": pair["peak_rss_mb"],
            "paper": {"sd_parameters_m": 859.54, "unigs_parameters_m": 859.56, "sd_s": 14.48, "unigs_s": 14.40,
                      "ratio": 14.40 / 14.48}}


def _hidden(scale: str) -> int:
    return 768 if scale == "sd15" else {"demo": 128, "tiny": 32}[scale]


def _latent(scale: str, size: int) -> int:
    return size // (8 if scale == "sd15" else 4)


def unet_files(scale: str, workdir: str | Path) -> tuple[str, str]:
    """The UniGS UNet as plain ONNX and with ORT's CPU fusions; exported once per work folder."""
    from unigs_deploy.export.optimize import optimize

    workdir = Path(workdir)
    plain = workdir / f"{scale}-13to8" / "unet.onnx"
    fused = plain.with_name("unet.opt.onnx")
    if not plain.is_file():
        _export_unet(_unet(13, 8, scale), plain, _hidden(scale))
    if not fused.is_file():
        optimize(plain, fused, component="unet")
    return str(plain), str(fused)


def _runner(backend: str, scale: str, workdir: Path, threads: int):
    """feed dict of numpy arrays -> eps numpy, for one backend."""
    if backend == "torch eager fp32":
        import torch

        if threads:
            torch.set_num_threads(threads)
        unet = _unet(13, 8, scale)

        def run(**f):
            with torch.no_grad():
                return unet(torch.from_numpy(f["sample"]), torch.from_numpy(f["timestep"]),
                            torch.from_numpy(f["encoder_hidden_states"])).sample.numpy()
        return run
    from unigs_deploy.backends.onnxruntime import OrtSession

    plain, fused = unet_files(scale, workdir)
    return OrtSession(fused if backend == "onnxruntime + CPU fusions" else plain, threads=threads)


def _step_feed(lat: int, hidden: int) -> dict:
    """One UniGS UNet step's inputs at batch 2 (CFG), the same for every backend."""
    rng = np.random.default_rng(0)
    return {"sample": rng.standard_normal((2, 13, lat, lat), dtype=np.float32),
            "timestep": np.array([500, 500], np.float32),
            "encoder_hidden_states": rng.standard_normal((2, 77, hidden), dtype=np.float32)}


def measure_backend(backend: str, scale: str, size: int, repeats: int, workdir: str, threads: int,
                    image_steps: int) -> dict:
    """One (backend, size): a UNet step at batch 2 and, if image_steps, a whole denoising loop."""
    t0 = time.perf_counter()
    run = _runner(backend, scale, Path(workdir), threads)
    load_s = time.perf_counter() - t0
    lat, hidden = _latent(scale, size), _hidden(scale)
    feed = _step_feed(lat, hidden)
    res = {"load_s": load_s, **time_call(lambda: run(**feed), repeat=repeats, warmup=1)}
    if image_steps:
        res["image_s"] = _loop(run, 13, 8, lat, image_steps, hidden)
        res["image_steps"] = image_steps
    res["peak_rss_mb"] = peak_rss_mb()
    return res


def in_child(fn: str, **kwargs) -> dict:
    """speed.<fn> (or "<module>.<fn>") (**kwargs) in a fresh interpreter: its peak RSS is that run's alone, and one
    run's memory is returned to the OS before the next starts (sd15 at 512x512 needs ~10 GB)."""
    mod, _, name = fn.rpartition(".")
    mod = mod or "speed"
    code = (f"import json, sys\nfrom unigs_deploy.benchmarks import {mod}\n"
            f"print('RESULT ' + json.dumps({mod}.{name}(**json.loads(sys.argv[1]))))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs, default=str)], capture_output=True,
                         text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode or not lines:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{fn}({kwargs}) failed in a child process (exit {out.returncode}): {tail[0]}")
    return json.loads(lines[-1][len("RESULT "):])


BACKENDS = ("torch eager fp32", "onnxruntime", "onnxruntime + CPU fusions")


def backends(*, scale: str = "sd15", sizes=(256, 512), repeats: int = 2, rounds: int = 3, workdir: Path,
             threads: int = 0, image_steps: int = 4, image_sizes=(256,), profile: bool = True) -> dict:
    """One UniGS UNet step (batch 2) on torch eager vs ONNX Runtime (plain and with the CPU-safe
    fusions) vs TensorRT where it imports, each in its own process; ratios to torch. `rounds`
    rounds per size with the backend order rotating, ratios = median of per-round ratios (the
    machine's speed drifts). A whole denoising loop of `image_steps` steps too, at `image_sizes`.
    At the largest size, torch and the best ONNX Runtime configuration are profiled by operator."""
    from unigs_deploy.backends import tensorrt as trt_backend

    in_child("unet_files", scale=scale, workdir=str(workdir))  # export once, outside the timed children
    rows = []
    for size in sizes:
        got: dict[str, list[dict]] = {b: [] for b in BACKENDS}
        for r in range(rounds):
            for b in BACKENDS[r % 3:] + BACKENDS[: r % 3]:
                got[b].append(in_child("measure_backend", backend=b, scale=scale, size=size, repeats=repeats,
                                       workdir=str(workdir), threads=threads,
                                       image_steps=image_steps if size in image_sizes else 0))
        torch_runs = got[BACKENDS[0]]
        for b in BACKENDS:
            runs = got[b]
            row = {"size": size, "backend": b, "median_ms": float(np.median([x["median_ms"] for x in runs])),
                   "min_ms": float(min(x["min_ms"] for x in runs)),
                   "speedup_vs_torch": float(np.median([t["median_ms"] / x["median_ms"]
                                                        for t, x in zip(torch_runs, runs, strict=True)])),
                   "peak_rss_mb": max(x["peak_rss_mb"] for x in runs), "load_s": float(np.median(
                       [x["load_s"] for x in runs])), "rounds": rounds}
            if all("image_s" in x for x in runs):
                row["image_s"] = float(np.median([x["image_s"] for x in runs]))
                row["image_speedup_vs_torch"] = float(np.median([t["image_s"] / x["image_s"]
                                                                 for t, x in zip(torch_runs, runs, strict=True)]))
            rows.append(row)
    big = max(sizes)
    best = max((r for r in rows if r["size"] == big and r["backend"] != BACKENDS[0]),
               key=lambda r: r["speedup_vs_torch"])
    profiles = [in_child("profile_step", backend=b, scale=scale, size=big, workdir=str(workdir), threads=threads)
                for b in (BACKENDS[0], best["backend"])] if profile else []
    return {"benchmark": "backends", "machine": machine(threads=threads or None), "scale": scale,
            "method": f"each (size, backend) in a fresh process, {rounds} rounds with the order rotating; UNet "
                      f"step = batch 2 (CFG), median of {repeats} after 1 warm-up; whole image = {image_steps} "
                      "DDIM steps with CFG; x torch = median of per-round ratios",
            "rows": rows, "largest": {"size": big, "best_onnxruntime": best["backend"],
                                      "speedup_vs_torch": best["speedup_vs_torch"], "target": 1.3,
                                      "met": best["speedup_vs_torch"] >= 1.3},
            "profiles": profiles,
            "tensorrt": ("importable, but not measured: unigs-bench backends times torch and onnxruntime only"
                         if trt_backend.available() else "not importable here (needs an NVIDIA GPU)")}


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


def profile_step(backend: str, scale: str, size: int, workdir: str, threads: int, top: int = 10) -> dict:
    """Where one UNet step's time goes, by operator, on torch (torch.profiler) or ONNX Runtime
    (its own profiler): the evidence for why a backend is or is not faster at a size."""
    lat, hidden = _latent(scale, size), _hidden(scale)
    feed = _step_feed(lat, hidden)
    by_op: dict[str, float] = {}
    if backend == "torch eager fp32":
        from torch.profiler import ProfilerActivity, profile

        run = _runner(backend, scale, Path(workdir), threads)
        run(**feed)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            run(**feed)
            wall = time.perf_counter() - t0
        for ev in prof.key_averages():
            if ev.key.startswith("aten::") and ev.self_cpu_time_total > 0:
                by_op[ev.key] = by_op.get(ev.key, 0.0) + ev.self_cpu_time_total / 1e3
    else:
        import onnxruntime as ort

        plain, fused = unet_files(scale, workdir)
        so = ort.SessionOptions()
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(workdir) / "ort-profile")
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(fused if backend == "onnxruntime + CPU fusions" else plain, so,
                                    providers=["CPUExecutionProvider"])
        sess.run(None, feed)  # warm-up, also profiled: only the last run counts below
        t0 = time.perf_counter()
        sess.run(None, feed)
        wall = time.perf_counter() - t0
        trace = Path(sess.end_profiling())
        events = json.loads(trace.read_text())
        trace.unlink()
        runs = [e for e in events if e.get("name") == "model_run"]
        last = runs[-1]["ts"] if runs else 0
        for e in events:
            if e.get("cat") == "Node" and e.get("ts", 0) >= last and e["name"].endswith("_kernel_time"):
                op = e.get("args", {}).get("op_name", "?")
                by_op[op] = by_op.get(op, 0.0) + e["dur"] / 1e3
    total = sum(by_op.values())
    ops = sorted(by_op.items(), key=lambda kv: -kv[1])
    rows = [{"op": k, "ms": v, "share": v / total} for k, v in ops[:top]]
    return {"backend": backend, "size": size, "wall_ms": wall * 1e3, "op_ms_total": total, "rows": rows}
