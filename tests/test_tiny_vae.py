"""The optional tiny VAE (diffusers AutoencoderTiny): export, validation, runtime choices, errors;
and the torch-eager pipeline (export/eager.py) against the exported engine."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_vae_engine(tmp_path_factory):
    from diffusers import AutoencoderTiny

    from unigs_deploy import modeling
    from unigs_deploy.export.exporter import export_model

    model = modeling.build("tiny", task_embedding=True, seed=3)
    model.tiny_vae = AutoencoderTiny(**modeling.tiny_vae_config(model.vae)).eval()
    out = tmp_path_factory.mktemp("tiny-vae-engine")
    export_model(model, out)
    return model, out


def test_the_manifest_records_validated_tiny_vae_components(tiny_vae_engine):
    from unigs_deploy.manifest import Manifest

    _, out = tiny_vae_engine
    m = Manifest.load(out)
    for name in ("tiny_vae_encoder", "tiny_vae_decoder"):
        assert (out / m.components[name]["files"][0]).is_file()
        assert all(c["ok"] for c in m.components[name]["validation"])


@pytest.mark.parametrize("tiny_vae", [None, "off", "colormap", "all"])
def test_engine_matches_torch_eager_for_every_tiny_vae_choice(tiny_vae_engine, tiny_vae, rng):
    from unigs_deploy.export import eager
    from unigs_deploy.pipeline import UniGSPipeline

    model, out = tiny_vae_engine
    image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    a = UniGSPipeline.from_engine(out, threads=1).segment(image, steps=2, tiny_vae=tiny_vae)
    b = eager.pipeline(model).segment(image, steps=2, tiny_vae=tiny_vae)
    assert a.settings["tiny_vae"] == (tiny_vae or "colormap")  # the default where the engine has one
    np.testing.assert_allclose(a.latents, b.latents, rtol=1e-4, atol=1e-4)
    assert np.abs(a.colormap.astype(int) - b.colormap).max() <= 1


def test_tiny_vae_changes_what_runs(tiny_vae_engine, rng):
    from unigs_deploy.pipeline import UniGSPipeline

    _, out = tiny_vae_engine
    pipe = UniGSPipeline.from_engine(out, threads=1)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    off, cmap, full = (pipe.segment(image, steps=1, tiny_vae=v) for v in ("off", "colormap", "all"))
    np.testing.assert_array_equal(off.latents, cmap.latents)  # same encode and loop ...
    assert not np.array_equal(off.colormap, cmap.colormap)  # ... another decoder
    assert not np.array_equal(off.latents, full.latents)  # the control latent came from the tiny encoder


def test_a_model_may_choose_its_vae_per_task(tiny_vae_engine, rng, monkeypatch):
    """task_defaults {"tiny_vae": "off"} for segment: segment decodes with the VAE, refer keeps
    the engine's default, and an explicit argument still wins."""
    from unigs_deploy.pipeline import UniGSPipeline

    _, out = tiny_vae_engine
    pipe = UniGSPipeline.from_engine(out, threads=1)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    region = np.zeros((32, 32), bool)
    region[8:24, 8:24] = True
    monkeypatch.setitem(pipe.manifest.task_defaults, "segment", {"tiny_vae": "off"})
    chosen = pipe.segment(image, steps=1)
    assert chosen.settings["tiny_vae"] == "off"
    np.testing.assert_array_equal(chosen.colormap, pipe.segment(image, steps=1, tiny_vae="off").colormap)
    assert pipe.segment(image, steps=1, tiny_vae="colormap").settings["tiny_vae"] == "colormap"
    assert pipe.refer(image, region, "a", steps=1).settings["tiny_vae"] == "colormap"


def test_tiny_vae_errors(tiny_pipe, tiny_vae_engine):
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="unigs-export --tiny-vae"):
        tiny_pipe.segment(image, steps=1, tiny_vae="all")
    with pytest.raises(ValueError, match="one of off, colormap, all"):
        tiny_pipe.segment(image, steps=1, tiny_vae="fast")
    assert tiny_pipe.segment(image, steps=1).settings["tiny_vae"] == "off"


def test_a_models_tiny_vae_default_on_an_engine_without_one_falls_back(tiny_pipe, monkeypatch):
    """A model's own default (not the caller's choice) the engine cannot honour: decoded with the
    VAE and said in the notes, rather than failing every run of the task."""
    image = np.zeros((32, 32, 3), np.uint8)
    monkeypatch.setitem(tiny_pipe.manifest.task_defaults, "segment", {"tiny_vae": "colormap"})
    res = tiny_pipe.segment(image, steps=1)
    assert res.settings["tiny_vae"] == "off"
    assert any("default tiny_vae='colormap' needs an engine exported with a tiny VAE" in n for n in res.notes)
    with pytest.raises(ValueError, match="unigs-export --tiny-vae"):
        tiny_pipe.segment(image, steps=1, tiny_vae="colormap")


def test_a_tiny_vae_of_another_latent_space_is_refused(tmp_path):
    from diffusers import AutoencoderTiny

    from unigs_deploy import modeling

    vae = modeling.build("tiny").vae
    AutoencoderTiny(**modeling.tiny_vae_config(modeling.build("demo").vae)).save_pretrained(tmp_path / "t")
    with pytest.raises(modeling.ModelError, match="made for this model's VAE"):
        modeling.load_tiny_vae(tmp_path / "t", vae)
    with pytest.raises(modeling.ModelError, match="no config.json"):
        modeling.load_tiny_vae(tmp_path, vae)
    fits = AutoencoderTiny(**modeling.tiny_vae_config(vae))
    fits.save_pretrained(tmp_path / "model" / modeling.TINY_VAE)  # a model folder, as unigs-train writes
    loaded = modeling.load_tiny_vae(tmp_path / "model", vae)
    assert torch.equal(loaded.decoder.layers[0].weight, fits.decoder.layers[0].weight)


def test_eager_pipeline_matches_the_engine(tiny_model, tiny_pipe, rng):
    from unigs_deploy.export import eager

    pipe = eager.pipeline(tiny_model)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    region = np.zeros((32, 32), bool)
    region[8:24, 8:24] = True
    for run in (lambda p: p.segment(image, steps=2), lambda p: p.refer(image, region, "a red circle", steps=2),
                lambda p: p.inpaint(image, [(region, "a blue square")], steps=2, guidance=2.0)):
        a, b = run(tiny_pipe), run(pipe)
        np.testing.assert_allclose(a.latents, b.latents, rtol=1e-4, atol=1e-4)


def test_optimize_export_keeps_the_tiny_vae(tiny_vae_engine, tmp_path):
    from unigs_deploy.export.exporter import export_model

    model, _ = tiny_vae_engine
    manifest = export_model(model, tmp_path, optimize=True)
    assert manifest.components["tiny_vae_decoder"]["optimized"] is not None


def test_loading_a_tiny_vae_does_not_warn_about_its_own_config_key(tmp_path):
    """AutoencoderTiny saves `block_out_channels` itself and then calls it unexpected on load:
    that one warning is dropped, another unexpected key still warns."""
    import json
    import logging

    from diffusers import AutoencoderTiny

    from unigs_deploy import modeling

    class Keep(logging.Handler):  # diffusers' loggers do not propagate to pytest's caplog
        def __init__(self):
            super().__init__(logging.WARNING)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    vae = modeling.build("tiny").vae
    AutoencoderTiny(**modeling.tiny_vae_config(vae)).save_pretrained(tmp_path / "t")
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    assert "block_out_channels" in config  # diffusers wrote it: the quirk is still there
    (tmp_path / "t" / "config.json").write_text(json.dumps({**config, "made_up_key": 1}))
    keep, log = Keep(), logging.getLogger("diffusers.configuration_utils")
    log.addHandler(keep)
    try:
        modeling.load_tiny_vae(tmp_path / "t", vae)
        (tmp_path / "t" / "config.json").write_text(json.dumps(config))
        modeling.load_tiny_vae(tmp_path / "t", vae)
        AutoencoderTiny.from_pretrained(tmp_path / "t")  # diffusers alone still warns
    finally:
        log.removeHandler(keep)
    assert len(keep.messages) == 2, keep.messages
    assert "made_up_key" in keep.messages[0]  # a real unexpected key is still named
    assert "block_out_channels" in keep.messages[1] and "made_up_key" not in keep.messages[1]
