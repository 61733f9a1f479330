"""The dichotomy decoder: Numba product vs numpy reference vs recursive scikit-learn KMeans.

All three run the same algorithm on the same corrupted colormaps, side by side, on one core.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from unigs_deploy import dichotomy, metrics, palette
from unigs_deploy import dichotomy_reference as reference
from unigs_deploy.labels import masks_to_labels
from unigs_deploy.synthetic import shapes

from .common import call_times, machine


def _split_sklearn(p, score_w, threshold, min_w):
    """The reference's split with scikit-learn's KMeans doing the 2-means."""
    from sklearn.cluster import KMeans

    pair = reference.init_pair(p, score_w, threshold)
    if pair is None:
        return None
    km = KMeans(n_clusters=2, init=np.stack(pair), n_init=1, max_iter=50, algorithm="lloyd").fit(p)
    second = km.labels_ == 1
    c = km.cluster_centers_
    if ((c[0] - c[1]) ** 2).sum() < threshold**2 or second.sum() < min_w or (~second).sum() < min_w:
        return None
    return second


def decode_sklearn(cm, **kw):
    return reference.decode_with_split(cm, _split_sklearn, **kw)


def _case(size: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    masks, _ = shapes.random_layout(rng, size, size, n)
    truth = masks_to_labels(masks)
    noisy = shapes.corrupt_colormap(palette.encode_colormap(masks), rng)
    return noisy, truth


_COLD = """
import json, sys, time
HIDE = set(json.loads(sys.argv[1]))
class _Hide:  # a package outside the runtime's dependencies behaves as if not installed
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDE:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _Hide())
import numpy as np
before = set(sys.modules)
t0 = time.perf_counter()
from unigs_deploy.dichotomy import decode_colormap
decode_colormap(np.zeros((512, 512, 3), np.uint8))
ms = (time.perf_counter() - t0) * 1e3
print(json.dumps({"ms": ms, "modules": sorted({m.partition(".")[0] for m in set(sys.modules) - before})}))
"""


def runtime_closure() -> set[str]:
    """The distributions `pip install unigs-deploy` (no extras) installs, recursively."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen, todo = set(), ["unigs-deploy"]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        for spec in requires:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def _outside_runtime() -> list[str]:
    """Top-level modules installed here whose distributions the runtime does not depend on."""
    from importlib.metadata import packages_distributions

    from packaging.utils import canonicalize_name

    keep = runtime_closure()
    return sorted(m for m, dists in packages_distributions().items()
                  if not any(canonicalize_name(d) in keep for d in dists))


def cold_start(runs: int = 5) -> dict:
    """A fresh interpreter: import + first decode of a 512x512 colormap, with the JIT cache warm
    (numpy already imported), median of `runs` processes. Measured as installed here and with
    only the runtime's dependencies importable (`pip install unigs-deploy`): numba imports
    scipy.linalg (~0.4 s) and cffi whenever they are installed, which the dev/test extras do."""
    hidden = _outside_runtime()

    def once(hide: list[str]) -> dict:
        out = subprocess.run([sys.executable, "-c", _COLD, json.dumps(hide)], check=True, capture_output=True,
                             text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    once([])  # warm the cache
    res = {}
    for key, hide in (("installed", []), ("runtime_only", hidden)):
        got = [once(hide) for _ in range(runs)]
        res[key] = float(np.median([g["ms"] for g in got]))
        res[f"{key}_imports_outside_runtime"] = sorted(set(got[0]["modules"]) & set(hidden))
    return res


def robustness(n_layouts: int = 200, size: int = 512, seed: int = 0) -> list[dict]:
    """Mean PQ of the product over layouts of 1-40 entities, per corruption."""
    levels = [
        ("clean", dict(noise=0, blur=0, jpeg_quality=None, shift=0)),
        ("noise 8", dict(noise=8, blur=0, jpeg_quality=None, shift=0)),
        ("blur 5x5", dict(noise=0, blur=5, jpeg_quality=None, shift=0)),
        ("JPEG 75", dict(noise=0, blur=0, jpeg_quality=75, shift=0)),
        ("shift 12", dict(noise=0, blur=0, jpeg_quality=None, shift=12)),
        ("all (noise 4)", dict(noise=4)),
        ("all (noise 8)", dict(noise=8)),
        ("all (noise 12)", dict(noise=12)),
        ("all (noise 16)", dict(noise=16)),
    ]
    rng = np.random.default_rng(seed)
    layouts = []
    for _ in range(n_layouts):
        masks, _ = shapes.random_layout(rng, size, size, int(rng.integers(1, 41)))
        truth = masks_to_labels(masks)
        layouts.append((palette.encode_colormap(masks), truth))
    rows = []
    for name, kw in levels:
        pq = [metrics.panoptic_quality(
            dichotomy.decode_colormap(shapes.corrupt_colormap(cm, np.random.default_rng(i), **kw)), truth)
            for i, (cm, truth) in enumerate(layouts)]
        rows.append({"corruption": name, "layouts": n_layouts, "mean_pq": float(np.mean([p["pq"] for p in pq])),
                     "min_pq": float(np.min([p["pq"] for p in pq])),
                     "fp_per_image": float(np.mean([p["fp"] for p in pq])),
                     "fn_per_image": float(np.mean([p["fn"] for p in pq]))})
    return rows


def run(quick: bool = False) -> dict:
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(1)
    rows = []
    batch = 5 if quick else 25
    with threadpool_limits(1):
        for size in (512, 1024):
            noisy, truth = _case(size, 20, seed=size)
            dichotomy.decode_colormap(noisy)  # JIT
            others = [("numpy reference", reference.decode_colormap, 3 if not quick else 1)]
            if size == 512 or not quick:
                others.append(("sklearn KMeans", decode_sklearn, 1))
            # the product's calls in batches between the slow calls, so that its median spans the
            # whole comparison (this VM's speed drifts by up to 2x within seconds to minutes)
            def product(x=noisy):
                return dichotomy.decode_colormap(x)

            fast = call_times(product, repeat=batch, warmup=1)
            slow, labels = {}, {"numba (product)": product()}
            for name, fn, repeat in others:
                for _ in range(repeat):
                    slow.setdefault(name, []).extend(call_times(
                        lambda fn=fn, name=name, got=labels, x=noisy: got.__setitem__(name, fn(x)), repeat=1))
                    fast += call_times(product, repeat=batch)
            base = float(np.median(fast))
            for name, times in [("numba (product)", fast), *slow.items()]:
                rows.append({"size": f"{size}x{size}", "impl": name, "median_ms": float(np.median(times)),
                             "min_ms": float(np.min(times)), "calls": len(times),
                             "x_slower_than_numba": float(np.median(times)) / base,
                             "pq": metrics.panoptic_quality(labels[name], truth)["pq"]})
    return {"benchmark": "decoder", "machine": machine(threads=1), "entities": 20,
            "corruption": "noise sigma 8, 5x5 blur, JPEG 75, colour shift <= 12",
            "rows": rows, "cold_start_ms": cold_start(runs=1 if quick else 5),
            "robustness": robustness(n_layouts=20 if quick else 200)}


STOP_RULES = [("centres", 32.0), ("spread", 8.0), ("spread", 12.0), ("spread", 16.0), ("spread", 24.0),
              ("spread", 32.0)]


def stop_rules(n_layouts: int = 200, size: int = 512, seed: int = 0) -> dict:
    """The project's split rule (halves' centres >= threshold apart) against the paper's (mean
    distance to the centre >= threshold) at several thresholds: mean PQ per corruption."""
    corruptions = [("clean", dict(noise=0, blur=0, jpeg_quality=None, shift=0)), ("all (noise 8)", dict(noise=8)),
                   ("all (noise 16)", dict(noise=16))]
    rng = np.random.default_rng(seed)
    layouts = []
    for _ in range(n_layouts):
        masks, _ = shapes.random_layout(rng, size, size, int(rng.integers(1, 41)))
        layouts.append((palette.encode_colormap(masks), masks_to_labels(masks)))
    rows = []
    for name, kw in corruptions:
        maps = [shapes.corrupt_colormap(cm, np.random.default_rng(i), **kw) for i, (cm, _) in enumerate(layouts)]
        for stop, thr in STOP_RULES:
            pq = [metrics.panoptic_quality(dichotomy.decode_colormap(m, stop=stop, threshold=thr), truth)
                  for m, (_, truth) in zip(maps, layouts, strict=True)]
            rows.append({"corruption": name, "stop": stop, "threshold": thr,
                         "mean_pq": float(np.mean([p["pq"] for p in pq])),
                         "fp_per_image": float(np.mean([p["fp"] for p in pq])),
                         "fn_per_image": float(np.mean([p["fn"] for p in pq]))})
    return {"benchmark": "stop-rules", "layouts": n_layouts, "size": size, "rows": rows}


def render_stop_rules(r: dict) -> str:
    from .common import markdown_table

    return markdown_table(r["rows"], [("corruption", "corruption"), ("stop", "stop rule"), ("threshold", "threshold"),
                                      ("mean_pq", "mean PQ"), ("fp_per_image", "FP / image"),
                                      ("fn_per_image", "FN / image")]) + \
        f"\n\n{r['layouts']} layouts of 1-40 entities at {r['size']}x{r['size']} (benchmarks/decoder.py)."
