"""The numpy runtime against the torch reference, every task; the CLI end to end; bad input."""

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from unigs_deploy import io, palette
from unigs_deploy.pipeline import UniGSPipeline

torch = pytest.importorskip("torch")

from unigs_deploy.training import sample as torch_reference  # noqa: E402

H, W = 32, 40


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    mask = np.zeros((H, W), bool)
    mask[6:22, 8:30] = True
    return image, mask


def _reference(tiny_model, tiny_pipe, task, control_unit, mask, prompt, seed=7, negative_prompt="", interval=None):
    ids = (tiny_pipe.tokenizer([prompt]), tiny_pipe.tokenizer([negative_prompt]))
    return torch_reference.run(tiny_model, ids, task, control_unit, mask, steps=4, guidance=5.0, seed=seed,
                               guidance_interval=interval)


@pytest.mark.parametrize("task", ["inpaint", "synthesize", "refer", "segment"])
def test_runtime_equals_torch_reference(tiny_model, tiny_pipe, inputs, task):
    image, mask = inputs
    kw = dict(steps=4, guidance=5.0, seed=7, resolution="input", decode_image=True, scheduler="ddim",
              spacing="leading")  # the torch reference samples with the model's DDIM config
    prompt = "a red star"
    if task == "inpaint":
        res = tiny_pipe.inpaint(image, [(mask, prompt)], **kw)
        control, m = palette.colormap_to_unit(image) * (~mask)[..., None], mask
    elif task == "synthesize":
        res = tiny_pipe.synthesize(image, prompt, **kw)
        control, m = palette.colormap_to_unit(image), np.ones((H, W), bool)
    elif task == "refer":
        res = tiny_pipe.refer(image, mask, prompt, **kw)
        control, m = palette.colormap_to_unit(image), mask
    else:
        res = tiny_pipe.segment(image, prompt, **kw)
        control, m = palette.colormap_to_unit(image), np.ones((H, W), bool)
    ref = _reference(tiny_model, tiny_pipe, task, control, m, prompt)
    assert res.latents.shape == ref.shape
    assert np.abs(res.latents - ref).max() < 1e-4
    assert res.image.shape == (H, W, 3) and res.colormap.shape == (H, W, 3) and res.labels.shape == (H, W)


def test_negative_prompt_is_guidance_unconditional_prompt(tiny_model, tiny_pipe, inputs):
    """As in diffusers: the negative prompt's embedding takes the empty prompt's place in
    classifier-free guidance; at guidance 1 it changes nothing and a note says so."""
    image, mask = inputs
    kw = dict(steps=4, guidance=5.0, seed=7, resolution="input", scheduler="ddim", spacing="leading")
    control = palette.colormap_to_unit(image) * (~mask)[..., None]
    res = tiny_pipe.inpaint(image, [(mask, "a red star")], negative_prompt="a blue square", locate="colormap", **kw)
    ref = _reference(tiny_model, tiny_pipe, "inpaint", control, mask, "a red star", negative_prompt="a blue square")
    assert np.abs(res.latents - ref).max() < 1e-4
    assert res.settings["negative_prompt"] == "a blue square" and res.settings["unet_batch"] == 2
    plain = tiny_pipe.inpaint(image, [(mask, "a red star")], locate="colormap", **kw)
    assert np.abs(res.latents - plain.latents).max() > 1e-3
    off = tiny_pipe.segment(image, negative_prompt="a blue square", steps=1, guidance=1.0)
    assert off.settings["unet_batch"] == 1
    assert ("negative_prompt has no effect at guidance 1 (classifier-free guidance off): raise guidance"
            in off.notes)


def test_guidance_interval_guides_only_the_steps_inside_it(tiny_model, tiny_pipe, inputs, monkeypatch):
    """Timesteps 751, 501, 251, 1: (400, 1000) guides the first two at batch 2 and runs the last two
    unguided at batch 1, as the torch reference does; an interval holding every step is no
    interval, one holding none is guidance off (and says so); the model's default applies unless given."""
    image, mask = inputs
    kw = dict(steps=4, guidance=5.0, seed=7, resolution="input", scheduler="ddim", spacing="leading",
              locate="colormap")
    control = palette.colormap_to_unit(image) * (~mask)[..., None]
    unet, batches = tiny_pipe.components["unet"], []
    monkeypatch.setitem(tiny_pipe.components, "unet",
                        lambda **feed: batches.append(len(feed["sample"])) or unet(**feed))
    res = tiny_pipe.inpaint(image, [(mask, "a red star")], guidance_interval=(400, 1000), **kw)
    assert batches == [2, 2, 1, 1]
    assert res.settings["guidance_interval"] == [400.0, 1000.0] and res.settings["guided_steps"] == 2
    ref = _reference(tiny_model, tiny_pipe, "inpaint", control, mask, "a red star", interval=(400, 1000))
    assert np.abs(res.latents - ref).max() < 1e-4
    full = tiny_pipe.inpaint(image, [(mask, "a red star")], **kw)
    off = tiny_pipe.inpaint(image, [(mask, "a red star")], **{**kw, "guidance": 1.0})
    assert min(np.abs(res.latents - full.latents).max(), np.abs(res.latents - off.latents).max()) > 1e-3
    every = tiny_pipe.inpaint(image, [(mask, "a red star")], guidance_interval=(0, 1000), **kw)
    assert (every.latents == full.latents).all() and full.settings["guidance_interval"] is None
    none = tiny_pipe.inpaint(image, [(mask, "a red star")], guidance_interval=(800, 900), **kw)
    assert (none.latents == off.latents).all() and not none.settings["guidance_applied"]
    assert ("guidance_interval [800.0, 900.0] holds none of this run's timesteps: guidance is off; widen the "
            "interval" in none.notes)
    monkeypatch.setitem(tiny_pipe.manifest.task_defaults, "inpaint", {"guidance_interval": [400, 1000]})
    assert (tiny_pipe.inpaint(image, [(mask, "a red star")], **kw).latents == res.latents).all()
    given = tiny_pipe.inpaint(image, [(mask, "a red star")], guidance_interval=(0, 1000), **kw)
    assert (given.latents == full.latents).all()


def test_same_seed_same_output_and_seed_matters(tiny_pipe, inputs):
    image, _ = inputs
    a, b = tiny_pipe.segment(image, steps=2, seed=1), tiny_pipe.segment(image, steps=2, seed=1)
    c = tiny_pipe.segment(image, steps=2, seed=2)
    assert (a.latents == b.latents).all() and (a.colormap == b.colormap).all() and (a.labels == b.labels).all()
    assert not (a.latents == c.latents).all()


def test_image_not_a_multiple_is_padded_and_said(tiny_pipe):
    img = np.zeros((30, 37, 3), np.uint8)
    res = tiny_pipe.segment(img, steps=1, resolution="input", decode_image=True)
    assert res.image.shape == (30, 37, 3) and res.labels.shape == (30, 37)
    assert "image: 37x30 padded to 40x32 (a multiple of 4); outputs are cropped back" in res.notes


def test_native_resolution_runs_at_the_models_size_and_maps_back(tiny_pipe):
    """The tiny model was made for 16x16 images (sample_size 8, VAE factor 2)."""
    assert tiny_pipe.manifest.model.resolution == 16
    img = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    res = tiny_pipe.segment(img, steps=1)
    assert res.settings["working_size"] == [16, 13] and res.settings["resolution"] == "native"
    assert res.labels.shape == (64, 80) and res.colormap.shape == (64, 80, 3)
    assert "ran at 16x13 (native 16 px); outputs mapped back to 80x64" in res.notes
    assert tiny_pipe.segment(img, steps=1, resolution=32).settings["working_size"] == [32, 26]
    assert tiny_pipe.segment(img, steps=1, resolution="input").settings["working_size"] == [80, 64]
    with pytest.raises(ValueError, match="resolution 'big': give native, input or a side in pixels"):
        tiny_pipe.segment(img, resolution="big")


def test_only_the_work_the_result_needs(tiny_pipe, inputs):
    image, mask = inputs
    plain = tiny_pipe.segment(image, steps=2, guidance=1.0)
    guided = tiny_pipe.segment(image, steps=2, guidance=7.5)  # empty prompt: guidance cannot change anything
    assert not guided.settings["guidance_applied"] and guided.settings["unet_batch"] == 1
    assert (plain.latents == guided.latents).all()
    assert guided.image is None and guided.settings["decoded"] == ["colormap"]
    assert tiny_pipe.segment(image, steps=2, decode_image=True).image.shape == image.shape
    refer = tiny_pipe.refer(image, mask, "a red star", steps=2, guidance=5.0)
    assert refer.settings["guidance_applied"] and refer.settings["unet_batch"] == 2 and refer.image is None
    assert tiny_pipe.inpaint(image, [(mask, "a red star")], steps=1).image.shape == image.shape


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpm++2m"])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_every_scheduler_runs_in_the_pipeline(tiny_pipe, inputs, scheduler, spacing):
    res = tiny_pipe.segment(inputs[0], steps=3, scheduler=scheduler, spacing=spacing, seed=4)
    assert res.settings["scheduler"] == scheduler and res.settings["spacing"] == spacing
    assert np.isfinite(res.latents).all() and res.labels.shape == inputs[0].shape[:2]


def test_memory_guard_stops_a_run_that_cannot_fit(tiny_pipe, inputs, monkeypatch):
    from unigs_deploy import memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 50_000_000)
    with pytest.raises(memory.OutOfMemory, match=r"a 16x13 run needs about .* GB .* but 0.1 GB are available: "
                                                 r"use --resolution native \(16 px"):
        tiny_pipe.segment(inputs[0], steps=1)
    monkeypatch.setattr(memory, "available_bytes", lambda: None)  # unknown: no guard
    tiny_pipe.segment(inputs[0], steps=1)


def test_grayscale_rgba_16bit_images_are_converted(tiny_pipe):
    for img, word in [(np.zeros((32, 32), np.uint8), "grayscale"), (np.zeros((32, 32, 4), np.uint8), "alpha"),
                      (np.zeros((32, 32, 3), np.uint16), "16-bit")]:
        res = tiny_pipe.segment(img, steps=1)
        assert any(word in n for n in res.notes)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p, img, m: p.refer(img, m[:10], "x", steps=1), "give a mask of the image's size"),
        (lambda p, img, m: p.refer(img, np.zeros_like(m), "x", steps=1), "mask is empty"),
        (lambda p, img, m: p.segment(img, steps=0), "steps must be at least 1"),
        (lambda p, img, m: p.inpaint(img, [], steps=1), "at least one region"),
        (lambda p, img, m: p.inpaint(img, [(m, "x")], locate="image"), "locate must be one of colormap, refer"),
        (lambda p, img, m: p.inpaint(img, [(m, "x")], keep_unmasked=True, decode_image=False),
         "keep_unmasked pastes the input into the generated image"),
        (lambda p, img, m: p.inpaint(img, [(m, "x")], locate="refer", decode_image=False),
         "reads the entities from the generated image"),
        (lambda p, img, m: p.inpaint(img, [(m, "x")], rerank=True),
         r"rerank needs an engine exported with a reranker .*: use rerank=False"),
        (lambda p, img, m: p.segment(np.zeros((0, 4, 3), np.uint8)), "empty"),
        (lambda p, img, m: p.segment(img, guidance=float("nan")), "guidance must be a finite number >= 1"),
        (lambda p, img, m: p.segment(img, guidance=0), "guidance must be a finite number >= 1"),
        (lambda p, img, m: p.segment(img, guidance_interval=(700, 600)),
         r"guidance_interval \(700, 600\): give timesteps 0 <= LOW <= HIGH \(e.g. 600, 1000\)"),
        (lambda p, img, m: p.segment(img, guidance_interval=600), "guidance_interval must be two timesteps LOW, HIGH"),
        (lambda p, img, m: p.segment(img, guidance_interval="12"), "guidance_interval must be two timesteps LOW, HIGH"),
        (lambda p, img, m: p.refer(img, m, "  "), "refer needs a prompt"),
        (lambda p, img, m: p.segment(img, scheduler="pndm"), "unknown scheduler 'pndm'"),
        (lambda p, img, m: p.segment(img, scheduler="euler", eta=0.5), "eta applies to the ddim scheduler only"),
    ],
)
def test_bad_input(tiny_pipe, inputs, call, message):
    image, mask = inputs
    with pytest.raises(ValueError, match=message):
        call(tiny_pipe, image, mask)


def test_keep_unmasked_changes_only_the_image_outside_every_region(tiny_pipe, inputs):
    image, mask = inputs
    second = np.zeros_like(mask)
    second[24:30, 2:12] = True
    regions = [(mask, "a red star"), (second, "a blue square")]
    plain = tiny_pipe.inpaint(image, regions, steps=2, seed=5)
    kept = tiny_pipe.inpaint(image, regions, steps=2, seed=5, keep_unmasked=True)
    inside = mask | second
    assert np.array_equal(kept.image[~inside], image[~inside])
    assert np.array_equal(kept.image[inside], plain.image[inside])
    assert not np.array_equal(plain.image[~inside], image[~inside])
    assert np.array_equal(kept.labels, plain.labels) and np.array_equal(kept.colormap, plain.colormap)
    assert kept.settings["keep_unmasked"] and not plain.settings["keep_unmasked"]


def test_keep_unmasked_follows_the_model_default_where_the_image_is_decoded(tiny_pipe, inputs, monkeypatch):
    image, mask = inputs
    regions = [(mask, "a red star")]
    monkeypatch.setitem(tiny_pipe.manifest.task_defaults, "inpaint", {"keep_unmasked": True})
    res = tiny_pipe.inpaint(image, regions, steps=1)
    assert res.settings["keep_unmasked"] and np.array_equal(res.image[~mask], image[~mask])
    assert not tiny_pipe.inpaint(image, regions, steps=1, keep_unmasked=False).settings["keep_unmasked"]
    # no image to paste into: the default gives way, where an explicit True is an error (above)
    undecoded = tiny_pipe.inpaint(image, regions, steps=1, decode_image=False, locate="colormap")
    assert undecoded.image is None and not undecoded.settings["keep_unmasked"]


def test_inpaint_located_by_refer_labels_each_region_with_what_refer_finds(tiny_pipe, inputs, monkeypatch):
    """locate="refer": the same generation as "colormap"; label i is refer's answer on the generated
    image for region i and its text (earlier regions win overlaps); a region without text keeps the
    colormap's entities. The model's task_defaults choose it when the caller does not."""
    image, mask = inputs
    second = np.zeros_like(mask)
    second[14:30, 20:38] = True
    regions = [(mask, "a red star"), (second, "a blue square")]
    kw = dict(steps=2, seed=5)
    by_colormap = tiny_pipe.inpaint(image, regions, locate="colormap", **kw)
    by_refer = tiny_pipe.inpaint(image, regions, locate="refer", **kw)
    assert np.array_equal(by_refer.image, by_colormap.image) and np.array_equal(by_refer.colormap, by_colormap.colormap)
    first = tiny_pipe.refer(by_colormap.image, mask, "a red star", seed=5).mask
    other = tiny_pipe.refer(by_colormap.image, second, "a blue square", seed=5).mask
    want = np.where(first, 1, np.where(other, 2, 0))
    assert np.array_equal(by_refer.labels, want) and np.array_equal(by_refer.mask, want > 0)
    assert by_refer.settings["locate"] == "refer" and "locate_s" in by_refer.timings

    no_text = tiny_pipe.inpaint(image, [(mask, "")], locate="refer", **kw)
    assert np.array_equal(no_text.mask, tiny_pipe.inpaint(image, [(mask, "")], locate="colormap", **kw).mask)

    monkeypatch.setitem(tiny_pipe.manifest.task_defaults, "inpaint", {"locate": "refer"})
    assert tiny_pipe.inpaint(image, regions, **kw).settings["locate"] == "refer"

    # the tiny model's refer covers the whole image; a refer that answers with the region shows the overlap rule
    asked = []
    monkeypatch.setattr(tiny_pipe, "refer", lambda img, region, text, seed: asked.append((img, text, seed)) or
                        SimpleNamespace(mask=region.copy()))
    res = tiny_pipe.inpaint(image, regions, **kw)
    assert np.array_equal(res.labels, np.where(mask, 1, np.where(second, 2, 0)))
    assert [(t, s) for _, t, s in asked] == [("a red star", 5), ("a blue square", 5)]
    assert all(np.array_equal(img, res.image) for img, _, _ in asked)


def test_long_prompt_is_truncated_with_a_note(tiny_pipe, inputs):
    res = tiny_pipe.segment(inputs[0], " ".join(["red star"] * 60), steps=1)
    assert any("truncated" in n for n in res.notes)


def test_tokenizer_matches_transformers(tmp_path, tiny_model):
    from transformers import CLIPTokenizer as HFTokenizer

    from unigs_deploy.modeling.vocabulary import save_tokenizer_folder
    from unigs_deploy.tokenizer import CLIPTokenizer

    save_tokenizer_folder(tiny_model.tokenizer, tmp_path)
    ours, hf = CLIPTokenizer(tmp_path / "tokenizer.json"), HFTokenizer.from_pretrained(tmp_path)
    prompts = ["a red star and a blue ellipse", "A photo of a CAT!", "  a   green triangle ", "",
               " ".join(["yellow rectangle"] * 50)]
    want = hf(prompts, padding="max_length", max_length=77, truncation=True).input_ids
    with pytest.warns(UserWarning, match="truncated"):
        got = ours(prompts)
    assert got.tolist() == want
    # a torch-side model's tokenizer in memory gives the same ids, and is left as it was
    before = tiny_model.tokenizer.to_str()
    with pytest.warns(UserWarning, match="truncated"):
        assert CLIPTokenizer.from_tokenizer(tiny_model.tokenizer)(prompts).tolist() == want
    assert tiny_model.tokenizer.to_str() == before


# ---------------------------------------------------------------- the CLI


def _write_inputs(tmp_path, inputs):
    image, mask = inputs
    io.write_image(tmp_path / "image.png", image)
    io.write_image(tmp_path / "mask.png", (mask * 255).astype(np.uint8))
    return tmp_path / "image.png", tmp_path / "mask.png"


@pytest.mark.parametrize("task", ["inpaint", "synthesize", "refer", "segment"])
def test_cli_writes_every_output(tiny_engine, tmp_path, inputs, task):
    from unigs_deploy.cli import main

    img, mask = _write_inputs(tmp_path, inputs)
    args = ["--engine", str(tiny_engine / "unigs.onnx"), "--task", task, "--steps", "2", "--out", str(tmp_path / "o"),
            "--seed", "3", "--threads", "1"]
    if task == "synthesize":
        args += ["--colormap", str(img), "--prompt", "a red star"]
    else:
        args += ["--image", str(img)]
    if task in ("inpaint", "refer"):
        args += ["--mask", str(mask), "--prompt", "a red star"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    out = tmp_path / "o"
    for name in ("colormap.png", "labels.png", "masks.json", "panoptic.png", "panoptic.json", "run.json"):
        assert (out / name).is_file(), name
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["seed"] == 3 and run["settings"]["steps"] == 2
    assert set(run["timings"]) >= {"text_encoder_s", "denoise_s", "vae_decoder_s", "dichotomy_s", "total_s"}
    assert io.read_labels(out / "labels.png").shape == (H, W)
    new_image = task in ("inpaint", "synthesize")  # refer and segment decode only the colormap
    assert (out / "image.png").is_file() == new_image and run["settings"]["decoded"] == (
        ["colormap", "image"] if new_image else ["colormap"])
    if new_image:
        assert io.read_image(out / "image.png").shape == (H, W, 3)


def _cli_error(args, pattern):
    from unigs_deploy.cli import main

    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    last = [ln for ln in res.output.splitlines() if ln.strip()][-1]
    assert last.startswith("unigs-run: error:") and pattern in last, res.output
    assert "Traceback" not in res.output


def test_cli_bad_input_is_one_line(tiny_engine, tmp_path, inputs):
    img, mask = _write_inputs(tmp_path, inputs)
    onnx = str(tiny_engine / "unigs.onnx")
    _cli_error(["--engine", str(tmp_path / "none.onnx"), "--task", "segment", "--image", str(img)], "does not exist")
    _cli_error(["--engine", str(img), "--task", "segment", "--image", str(img)], "not an engine")
    _cli_error(["--engine", onnx, "--task", "segment", "--image", str(tmp_path / "nope.png")], "cannot read")
    _cli_error(["--engine", onnx, "--task", "refer", "--image", str(img)], "needs --mask")
    _cli_error(["--engine", onnx, "--task", "segment", "--image", str(img), "--steps", "0"], "steps")
    small = tmp_path / "small.png"
    io.write_image(small, np.full((8, 8), 255, np.uint8))
    _cli_error(["--engine", onnx, "--task", "refer", "--image", str(img), "--mask", str(small), "--prompt", "x"],
               "mask")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    _cli_error(["--engine", onnx, "--task", "segment", "--image", str(img), "--out", str(blocker / "o")],
               "cannot write")


def test_plan_without_tensorrt_is_one_line(tiny_engine, tmp_path, inputs):
    from unigs_deploy.backends import tensorrt as trt_backend

    if trt_backend.available():
        pytest.skip("tensorrt is importable here")
    img, _ = _write_inputs(tmp_path, inputs)
    plan = tiny_engine / "unigs.plan"
    plan.write_bytes(b"not really")
    try:
        _cli_error(["--engine", str(plan), "--task", "segment", "--image", str(img)], "need the tensorrt package")
    finally:
        plan.unlink()


def test_manifest_problems_are_one_line(tiny_engine, tmp_path, inputs):
    import shutil

    img, _ = _write_inputs(tmp_path, inputs)
    copy = tmp_path / "eng"
    shutil.copytree(tiny_engine, copy)
    data = json.loads((copy / "unigs.json").read_text())
    data["format_version"] = 99
    (copy / "unigs.json").write_text(json.dumps(data))
    _cli_error(["--engine", str(copy / "unigs.onnx"), "--task", "segment", "--image", str(img)], "format version 99")
    data["format_version"] = 1
    data["model"]["unet_in_channels"] = 9
    (copy / "unigs.json").write_text(json.dumps(data))
    _cli_error(["--engine", str(copy / "unigs.onnx"), "--task", "segment", "--image", str(img)], "13 channels")
    (copy / "unigs.json").unlink()
    _cli_error(["--engine", str(copy / "unigs.onnx"), "--task", "segment", "--image", str(img)], "no manifest")


@pytest.mark.trt
def test_tensorrt_pipeline_matches_onnxruntime(tiny_engine, tiny_pipe, inputs, tmp_path):
    import shutil

    from unigs_deploy import manifest as mf
    from unigs_deploy.export import tensorrt as trt_build

    engine = shutil.copytree(tiny_engine, tmp_path / "eng")  # the shared engine stays as exported
    manifest = mf.load(engine)
    built = trt_build.build_engines(engine, manifest, fp16=False,
                                    ranges=trt_build.Ranges((1, 2, 2), (H, H, 2 * H), (W, W, 2 * W)))
    manifest.engines = {"tensorrt": {"files": built}}
    manifest.write()
    trt_pipe = UniGSPipeline.from_engine(engine / "unigs.plan")
    a = tiny_pipe.segment(inputs[0], steps=3, seed=5)
    b = trt_pipe.segment(inputs[0], steps=3, seed=5)
    assert np.abs(a.latents - b.latents).max() < 1e-3


def test_openvino_pipeline_matches_onnxruntime(tiny_engine, tiny_pipe, inputs):
    from unigs_deploy.backends.openvino import available

    if not available():
        pytest.skip("openvino does not import here")
    ov_pipe = UniGSPipeline.from_engine(tiny_engine / "unigs.onnx", backend="openvino", threads=1)
    assert ov_pipe.provider == "OpenVINO CPU"
    image, mask = inputs
    for call in (lambda p: p.segment(image, steps=3, seed=5, resolution="input"),
                 lambda p: p.refer(image, mask, "a red star", steps=3, seed=5, resolution="input")):
        a, b = call(tiny_pipe), call(ov_pipe)
        assert np.abs(a.latents - b.latents).max() < 1e-3


def test_backend_problems_are_one_line(tiny_engine, tmp_path, inputs, monkeypatch):
    img, _ = _write_inputs(tmp_path, inputs)
    from unigs_deploy.backends import EngineError, open_components

    with pytest.raises(EngineError, match="unknown backend 'tvm': choose one of onnxruntime, openvino"):
        open_components(tiny_engine, backend="tvm")
    with pytest.raises(EngineError, match="has no int8 UNet: make one with unigs-export --from-onnx"):
        open_components(tiny_engine, int8=True)
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    _cli_error(["--engine", str(tiny_engine / "unigs.onnx"), "--task", "segment", "--image", str(img),
                "--backend", "openvino"], "the openvino backend needs the openvino package: pip install")


def test_memory_estimate_is_the_attention_scores_a_step_adds(tiny_pipe):
    from unigs_deploy import memory

    m = tiny_pipe.manifest
    m.model.self_attention, saved = [{"factor": 1, "heads": 8}, {"factor": 2, "heads": 8}], m.model.self_attention
    try:
        need, why = memory.estimate(m, (128, 128), batch=2)
        assert need == memory.SCORE_BYTES * 2 * 8 * 16384**2 and why == "self-attention over 16,384 latent tokens"
        assert memory.estimate(m, (64, 64), batch=1)[0] == memory.SCORE_BYTES * 8 * 4096**2
        m.components["unet"]["optimized"] = {"MultiHeadAttention": 2}  # flash attention: no score matrix
        assert memory.estimate(m, (128, 128), batch=2) == (memory.RUN_BYTES, "activations")
    finally:
        m.model.self_attention = saved
        m.components["unet"]["optimized"] = None


def test_decoder_threshold_and_stop_come_from_the_model_unless_given(tiny_pipe, inputs, monkeypatch):
    """task_defaults.json may carry the decoder's threshold / stop rule (measured for that model);
    an explicit argument wins; the settings record what ran; bad values are one-line errors."""
    from unigs_deploy import dichotomy

    seen = []
    real = dichotomy.decode_colormap

    def spy(colormap, **kw):
        seen.append((kw["threshold"], kw["stop"]))
        return real(colormap, **kw)

    monkeypatch.setattr(dichotomy, "decode_colormap", spy)
    monkeypatch.setitem(tiny_pipe.manifest.task_defaults, "segment", {"threshold": 20.0, "stop": "spread"})
    res = tiny_pipe.segment(inputs[0], steps=1)
    assert seen[-1] == (20.0, "spread") and (res.settings["threshold"], res.settings["stop"]) == (20.0, "spread")
    tiny_pipe.segment(inputs[0], steps=1, threshold=40, stop="centres")
    assert seen[-1] == (40.0, "centres")
    tiny_pipe.synthesize(inputs[0], steps=1)  # an image is a colormap too
    assert seen[-1] == (dichotomy.DEFAULT_THRESHOLD, "centres")
    with pytest.raises(ValueError, match="threshold must be a colour distance > 0"):
        tiny_pipe.segment(inputs[0], steps=1, threshold=0)
    with pytest.raises(ValueError, match="stop must be one of centres, spread, got 'median'"):
        tiny_pipe.segment(inputs[0], steps=1, stop="median")


def test_inpaint_by_colormap_notes_a_region_left_without_an_entity(tiny_pipe, inputs, monkeypatch):
    image, mask = inputs
    second = np.zeros_like(mask)
    second[24:30, 32:38] = True
    first_only = np.where(mask & ~second, 3, 0).astype(np.int32)  # the colormap's one entity lies in region 1
    run = tiny_pipe._run

    def run_with(*args, **kw):
        res = run(*args, **kw)
        res.labels = first_only.copy()
        return res

    monkeypatch.setattr(tiny_pipe, "_run", run_with)
    res = tiny_pipe.inpaint(image, [(mask, "a red star"), (second, "a blue square")], locate="colormap", steps=1)
    assert [n for n in res.notes if n.startswith("inpaint:")] == [
        "inpaint: the generated colormap holds no entity in region 2; its mask is empty "
        "(locate='refer' reads the entity from the generated image instead)"]
    assert np.array_equal(res.mask, first_only > 0)


def test_inpaint_candidates_keep_the_one_that_agrees_most_with_the_others(tiny_pipe, inputs, monkeypatch):
    """candidates=N draws seeds seed..seed+N-1 and returns the drawing whose mask has the largest mean
    IoU with the others'; its settings' seed reproduces it alone. The model's task_defaults choose N
    when the caller does not."""
    from unigs_deploy import metrics

    image, mask = inputs
    regions = [(mask, "a red star")]
    kw = dict(steps=2, locate="colormap")
    singles = [tiny_pipe.inpaint(image, regions, seed=7 + k, **kw) for k in range(3)]
    agreement = [np.mean([metrics.mask_iou(a.mask, b.mask) for b in singles if b is not a]) for a in singles]
    res = tiny_pipe.inpaint(image, regions, seed=7, candidates=3, **kw)
    best = singles[int(np.argmax(agreement))]
    assert res.settings["seed"] == best.settings["seed"] and res.settings["candidates"] == 3
    assert res.settings["agreement"] == pytest.approx(agreement, abs=1e-4)
    assert np.array_equal(res.labels, best.labels) and np.array_equal(res.image, best.image)
    assert singles[0].settings["candidates"] == 1 and np.array_equal(
        tiny_pipe.inpaint(image, regions, seed=7, candidates=1, **kw).labels, singles[0].labels)

    seen = []
    tiny_pipe.inpaint(image, regions, seed=7, candidates=3, callback=lambda i, n, t, z: seen.append((i, n)), **kw)
    assert seen == [(i, 6) for i in range(6)]  # one count over the three candidates' two steps

    monkeypatch.setitem(tiny_pipe.manifest.task_defaults, "inpaint", {"candidates": 2})
    assert tiny_pipe.inpaint(image, regions, seed=7, **kw).settings["candidates"] == 2

    # the tiny model draws the same mask for every seed, so the choice itself is checked on
    # drawings made to differ: the middle one overlaps both others, the outer two one each
    drawn = {}
    for k, cols in enumerate(((4, 14), (12, 28), (20, 40))):
        m = np.zeros_like(mask)
        m[:, slice(*cols)] = True
        drawn[7 + k] = m
    monkeypatch.setattr(tiny_pipe, "_inpaint", lambda *a, seed, **kw: SimpleNamespace(
        labels=drawn[seed].astype(np.int32), settings={"seed": seed, "locate": "refer"}, timings={"total_s": 1.0}))
    res = tiny_pipe.inpaint(image, regions, seed=7, candidates=3)
    assert res.settings["seed"] == 8 and res.timings["total_s"] == 3.0
    assert res.settings["agreement"] == pytest.approx([2 / 24 / 2, (2 / 24 + 8 / 28) / 2, 8 / 28 / 2], abs=1e-4)

    # two regions: the first drawing swaps the regions' entities, the other two agree; their union is
    # the same in all three, but region by region the first agrees with neither
    left, right = np.zeros_like(mask), np.zeros_like(mask)
    left[:, :20], right[:, 20:] = True, True
    a, b = np.where(left, 1, 0) + np.where(right, 2, 0), np.where(left, 2, 0) + np.where(right, 1, 0)
    drawn = {7: b, 8: a, 9: a}
    monkeypatch.setattr(tiny_pipe, "_inpaint", lambda *a, seed, **kw: SimpleNamespace(
        labels=drawn[seed].astype(np.int32), settings={"seed": seed, "locate": "refer"}, timings={"total_s": 1.0}))
    res = tiny_pipe.inpaint(image, [(left, "a red star"), (right, "a blue ellipse")], seed=7, candidates=3)
    assert res.settings["seed"] == 8 and res.settings["agreement"] == [0.0, 0.5, 0.5]
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="candidates must be a whole number >= 1"):
            tiny_pipe.inpaint(image, regions, candidates=bad, **kw)
