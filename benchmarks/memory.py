"""Memory: peak RSS of exports (plain, --optimize, --fp16) and of one UNet step vs resolution,
with the plain graph's attention (materialised scores) and the --optimize graph's
MultiHeadAttention (flash attention on CPU). Every run is its own process, so each peak is
that run's alone.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import machine, peak_rss_mb


def step_peak(path: str, latent: int, hidden: int, batch: int, threads: int) -> dict:
    """One UNet call at a latent size in this process (run it through speed.in_child)."""
    from unigs_deploy.backends.onnxruntime import OrtSession

    rng = np.random.default_rng(0)
    session = OrtSession(path, threads=threads)
    feed = {"sample": rng.standard_normal((batch, 13, latent, latent), dtype=np.float32),
            "timestep": np.full(batch, 500, np.float32),
            "encoder_hidden_states": rng.standard_normal((batch, 77, hidden), dtype=np.float32)}
    t0 = time.perf_counter()
    session(**feed)
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()}


def export_peak(args: list[str]) -> dict:
    """`unigs-export ARGS` in a child process: its peak RSS and wall time."""
    code = ("import resource, subprocess, sys, time\n"
            "t0 = time.perf_counter()\n"
            "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode\n"
            "print(rc, time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    exe = str(Path(sys.executable).with_name("unigs-export"))
    out = subprocess.run([sys.executable, "-c", code, exe, *args], capture_output=True, text=True, check=True)
    rc, seconds, kb = out.stdout.split()
    return {"args": " ".join(args[:-2]), "exit": int(rc), "seconds": float(seconds), "peak_rss_mb": int(kb) / 1024}


def run(*, scale: str = "sd15", sizes=(512, 768, 1024), batch: int = 1, workdir: str = "benchmarks/work",
        threads: int = 0, exports: bool = True) -> dict:
    from . import speed
    from .scaling import fit_power

    plain, fused = speed.unet_files(scale, workdir)
    rows = []
    for attention, path in (("plain (scores materialised)", plain), ("--optimize (MultiHeadAttention)", fused)):
        for size in sizes:
            r = speed.in_child("memory.step_peak", path=path, latent=speed._latent(scale, size),
                               hidden=speed._hidden(scale), batch=batch, threads=threads)
            rows.append({"graph": attention, "image": size, **r})
    fits = {}
    for attention in {r["graph"] for r in rows}:
        rs = [r for r in rows if r["graph"] == attention]
        fits[attention] = fit_power([r["image"] ** 2 for r in rs], [r["peak_rss_mb"] for r in rs])[0]
    export_rows = []
    if exports:
        for flags in ([], ["--optimize"], ["--fp16"]):
            with tempfile.TemporaryDirectory(dir=workdir) as tmp:
                export_rows.append(export_peak(["--scale", scale, *flags, "--out", tmp]))
    weights = sum(p.stat().st_size for p in Path(plain).parent.glob(Path(plain).name + "*"))
    return {"benchmark": "memory", "machine": machine(threads=threads or None), "scale": scale, "batch": batch,
            "step_rows": rows, "exponent": fits, "export_rows": export_rows,
            "note": f"each row its own process; the UNet file and its weights are {weights / 1e9:.2f} GB"}


def render(r: dict) -> str:
    from .common import markdown_table

    t = markdown_table(r["step_rows"], [("graph", "graph"), ("image", "image"), ("peak_rss_mb", "peak RSS MB"),
                                        ("seconds", "step s")])
    t += "\n\nPeak RSS ~ pixels^k: " + ", ".join(f"{k} **{v:.2f}**" for k, v in sorted(r["exponent"].items()))
    t += f" ({r['scale']}, one UNet call at batch {r['batch']}; {r['note']})."
    if r["export_rows"]:
        t += "\n\n" + markdown_table([{**e, "args": f"unigs-export {e['args']}"} for e in r["export_rows"]],
                                     [("args", "export"), ("peak_rss_mb", "peak RSS MB"), ("seconds", "seconds"),
                                      ("exit", "exit")])
    return t

