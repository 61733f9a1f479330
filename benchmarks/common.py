"""Timing, machine description and report helpers shared by the benchmarks."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import statistics
import time
from importlib import metadata


def call_times(fn, *, repeat: int, warmup: int = 0) -> list[float]:
    """Wall time in ms of each of `repeat` calls of fn() after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def time_call(fn, *, repeat: int = 20, warmup: int = 2) -> dict:
    """Median and min wall time of fn() in ms after warm-up, and peak RSS so far in MB."""
    times = call_times(fn, repeat=repeat, warmup=warmup)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "runs": repeat,
            "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(threads: int | None = None) -> dict:
    versions = {}
    for pkg in ("numpy", "numba", "onnxruntime", "opencv-python-headless", "scikit-learn", "torch", "diffusers"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "threads_used": threads,
        "python": platform.python_version(),
        "versions": versions,
    }


def _fmt(v) -> str:
    if isinstance(v, bool) or not isinstance(v, float):
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10000 else str(v)
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def confusion_table(kinds: list[str], confusion: list[list[int]], corner: str = "asked \\ judged") -> str:
    """A kinds x kinds count matrix (rows: asked) -> Markdown, ending in a newline."""
    head = f"| {corner} | " + " | ".join(kinds) + " |\n|---|" + "---|" * len(kinds) + "\n"
    return head + "".join(f"| {k} | " + " | ".join(str(c) for c in row) + " |\n"
                          for k, row in zip(kinds, confusion, strict=True))


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """rows of dicts -> Markdown; columns are (key, header)."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = []
    for r in rows:
        cells = []
        for k, _ in columns:
            v = r.get(k, "")
            v = "" if v is None else v
            cells.append(_fmt(v))
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *body])


def held_out_size(pipe, size: int | None) -> int:
    """The side of the held-out images the quality benchmarks draw: as given, else the side the
    model was trained at (its manifest), else 64 (the demo's first size)."""
    return int(size or pipe.manifest.model.resolution or 64)
