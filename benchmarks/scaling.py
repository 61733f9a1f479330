"""How cost grows: UNet step time and peak memory vs resolution, and image time vs steps.

Each resolution runs in its own process (speed.in_child), so every peak RSS is that run's.
A power law time = c * pixels**k is fitted on log-log axes; k near 1 means cost follows the
pixel count, above 1 the attention layers' quadratic term shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import speed
from .common import machine


def fit_power(x, y) -> tuple[float, float]:
    """(exponent k, constant c) of y = c * x**k, least squares on logs."""
    k, logc = np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)
    return float(k), float(np.exp(logc))


def fit_line(x, y) -> tuple[float, float]:
    """(slope, intercept)."""
    b, a = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return float(b), float(a)


def measure_steps(scale: str, size: int, steps: list[int], workdir: str, threads: int, backend: str) -> dict:
    """Whole denoising loops of each step count in one process (one model load)."""
    run = speed._runner(backend, scale, Path(workdir), threads)
    lat, hidden = speed._latent(scale, size), speed._hidden(scale)
    speed._loop(run, 13, 8, lat, 1, hidden)  # warm-up
    return {"seconds": [speed._loop(run, 13, 8, lat, n, hidden) for n in steps]}


def run(*, scale: str = "sd15", sizes=(128, 192, 256, 384, 512), steps=(1, 2, 4, 8), steps_size: int = 256,
        repeats: int = 2, workdir: Path, threads: int = 0, backend: str = "onnxruntime + CPU fusions",
        plot: Path | None = None) -> dict:
    speed.in_child("unet_files", scale=scale, workdir=str(workdir))
    rows = []
    for size in sizes:
        r = speed.in_child("measure_backend", backend=backend, scale=scale, size=size, repeats=repeats,
                           workdir=str(workdir), threads=threads, image_steps=0)
        rows.append({"size": size, "pixels": size * size, "step_ms": r["median_ms"], "min_ms": r["min_ms"],
                     "peak_rss_mb": r["peak_rss_mb"]})
    k_time, c_time = fit_power([r["pixels"] for r in rows], [r["step_ms"] for r in rows])
    k_mem, c_mem = fit_power([r["pixels"] for r in rows], [r["peak_rss_mb"] for r in rows])
    for r in rows:
        r["fit_ms"] = c_time * r["pixels"] ** k_time
    secs = speed.in_child("scaling.measure_steps", scale=scale, size=steps_size, steps=list(steps),
                          workdir=str(workdir), threads=threads, backend=backend)["seconds"]
    per_step, fixed = fit_line(steps, secs)
    step_rows = [{"steps": n, "seconds": s, "fit_s": fixed + per_step * n} for n, s in zip(steps, secs, strict=True)]
    result = {"benchmark": "scaling", "machine": machine(threads=threads or None), "scale": scale,
              "backend": backend, "rows": rows, "time_exponent": k_time, "memory_exponent": k_mem,
              "steps_size": steps_size, "step_rows": step_rows, "seconds_per_step": per_step,
              "fixed_seconds": fixed,
              "method": f"UNet step at batch 2 (CFG), median of {repeats}, one process per size; "
                        f"steps: whole denoising loops at {steps_size}x{steps_size} in one process"}
    if plot:
        result["plot"] = str(draw(result, Path(plot)))
    return result


def draw(result: dict, path: Path) -> Path:
    """Two panels: log-log time and memory vs pixels with the fitted exponents; time vs steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from unigs_deploy import io

    rows, steps = result["rows"], result["step_rows"]
    px = np.array([r["pixels"] for r in rows], float)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.loglog(px, [r["step_ms"] / 1e3 for r in rows], "o", color="C0", label="UNet step (s)")
    a.loglog(px, [r["fit_ms"] / 1e3 for r in rows], "-", color="C0",
             label=f"fit: time ~ pixels^{result['time_exponent']:.2f}")
    a.loglog(px, [r["peak_rss_mb"] / 1e3 for r in rows], "s", color="C1", label="peak RSS (GB)")
    a.set_xlabel("image pixels")
    a.set_title(f"{result['scale']} UniGS UNet, {result['backend']}")
    a.set_xticks(px, [f"{r['size']}²" for r in rows])
    a.minorticks_off()
    a.legend(fontsize=8)
    a.grid(True, which="both", alpha=0.3)
    n = [r["steps"] for r in steps]
    b.plot(n, [r["seconds"] for r in steps], "o", color="C2", label="whole denoising loop")
    b.plot(n, [r["fit_s"] for r in steps], "-", color="C2",
           label=f"{result['seconds_per_step']:.2f} s/step + {result['fixed_seconds']:.2f} s")
    b.set_xlabel("DDIM steps")
    b.set_ylabel("seconds")
    b.set_title(f"{result['steps_size']}x{result['steps_size']}")
    b.legend(fontsize=8)
    b.grid(True, alpha=0.3)
    fig.tight_layout()
    import io as _io

    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    io.write_bytes(path, buf.getvalue())
    return path
