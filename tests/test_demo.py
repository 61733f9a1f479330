import json
import re

from click.testing import CliRunner

from unigs_deploy import demo, io


def test_codec_demo_writes_pngs_and_reports(tmp_path):
    res = CliRunner().invoke(demo.main, ["--codec", "--out", str(tmp_path), "--entities", "6", "--size", "128"])
    assert res.exit_code == 0, res.output
    for name in ("masks.png", "colormap.png", "colormap_noisy.png", "decoded.png", "labels.png", "masks.json"):
        assert (tmp_path / name).is_file()
        assert f"wrote {tmp_path / name}" in res.output
    pq = float(re.search(r"PQ ([0-9.]+)", res.output).group(1))
    assert pq >= 0.8  # six entities through the standard corruption decode back
    labels = io.read_labels(tmp_path / "labels.png")
    assert labels.shape == (128, 128) and labels.max() >= 5
    assert len(json.loads((tmp_path / "masks.json").read_text())) == labels.max()


def test_task_demo_runs_every_task_into_one_sheet(tiny_engine, tmp_path):
    res = CliRunner().invoke(demo.main, ["--engine", str(tiny_engine / "unigs.onnx"), "--out", str(tmp_path),
                                         "--steps", "2", "--size", "32"])
    assert res.exit_code == 0, res.output
    sheet = io.read_image(tmp_path / "demo.png")
    assert sheet.shape == (4 * (192 + 20), 4 * 192, 3)  # a row per task: four 6x-enlarged 32 px tiles, a caption bar
    for task in ("inpaint", "synthesize", "refer", "segment"):
        run = json.loads((tmp_path / task / "run.json").read_text())
        assert run["settings"]["task"] == task and run["settings"]["steps"] == 2
        assert io.read_labels(tmp_path / task / "labels.png").shape == (32, 32)
