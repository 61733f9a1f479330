"""The product pipeline on torch eager modules: no export, the same numpy loop and decoder.

Why: training measures held-out quality with exactly what users run (schedulers, guidance rule,
dichotomy decoder) without exporting every N steps, and `unigs-bench fast` times torch eager
(the "before any deployment work" row) through the same code path as the engines.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from unigs_deploy.pipeline import UniGSPipeline
from unigs_deploy.tokenizer import CLIPTokenizer

from .components import specs
from .exporter import _manifest, _model_info


class TorchRunner:
    """A torch module behind the runtime's Runner contract (backends/base.py)."""

    provider = "torch eager (CPU)"

    def __init__(self, name: str, module: torch.nn.Module, inputs: dict):
        self.name = name
        self.module = module.eval()
        self.inputs = list(inputs)
        self._dtypes = {k: getattr(torch, dt) for k, (dt, _) in inputs.items()}

    @torch.no_grad()
    def __call__(self, **feed: np.ndarray) -> np.ndarray:
        args = [torch.from_numpy(np.ascontiguousarray(feed[k])).to(self._dtypes[k]) for k in self.inputs if k in feed]
        return self.module(*args).numpy()

    def close(self) -> None:
        self.module = None


def pipeline(model, *, folder: str | Path | None = None) -> UniGSPipeline:
    """A UniGSPipeline whose components are `model`'s torch modules (weights shared, not copied).

    folder: where the tokenizer file and manifest go (default: a temporary folder that lives as
    long as the pipeline)."""
    if folder is None:
        tmp = tempfile.TemporaryDirectory(prefix="unigs-eager-")
        folder = Path(tmp.name)
    else:
        tmp, folder = None, Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
    model.tokenizer.save(str(folder / "tokenizer.json"))
    comps_specs = specs(model)
    comps = {s.name: TorchRunner(s.name, s.module, s.inputs) for s in comps_specs}
    entries = {s.name: {"files": [s.file], "inputs": list(s.inputs), "outputs": list(s.outputs),
                        "spatial_multiple": s.latent_multiple, **s.extra} for s in comps_specs}
    manifest = _manifest(model, _model_info(model), entries, "fp32")
    manifest.folder = folder
    pipe = UniGSPipeline(comps, manifest, CLIPTokenizer(folder / "tokenizer.json",
                                                        max_length=manifest.model.max_text_length))
    pipe._tmp = tmp  # the folder lives as long as the pipeline
    return pipe
