"""Copy a trained model into the package as the shipped demo model (fp16 safetensors).

`python -m unigs_deploy.training.ship MODEL_DIR [--tiny-vae DIR] [--reranker DIR] [--task-defaults FILE]`:
the tiny VAE is taken from another run's model folder (it depends on the VAE only, which later stages
keep), the reranker from its own folder (training/reranker.py; it reads images, not latents); task
defaults are the per-task settings measured best for this model (unigs-bench steps).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from unigs_deploy import io, modeling


def ship(model_dir: str | Path, *, tiny_vae: str | Path | None = None, reranker: str | Path | None = None,
         task_defaults: str | Path | None = None, extra_files: tuple = ()) -> Path:
    model = modeling.load(model_dir)
    if tiny_vae:
        tiny = Path(tiny_vae)
        model.tiny_vae = modeling.load_tiny_vae(tiny / modeling.TINY_VAE if (tiny / modeling.TINY_VAE).is_dir()
                                                else tiny, model.vae)
    if reranker:
        from unigs_deploy.modeling import reranker as reranker_mod

        model.reranker = reranker_mod.load(reranker)
    if task_defaults:
        model.task_defaults = json.loads(Path(task_defaults).read_text())
    dest = modeling.demo_weights_dir()
    with io.atomic_dir(dest) as tmp:
        modeling.save(model, tmp, half=True)
        info = Path(model_dir) / "training.json"
        if info.is_file():
            data = json.loads(info.read_text())
            (tmp / "training.json").write_text(json.dumps({"config": data["config"], "steps": data["steps"],
                                                           "final_loss": sum(data["losses"][-50:]) / 50}, indent=1))
        for f in extra_files:  # e.g. the earlier stages' records
            shutil.copy(f, tmp / Path(f).name)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"shipped {model_dir} -> {dest} ({size / 1e6:.1f} MB)")
    return dest


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("--tiny-vae", help="A model folder (or its tiny_vae/) holding the distilled AutoencoderTiny.")
    ap.add_argument("--reranker", help="A reranker folder (or a model folder holding reranker/).")
    ap.add_argument("--task-defaults", help="A task_defaults.json to ship with the model.")
    ap.add_argument("--keep", nargs="*", default=(), help="Extra files to copy in (earlier stages' records).")
    a = ap.parse_args()
    ship(a.model_dir, tiny_vae=a.tiny_vae, reranker=a.reranker, task_defaults=a.task_defaults,
         extra_files=tuple(a.keep))
