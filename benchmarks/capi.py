"""C boundary overhead: the same 512x512 decode called from C (libunigs.so) and from Python."""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from unigs_deploy import dichotomy, palette
from unigs_deploy.synthetic import shapes

from .common import machine, time_call

ROOT = Path(__file__).resolve().parents[1]


def _faults() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_minflt + r.ru_majflt


def _python(cm, repeats):
    out = np.empty(cm.shape[:2], np.int32)
    t = time_call(lambda: dichotomy.decode_colormap(cm), repeat=repeats, warmup=3)
    f0 = _faults()
    t_out = time_call(lambda: dichotomy.decode_colormap(cm, out=out), repeat=repeats, warmup=0)
    return t, t_out, (_faults() - f0) / repeats


def run(repeats: int = 20, rounds: int = 15) -> dict:
    """C and Python alternate in `rounds` rounds of `repeats` calls each: this machine's speed
    drifts by tens of percent within seconds, so timing one after the other would measure the
    drift. The boundary's own cost is measured apart on a 4x4 colormap, where decoding is
    nearly free and what remains is the call itself."""
    import numba

    numba.set_num_threads(1)
    rng = np.random.default_rng(512)
    masks, _ = shapes.random_layout(rng, 512, 512, 20)
    big = shapes.corrupt_colormap(palette.encode_colormap(masks), rng)
    tiny = np.ascontiguousarray(big[:4, :4])
    per_round, tiny_rounds = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, str(ROOT / "capi" / "build.py"), "--out", str(tmp)], check=True,
                       capture_output=True)
        exe = tmp / "bench_decode"
        subprocess.run(["gcc", "-O2", str(ROOT / "examples" / "c" / "bench_decode.c"), "-I", str(tmp / "include"),
                        "-L", str(tmp / "lib"), f"-Wl,-rpath,{tmp / 'lib'}", "-lunigs", "-o", str(exe)], check=True)

        ppms = {}
        for cm in (big, tiny):
            ppms[cm.shape] = tmp / f"cm{cm.shape[0]}.ppm"
            ppms[cm.shape].write_bytes(f"P6 {cm.shape[1]} {cm.shape[0]} 255\n".encode() + cm.tobytes())

        def c_call(cm, n):
            ppm = ppms[cm.shape]
            res = subprocess.run([str(exe), str(ppm), str(n)], check=True, capture_output=True, text=True,
                                 env={"NUMBA_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
            return tuple(float(x) for x in res.stdout.split())

        for _ in range(rounds):
            c_median, c_min, c_faults = c_call(big, repeats)
            py, py_out, py_faults = _python(big, repeats)
            per_round.append({"c_median_ms": c_median, "c_min_ms": c_min, "c_faults_per_call": c_faults,
                              "py_median_ms": py["median_ms"], "py_min_ms": py["min_ms"],
                              "py_out_median_ms": py_out["median_ms"], "py_faults_per_call": py_faults,
                              "c_vs_python": c_median / py["median_ms"]})
        for _ in range(3):
            c_median, _, _ = c_call(tiny, 2000)
            py, _, _ = _python(tiny, 2000)
            tiny_rounds.append({"c_median_us": c_median * 1e3, "py_median_us": py["median_ms"] * 1e3})

    def med(rows, key):
        return float(np.median([r[key] for r in rows]))

    overhead_us = med(tiny_rounds, "c_median_us") - med(tiny_rounds, "py_median_us")
    rows = [{"caller": "Python decode_colormap", "median_ms": med(per_round, "py_median_ms"),
             "min_ms": med(per_round, "py_min_ms"), "vs_python": 1.0,
             "faults_per_call": med(per_round, "py_faults_per_call")},
            {"caller": "Python decode_colormap(out=)", "median_ms": med(per_round, "py_out_median_ms"),
             "vs_python": med(per_round, "py_out_median_ms") / med(per_round, "py_median_ms")},
            {"caller": "C unigs_decode_colormap", "median_ms": med(per_round, "c_median_ms"),
             "min_ms": med(per_round, "c_min_ms"), "vs_python": med(per_round, "c_vs_python"),
             "faults_per_call": med(per_round, "c_faults_per_call")}]
    return {"benchmark": "capi", "machine": machine(threads=1), "size": "512x512", "entities": 20,
            "method": f"{rounds} alternating rounds of {repeats} calls; medians over rounds; C vs Python is the "
                      "median of the per-round ratios. Boundary cost: 4x4 colormap, 3 rounds of 2000 calls.",
            "rows": rows, "rounds": per_round, "tiny_rounds": tiny_rounds,
            "boundary_overhead_us": overhead_us,
            "boundary_overhead_pct_of_512": 100 * overhead_us / 1e3 / med(per_round, "py_median_ms")}
