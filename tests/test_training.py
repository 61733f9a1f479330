"""Training: coarse masks, config, data robustness, and a CI-sized run with exact resume."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("accelerate")

from unigs_deploy import tasks  # noqa: E402
from unigs_deploy.synthetic import coarse, shapes  # noqa: E402
from unigs_deploy.training import data  # noqa: E402
from unigs_deploy.training.config import ConfigError, dump_config, load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_coarse_masks_lie_around_their_entity():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(60):
        masks, _ = shapes.random_layout(rng, 96, 96, 4, min_pixels=40)
        for m in masks:
            region, ext = coarse.coarse_mask(m, rng)
            assert (region & m).sum() >= 0.95 * m.sum()
            outside = region.copy()
            outside[ext[1] : ext[3], ext[0] : ext[2]] = False
            assert not outside.any()
            checked += 1
    assert checked > 100


def test_box_and_curve_coarse_masks():
    rng = np.random.default_rng(1)
    m = np.zeros((64, 64), bool)
    m[20:40, 24:44] = True
    region, ext = coarse.coarse_mask(m, rng, curve_prob=0.0)
    assert region.sum() == (ext[2] - ext[0]) * (ext[3] - ext[1])  # the extended box itself
    smaller = 0
    for _ in range(10):
        region, ext = coarse.coarse_mask(m, rng, curve_prob=1.0)
        smaller += region.sum() < (ext[2] - ext[0]) * (ext[3] - ext[1])  # curves leave the corners out
    assert smaller >= 5


def test_examples_follow_the_input_assembly():
    rng = np.random.default_rng(2)
    img, masks, caps = shapes.shapes_image(rng, 64)
    for task in tasks.NAMES:
        ex = data.make_example(task, img, masks, caps, np.random.default_rng(3))
        if task in ("synthesize", "segment"):
            assert (ex.mask == 1).all()
        else:
            assert 0 < ex.mask.mean() < 1
        if task == "inpaint":
            assert (ex.control[ex.mask > 0] == 0).all()
        if task == "segment":
            assert ex.prompt == "" and len(np.unique(ex.colormap.reshape(-1, 3), axis=0)) == len(masks) + 1
        if task == "refer":
            assert ex.prompt in caps


def test_unknown_config_keys_fail_before_any_work(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nstepz = 3\n")
    with pytest.raises(ConfigError, match="unknown key train.stepz"):
        load_config(cfg)
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(None, ["bogus.x=1"])
    assert load_config(None, ["train.steps=7", "model.init=scale:tiny"])["train"]["steps"] == 7


def test_a_config_changes_its_base(tmp_path):
    """A stage config names the config it changes; its keys replace the base's whole."""
    (tmp_path / "stages").mkdir()
    (tmp_path / "a.toml").write_text("[model]\ninit = 'scale:tiny'\n[train]\nsteps = 9\nlr = 0.5\n"
                                     "output = 'runs/a'\ntasks = { inpaint = 1.0, segment = 1.0 }\n")
    (tmp_path / "stages" / "b.toml").write_text("base = '../a.toml'\n[train]\nlr = 0.25\noutput = 'runs/b'\n"
                                                "tasks = { refer = 1.0 }\n")
    (tmp_path / "c.toml").write_text("base = 'stages/b.toml'\n[data]\nsize = 48\n[train]\noutput = 'runs/c'\n")
    cfg = load_config(tmp_path / "c.toml", ["train.steps=11"])
    assert cfg["model"]["init"] == "scale:tiny" and cfg["data"]["size"] == 48
    assert (cfg["train"]["lr"], cfg["train"]["steps"], cfg["train"]["output"]) == (0.25, 11, "runs/c")
    assert cfg["train"]["tasks"] == {"inpaint": 0.0, "synthesize": 0.0, "refer": 1.0, "segment": 0.0}
    (tmp_path / "printed.toml").write_text(dump_config(cfg))  # what unigs-train --print-config shows
    assert load_config(tmp_path / "printed.toml") == cfg


@pytest.mark.parametrize("text, message", [
    ("base = 'nowhere.toml'\n[train]\noutput = 'x'\n", "base 'nowhere.toml' does not exist"),
    ("base = 'self.toml'\n[train]\noutput = 'x'\n", "base chain loops (self.toml -> self.toml)"),
    ("base = 3\n", "base must be the path of the config this one changes"),
    ("base = 'a.toml'\n", "set train.output: without it this run would write into its base's run folder (runs/a)"),
    ("[train]\nbase = 'a.toml'\n", "base goes at the top of the file"),
    ("base = 'typo.toml'\n[train]\noutput = 'x'\n", "typo.toml: unknown key train.stepz"),
])
def test_a_bad_base_is_one_clear_error(tmp_path, text, message):
    (tmp_path / "a.toml").write_text("[train]\noutput = 'runs/a'\n")
    (tmp_path / "typo.toml").write_text("[train]\nstepz = 3\n")
    (tmp_path / "self.toml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(tmp_path / "self.toml")


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.toml")))
def test_every_shipped_config_loads(name, tmp_path):
    cfg = load_config(ROOT / "configs" / name)
    assert cfg["train"]["output"].startswith("runs/")
    (tmp_path / name).write_text(dump_config(cfg))
    assert load_config(tmp_path / name) == cfg


def test_coco_data_skips_bad_images(tmp_path):
    ann = data.write_shapes_coco(tmp_path / "ds", 6, size=48, seed=0)
    coco = json.loads(ann.read_text())
    (tmp_path / "ds" / "images" / coco["images"][0]["file_name"]).unlink()  # missing file
    (tmp_path / "ds" / "images" / coco["images"][1]["file_name"]).write_bytes(b"\xff\xd8 not a jpeg")  # corrupt
    coco["images"].append({"id": 99, "file_name": "empty.png", "height": 48, "width": 48})  # no entity
    ann.write_text(json.dumps(coco))
    ds = data.CocoEntities(ann, size=48)
    assert len(ds) == 6 and ds.skipped["no_entity"] == 1
    src = data.ExampleSource(ds, seed=0, task_ratios={"segment": 1.0})
    for i in range(12):
        assert src.example(0, i).image.shape == (48, 48, 3)
    assert ds.skipped["unreadable"] >= 1


def _train(out, steps, *extra):
    from click.testing import CliRunner

    from unigs_deploy.training.cli import main

    args = ["--set", f"train.steps={steps}", "--set", f"train.output={out}", "--set", "train.checkpoint_every=10",
            "--set", "train.batch_size=4", "--set", "data.size=32", "--set", "train.lr=3e-4", "--quiet", *extra]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    return json.loads((out / "model" / "training.json").read_text())["losses"]


@pytest.mark.slow
def test_tiny_training_learns_resumes_exactly_and_exports(tmp_path):
    full = _train(tmp_path / "a", 30)
    assert np.mean(full[-8:]) < np.mean(full[:8])  # the loss falls
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == ["step-0000020", "step-0000030"]
    _train(tmp_path / "b", 10)
    resumed = _train(tmp_path / "b", 30, "--resume")
    assert resumed == full  # bit for bit, loss by loss

    from unigs_deploy import modeling
    from unigs_deploy.export.exporter import export_model
    from unigs_deploy.pipeline import UniGSPipeline

    export_model(modeling.load(tmp_path / "a" / "model"), tmp_path / "eng")
    res = UniGSPipeline.from_engine(tmp_path / "eng").segment(np.zeros((32, 32, 3), np.uint8), steps=2)
    assert res.labels.shape == (32, 32)


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(tmp_path):
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    if accelerate is None:
        pytest.skip("accelerate's launcher is not installed")
    cmd = [accelerate, "launch", "--num_processes", "2", "--cpu", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "unigs_deploy.training.cli", "--quiet",
           "--set", "train.steps=4", "--set", f"train.output={tmp_path / 'ddp'}", "--set", "train.batch_size=2",
           "--set", "data.size=32", "--set", "train.checkpoint_every=2"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "ddp" / "model" / "unet" / "config.json").is_file()
    assert "trained 4 steps" in out.stdout


def test_open_images_format(tmp_path):
    """A small dataset in Open Images' layout (CSV + mask PNGs at another resolution + JPEGs)."""
    import cv2

    rng = np.random.default_rng(5)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rows = ["MaskPath,ImageID,LabelName,BoxID,BoxXMin,BoxXMax,BoxYMin,BoxYMax,PredictedIoU,Clicks"]
    for i in range(3):
        img, masks, _ = shapes.shapes_image(rng, 80)
        cv2.imwrite(str(tmp_path / "images" / f"img{i}.jpg"), img[..., ::-1])
        for k, m in enumerate(masks):
            name = f"img{i}_m0k9_{k}.png"
            cv2.imwrite(str(tmp_path / "masks" / name), cv2.resize(m.astype(np.uint8) * 255, (160, 160),
                                                                  interpolation=cv2.INTER_NEAREST))
            rows.append(f"{name},img{i},/m/0k9,{k},0,1,0,1,0.9,")
    rows.append("gone.png,img9,/m/0k9,0,0,1,0,1,0.9,")  # an image that is not there
    (tmp_path / "seg.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "classes.csv").write_text("/m/0k9,Star\n")
    ds = data.OpenImagesEntities(tmp_path / "seg.csv", tmp_path / "images", tmp_path / "masks",
                                 tmp_path / "classes.csv", size=64)
    assert len(ds) == 4
    assert ds.load(3) is None and ds.skipped["unreadable"] == 1
    img, masks, caps = ds.load(0)
    assert img.shape == (64, 64, 3) and masks.shape[1:] == (64, 64) and caps[0] == "a star"
    src = data.ExampleSource(ds, seed=0, task_ratios={"inpaint": 1.0})
    assert src.example(0, 0).prompt.startswith("a star")
    with pytest.raises(ValueError, match="lacks the Open Images columns"):
        (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
        data.OpenImagesEntities(tmp_path / "bad.csv", tmp_path, tmp_path)


def test_an_image_with_300_entities_trains_with_the_largest_124(rng):
    from unigs_deploy import palette

    masks = np.zeros((300, 60, 100), bool)
    for k in range(300):  # 300 small boxes of growing size on a 60x100 grid
        y, x = divmod(k, 20)
        masks[k, y * 4: y * 4 + 1 + k % 3, x * 5: x * 5 + 1 + k % 4] = True
    image = rng.integers(0, 256, (60, 100, 3), dtype=np.uint8)
    captions = [f"thing {k}" for k in range(300)]
    kept, caps, folded = data.keep_largest(masks, captions)
    assert len(kept) == palette.MAX_ENTITIES and folded == 300 - palette.MAX_ENTITIES
    areas = masks.reshape(300, -1).sum(1)
    assert kept.reshape(len(kept), -1).sum(1).min() >= np.sort(areas)[-palette.MAX_ENTITIES]
    ex = data.make_example("segment", image, masks, captions, np.random.default_rng(0))
    assert len(np.unique(ex.colormap.reshape(-1, 3), axis=0)) == palette.MAX_ENTITIES + 1  # + background

    class Crowded:
        skipped = {"no_entity": 0, "unreadable": 0}

        def load(self, index):
            return image, masks, captions

    source = data.ExampleSource(Crowded(), seed=0, task_ratios={"segment": 1})
    source.example(0, 0)
    assert Crowded.skipped["entities_folded_into_background"] == 300 - palette.MAX_ENTITIES


def test_lr_schedules():
    from unigs_deploy.training.trainer import _lr_factor

    assert [_lr_factor(s, warm=4, total=10, cosine=False) for s in (0, 3, 9)] == [0.25, 1.0, 1.0]
    cos = [_lr_factor(s, warm=4, total=10, cosine=True) for s in (3, 4, 7, 10, 12)]
    assert cos[:2] == [1.0, 1.0] and cos[2] == pytest.approx(0.5) and cos[3:] == [0.0, 0.0]


@pytest.mark.parametrize("override, message", [
    ("train.lr_schedule=linear", "constant or cosine"),
    ("train.onestep_tasks=['segmnt']", "unknown task(s) segmnt"),
    ("train.onestep_fraction=1.5", "onestep_fraction"),
    ("train.stage=tinyvae", "unet, vae, vae_decoder or tiny_vae"),
    ("train.colormap_pixel_loss=1.0", "set train.onestep_tasks too"),
    ("train.entity_separation_loss=1.0", "set train.onestep_tasks too"),
    ("train.entity_separation_loss=-1", "entity_separation_loss must be >= 0"),
    ("train.onestep_timesteps=[]", "onestep_timesteps must be a non-empty list"),
    ("train.onestep_timesteps=[1000]", "list of integers in"),
    ("train.eval_steps=0", "eval_steps must be an integer >= 1"),
    ("train.onestep_unroll=true", "onestep_unroll applies to one-step examples below t = 999"),
    ("train.l1_weight=-1", "must be >= 0"),
    ("train.snr_gamma=-5", "snr_gamma must be >= 0"),
    ("train.caption_contrast=-1", "caption_contrast must be >= 0"),
    ("model.text_encoder_tasks=['inpant']", "unknown task(s) inpant"),
    ("model.text_encoder_tasks=['inpaint']", "needs model.train_text_encoder = true"),
    ("train.kind_loss=-1", "kind_loss must be >= 0"),
    ("train.kind_timesteps=[900, 600]", "kind_timesteps must be [low, high]"),
    ("train.kind_timesteps=[600, 1000]", "kind_timesteps must be [low, high]"),
    ("train.timestep_ranges={inpaint=[900, 600]}", "timestep_ranges must be a table of task = [low, high]"),
    ("train.timestep_ranges={inpaint=[500, 1000]}", "timestep_ranges must be a table of task = [low, high]"),
    ("train.timestep_ranges={inpant=[500, 999]}", "unknown task(s) inpant"),
    ("train.timestep_range_share=0", "timestep_range_share must be a number in (0, 1]"),
    ("model.transformer_layers=[1, 0]", "transformer_layers must be a list of integers >= 1"),
    ("model.transformer_layers=2", "transformer_layers must be a list of integers >= 1"),
    ("model.caption_pooling_heads=-1", "caption_pooling_heads must be an integer >= 0"),
    ("model.caption_pooling_heads=true", "caption_pooling_heads must be an integer >= 0"),
    ("train.caption_pooling_lr=-1", "caption_pooling_lr must be >= 0"),
    ("model.caption_pooling_gain=-0.5", "caption_pooling_gain must be a number >= 0"),
    ("model.caption_pooling_gain=1.0", "caption_pooling_gain sets the gain of pooling"),
    ("train.caption_kind_loss=-1", "caption_kind_loss must be >= 0"),
    ("data.entities=[0, 3]", "data.entities must be [fewest, most]"),
    ("data.entities=[3, 2]", "data.entities must be [fewest, most]"),
    ("data.inpaint_one_entity=1.5", "data.inpaint_one_entity must be a share in [0, 1]"),
    ("data.inpaint_one_entity='all'", "data.inpaint_one_entity must be a share in [0, 1]"),
    ("data.inpaint_one_entity=true", "data.inpaint_one_entity must be a share in [0, 1]"),
    ("data.upright=-0.1", "data.upright must be a share in [0, 1]"),
    ("data.upright=true", "data.upright must be a share in [0, 1]"),
    ("train.kind_loss_text_encoder=1", "kind_loss_text_encoder must be true or false"),
    ("train.stop_at=200", "train.stop_at must be an integer in [0, train.steps = 100]"),
    ("train.stop_at=-1", "train.stop_at must be an integer in [0, train.steps = 100]"),
    ("train.teacher='runs/x/model'", "train.teacher (or train.teachers) and train.teacher_loss go together"),
    ("train.teacher_loss=1.0", "train.teacher (or train.teachers) and train.teacher_loss go together"),
    ("train.teachers={inpaint = 'runs/x/model'}", "train.teacher (or train.teachers) and train.teacher_loss go"),
    ("train.teachers={inpant = 'runs/x/model'}", "train.teachers: unknown task(s) inpant"),
    ("train.teachers=['runs/x/model']", "train.teachers must be a table of task = \"model folder\""),
    ("train.teachers={inpaint = ''}", "train.teachers must be a table of task = \"model folder\""),
    ("train.teacher_loss=-1", "teacher_loss must be >= 0"),
    ("train.teacher_tasks=['inpant']", "train.teacher_tasks: unknown task(s) inpant"),
])
def test_new_training_options_are_checked(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def test_shapes_scenes_ask_for_data_entities():
    from unigs_deploy.training.data import ShapesOnTheFly

    one = ShapesOnTheFly(32, seed=3, entities=[1, 1])
    assert {len(one.load(i)[1]) for i in range(20)} == {1}
    counts = {len(ShapesOnTheFly(32, seed=3).load(i)[1]) for i in range(40)}
    assert max(counts) > 2


def _first_batch_timesteps(monkeypatch, overrides: list[str]):
    """The timesteps the UNet is called at on step 0's batch, and each example's task."""
    from unigs_deploy.training.trainer import Trainer

    cfg = load_config(None, ["data.size=32", *overrides])
    trainer = Trainer(cfg, progress=False)
    seen = {}

    def spy(unet_input, timesteps, *a, **k):
        seen["t"] = timesteps.clone()
        raise StopIteration

    monkeypatch.setattr(trainer.trained[0], "forward", spy)
    with pytest.raises(StopIteration):
        trainer.loss(0)
    return seen["t"], [trainer.source.example(0, i).task for i in range(len(seen["t"]))]


@pytest.mark.parametrize("timesteps", [[999], [999, 499]])
def test_onestep_tasks_train_at_their_timesteps(monkeypatch, timesteps):
    """Segment and refer examples see only train.onestep_timesteps (by default the trailing single
    step t = T - 1; [999, 499] are a 2-step trailing schedule's); the others any t."""
    import torch

    seen, tasks = _first_batch_timesteps(monkeypatch, ["train.batch_size=16", f"train.onestep_timesteps={timesteps}",
                                                       "train.onestep_tasks=['segment', 'refer']"])
    onestep = torch.tensor([x in ("segment", "refer") for x in tasks])
    assert onestep.any() and (~onestep).any()
    assert set(seen[onestep].tolist()) <= set(timesteps)
    assert not set(seen[~onestep].tolist()) & set(timesteps)


@pytest.mark.parametrize("share", [1.0, 0.5])
def test_a_tasks_timestep_range_draws_its_examples_there(monkeypatch, share):
    """train.timestep_ranges: inpaint examples at t in [900, 999] (all of them at share 1, some at
    0.5); the other tasks' and the one-step examples' timesteps are drawn as without it."""
    import torch

    def timesteps(extra):
        return _first_batch_timesteps(monkeypatch, ["train.batch_size=64", "train.onestep_tasks=['segment']",
                                                    "train.onestep_timesteps=[999]", *extra])

    plain, tasks = timesteps([])
    ranged, same = timesteps(["train.timestep_ranges={inpaint=[900, 999]}", f"train.timestep_range_share={share}"])
    assert tasks == same
    inpaint = torch.tensor([x == "inpaint" for x in tasks])
    assert inpaint.sum() >= 8 and (~inpaint).any()
    inside = (ranged >= 900) & (ranged <= 999)
    if share == 1.0:
        assert inside[inpaint].all()
    else:
        assert inside[inpaint].any() and not inside[inpaint].all()
    assert torch.equal(ranged[~inpaint], plain[~inpaint])
    assert (ranged[torch.tensor([x == "segment" for x in tasks])] == 999).all()


def test_unrolled_examples_start_from_the_models_own_first_step(monkeypatch):
    """train.onestep_unroll: a one-step example at t = 499 is fed what a 2-step trailing sampler
    feeds its second step (pure noise at t = 999, the model's x0 there, the DDIM move to 499); the
    other examples keep the noised truth; the first call builds no graph."""
    import torch

    from unigs_deploy.training.trainer import Trainer

    opts = ["train.batch_size=16", "data.size=32", "train.onestep_tasks=['segment', 'refer']",
            "train.onestep_timesteps=[999, 499]", "model.prediction_type=sample"]
    calls = []

    def run(unroll):
        trainer = Trainer(load_config(None, opts + [f"train.onestep_unroll={unroll}"]), progress=False)
        unet = trainer.trained[0]
        forward = unet.forward

        def spy(sample, timesteps, *a, **k):
            out = forward(sample, timesteps, *a, **k)
            calls.append((sample.detach().clone(), timesteps.clone(), out.sample.detach().clone(),
                          torch.is_grad_enabled()))
            return out

        monkeypatch.setattr(unet, "forward", spy)
        trainer.loss(0)
        return trainer

    run("false")
    (plain, t_plain, _, _), = calls
    calls.clear()
    trainer = run("true")
    (first, t_first, x0, grad_first), (second, t_second, _, grad_second) = calls
    later = t_second == 499
    assert later.any() and (t_second == 999).any() and torch.equal(t_second, t_plain)
    assert (t_first == 999).all() and len(first) == int(later.sum()) and not grad_first and grad_second
    ab = trainer.noise_schedule.alphas_cumprod
    eps = (first[:, :8] - ab[999].sqrt() * x0) / (1 - ab[999]).sqrt()
    assert torch.allclose(second[later, :8], ab[499].sqrt() * x0 + (1 - ab[499]).sqrt() * eps, atol=1e-5)
    assert torch.equal(second[~later], plain[~later]) and torch.equal(second[:, 8:], plain[:, 8:])
    assert not torch.allclose(second[later, :8], plain[later, :8])
    assert torch.equal(first[:, 8:], plain[later, 8:])  # the same mask and control


@pytest.mark.parametrize("option", ["train.colormap_pixel_loss", "train.entity_separation_loss"])
def test_one_step_colormap_losses_are_linear_in_their_weight(option):
    """The same batch and noise: the loss grows by weight x the term on the decoded one-step
    colormaps only (pixel: MSE + L1; separation: training/losses.py), so it is linear in the
    weight and absent when no example is one-step; both need an x0 prediction to decode."""
    from unigs_deploy.training.trainer import Trainer

    base = ["train.batch_size=8", "data.size=32", "train.onestep_tasks=['segment', 'refer']",
            "model.prediction_type=sample"]

    def loss(*extra):
        return Trainer(load_config(None, base + list(extra)), progress=False).loss(0).item()

    plain, one, two = loss(), loss(f"{option}=1.0"), loss(f"{option}=2.0")
    assert one - plain > 1e-4
    assert two - plain == pytest.approx(2 * (one - plain), rel=1e-4)
    none = ["train.onestep_fraction=0.0"]
    assert loss(*none, f"{option}=1.0") == pytest.approx(loss(*none), rel=1e-6)
    with pytest.raises(ValueError, match="prediction_type"):
        Trainer(load_config(None, base[:-1] + ["model.prediction_type=epsilon", f"{option}=1.0"]),
                progress=False).loss(0)


def test_min_snr_weighting():
    """train.snr_gamma weights each multi-step example's loss to min(SNR, gamma) times its x0 error
    whatever the prediction type, leaves one-step examples at 1, and with unit weights is the
    plain mean."""
    import torch

    from unigs_deploy.training.trainer import Trainer

    base = ["train.batch_size=8", "data.size=32", "model.prediction_type=sample"]

    def trainer(*extra):
        return Trainer(load_config(None, base + list(extra)), progress=False)

    t = torch.tensor([0, 100, 300, 500, 999])
    ab = trainer().noise_schedule.alphas_cumprod[t]
    snr = ab / (1 - ab)
    want = snr.clamp(max=5.0)
    weighted = trainer("train.snr_gamma=5")
    assert torch.allclose(weighted._snr_weight(t, "sample"), want)
    assert torch.allclose(weighted._snr_weight(t, "epsilon") * snr, want)  # eps error = SNR x x0 error
    assert torch.allclose(weighted._snr_weight(t, "v_prediction") * (snr + 1), want)
    assert want[0] == 5.0 and want[-1] < 0.01

    plain = trainer().loss(0).item()
    assert weighted.loss(0).item() != pytest.approx(plain, rel=1e-3)
    weighted._snr_weight = lambda timesteps, kind: torch.ones(len(timesteps))
    assert weighted.loss(0).item() == pytest.approx(plain, rel=1e-6)
    onestep = ["train.tasks={segment = 1.0}", "train.onestep_tasks=['segment']"]
    assert trainer(*onestep, "train.snr_gamma=5").loss(0).item() == pytest.approx(trainer(*onestep).loss(0).item(),
                                                                               rel=1e-6)


@pytest.mark.parametrize("trains, learns", [("['refer']", True), ("['inpaint']", False)])
def test_text_encoder_learns_only_from_its_tasks(trains, learns):
    """model.text_encoder_tasks: refer's prompts still reach the UNet, but train the text encoder
    only when refer is listed."""
    from unigs_deploy.training.trainer import Trainer

    trainer = Trainer(load_config(None, ["train.batch_size=4", "data.size=32", "train.tasks={refer = 1.0}",
                                         "train.cfg_dropout=0.0", "model.train_text_encoder=true",
                                         f"model.text_encoder_tasks={trains}"]), progress=False)
    trainer.loss(0).backward()
    grads = [p.grad for p in trainer.trained[1].parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads) == learns
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.trained[0].parameters())


def test_kind_swapped_prompts():
    """The wrong prompt of train.caption_contrast: one entity's kind replaced by another, the rest
    as it was; nothing for captions without a kind; inpaint examples carry one, others none."""
    rng = np.random.default_rng(0)
    captions = ["a red star", "an orange ellipse"]
    for _ in range(20):
        wrong = data.kind_swapped(captions, rng).split(", ")
        changed = [(a, b) for a, b in zip(captions, wrong, strict=True) if a != b]
        assert len(changed) == 1
        (a, b), = changed
        assert a.split()[:-1] == b.split()[:-1] and b.split()[-1] in shapes.KINDS and a.split()[-1] != b.split()[-1]
    assert data.kind_swapped(["a person", "a dog"], rng) == ""
    image, masks, caps = shapes.shapes_image(np.random.default_rng(1), 32)
    for task in tasks.NAMES:
        ex = data.make_example(task, image, masks, caps, np.random.default_rng(2))
        assert bool(ex.negative) == (task == "inpaint")


def test_inpaint_one_entity_names_one_kind_and_leaves_the_default_draws_alone():
    """data.inpaint_one_entity = 1: every inpaint example fills one region and carries the kind its
    caption names; at 0 the examples are exactly those drawn before the option existed."""
    picked = {0.0: [], 1.0: []}
    for seed in range(30):
        image, masks, caps = shapes.shapes_image(np.random.default_rng(seed), 32, 3, 4)
        for share in picked:
            ex = data.make_example("inpaint", image, masks, caps, np.random.default_rng(seed),
                                   inpaint_one_entity=share)
            picked[share].append(ex)
        rng = np.random.default_rng(seed)  # the draws of the code before the option: no share drawn
        before = np.sort(rng.choice(len(masks), int(rng.integers(1, min(len(masks), 4) + 1)), replace=False))
        assert picked[0.0][-1].prompt == ", ".join(caps[i] for i in before)
    for ex in picked[1.0]:
        assert ", " not in ex.prompt and ex.kind == shapes.KINDS.index(ex.prompt.split()[-1])
    assert sum(ex.kind < 0 for ex in picked[0.0]) > 10  # most default examples fill several regions


def test_upright_draws_unrotated_shapes_and_leaves_the_default_layouts_alone():
    """data.upright = 1: every shape unrotated (a lone rectangle fills its bounding box); at 0 the
    layouts are those drawn before the option existed (pinned from commit 990015b's shapes.py)."""
    image, masks, caps = shapes.shapes_image(np.random.default_rng(0), 64)
    assert [int(m.sum()) for m in masks] == [97, 314, 140, 110, 247, 1080]
    assert caps == ["an orange triangle", "a gray triangle", "a purple triangle", "a blue ellipse",
                    "a white triangle", "a white rectangle"]
    fill = {0.0: [], 1.0: []}
    for seed in range(200):
        for share in fill:
            (m,), (kind,) = shapes.random_layout(np.random.default_rng(seed), 64, 64, 1, min_pixels=64,
                                                 upright=share)
            if kind == "rectangle":
                ys, xs = np.nonzero(m)
                fill[share].append(m.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1)))
    assert len(fill[1.0]) > 20 and min(fill[1.0]) > 0.95
    assert np.mean(fill[0.0]) < 0.85
    _, world_masks, world_caps = data.ShapesOnTheFly(64, seed=3, upright=1.0).load(5)
    _, upright_masks, upright_caps = shapes.shapes_image(np.random.default_rng([3, 5]), 64, upright=1.0)
    assert world_caps == upright_caps and np.array_equal(world_masks, upright_masks)


def test_caption_contrast_adds_a_logistic_term_on_inpaint_examples(monkeypatch):
    """The same inputs denoised under a wrong prompt: with the wrong prompt equal to the true one
    the term is exactly log 2 per weight; prompts dropped for classifier-free guidance take no part;
    the loss falls as the true prompt's error falls below the wrong one's."""
    import math

    import torch

    from unigs_deploy.training import losses
    from unigs_deploy.training.trainer import Trainer

    base = ["train.batch_size=4", "data.size=32", "train.tasks={inpaint = 1.0}"]
    example = data.ExampleSource.example

    def same_prompt(self, step, i):
        ex = example(self, step, i)
        return data.Example(ex.task, ex.image, ex.colormap, ex.control, ex.mask, ex.prompt, ex.prompt)

    monkeypatch.setattr(data.ExampleSource, "example", same_prompt)

    def loss(*extra):
        return Trainer(load_config(None, base + list(extra)), progress=False).loss(0).item()

    plain = loss("train.cfg_dropout=0.0")
    with_term = loss("train.cfg_dropout=0.0", "train.caption_contrast=2.0")
    assert with_term - plain == pytest.approx(2 * math.log(2), rel=1e-4)
    assert loss("train.cfg_dropout=1.0", "train.caption_contrast=2.0") == pytest.approx(loss("train.cfg_dropout=1.0"))
    even = losses.caption_contrast(torch.tensor([1.0]), torch.tensor([1.0]))
    assert losses.caption_contrast(torch.tensor([0.8]), torch.tensor([1.0])) < even < \
        losses.caption_contrast(torch.tensor([1.0]), torch.tensor([0.8]))


def _two_entity_colormap(left=(255, 0, 0), right=(0, 64, 255)):
    import torch

    x = torch.zeros(1, 3, 8, 8)
    x[0, :, :, :4] = torch.tensor(left)[:, None, None] / 127.5 - 1
    x[0, :, :, 4:] = torch.tensor(right)[:, None, None] / 127.5 - 1
    return x


def test_entity_separation_is_zero_at_the_truth_and_punishes_a_blend():
    """The truth scores 0 (push margin from the truth's own colours); two entities decoded to one
    blended colour are pushed apart; noise within PULL_MARGIN costs nothing, beyond it does."""
    import torch

    from unigs_deploy.training.losses import PULL_MARGIN, entity_separation

    truth = _two_entity_colormap()
    assert entity_separation(truth, truth).item() == 0.0
    blend = truth.mean(dim=3, keepdim=True).expand_as(truth).clone()
    blend[0, 0, :, :4] += 0.01  # a near blend (an exact one is a saddle: no direction to push in)
    blend.requires_grad_(True)
    loss = entity_separation(blend, truth)
    assert loss.item() == pytest.approx((1.0 - 0.01) ** 2, abs=1e-5)  # colours > 1 apart: want PUSH_CAP
    loss.backward()
    left, right = blend.grad[0, :, 0, 0], blend.grad[0, :, 0, 7]
    assert torch.dot(left, right) < 0  # the two halves move in opposite directions
    flat = truth.clone()
    flat[0, 0, 0, 0] += PULL_MARGIN / 2
    assert entity_separation(flat, truth).item() == 0.0
    flat[0, 0, 0, 0] += PULL_MARGIN
    assert entity_separation(flat, truth).item() > 0.0
    close = _two_entity_colormap((255, 0, 0), (255, 64, 0))  # 64 levels apart: pushed to 64, not 128
    assert entity_separation(close, close).item() == pytest.approx(0.0, abs=1e-9)


def test_vae_decoder_stage_keeps_the_latent_space(tmp_path):
    """Only the decoder learns: the encoder and the scaling factor (what a trained UNet was trained
    on) come out bit for bit as they went in."""
    import torch

    from unigs_deploy import modeling

    _train(tmp_path / "base", 1)
    _train(tmp_path / "dec", 3, "--set", "train.stage=vae_decoder", "--set",
           f"model.init={tmp_path / 'base' / 'model'}", "--set", "train.l1_weight=1.0", "--set", "train.ema_decay=0.0")
    before, after = modeling.load(tmp_path / "base" / "model").vae, modeling.load(tmp_path / "dec" / "model").vae
    for name in ("encoder", "quant_conv"):
        for (k, a), b in zip(getattr(before, name).state_dict().items(), getattr(after, name).state_dict().values(),
                             strict=True):
            assert torch.equal(a, b), f"{name}.{k} changed"
    assert not torch.equal(before.decoder.conv_out.weight, after.decoder.conv_out.weight)
    assert after.config.scaling_factor == before.config.scaling_factor


def test_text_encoder_keeps_learning_after_a_held_out_evaluation(tmp_path):
    """The evaluation at step 0 builds a model from the live text encoder; it once froze it
    (requires_grad off) for the rest of the run, so stages 4 and 7 shipped it untouched."""
    import torch

    from unigs_deploy import modeling

    _train(tmp_path / "base", 1)
    _train(tmp_path / "te", 2, "--set", f"model.init={tmp_path / 'base' / 'model'}", "--set",
           "model.train_text_encoder=true", "--set", "train.eval_every=2", "--set", "train.eval_images=1")
    before = modeling.load(tmp_path / "base" / "model").text_encoder.state_dict()
    after = modeling.load(tmp_path / "te" / "model").text_encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_a_text_encoder_from_another_model_stays_frozen(tmp_path):
    """model.text_encoder mixes stages: the UNet comes from the init and learns, the text encoder
    comes from the other folder and leaves the run bit for bit as it came in."""
    import torch

    from unigs_deploy import modeling

    _train(tmp_path / "a", 1)
    _train(tmp_path / "b", 1, "--set", "model.seed=1")
    _train(tmp_path / "mix", 2, "--set", f"model.init={tmp_path / 'a' / 'model'}", "--set",
           f"model.text_encoder={tmp_path / 'b' / 'model'}")
    a, b, mix = (modeling.load(tmp_path / d / "model") for d in ("a", "b", "mix"))
    want, got = b.text_encoder.state_dict(), mix.text_encoder.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert any(not torch.equal(a.text_encoder.state_dict()[k], want[k]) for k in want)  # a real swap
    assert not torch.equal(a.unet.conv_in.weight, mix.unet.conv_in.weight)


def test_a_missing_or_unfitting_text_encoder_is_one_clear_error(tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModel

    from unigs_deploy.training.trainer import _model

    cfg = load_config(None, ["model.init=scale:tiny", f"model.text_encoder={tmp_path}"])
    with pytest.raises(ValueError, match="holds no text encoder"):
        _model(cfg)
    init = _model(load_config(None, ["model.init=scale:tiny"])).text_encoder.config
    wider = CLIPTextConfig(vocab_size=init.vocab_size, hidden_size=2 * init.hidden_size, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=2)
    CLIPTextModel(wider).save_pretrained(tmp_path / "text_encoder")
    with pytest.raises(ValueError, match="hidden_size 64 but the init's text encoder 32"):
        _model(cfg)


def test_stages_join_into_one_curve(tmp_path):
    """unigs-train --plot RUN...: each stage's steps follow the one before; a step-0 evaluation
    that repeats the previous stage's last is dropped, one that differs (a changed model) kept."""
    from click.testing import CliRunner

    from unigs_deploy.training.cli import main
    from unigs_deploy.training.curves import join

    def run(name, loss, evals):
        (tmp_path / name).mkdir()
        (tmp_path / name / "curves.json").write_text(json.dumps({
            "loss": loss, "eval": [{"step": s, "segment_pq": q, "refer_miou": 0.5} for s, q in evals],
            "eval_settings": {"steps": 2}, "eval_images": 24}))
        return tmp_path / name

    a = run("a", [[10, 1.0], [20, 0.9]], [(0, 0.1), (20, 0.2)])
    b = run("b", [[10, 0.8], [30, 0.7]], [(0, 0.2), (30, 0.3)])  # step 0 = a's last: the same model
    c = run("c", [[10, 0.6]], [(0, 0.25), (10, 0.4)])  # step 0 differs: the model changed
    j = join([a, b, c])
    assert j["loss"] == [[10, 1.0], [20, 0.9], [30, 0.8], [50, 0.7], [60, 0.6]]
    assert [(e["step"], e["segment_pq"]) for e in j["eval"]] == [(0, 0.1), (20, 0.2), (50, 0.3), (50, 0.25),
                                                                   (60, 0.4)]
    assert j["boundaries"] == [(0, "a"), (20, "b"), (50, "c")] and j["eval_images"] == 24
    res = CliRunner().invoke(main, ["--plot", str(tmp_path / "joined.png"), str(a), str(b), str(c)])
    assert res.exit_code == 0 and (tmp_path / "joined.png").read_bytes()[:4] == b"\x89PNG"
    res = CliRunner().invoke(main, ["--plot", str(tmp_path / "x.png"), str(a), str(tmp_path / "none")])
    assert res.exit_code == 2 and "none/curves.json does not exist" in res.output
    res = CliRunner().invoke(main, ["a.toml", "b.toml"])
    assert res.exit_code == 2 and "one CONFIG at a time" in res.output


@pytest.mark.slow
def test_curves_and_a_distilled_tiny_vae(tmp_path):
    """eval_every writes held-out quality to curves.json; the tiny_vae stage distils an
    AutoencoderTiny that the exported engine carries and the runtime uses."""
    _train(tmp_path / "a", 4, "--set", "train.eval_every=2", "--set", "train.eval_images=2",
           "--set", "train.log_every=2")
    curves = json.loads((tmp_path / "a" / "curves.json").read_text())
    assert [e["step"] for e in curves["eval"]] == [0, 2, 4]
    assert all(0 <= e["segment_pq"] <= 1 and 0 <= e["refer_miou"] <= 1 for e in curves["eval"])
    # the decoder split each point used (a random init model has no task defaults: the codec's)
    assert curves["eval"][0]["decoder"] == {t: {"stop": "centres", "threshold": 32.0} for t in ("segment", "refer")}
    assert [s for s, _ in curves["loss"]] == [2, 4]
    assert (tmp_path / "a" / "curves.png").stat().st_size > 1000

    _train(tmp_path / "t", 4, "--set", "train.stage=tiny_vae", "--set", f"model.init={tmp_path / 'a' / 'model'}")
    from unigs_deploy import modeling
    from unigs_deploy.export.exporter import export_model
    from unigs_deploy.pipeline import UniGSPipeline

    model = modeling.load(tmp_path / "t" / "model")
    assert model.tiny_vae is not None
    manifest = export_model(model, tmp_path / "eng")
    assert {"tiny_vae_encoder", "tiny_vae_decoder"} <= set(manifest.components)
    res = UniGSPipeline.from_engine(tmp_path / "eng").segment(np.zeros((32, 32, 3), np.uint8), tiny_vae="all")
    assert res.settings["tiny_vae"] == "all"


def test_a_dataset_mix_serves_each_task_from_its_datasets(tmp_path):
    """Two datasets per task (the paper's kind of split); examples are reproducible."""
    from unigs_deploy.synthetic.coco import write_dataset
    from unigs_deploy.training.trainer import _dataset

    a = data.write_shapes_coco(tmp_path / "a", 6, size=32, seed=1)
    b = data.write_shapes_coco(tmp_path / "b", 6, size=32, seed=2)
    refs = write_dataset(tmp_path / "r", 4, 32)["refs_json"]
    sets = ("--set", "data.size=32", "--set", "train.batch_size=2")
    mix = (f"data.datasets=[{{name='a', kind='coco', annotations='{a}', tasks={{segment=1, inpaint=1}}}}, "
           f"{{name='b', kind='coco', annotations='{b}', tasks={{segment=1, synthesize=1, refer=1}}}}, "
           f"{{name='refs', kind='refer', annotations='{refs}', tasks={{refer=1}}}}]")
    cfg = load_config(None, [s for s in sets if s != "--set"] + [mix])
    mixed = _dataset(cfg)
    assert [n for n, _, _ in mixed.named] == ["a", "b", "refs"]
    np.testing.assert_allclose(mixed.by_task["refer"], [0, 0.5, 0.5])
    source = data.ExampleSource(mixed, seed=0, task_ratios=cfg["train"]["tasks"])
    seen = [source.example(s, i) for s in range(6) for i in range(4)]
    assert {e.task for e in seen} == set(tasks.NAMES)
    again = data.ExampleSource(_dataset(cfg), seed=0, task_ratios=cfg["train"]["tasks"])
    assert all(np.array_equal(e.image, again.example(s, i).image) for (s, i), e in
               zip([(s, i) for s in range(6) for i in range(4)], seen, strict=True))
    refer_from_refs = [e for e in seen if e.task == "refer" and e.prompt in
                       {r["sentence"] for r in json.loads(refs.read_text())["refs"]}]
    assert refer_from_refs  # the refer JSON served some refer examples

    # it trains and resumes exactly
    full = _train(tmp_path / "m1", 4, "--set", mix)
    _train(tmp_path / "m2", 2, "--set", mix, "--set", "train.checkpoint_every=2")
    assert _train(tmp_path / "m2", 4, "--set", mix, "--set", "train.checkpoint_every=2", "--resume") == full


@pytest.mark.parametrize("mix, message", [
    ("data.datasets=[{kind='coco', tasks={segmnt=1}}]", "unknown task(s) segmnt"),
    ("data.datasets=[{kind='coco', tasks={segment=1}, path='x'}]", "unknown key(s) path"),
    ("data.datasets=[{kind='coco'}]", "needs kind and tasks"),
    ("data.datasets=[{kind='coco', tasks={segment=1}}]", "no dataset in data.datasets serves inpaint, refer"),
    ("data.datasets=[{kind='coco', tasks={segment=1}, entities=[1, 1]}]", "entities and upright shape the shapes"),
    ("data.datasets=[{kind='shapes', tasks={segment=1}, entities=[2, 1]}]", "(unnamed).entities must be"),
    ("data.datasets=[{kind='shapes', tasks={segment=1}, upright=2}]", "(unnamed).upright must be a share in"),
])
def test_bad_mixes_are_one_clear_error(mix, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [mix])


def test_a_mix_of_shapes_worlds_keeps_each_worlds_entities():
    """One-entity scenes for inpaint beside full scenes for every task (stage 30's interleave)."""
    from unigs_deploy.training.trainer import _dataset

    mix = ("data.datasets=[{name='one', kind='shapes', entities=[1, 1], tasks={inpaint=1}}, "
           "{name='scenes', kind='shapes', entities=[3, 4], tasks={inpaint=1, segment=1, synthesize=1, refer=1}}]")
    cfg = load_config(None, ["data.size=32", mix])
    mixed = _dataset(cfg)
    counts = {name: {len(ds.load(i)[1]) for i in range(8)} for name, ds, _ in mixed.named}
    assert counts["one"] == {1}
    assert counts["scenes"] <= {3, 4}


def test_coco_panoptic_as_training_data(tmp_path):
    """Every non-crowd panoptic segment (things and stuff) is an entity with its category as caption."""
    from unigs_deploy.synthetic.coco import write_dataset
    from unigs_deploy.training.trainer import _dataset

    paths = write_dataset(tmp_path / "p", 3, 32)
    cfg = load_config(None, ["data.kind=panoptic", f"data.annotations={paths['panoptic_json']}",
                             f"data.masks={paths['panoptic_dir']}", f"data.images={paths['images']}", "data.size=32"])
    ds = _dataset(cfg)
    image, masks, captions = ds.load(0)
    truth = shapes.held_out_example(0, 32)[1]
    assert image.shape == (32, 32, 3) and len(masks) == len(truth) + 1  # the shapes and the background
    assert captions[:len(truth)] == ["a shape"] * len(truth) and captions[-1] == "a background"
    np.testing.assert_array_equal(masks[: len(truth)], truth)
    with pytest.raises(ValueError, match="needs data.masks"):
        _dataset(load_config(None, ["data.kind=panoptic", f"data.annotations={paths['panoptic_json']}"]))


def test_transformer_layers_deepen_the_init_and_survive_save_load(tmp_path):
    """model.transformer_layers: the trainer's UNet has the asked depths, starts as the init did,
    and the saved folder loads back at that depth (what export and ship read)."""
    import torch

    from unigs_deploy import modeling
    from unigs_deploy.training.trainer import Trainer

    base = ["train.batch_size=2", "data.size=32"]
    plain = Trainer(load_config(None, base), progress=False)
    deep = Trainer(load_config(None, base + ["model.transformer_layers=[3, 1]"]), progress=False)
    assert deep.model.unet.config.transformer_layers_per_block == [3, 1]
    assert modeling.count_parameters(deep.model.unet) > modeling.count_parameters(plain.model.unet)
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(1, 13, 8, 8, generator=g), torch.randn(1, 6, 32, generator=g)
    with torch.no_grad():
        args = (x, torch.tensor([500]), text)
        kw = {"class_labels": torch.tensor([1])}
        assert torch.equal(deep.model.unet(*args, **kw).sample, plain.model.unet(*args, **kw).sample)
    modeling.save(deep.model, tmp_path / "model")
    back = modeling.load(tmp_path / "model").unet
    assert back.config.transformer_layers_per_block == [3, 1]
    assert len(back.down_blocks[0].attentions[0].transformer_blocks) == 3


def test_caption_pooling_trains_and_survives_save_load(tmp_path):
    """model.caption_pooling_heads: the trainer's UNet pools the caption, its pooling learns (the
    zero gain moves in a step), at train.caption_pooling_lr if set, and the saved folder loads back
    pooling (what export and ship read)."""
    from unigs_deploy import modeling
    from unigs_deploy.training.trainer import Trainer

    base = ["train.batch_size=2", "data.size=32", "train.steps=2", "train.lr=1e-2", "train.warmup_steps=0",
            "train.checkpoint_every=100", f"train.output={tmp_path / 'run'}", "model.caption_pooling_heads=4"]
    cfg = load_config(None, base)
    trainer = Trainer(cfg, progress=False)
    assert trainer.model.unet.config.addition_embed_type == "text"
    fast = Trainer(load_config(None, [*base, "train.caption_pooling_lr=0.5"]), progress=False)
    groups = fast.optimizer.param_groups
    assert [g["initial_lr"] for g in groups] == [1e-2, 0.5]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in fast.model.unet.add_embedding.parameters()}
    with pytest.raises(ValueError, match=r"caption_pooling_lr needs a UNet that pools the caption"):
        Trainer(load_config(None, [*base[:-1], "train.caption_pooling_lr=0.5"]), progress=False)
    trainer.train()
    assert trainer.model.unet.add_embedding.norm2.weight.abs().max() > 0
    back = modeling.load(tmp_path / "run" / "model").unet
    assert back.config.addition_embed_type == "text" and back.config.addition_embed_type_num_heads == 4


def test_stop_at_ends_the_run_early_on_the_full_schedule(tmp_path):
    """train.stop_at: the run ends there, its learning rate where train.steps' schedule has it."""
    from unigs_deploy.training.trainer import Trainer, _lr_factor

    cfg = load_config(None, ["train.batch_size=2", "data.size=32", "train.steps=6", "train.stop_at=2",
                             "train.warmup_steps=1", "train.lr_schedule=cosine", "train.checkpoint_every=0",
                             f"train.output={tmp_path / 'run'}"])
    trainer = Trainer(cfg, progress=False)
    trainer.train()
    assert trainer.step == 2 and (tmp_path / "run" / "model" / "unet").is_dir()
    want = cfg["train"]["lr"] * _lr_factor(2, warm=1, total=6, cosine=True)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(want)
    assert want < cfg["train"]["lr"] * 0.99  # a 2-step schedule would end at 0, a constant one at lr


def test_caption_kind_loss_probes_the_pooled_caption_and_resumes(tmp_path):
    """train.caption_kind_loss: a linear probe on the pooled caption is asked the kind a one-entity
    inpaint caption names; the term adds to the loss, the probe learns, and a resume restores it."""
    import torch

    from unigs_deploy.training.trainer import Trainer

    base = ["train.batch_size=4", "data.size=32", "data.entities=[1, 1]", "data.max_entities=1",
            "train.tasks={inpaint = 1.0}", "train.cfg_dropout=0.0", "model.caption_pooling_heads=4",
            "model.caption_pooling_gain=1.0", "train.steps=2", "train.checkpoint_every=2",
            "train.warmup_steps=0", f"train.output={tmp_path / 'run'}"]
    plain = Trainer(load_config(None, base), progress=False).loss(0).item()
    trainer = Trainer(load_config(None, [*base, "train.caption_kind_loss=1.0"]), progress=False)
    assert trainer.loss(0).item() > plain + 0.5  # cross-entropy of 4 kinds starts near ln 4
    start = trainer.kind_head.weight.detach().clone()
    trainer.train()
    assert not torch.equal(trainer.kind_head.weight, start)
    back = Trainer(load_config(None, [*base, "train.caption_kind_loss=1.0"]), progress=False, resume=True)
    assert torch.equal(back.kind_head.weight, trainer.kind_head.weight)
    # the next stage, started from this one's model, goes on with its probe (which is not shipped)
    model = tmp_path / "run" / "model"
    assert (model / "kind_probe.pt").is_file()
    nxt = Trainer(load_config(None, [*base, "train.caption_kind_loss=1.0", f"model.init={model}",
                                     f"train.output={tmp_path / 'next'}"]), progress=False)
    assert torch.equal(nxt.kind_head.weight, trainer.kind_head.weight)
    from unigs_deploy import modeling

    modeling.save(modeling.load(model), tmp_path / "saved")
    assert not (tmp_path / "saved" / "kind_probe.pt").exists()
    with pytest.raises(ValueError, match=r"caption_kind_loss needs a UNet that pools the caption"):
        Trainer(load_config(None, [*base[:-6], "train.caption_kind_loss=1.0"]), progress=False)


def test_zero_terminal_snr_reaches_the_runtime_schedule(tmp_path):
    """model.zero_terminal_snr: x_T is the noise alone in training, and the scheduler config the
    model folder keeps (what export loads and writes into the manifest) gives the runtime the
    same schedule."""
    import torch

    from unigs_deploy import modeling
    from unigs_deploy.scheduler import make_scheduler
    from unigs_deploy.training.trainer import Trainer

    base = ["train.batch_size=2", "data.size=32", "model.prediction_type=sample"]
    plain = Trainer(load_config(None, base), progress=False)
    zero = Trainer(load_config(None, base + ["model.zero_terminal_snr=true"]), progress=False)
    assert plain.noise_schedule.alphas_cumprod[-1] > 1e-3
    assert zero.noise_schedule.alphas_cumprod[-1] == 0.0
    x0, noise = torch.ones(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
    assert torch.equal(zero.noise_schedule.add_noise(x0, noise, torch.tensor([999])), noise)
    modeling.save(zero.model, tmp_path / "model")
    saved = modeling.load(tmp_path / "model").scheduler_config
    assert saved["rescale_betas_zero_snr"] is True
    runtime = make_scheduler("ddim", saved)
    assert np.allclose(runtime.alphas_cumprod, zero.noise_schedule.alphas_cumprod.numpy(), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match=re.escape('model.zero_terminal_snr needs model.prediction_type = "sample"')):
        Trainer(load_config(None, ["model.prediction_type=epsilon", "model.zero_terminal_snr=true"]), progress=False)


def test_a_teacher_pulls_its_tasks_predictions_toward_its_own(tmp_path):
    """train.teacher: the init as its own teacher adds exactly nothing (same weights, same input,
    same prediction); a teacher whose UNet differs adds a term linear in train.teacher_loss, only
    when examples of train.teacher_tasks are in the batch; a teacher whose VAE is the student's
    rounded to fp16 (a shipped copy) is accepted, one with another VAE (another latent space) or
    another UNet shape is one clear error before any step."""
    import torch

    from unigs_deploy import modeling
    from unigs_deploy.training.trainer import Trainer

    same = modeling.build("tiny", task_embedding=True, seed=0)
    modeling.save(same, tmp_path / "same")
    with torch.no_grad():
        same.unet.conv_out.bias.add_(0.05)
    modeling.save(same, tmp_path / "moved")
    rounded = modeling.build("tiny", task_embedding=True, seed=0)
    with torch.no_grad():
        for w in rounded.vae.parameters():
            w.copy_(w.half().float())
    modeling.save(rounded, tmp_path / "rounded")
    modeling.save(modeling.build("tiny", task_embedding=True, seed=1), tmp_path / "other-vae")
    modeling.save(modeling.build("tiny", task_embedding=False, seed=0), tmp_path / "no-labels")
    base = ["train.batch_size=6", "data.size=32", "train.tasks={inpaint = 1.0, segment = 1.0}"]

    def loss(*extra, teacher=None, weight=1.0):
        more = [f"train.teacher={tmp_path / teacher}", f"train.teacher_loss={weight}"] if teacher else []
        return Trainer(load_config(None, base + more + list(extra)), progress=False).loss(0).item()

    plain = loss()
    assert loss(teacher="same") == plain
    assert loss(teacher="rounded") == plain  # a VAE shipped in fp16 is the same latent space
    one, two = loss(teacher="moved"), loss(teacher="moved", weight=2.0)
    assert one - plain > 1e-4
    assert two - plain == pytest.approx(2 * (one - plain), rel=1e-4)
    segment_only = ["train.tasks={segment = 1.0}"]
    assert loss(*segment_only, teacher="moved") == loss(*segment_only)
    with pytest.raises(modeling.ModelError, match="VAE differs from the student's"):
        loss(teacher="other-vae")
    with pytest.raises(modeling.ModelError, match="num_class_embeds None, the student's 4"):
        loss(teacher="no-labels")
    with pytest.raises(modeling.ModelError, match="distil between models that predict the same thing"):
        loss("model.prediction_type=sample", teacher="same")


def test_each_task_can_have_its_own_teacher(tmp_path):
    """train.teachers = {task = folder}: a task's examples are pulled toward its own teacher only. One
    teacher for inpaint is train.teacher's term exactly; with a second (unmoved) teacher on segment
    the term is averaged over both tasks' examples, so the moved teacher's share shrinks by the
    batch's inpaint count over the two; a task named by both keys is one clear error, and a teacher's
    error names the setting that gave its folder."""
    import torch

    from unigs_deploy import modeling
    from unigs_deploy.training.trainer import Trainer

    same = modeling.build("tiny", task_embedding=True, seed=0)
    modeling.save(same, tmp_path / "same")
    with torch.no_grad():
        same.unet.conv_out.bias.add_(0.05)
    modeling.save(same, tmp_path / "moved")
    base = ["train.batch_size=6", "data.size=32", "train.tasks={inpaint = 1.0, segment = 1.0}",
            "train.teacher_loss=1.0"]

    def trainer(*extra):
        return Trainer(load_config(None, base + list(extra)), progress=False)

    plain = Trainer(load_config(None, base[:3]), progress=False).loss(0).item()
    one = trainer(f"train.teacher={tmp_path / 'moved'}").loss(0).item()
    assert trainer(f"train.teachers={{inpaint = '{tmp_path / 'moved'}'}}").loss(0).item() == one
    both = trainer(f"train.teacher={tmp_path / 'moved'}", f"train.teachers={{segment = '{tmp_path / 'same'}'}}")
    tasks = [both.source.example(0, i).task for i in range(6)]
    assert 0 < tasks.count("inpaint") < 6
    assert both.teachers["inpaint"] is not both.teachers["segment"]
    expected = (one - plain) * tasks.count("inpaint") / 6
    assert both.loss(0).item() - plain == pytest.approx(expected, rel=1e-4)
    shared = trainer(f"train.teachers={{inpaint = '{tmp_path / 'moved'}', segment = '{tmp_path / 'moved'}'}}")
    assert shared.teachers["inpaint"] is shared.teachers["segment"]
    with pytest.raises(ConfigError, match="train.teachers and train.teacher both teach inpaint"):
        trainer(f"train.teacher={tmp_path / 'moved'}", f"train.teachers={{inpaint = '{tmp_path / 'same'}'}}")
    modeling.save(modeling.build("tiny", task_embedding=True, seed=1), tmp_path / "other-vae")
    with pytest.raises(modeling.ModelError, match=r"^train\.teachers\.segment: .*other-vae's VAE differs"):
        trainer(f"train.teachers={{segment = '{tmp_path / 'other-vae'}'}}")


def test_a_task_can_weigh_its_teacher_term_on_its_own(tmp_path):
    """train.teacher_weights = {task = weight}: each taught example's term at its task's weight, the
    others at teacher_loss. Every taught task at teacher_loss's value is the plain term; weight 0
    turns a task's pull off; a weight for a task no teacher teaches is one clear error."""
    import torch

    from unigs_deploy import modeling
    from unigs_deploy.training.trainer import Trainer

    model = modeling.build("tiny", task_embedding=True, seed=0)
    with torch.no_grad():
        model.unet.conv_out.bias.add_(0.05)
    modeling.save(model, tmp_path / "moved")
    moved = str(tmp_path / "moved")
    base = ["train.batch_size=6", "data.size=32", "train.tasks={inpaint = 1.0, segment = 1.0}"]
    taught = [*base, "train.teacher_loss=2.0", f"train.teachers={{inpaint = '{moved}', segment = '{moved}'}}"]

    def loss(*extra):
        return Trainer(load_config(None, list(extra)), progress=False).loss(0).item()

    plain, scalar = loss(*base), loss(*taught)
    assert scalar - plain > 1e-4
    assert loss(*taught, "train.teacher_weights={inpaint = 2.0, segment = 2.0}") == pytest.approx(scalar, rel=1e-6)
    inpaint_off = loss(*taught, "train.teacher_weights={inpaint = 0.0}")
    segment_off = loss(*taught, "train.teacher_weights={segment = 0}")
    assert plain < inpaint_off < scalar and plain < segment_off < scalar
    assert (inpaint_off - plain) + (segment_off - plain) == pytest.approx(scalar - plain, rel=1e-4)
    with pytest.raises(ConfigError, match="teacher_weights names refer, which no teacher teaches"):
        load_config(None, [*taught, "train.teacher_weights={refer = 1.0}"])
    with pytest.raises(ConfigError, match="teacher_weights must be a table of task = weight >= 0"):
        load_config(None, [*taught, "train.teacher_weights={inpaint = -1.0}"])


def test_quiet_training_says_once_what_it_runs(tmp_path):
    """--quiet has no bar, so one line on stderr names the steps and the output before the first
    step (a 128x128 stage writes nothing for its first ~20 minutes)."""
    from click.testing import CliRunner

    from unigs_deploy.training.cli import main

    out = tmp_path / "run"
    common = ["--set", f"train.output={out}", "--set", "train.checkpoint_every=2", "--set", "train.batch_size=2",
              "--set", "data.size=32", "--quiet"]
    first = CliRunner().invoke(main, ["--set", "train.steps=4", "--set", "train.stop_at=2", *common])
    assert first.exit_code == 0, first.output
    assert first.stderr.splitlines()[0] == (f"training steps 0-2 into {out} (checkpoints every 2 steps; "
                                            "no progress bar: --quiet)")
    again = CliRunner().invoke(main, ["--set", "train.steps=4", "--resume", *common])
    assert again.exit_code == 0, again.output
    assert f"training steps 2-4 into {out}" in again.stderr
    none = CliRunner().invoke(main, ["--set", "train.steps=1", "--set", "train.checkpoint_every=0",
                                     "--set", f"train.output={tmp_path / 'bare'}", "--set", "train.batch_size=2",
                                     "--set", "data.size=32", "--quiet"])
    assert none.exit_code == 0, none.output
    assert "(no checkpoints; no progress bar: --quiet)" in none.stderr


def test_a_resume_keeps_the_evaluation_of_its_checkpoint_step(tmp_path):
    """The step a run stops and checkpoints at is evaluated before the checkpoint is written, so a
    resumed run's curve still has that point (probe M's curve lost step 500 on its resume)."""
    common = ["--set", "train.eval_every=2", "--set", "train.eval_images=1", "--set", "train.checkpoint_every=2"]
    _train(tmp_path / "run", 4, "--set", "train.stop_at=2", *common)
    _train(tmp_path / "run", 4, "--resume", *common)
    curves = json.loads((tmp_path / "run" / "curves.json").read_text())
    assert [e["step"] for e in curves["eval"]] == [0, 2, 4]
