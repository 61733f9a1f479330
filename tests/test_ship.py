"""Shipping a trained model as the package's demo model (training/ship.py): fp16, its records, whole or not at all."""

import json

import pytest

torch = pytest.importorskip("torch")

from unigs_deploy import modeling  # noqa: E402
from unigs_deploy.training import ship  # noqa: E402


def test_ship_writes_fp16_weights_its_record_and_replaces_the_last_whole(tmp_path, monkeypatch):
    dest = tmp_path / "weights" / "demo"
    monkeypatch.setattr(modeling, "demo_weights_dir", lambda: dest)
    trained = modeling.save(modeling.build("tiny", task_embedding=True, seed=1), tmp_path / "run" / "model")
    (trained / "training.json").write_text(json.dumps({"config": {"seed": 1}, "steps": 60,
                                                       "losses": [2.0] * 10 + [1.0] * 50}))
    defaults = tmp_path / "defaults.json"
    defaults.write_text(json.dumps({"segment": {"steps": 2}}))
    record = tmp_path / "stage-0.json"
    record.write_text("{}")

    ship.ship(trained, task_defaults=defaults, extra_files=(record,))
    assert json.loads((dest / "training.json").read_text()) == {"config": {"seed": 1}, "steps": 60, "final_loss": 1.0}
    assert json.loads((dest / "task_defaults.json").read_text()) == {"segment": {"steps": 2}}
    assert (dest / "stage-0.json").is_file()
    shipped = modeling.load(dest)
    assert {p.dtype for p in shipped.unet.parameters()} == {torch.float32}  # loading upcasts the fp16 files
    from safetensors import safe_open

    with safe_open(str(dest / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}

    (dest / "quality.json").write_text("{}")  # a file of the last shipped model, not of this one
    with pytest.raises(FileNotFoundError):
        ship.ship(trained, extra_files=(tmp_path / "missing.json",))
    # a failed ship leaves the last one as it was, and nothing beside it
    assert (dest / "quality.json").is_file() and sorted(p.name for p in dest.parent.iterdir()) == ["demo"]
    ship.ship(trained)
    assert not (dest / "quality.json").exists() and not (dest / "stage-0.json").exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["demo"]
