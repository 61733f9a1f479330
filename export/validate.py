"""Validation as part of export (like optimum's): ONNX Runtime vs torch on the same inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Max abs error allowed, relative to the reference's largest magnitude (at least 1).
TOLERANCE = {"fp32": 3e-5, "fp16": 1e-2}


@dataclass
class Check:
    component: str
    precision: str
    stage: str  # which file was checked: the plain export, the optimized or the fp16 one
    shape: str
    max_abs: float
    max_rel: float
    scale: float
    tolerance: float
    finite: bool

    @property
    def ok(self) -> bool:
        return self.finite and self.max_abs <= self.tolerance * self.scale

    def as_dict(self) -> dict:
        return {"stage": self.stage, "precision": self.precision, "shape": self.shape,
                "max_abs_error": self.max_abs, "max_rel_error": self.max_rel,
                "tolerance": self.tolerance * self.scale, "finite": self.finite, "ok": self.ok}


def ort_session(path, threads: int = 0):
    """A CPU session for validation only: no pre-packed weight copies and no memory arena, so a
    multi-GB UNet is held once (the export's memory budget is 2x the weights)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.enable_cpu_mem_arena = False
    so.add_session_config_entry("session.disable_prepacking", "1")
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def reference(module: torch.nn.Module, inputs: dict) -> np.ndarray:
    """torch's output on `inputs`: computed before export, so the module can be freed after it."""
    with torch.no_grad():
        return module(**inputs).float().numpy()


def compare(name: str, stage: str, session, ref: np.ndarray, inputs: dict) -> Check:
    feed = {k: v.numpy() for k, v in inputs.items()}
    got = session.run(None, feed)[0].astype(np.float32)
    finite = bool(np.isfinite(got).all())
    diff = np.abs(got - ref) if finite else np.array([np.inf])
    scale = max(1.0, float(np.abs(ref).max()))
    rel = diff / np.maximum(np.abs(ref), 1e-3) if finite else diff
    shape = "x".join(str(d) for d in next(iter(feed.values())).shape)
    precision = "fp16" if stage == "fp16" else "fp32"
    return Check(name, precision, stage, shape, float(diff.max()), float(rel.max()), scale, TOLERANCE[precision],
                 finite)


def table(checks: list[Check]) -> str:
    rows = [f"{'component':<18}{'file':<10}{'input':<16}{'max abs':>11}{'max rel':>11}{'allowed':>11}  result"]
    for c in checks:
        verdict = "ok" if c.ok else ("NaN/inf" if not c.finite else "TOO LARGE")
        rows.append(f"{c.component:<18}{c.stage:<10}{c.shape:<16}{c.max_abs:>11.2e}{c.max_rel:>11.2e}"
                    f"{c.tolerance * c.scale:>11.2e}  {verdict}")
    return "\n".join(rows)
