"""Copy a trained model into the package as the shipped demo model (fp16 safetensors)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from unigs_deploy import modeling


def ship(model_dir: str | Path) -> Path:
    model = modeling.load(model_dir)
    dest = modeling.demo_weights_dir()
    tmp = dest.with_name(".demo-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    modeling.save(model, tmp, half=True)
    info = Path(model_dir) / "training.json"
    if info.is_file():
        import json

        data = json.loads(info.read_text())
        (tmp / "training.json").write_text(json.dumps({"config": data["config"], "steps": data["steps"],
                                                       "final_loss": sum(data["losses"][-50:]) / 50}, indent=1))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"shipped {model_dir} -> {dest} ({size / 1e6:.1f} MB)")
    return dest


if __name__ == "__main__":
    ship(sys.argv[1])
