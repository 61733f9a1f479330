"""The reranker's torch module and its folder (config.json + model.safetensors).

What it is for and how its crops are made: unigs_deploy/rerank.py; how the demo model's is
trained: training/reranker.py. `unigs-export` turns a model folder's reranker/ into the
`reranker` ONNX component.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from unigs_deploy import io
from unigs_deploy.rerank import CHANNELS

FOLDER = "reranker"  # a model folder's optional subfolder


class Reranker(nn.Module):
    """(B, len(CHANNELS), crop, crop) -> (B, sum of the groups' sizes) logits, the groups'
    vocabularies laid end to end."""

    def __init__(self, groups: dict[str, list[str]], crop: int = 32, width: int = 32):
        super().__init__()
        self.groups, self.crop = {k: list(v) for k, v in groups.items()}, crop
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(len(CHANNELS), w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(4 * w, 4 * w, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, sum(len(v) for v in groups.values())))

    def forward(self, crop: torch.Tensor) -> torch.Tensor:
        return self.net(crop)

    @property
    def config(self) -> dict:
        return {"groups": self.groups, "crop": self.crop, "channels": list(CHANNELS),
                "width": self.net[0].out_channels}


def save(model: Reranker, folder: str | Path, record: dict | None = None) -> Path:
    """Into `folder` (made if missing): model.safetensors and config.json (with `record` as its
    "training"), each written atomically."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".model.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(folder / "model.safetensors")
    io.write_json(folder / "config.json", {**model.config, **({"training": record} if record else {})})
    return folder


def load(folder: str | Path) -> Reranker:
    """A reranker folder, or a model folder holding reranker/."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from . import ModelError

    folder = Path(folder)
    if not (folder / "config.json").is_file() and (folder / FOLDER / "config.json").is_file():
        folder = folder / FOLDER
    try:
        cfg = json.loads((folder / "config.json").read_text())
        if cfg.get("channels", list(CHANNELS)) != list(CHANNELS):
            raise ModelError(f"the reranker in {folder} reads channels {cfg['channels']}, this unigs-deploy makes "
                             f"{list(CHANNELS)}: train it again with training/reranker.py")
        model = Reranker(cfg["groups"], cfg["crop"], cfg["width"])
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
    except (OSError, KeyError, ValueError, RuntimeError, SafetensorError) as e:
        if isinstance(e, ModelError):
            raise
        raise ModelError(f"cannot load the reranker in {folder} ({str(e).splitlines()[0]}): train it again with "
                         "python -m unigs_deploy.training.reranker --out MODEL_FOLDER") from None
    return model.eval().requires_grad_(False)
