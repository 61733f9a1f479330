"""unigs-export on the tiny_model model, and every component checked on every backend (test-backend-ops)."""

import copy
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from click.testing import CliRunner  # noqa: E402

from unigs_deploy import manifest as mf  # noqa: E402
from unigs_deploy import modeling  # noqa: E402
from unigs_deploy.export import cli  # noqa: E402
from unigs_deploy.export.components import example_inputs, specs  # noqa: E402
from unigs_deploy.export.tensorrt import available as _trt_available  # noqa: E402

HAS_TRT = _trt_available()


def test_export_writes_every_file_and_a_valid_manifest(tiny_engine):
    m = mf.load(tiny_engine)
    assert m.precision == "fp32" and m.model.task_embedding
    assert m.model.unet_in_channels == 13 and m.model.unet_out_channels == 8
    for name in mf.COMPONENTS:
        comp = m.components[name]
        for f in comp["files"]:
            assert (tiny_engine / f).is_file()
        assert len(comp["validation"]) == 2 and all(v["ok"] for v in comp["validation"])
        assert all(v["max_abs_error"] < 3e-5 for v in comp["validation"])
    assert set(m.components["unet"]["inputs"]) == {"sample", "timestep", "encoder_hidden_states", "class_labels"}
    assert (tiny_engine / "tokenizer.json").is_file()
    assert not [p for p in tiny_engine.iterdir() if p.name.startswith(".")]  # no staging left
    written = json.loads((tiny_engine / mf.MANIFEST_NAME).read_text())
    assert mf.Manifest.from_dict(written).to_dict() == written  # the schema round-trips


def _ort_run(path, feed):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {k: v.numpy() for k, v in feed.items()})[0]


def _trt_run(path, feed):
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    with TrtRunner(EngineFromBytes(path.read_bytes())) as runner:
        return next(iter(runner.infer({k: v.numpy() for k, v in feed.items()}).values()))


def _ov_run(path, feed):
    from unigs_deploy.backends.openvino import OvSession

    return OvSession(path, threads=1)(**{k: v.numpy() for k, v in feed.items()}).copy()


def _has_openvino() -> bool:
    from unigs_deploy.backends.openvino import available

    return available()


BACKENDS = [pytest.param("onnxruntime", id="onnxruntime"),
            pytest.param("openvino", id="openvino",
                         marks=pytest.mark.skipif(not _has_openvino(), reason="openvino does not import here")),
            pytest.param("tensorrt", id="tensorrt", marks=pytest.mark.trt)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("component", mf.COMPONENTS)
def test_backend_matches_torch(tiny_model, tiny_engine, component, backend, tmp_path):
    spec = next(s for s in specs(tiny_model) if s.name == component)
    feed = example_inputs(spec, tiny_model, batch=3, size=2 * max(spec.latent_multiple, 4), seed=42)  # unseen shapes
    with torch.no_grad():
        ref = spec.module(**feed).numpy()
    if backend == "onnxruntime":
        got = _ort_run(tiny_engine / spec.file, feed)
        tol = 3e-5
    elif backend == "openvino":
        got = _ov_run(tiny_engine / spec.file, feed)
        tol = 3e-5
    else:
        from unigs_deploy.export import tensorrt as trt_build

        ranges = trt_build.Ranges((1, 3, 4), (8, 16, 32), (8, 20, 40))
        trt_build.build_engines(tiny_engine, mf.load(tiny_engine), fp16=False, ranges=ranges)
        got = _trt_run(tiny_engine / trt_build.PLAN[component], feed)
        tol = 1e-3
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= tol * max(1.0, np.abs(ref).max())


def test_caption_pooling_exports_with_the_same_inputs(tmp_path):
    """A UNet that pools the caption into its time embedding exports with the usual four inputs and
    matches torch on unseen shapes, the pooled path live (gain 1)."""
    from unigs_deploy.export.exporter import export_model

    model = modeling.build("tiny", task_embedding=True, seed=2)
    model.unet = modeling.pool_caption(model.unet, 4, gain=1.0).eval()
    export_model(model, tmp_path)
    m = mf.load(tmp_path)
    assert set(m.components["unet"]["inputs"]) == {"sample", "timestep", "encoder_hidden_states", "class_labels"}
    spec = next(s for s in specs(model) if s.name == "unet")
    feed = example_inputs(spec, model, batch=3, size=16, seed=7)
    with torch.no_grad():
        ref = spec.module(**feed).numpy()
    assert np.abs(_ort_run(tmp_path / spec.file, feed) - ref).max() <= 3e-5 * max(1.0, np.abs(ref).max())


def test_fp16_export_is_validated_and_finite(tmp_path):
    res = CliRunner().invoke(cli.main, ["--scale", "tiny", "--fp16", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "unigs.json").read_text())
    assert data["precision"] == "fp16"
    fp16_checks = [v for c in data["components"].values() for v in c["validation"] if v["stage"] == "fp16"]
    assert len(fp16_checks) == 8 and all(v["finite"] and v["ok"] for v in fp16_checks)
    assert "fp16" in res.output and "manifest:" in res.output


def test_without_tensorrt_onnx_is_written_and_the_next_command_is_given(tmp_path):
    if HAS_TRT:
        pytest.skip("tensorrt is importable here")
    res = CliRunner().invoke(cli.main, ["--scale", "tiny", "--trt", "--out", str(tmp_path)])
    assert res.exit_code == 3
    assert f"unigs-export --from-onnx {tmp_path} --trt" in res.output
    assert (tmp_path / "unigs.onnx").is_file() and (tmp_path / "unigs.json").is_file()
    res = CliRunner().invoke(cli.main, ["--from-onnx", str(tmp_path), "--trt"])
    assert res.exit_code == 2 and "need the tensorrt package" in res.output
    assert "Traceback" not in res.output


def _one_line_error(res, pattern):
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines[-1].startswith("unigs-export: error:") and pattern in lines[-1], res.output
    assert "Traceback" not in res.output


def test_bad_inputs_end_in_one_line(tmp_path):
    run = CliRunner().invoke
    _one_line_error(run(cli.main, ["--weights", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]),
                    "does not exist")
    _one_line_error(run(cli.main, ["--out", str(tmp_path / "o")]), "give either --weights")
    (tmp_path / "partial" / "unet").mkdir(parents=True)
    _one_line_error(run(cli.main, ["--weights", str(tmp_path / "partial"), "--out", str(tmp_path / "o")]),
                    "missing vae/")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_line_error(run(cli.main, ["--scale", "tiny", "--out", str(blocker / "sub")]), "cannot write")
    _one_line_error(run(cli.main, ["--scale", "tiny", "--fp16", "--optimize", "--out", str(tmp_path / "o")]),
                    "choose one")


def test_interrupted_export_leaves_nothing_that_looks_valid(tmp_path, monkeypatch, tiny_model):
    from unigs_deploy.export import to_onnx

    real = to_onnx.export_component
    calls = []

    def interrupt_second(spec, *a, **kw):
        calls.append(spec.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(spec, *a, **kw)

    monkeypatch.setattr(to_onnx, "export_component", interrupt_second)
    monkeypatch.setattr(modeling, "build", lambda *a, **kw: copy.deepcopy(tiny_model))  # the CLI spends it
    res = CliRunner().invoke(cli.main, ["--scale", "tiny", "--out", str(tmp_path)])
    assert res.exit_code == 130 and "interrupted" in res.output
    assert os.listdir(tmp_path) == []


def _matmul_model(rng):
    from onnx import TensorProto, helper, numpy_helper

    w = [numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), f"w{i}") for i in range(3)]
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i}", f"w{i}"], [f"h{i + 1}" if i < 2 else "y"])
             for i in range(3)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], w)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_streaming_merge_and_move_keep_a_loadable_model(tmp_path):
    """The >2 GB path, on a small model saved the way the tracer saves big ones (a file a tensor)."""
    import onnx
    import onnxruntime as ort

    from unigs_deploy.export.to_onnx import move, save_streaming

    rng = np.random.default_rng(0)
    (tmp_path / "trace").mkdir()
    onnx.save_model(_matmul_model(rng), str(tmp_path / "trace" / "raw.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=False, size_threshold=0)
    assert len(list((tmp_path / "trace").iterdir())) == 4
    x = rng.standard_normal((1, 64)).astype(np.float32)
    want = ort.InferenceSession(str(tmp_path / "trace" / "raw.onnx")).run(None, {"x": x})[0]
    model = onnx.load(str(tmp_path / "trace" / "raw.onnx"), load_external_data=False)
    save_streaming(model, tmp_path / "trace", tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data", "trace"]
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"x": x})[0]
    assert (got == want).all()
    move(tmp_path / "m.onnx", tmp_path / "unigs.onnx")  # a renamed .data must be found again
    assert not (tmp_path / "m.onnx.data").exists()
    moved = onnx.load(str(tmp_path / "unigs.onnx"), load_external_data=False)
    assert moved.graph.initializer[0].external_data[0].value == "unigs.onnx.data"
    assert (ort.InferenceSession(str(tmp_path / "unigs.onnx")).run(None, {"x": x})[0] == want).all()


def test_export_never_replaces_another_models_engines(tmp_path):
    runner = CliRunner()
    assert runner.invoke(cli.main, ["--scale", "tiny", "--out", str(tmp_path)]).exit_code == 0
    res = runner.invoke(cli.main, ["--scale", "tiny", "--seed", "3", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "already holds the engines of a random tiny model (seed 0)" in res.output
    assert "--overwrite" in res.output and "Traceback" not in res.output
    assert runner.invoke(cli.main, ["--scale", "tiny", "--out", str(tmp_path)]).exit_code == 0  # same model: fine
    res = runner.invoke(cli.main, ["--scale", "tiny", "--seed", "3", "--out", str(tmp_path), "--overwrite"])
    assert res.exit_code == 0 and mf.load(tmp_path).source["seed"] == 3


def test_optimizing_with_weights_on_disk_equals_in_memory(tiny_model, tmp_path):
    """The path big UNets take (weights left in the .data file, read on demand) gives the same graph."""
    import onnx
    import onnxruntime as ort

    from unigs_deploy.export.optimize import optimize
    from unigs_deploy.export.to_onnx import export_component

    spec = next(s for s in specs(tiny_model) if s.name == "unet")
    src = export_component(spec, example_inputs(spec, tiny_model, batch=2, size=8), tmp_path / "plain.onnx",
                           slim=False)  # as unigs-export --optimize exports it
    onnx.save_model(onnx.load(str(src)), str(tmp_path / "ext.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="ext.onnx.data", size_threshold=1024)
    a = optimize(src, tmp_path / "a.onnx", component="unet")
    b = optimize(tmp_path / "ext.onnx", tmp_path / "b.onnx", component="unet")
    assert a == b and a.get("MultiHeadAttention")
    assert (tmp_path / "b.onnx.data").is_file() and not (tmp_path / "a.onnx.data").exists()
    feed = {k: v.numpy() for k, v in example_inputs(spec, tiny_model, batch=2, size=8).items()}
    x = ort.InferenceSession(str(tmp_path / "a.onnx")).run(None, feed)[0]
    assert (ort.InferenceSession(str(tmp_path / "b.onnx")).run(None, feed)[0] == x).all()


def test_fp16_with_weights_on_disk_equals_in_memory(tiny_model, tmp_path):
    """The path big models take through the fp16 conversion gives the same graph and weights."""
    import onnx
    import onnxruntime as ort

    from unigs_deploy.export.fp16 import convert
    from unigs_deploy.export.to_onnx import export_component

    spec = next(s for s in specs(tiny_model) if s.name == "unet")
    example = example_inputs(spec, tiny_model, batch=2, size=8)
    src = export_component(spec, example, tmp_path / "plain.onnx", slim=False)
    onnx.save_model(onnx.load(str(src)), str(tmp_path / "ext.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="ext.onnx.data", size_threshold=1024)
    convert(src, tmp_path / "a.onnx", component="unet")
    convert(tmp_path / "ext.onnx", tmp_path / "b.onnx", component="unet")
    assert (tmp_path / "b.onnx.data").is_file()
    a, b = onnx.load(str(tmp_path / "a.onnx")), onnx.load(str(tmp_path / "b.onnx"))
    wa = {t.name: onnx.numpy_helper.to_array(t) for t in a.graph.initializer}
    wb = {t.name: onnx.numpy_helper.to_array(t) for t in b.graph.initializer}
    assert wa.keys() == wb.keys() and all(wa[k].dtype == wb[k].dtype and (wa[k] == wb[k]).all() for k in wa)
    feed = {k: v.numpy() for k, v in example.items()}
    x = ort.InferenceSession(str(tmp_path / "a.onnx")).run(None, feed)[0]
    assert (ort.InferenceSession(str(tmp_path / "b.onnx")).run(None, feed)[0] == x).all()


def test_int8_unet_is_calibrated_checked_recorded_and_runs(tiny_engine, tmp_path):
    import shutil

    pytest.importorskip("nncf")
    from unigs_deploy.export import int8
    from unigs_deploy.pipeline import UniGSPipeline

    engine = shutil.copytree(tiny_engine, tmp_path / "eng")
    with pytest.raises(ValueError, match="agree with fp32's at PQ .* under the 1.01 this export accepts"):
        int8.quantize(engine, images=2, min_agreement=1.01, log=lambda *_: None)
    assert not (engine / int8.INT8_FILE).exists() and "int8" not in mf.load(engine).components["unet"]
    report = int8.quantize(engine, images=2, min_agreement=0.0, log=lambda *_: None)
    assert (engine / "unigs.int8.xml").is_file() and (engine / "unigs.int8.bin").is_file()
    assert mf.load(engine).components["unet"]["int8"] == report and report["calibration_inputs"] > 0
    pipe = UniGSPipeline.from_engine(engine / "unigs.onnx", int8=True)
    assert pipe.provider == "OpenVINO CPU" and pipe.segment(np.zeros((16, 16, 3), np.uint8)).labels.shape == (16, 16)
    res = CliRunner().invoke(cli.main, ["--weights", str(tmp_path), "--int8", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--int8 on your own weights needs --calibration DIR" in res.output
    res = CliRunner().invoke(cli.main, ["--scale", "tiny", "--int8", "--optimize", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--int8 quantizes the plain fp32 graph" in res.output
