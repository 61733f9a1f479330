"""C boundary overhead: the same 512x512 decode called from C (libunigs.so) and from Python."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from unigs_deploy import dichotomy, palette, shapes

from .common import machine, time_call

ROOT = Path(__file__).resolve().parents[1]


def run(repeats: int = 50) -> dict:
    import numba

    numba.set_num_threads(1)
    rng = np.random.default_rng(512)
    masks, _ = shapes.random_layout(rng, 512, 512, 20)
    cm = shapes.corrupt_colormap(palette.encode_colormap(masks), rng)
    py = time_call(lambda: dichotomy.decode_colormap(cm), repeat=repeats, warmup=3)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, str(ROOT / "capi" / "build.py"), "--out", str(tmp)], check=True,
                       capture_output=True)
        exe = tmp / "bench_decode"
        subprocess.run(["gcc", "-O2", str(ROOT / "examples" / "c" / "bench_decode.c"), "-I", str(tmp / "include"),
                        "-L", str(tmp / "lib"), f"-Wl,-rpath,{tmp / 'lib'}", "-lunigs", "-o", str(exe)], check=True)
        ppm = tmp / "cm.ppm"
        ppm.write_bytes(b"P6 512 512 255\n" + cm.tobytes())
        out = subprocess.run([str(exe), str(ppm), str(repeats)], check=True, capture_output=True, text=True,
                             env={"NUMBA_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
        c_median, c_min = (float(x) for x in out.stdout.split())
    rows = [{"caller": "Python decode_colormap", "median_ms": py["median_ms"], "min_ms": py["min_ms"],
             "vs_python": 1.0},
            {"caller": "C unigs_decode_colormap", "median_ms": c_median, "min_ms": c_min,
             "vs_python": c_median / py["median_ms"]}]
    return {"benchmark": "capi", "machine": machine(threads=1), "size": "512x512", "entities": 20, "rows": rows}
