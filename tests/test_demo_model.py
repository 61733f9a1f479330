"""The shipped demo model: load, export, and segment a fixed held-out example."""

import json

import numpy as np
import pytest

from unigs_deploy import metrics
from unigs_deploy.labels import masks_to_labels
from unigs_deploy.synthetic import shapes

torch = pytest.importorskip("torch")

from unigs_deploy import modeling  # noqa: E402

pytestmark = pytest.mark.skipif(not (modeling.demo_weights_dir() / "unet").is_dir(),
                                reason="the demo model is not in this checkout")
EXPECTED = modeling.demo_weights_dir().parent / "demo_expected.json"


def test_shipped_weights_are_small_and_fp16():
    files = [p for p in modeling.demo_weights_dir().rglob("*.safetensors")]
    assert sum(p.stat().st_size for p in files) <= 30e6
    from safetensors import safe_open

    with safe_open(str(modeling.demo_weights_dir() / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16


@pytest.mark.slow
def test_export_and_segment_a_fixed_example(tmp_path):
    from unigs_deploy.export.exporter import export_model
    from unigs_deploy.pipeline import UniGSPipeline

    model = modeling.load_demo()
    assert model.task_embedding and model.unet.dtype == torch.float32
    export_model(model, tmp_path)
    pipe = UniGSPipeline.from_engine(tmp_path / "unigs.onnx")
    expected = json.loads(EXPECTED.read_text())
    pqs = []
    for i in expected["examples"]:
        image, masks, *_ = shapes.held_out_example(i, 64)
        truth = masks_to_labels(masks, background=len(masks) + 1)
        res = pipe.segment(image, steps=expected["steps"], guidance=expected["guidance"], seed=i)
        pqs.append(metrics.panoptic_quality(res.labels, truth)["pq"])
    assert np.mean(pqs) >= expected["min_mean_pq"], pqs


@pytest.mark.slow
def test_readme_commands_run_as_written_after_make_demo(tmp_path):
    """The README's 'Use' block, verbatim but for where engines/ and demo_out/ are."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    from unigs_deploy.export.exporter import export_model

    root = Path(__file__).resolve().parents[1]
    export_model(modeling.load_demo(), tmp_path / "engines")
    (tmp_path / "demo_out").mkdir()
    readme = (root / "README.md").read_text()
    start = readme.index("After `make demo`")
    block = readme[readme.index("```sh", start) + 6: readme.index("```", readme.index("```sh", start) + 6)]
    block = block[: block.index("unigs-export")].replace(". .venv/bin/activate\n", "")
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"]}
    out = subprocess.run(["bash", "-ec", block], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(re.findall(r"^\w+: \d+ steps in", out.stdout, re.M)) == block.count("unigs-run")
