"""unigs-run as a first-time user meets it: file modes, one run per folder, checks before any
model work, one-line errors (Ctrl-C and out-of-memory included), COCO results, notes."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from unigs_deploy import io
from unigs_deploy.cli import main


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(3)
    io.write_image(tmp_path / "image.png", rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))
    mask = np.zeros((32, 40), np.uint8)
    mask[6:22, 8:30] = 255
    io.write_image(tmp_path / "mask.png", mask)
    io.write_image(tmp_path / "gray.png", rng.integers(0, 256, (32, 40), dtype=np.uint8))
    return tmp_path


def _run(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _error(args, pattern):
    res = _run(args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines[-1].startswith("unigs-run: error:") and pattern in lines[-1], res.output
    assert "Traceback" not in res.output


def test_outputs_follow_the_umask(tiny_engine, files):
    old = os.umask(0o022)
    try:
        res = _run(["--engine", tiny_engine / "unigs.onnx", "--task", "segment", "--image", files / "image.png",
                    "--steps", "1", "--out", files / "o", "--quiet"])
        assert res.exit_code == 0, res.output
        modes = {p.name: p.stat().st_mode & 0o777 for p in (files / "o").iterdir()}
        assert modes and set(modes.values()) == {0o644}, modes
        os.umask(0o077)
        res = _run(["--engine", tiny_engine / "unigs.onnx", "--task", "segment", "--image", files / "image.png",
                    "--steps", "1", "--out", files / "p", "--quiet"])
        assert {p.stat().st_mode & 0o777 for p in (files / "p").iterdir()} == {0o600}
    finally:
        os.umask(old)


def test_a_folder_holds_one_runs_outputs(tiny_engine, files):
    common = ["--engine", tiny_engine / "unigs.onnx", "--image", files / "image.png", "--steps", "1",
              "--out", files / "o", "--quiet"]
    (files / "o").mkdir()
    (files / "o" / "mine.txt").write_text("kept")
    assert _run(common + ["--task", "refer", "--mask", files / "mask.png", "--prompt", "a star"]).exit_code == 0
    assert (files / "o" / "mask.png").is_file()
    assert _run(common + ["--task", "segment"]).exit_code == 0
    run = json.loads((files / "o" / "run.json").read_text())
    left = sorted(p.name for p in (files / "o").iterdir())
    assert left == sorted(run["files"] + ["mine.txt"]) and "mask.png" not in left


def test_masks_json_is_coco_results_and_notes_reach_run_json(tiny_engine, files):
    from pycocotools.coco import COCO

    res = _run(["--engine", tiny_engine / "unigs.onnx", "--task", "segment", "--image", files / "gray.png",
                "--steps", "1", "--out", files / "o", "--quiet", "--image-id", "7"])
    assert res.exit_code == 0, res.output
    dets = json.loads((files / "o" / "masks.json").read_text())
    labels = io.read_labels(files / "o" / "labels.png")
    assert len(dets) == labels.max() and {d["image_id"] for d in dets} == {7}
    gt = COCO()
    gt.dataset = {"images": [{"id": 7, "height": 32, "width": 40}], "annotations": [],
                  "categories": [{"id": 1, "name": "entity"}]}
    gt.createIndex()
    loaded = gt.loadRes(dets)
    assert sum(a["area"] for a in loaded.dataset["annotations"]) == (labels > 0).sum()
    notes = json.loads((files / "o" / "run.json").read_text())["notes"]
    assert any("grayscale expanded to RGB" in n for n in notes)


def test_negative_prompt_reaches_the_run_and_its_record(tiny_engine, files):
    res = _run(["--engine", tiny_engine / "unigs.onnx", "--task", "inpaint", "--image", files / "image.png",
                "--mask", files / "mask.png", "--prompt", "a red star", "--negative-prompt", "a blue square",
                "--guidance", "5", "--steps", "1", "--out", files / "o", "--quiet"])
    assert res.exit_code == 0, res.output
    settings = json.loads((files / "o" / "run.json").read_text())["settings"]
    assert settings["negative_prompt"] == "a blue square" and settings["unet_batch"] == 2


def test_guidance_interval_reaches_the_run_and_its_record(tiny_engine, files):
    common = ["--engine", tiny_engine / "unigs.onnx", "--task", "inpaint", "--image", files / "image.png",
              "--mask", files / "mask.png", "--prompt", "a red star", "--guidance", "5", "--steps", "4",
              "--out", files / "o", "--quiet"]
    res = _run(common + ["--guidance-interval", "400,1000"])
    assert res.exit_code == 0, res.output
    settings = json.loads((files / "o" / "run.json").read_text())["settings"]
    assert settings["guidance_interval"] == [400.0, 1000.0] and settings["guided_steps"] == 2
    res = _run(common + ["--guidance-interval", "700,600"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert ("Invalid value for '--guidance-interval': '700,600': give LOW,HIGH timesteps, e.g. 600,1000"
            in res.output)


def test_keep_unmasked_pastes_the_input_outside_the_mask(tiny_engine, files):
    common = ["--engine", tiny_engine / "unigs.onnx", "--task", "inpaint", "--image", files / "image.png",
              "--mask", files / "mask.png", "--prompt", "a red star", "--steps", "1", "--quiet"]
    assert _run(common + ["--out", files / "plain"]).exit_code == 0
    res = _run(common + ["--out", files / "kept", "--keep-unmasked"])
    assert res.exit_code == 0, res.output
    image, mask = io.read_image(files / "image.png"), io.read_mask(files / "mask.png")
    plain, kept = io.read_image(files / "plain" / "image.png"), io.read_image(files / "kept" / "image.png")
    assert np.array_equal(kept[~mask], image[~mask]) and np.array_equal(kept[mask], plain[mask])
    assert not np.array_equal(plain[~mask], image[~mask])
    assert json.loads((files / "kept" / "run.json").read_text())["settings"]["keep_unmasked"] is True


def test_candidates_record_the_chosen_seed_which_rebuilds_the_output(tiny_engine, files):
    common = ["--engine", tiny_engine / "unigs.onnx", "--task", "inpaint", "--image", files / "image.png",
              "--mask", files / "mask.png", "--prompt", "a red star", "--steps", "1", "--quiet", "--seed", "3"]
    res = _run(common + ["--out", files / "three", "--candidates", "3"])
    assert res.exit_code == 0, res.output
    settings = json.loads((files / "three" / "run.json").read_text())["settings"]
    assert settings["candidates"] == 3 and len(settings["agreement"]) == 3 and settings["seed"] in (3, 4, 5)
    one = common[:-1] + [str(settings["seed"]), "--out", files / "one", "--candidates", "1"]
    assert _run(one).exit_code == 0
    assert np.array_equal(io.read_image(files / "three" / "image.png"), io.read_image(files / "one" / "image.png"))
    _error(common + ["--candidates", "0"], "--candidates must be at least 1, got 0")
    # an engine without a reranker: the advice is the flag, not the Python keyword
    res = _run(common + ["--out", files / "reranked", "--candidates", "2", "--rerank"])
    last = res.output.strip().splitlines()[-1]
    assert res.exit_code == 2 and last.startswith("unigs-run: error: --rerank needs an engine exported with a reranker")
    assert last.endswith(": use --no-rerank") and "rerank=False" not in res.output and "Traceback" not in res.output


def test_parameters_are_checked_before_any_model_work(tiny_engine, files):
    onnx = tiny_engine / "unigs.onnx"
    img = ["--image", files / "image.png"]
    _error(["--engine", onnx, "--task", "segment", *img, "--guidance", "nan"], "--guidance must be a number >= 1")
    _error(["--engine", onnx, "--task", "segment", *img, "--guidance", "0"], "--guidance must be a number >= 1")
    _error(["--engine", onnx, "--task", "refer", *img, "--mask", files / "mask.png", "--prompt", " "],
           "refer needs a non-empty --prompt")
    _error(["--engine", onnx, "--task", "inpaint", *img, "--mask", files / "mask.png", "--mask", files / "mask.png",
            "--prompt", "a star"], "2 masks but 1 prompts")
    _error(["--engine", onnx, "--task", "segment", *img, "--locate", "refer"], "--locate is for inpaint only")
    _error(["--engine", onnx, "--task", "segment", *img, "--keep-unmasked"],
           "--keep-unmasked/--redraw-unmasked is for inpaint only")
    _error(["--engine", onnx, "--task", "segment", *img, "--redraw-unmasked"],
           "--keep-unmasked/--redraw-unmasked is for inpaint only")
    _error(["--engine", onnx, "--task", "segment", *img, "--candidates", "2"], "--candidates is for inpaint only")
    blocker = files / "blocker"
    blocker.write_text("x")
    # the folder is checked before the engine is even opened
    _error(["--engine", files / "none.onnx", "--task", "segment", *img, "--out", blocker / "o"], "cannot write to")


def test_missing_image_is_one_line_without_opencv_chatter(tiny_engine, files):
    out = subprocess.run([sys.executable, "-m", "unigs_deploy.cli", "--engine", str(tiny_engine / "unigs.onnx"),
                          "--task", "segment", "--image", str(files / "nope.png")], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"unigs-run: error: cannot read an image from {files / 'nope.png'}: "
                                               "no such file"]


def test_out_of_memory_is_one_line(tiny_engine, files, monkeypatch):
    from unigs_deploy import memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 10_000_000)
    _error(["--engine", tiny_engine / "unigs.onnx", "--task", "segment", "--image", files / "image.png",
            "--out", files / "o"], "are available: use --resolution native")
    assert not (files / "o" / "run.json").exists()


@pytest.mark.parametrize("after", [0.3, 2.5])
def test_ctrl_c_at_any_moment_is_one_line_and_exit_130(tiny_engine, files, after):
    proc = subprocess.Popen([sys.executable, "-m", "unigs_deploy.cli", "--engine", str(tiny_engine / "unigs.onnx"),
                             "--task", "segment", "--image", str(files / "image.png"), "--steps", "900",
                             "--resolution", "input", "--out", str(files / "o"), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # as a terminal's foreground process: a suite started in the background
                            # (`make test &`) passes SIGINT on ignored, and the child rightly keeps ignoring it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("unigs-run: interrupted")


def test_an_allocation_failure_inside_onnxruntime_is_one_line(tiny_engine, files, monkeypatch):
    """Past the memory guard (an estimate), onnxruntime's own failure still ends as one line."""

    def fail(self, names, feed):
        raise RuntimeError("Failed to allocate memory for requested buffer of size 17179869184")

    monkeypatch.setattr("onnxruntime.InferenceSession.run", fail)
    _error(["--engine", tiny_engine / "unigs.onnx", "--task", "segment", "--image", files / "image.png",
            "--out", files / "o"], "onnxruntime ran out of memory in text_encoder.onnx")
