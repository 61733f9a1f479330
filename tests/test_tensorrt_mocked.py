"""The TensorRT build path without a GPU: tensorrt and polygraphy's TensorRT loaders replaced by
recorders, so what unigs-export asks of them (typing, flags, profiles, files, manifest) is
checked here; tests marked `trt` run the real thing where it imports."""

import json
import os
import sys
import types

import numpy as np
import pytest

pytest.importorskip("torch")

from unigs_deploy import manifest as mf  # noqa: E402
from unigs_deploy.export import tensorrt as trt_build  # noqa: E402


@pytest.fixture
def fake_trt(monkeypatch):
    """tensorrt 10.x and polygraphy.backend.trt stand-ins that record every call."""
    calls = {"networks": [], "configs": [], "builds": []}
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.13.0"
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    poly = types.ModuleType("polygraphy.backend.trt")

    class Profile(dict):
        def add(self, name, min, opt, max):  # noqa: A002
            self[name] = (min, opt, max)
            return self

    def network_from_onnx_path(path, strongly_typed=False):
        calls["networks"].append({"path": path, "strongly_typed": strongly_typed})
        return path

    def create_config(**kw):
        calls["configs"].append(kw)
        return kw

    def engine_bytes_from_network(network, config, save_timing_cache):
        calls["builds"].append(network)
        with open(save_timing_cache, "wb") as f:
            f.write(b"cache")
        open(save_timing_cache + ".lock", "w").close()  # polygraphy leaves one
        return b"plan:" + os.path.basename(network).encode()

    poly.Profile, poly.CreateConfig = Profile, create_config
    poly.network_from_onnx_path, poly.engine_bytes_from_network = network_from_onnx_path, engine_bytes_from_network
    monkeypatch.setitem(sys.modules, "polygraphy.backend.trt", poly)
    monkeypatch.setattr(trt_build, "available", lambda: True)
    return calls


def test_profiles_at_the_vae_factor_and_batch_one_where_batch_is_one(tiny_engine):
    m = mf.load(tiny_engine)
    m.model.vae_scale_factor = 8  # as sd15's VAE
    r = trt_build.Ranges((1, 2, 4), (256, 512, 768), (256, 512, 1024))
    unet = trt_build.profile_shapes("unet", m, r)
    assert unet["sample"] == ((1, 13, 32, 32), (2, 13, 64, 64), (4, 13, 96, 128))
    assert unet["encoder_hidden_states"][2][:2] == (4, 77)
    assert trt_build.profile_shapes("vae_encoder", m, r)["sample"] == ((1, 3, 256, 256), (1, 3, 512, 512),
                                                                        (1, 3, 768, 1024))
    assert trt_build.profile_shapes("vae_decoder", m, r)["latent_sample"] == ((1, 4, 32, 32), (1, 4, 64, 64),
                                                                               (1, 4, 96, 128))
    assert trt_build.profile_shapes("text_encoder", m, r)["input_ids"] == ((1, 77),) * 3


@pytest.mark.parametrize("fp16", [False, True])
def test_build_is_strongly_typed_for_fp16_atomic_and_recorded_after_each_plan(tiny_engine, tmp_path, fake_trt, fp16):
    import shutil

    from click.testing import CliRunner

    from unigs_deploy.export import cli

    engine = shutil.copytree(tiny_engine, tmp_path / "eng")
    seen = []
    real_write = mf.Manifest.write

    def spy(self, folder=None):  # what the manifest says each time it is written
        seen.append(dict(self.engines.get("tensorrt", {}).get("files", {})))
        return real_write(self, folder)

    mf.Manifest.write = spy
    try:
        args = ["--from-onnx", str(engine), "--trt"] + (["--fp16"] if fp16 else ["--tf32"])
        res = CliRunner().invoke(cli.main, args)
    finally:
        mf.Manifest.write = real_write
    assert res.exit_code == 0, res.output
    assert [n["strongly_typed"] for n in fake_trt["networks"]] == [fp16] * 4
    assert all("fp16" not in c for c in fake_trt["configs"])  # the deprecated weak-typing flag is never set
    assert [c["tf32"] for c in fake_trt["configs"]] == [not fp16] * 4
    assert [len(s) for s in seen] == [1, 2, 3, 4]  # the manifest knows every plan as soon as it exists
    data = json.loads((engine / "unigs.json").read_text())
    core = {k: v for k, v in trt_build.PLAN.items() if not k.startswith("tiny_vae")}  # this engine has no tiny VAE
    assert data["engines"]["tensorrt"]["files"] == core
    for plan in core.values():
        assert (engine / plan).read_bytes().startswith(b"plan:")
        assert (engine / plan).stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert (engine / "timing.cache").read_bytes() == b"cache"
    assert not [p.name for p in engine.iterdir() if p.name.endswith(".lock") or p.name.startswith(".")]


def _umask():
    m = os.umask(0o022)
    os.umask(m)
    return m


def test_tensorrt_11_and_optimized_graphs_are_one_line_errors(tiny_engine, tmp_path, fake_trt):
    import shutil

    from click.testing import CliRunner

    from unigs_deploy.export import cli

    sys.modules["tensorrt"].__version__ = "11.0.1"
    res = CliRunner().invoke(cli.main, ["--from-onnx", str(tiny_engine), "--trt"])
    assert res.exit_code == 2 and "TensorRT 11.0.1 is installed but unigs-deploy builds with the TensorRT 10 API: " \
                                  "pip install 'tensorrt>=10,<11'" in res.output
    sys.modules["tensorrt"].__version__ = "10.13.0"
    engine = shutil.copytree(tiny_engine, tmp_path / "eng")
    data = json.loads((engine / "unigs.json").read_text())
    data["components"]["unet"]["optimized"] = {"MultiHeadAttention": 2}
    (engine / "unigs.json").write_text(json.dumps(data))
    res = CliRunner().invoke(cli.main, ["--from-onnx", str(engine), "--trt"])
    assert res.exit_code == 2 and "exported with --optimize" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(cli.main, ["--scale", "tiny", "--optimize", "--trt", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "TensorRT cannot parse" in res.output


def test_out_of_profile_input_names_the_range():
    from unigs_deploy.backends.tensorrt import profile_error

    msg = profile_error("unigs.plan", "sample", (2, 13, 240, 135), (1, 13, 32, 32), (4, 13, 96, 96))
    assert msg == ("unigs.plan: input sample has shape 2x13x240x135, outside the engine's profile 1x13x32x32 .. "
                   "4x13x96x96: use --resolution native (or an N inside the range), or rebuild with unigs-export "
                   "--from-onnx DIR --trt --height MIN:OPT:MAX --width MIN:OPT:MAX")


class _AsTensorRT:
    """An onnxruntime runner that says it is TensorRT (what the pipeline's profile fitting reads)."""

    provider = "TensorRT"

    def __init__(self, runner):
        self.runner, self.inputs = runner, runner.inputs

    def __call__(self, **feed):
        return self.runner(**feed)

    def close(self):
        pass


def test_working_sizes_are_fitted_to_the_tensorrt_profile(tiny_pipe):
    import dataclasses

    from unigs_deploy.pipeline import UniGSPipeline

    manifest = dataclasses.replace(tiny_pipe.manifest, engines={"tensorrt": {
        "files": {}, "height": [64, 96, 128], "width": [64, 96, 128], "batch": [1, 2, 4]}})
    comps = dict(tiny_pipe.components, unet=_AsTensorRT(tiny_pipe.components["unet"]))
    pipe = UniGSPipeline(comps, manifest, tiny_pipe.tokenizer)
    assert pipe.working_size((1080, 1920), 1920) == ((72, 128), "1920 px, fitted to the TensorRT profile")
    assert pipe.working_size((30, 40), 40)[0] == (64, 86)
    assert pipe.working_size((100, 120), 120) == ((100, 120), "120 px")  # inside: unchanged
    assert pipe.working_size((3000, 40), "input") == ((3000, 40), "input")  # as asked: the session names the range
    with pytest.raises(ValueError, match="cannot fit the TensorRT engines' profile"):
        pipe.working_size((1000, 40), 1000)
    res = pipe.segment(np.zeros((300, 500, 3), np.uint8), steps=1, resolution=500)
    assert res.settings["working_size"] == [128, 76] and res.labels.shape == (300, 500)
    assert tiny_pipe.working_size((1080, 1920), 1920)[0] == (1080, 1920)  # not TensorRT: no fitting
