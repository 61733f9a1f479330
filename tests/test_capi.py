"""The C API: built with cffi, driven from C programs compiled with gcc."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from unigs_deploy import dichotomy, palette
from unigs_deploy.synthetic import shapes

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")


def write_ppm(path: Path, rgb: np.ndarray) -> Path:
    h, w, _ = rgb.shape
    path.write_bytes(f"P6 {w} {h} 255\n".encode() + np.ascontiguousarray(rgb, np.uint8).tobytes())
    return path


@pytest.fixture(scope="module")
def capi(tmp_path_factory):
    pytest.importorskip("cffi")
    out = tmp_path_factory.mktemp("capi")
    subprocess.run([sys.executable, str(ROOT / "capi" / "build.py"), "--out", str(out)], check=True,
                   capture_output=True)
    progs = {}
    for name in ("segment", "errors", "bench_decode", "inpaint"):
        exe = out / name
        subprocess.run(["gcc", "-O2", str(ROOT / "examples" / "c" / f"{name}.c"), "-I", str(out / "include"),
                        "-L", str(out / "lib"), f"-Wl,-rpath,{out / 'lib'}", "-lunigs", "-o", str(exe)], check=True)
        progs[name] = exe
    return out, progs


def test_build_layout(capi):
    out, _ = capi
    assert (out / "include" / "unigs.h").is_file() and (out / "lib" / "libunigs.so").is_file()
    pc = (out / "lib" / "pkgconfig" / "unigs.pc").read_text()
    assert "-lunigs" in pc and "Cflags: -I${includedir}" in pc


def test_decode_from_c_equals_python(capi, tmp_path):
    _, progs = capi
    rng = np.random.default_rng(4)
    for n, corrupt in ((1, False), (7, True), (25, True)):
        masks, _ = shapes.random_layout(rng, 128, 160, n, min_pixels=64)
        cm = palette.encode_colormap(masks)
        if corrupt:
            cm = shapes.corrupt_colormap(cm, rng)
        ppm = write_ppm(tmp_path / "cm.ppm", cm)
        out = subprocess.run([str(progs["segment"]), "--decode", str(ppm), str(tmp_path / "l.raw")],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        got = np.fromfile(tmp_path / "l.raw", np.int32).reshape(128, 160)
        assert (got == dichotomy.decode_colormap(cm)).all()


def test_segment_from_c_equals_python(capi, tiny_engine, tmp_path):
    from unigs_deploy.pipeline import UniGSPipeline

    _, progs = capi
    engine = tiny_engine
    image = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    ppm = write_ppm(tmp_path / "img.ppm", image)
    out = subprocess.run([str(progs["segment"]), str(engine / "unigs.onnx"), str(ppm), str(tmp_path / "l.raw"),
                          "3", "11"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    got = np.fromfile(tmp_path / "l.raw", np.int32).reshape(32, 40)
    want = UniGSPipeline.from_engine(engine / "unigs.onnx").segment(image, steps=3, seed=11).labels
    assert (got == want).all()
    assert "entities" in out.stdout
    out = subprocess.run([str(progs["segment"]), str(engine / "unigs.onnx"), str(ppm), str(tmp_path / "l.raw"),
                          "3", "11", "euler", "-1"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    got = np.fromfile(tmp_path / "l.raw", np.int32).reshape(32, 40)
    want = UniGSPipeline.from_engine(engine / "unigs.onnx").segment(image, steps=3, seed=11, scheduler="euler",
                                                                     resolution="input").labels
    assert (got == want).all()
    out = subprocess.run([str(progs["segment"]), str(engine / "unigs.onnx"), str(ppm), str(tmp_path / "l.raw"),
                          "3", "11", "pndm"], capture_output=True, text=True)
    assert out.returncode == 1 and "unknown scheduler 'pndm'" in out.stderr
    # the decoder's split rule reaches the pipeline (a threshold this high leaves this image whole)
    out = subprocess.run([str(progs["segment"]), str(engine / "unigs.onnx"), str(ppm), str(tmp_path / "l.raw"),
                          "3", "11", "ddim", "0", "200", "centres"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    got = np.fromfile(tmp_path / "l.raw", np.int32).reshape(32, 40)
    want = UniGSPipeline.from_engine(engine / "unigs.onnx").segment(image, steps=3, seed=11, scheduler="ddim",
                                                                     threshold=200.0, stop="centres").labels
    assert (got == want).all()
    assert not (want == UniGSPipeline.from_engine(engine / "unigs.onnx").segment(image, steps=3, seed=11,
                                                                                  scheduler="ddim").labels).all()
    out = subprocess.run([str(progs["segment"]), str(engine / "unigs.onnx"), str(ppm), str(tmp_path / "l.raw"),
                          "3", "11", "ddim", "0", "-1"], capture_output=True, text=True)
    assert out.returncode == 1 and "threshold -1.0 must be > 0" in out.stderr
    out = subprocess.run([str(progs["segment"]), str(engine / "unigs.onnx"), str(ppm), str(tmp_path / "l.raw"),
                          "3", "11", "ddim", "0", "32", "middle"], capture_output=True, text=True)
    assert out.returncode == 1 and "middle" in out.stderr


def test_inpaint_from_c_equals_python(capi, tiny_engine, tmp_path):
    """examples/c/inpaint.c: the image and labels equal the Python pipeline's, with keep_unmasked
    and locate passed through unigs_params."""
    from unigs_deploy.pipeline import UniGSPipeline

    _, progs = capi
    image = np.random.default_rng(1).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    region = np.zeros((32, 40), np.uint8)
    region[8:24, 10:30] = 255
    ppm = write_ppm(tmp_path / "img.ppm", image)
    (tmp_path / "mask.pgm").write_bytes(b"P5 40 32 255\n" + region.tobytes())
    pipe = UniGSPipeline.from_engine(tiny_engine / "unigs.onnx")

    def run(*extra):
        return subprocess.run([str(progs["inpaint"]), str(tiny_engine / "unigs.onnx"), str(ppm),
                               str(tmp_path / "mask.pgm"), "a red star", str(tmp_path / "out.ppm"), "2", "5", *extra],
                              capture_output=True, text=True)
    for keep, locate in ((1, "colormap"), (-1, "refer"), (0, "refer")):  # the tiny model's default: redraw
        out = run(str(keep), locate)
        assert out.returncode == 0, out.stderr
        got = np.frombuffer((tmp_path / "out.ppm").read_bytes()[len(b"P6 40 32 255\n"):], np.uint8).reshape(32, 40, 3)
        labels = np.fromfile(tmp_path / "out.ppm.labels", np.int32).reshape(32, 40)
        want = pipe.inpaint(image, [(region > 0, "a red star")], steps=2, seed=5, keep_unmasked=keep == 1,
                            locate=locate)
        assert (got == want.image).all() and (labels == want.labels).all()
        assert (got[region == 0] == image[region == 0]).all() == (keep == 1)
    out = run("0", "-", "3")
    assert out.returncode == 0, out.stderr
    labels = np.fromfile(tmp_path / "out.ppm.labels", np.int32).reshape(32, 40)
    assert (labels == pipe.inpaint(image, [(region > 0, "a red star")], steps=2, seed=5, candidates=3).labels).all()
    out = run("0", "-", "1", "0", "500,1000")  # guidance_interval: steps t = 501 guided, t = 1 not
    assert out.returncode == 0, out.stderr
    got = np.frombuffer((tmp_path / "out.ppm").read_bytes()[len(b"P6 40 32 255\n"):], np.uint8).reshape(32, 40, 3)
    want = pipe.inpaint(image, [(region > 0, "a red star")], steps=2, seed=5, guidance_interval=(500, 1000))
    assert want.settings["guided_steps"] == 1 and (got == want.image).all()
    assert not (want.image == pipe.inpaint(image, [(region > 0, "a red star")], steps=2, seed=5).image).all()
    out = run("0", "-", "-1")
    assert out.returncode == 1 and "candidates -1 must be >= 1" in out.stderr
    out = run("0", "-", "3", "2")
    assert out.returncode == 1 and "rerank 2 must be 1 (the reranker), -1 (agreement) or 0" in out.stderr
    out = run("0", "-", "3", "1")
    assert out.returncode == 1 and "rerank 1 needs an engine exported with a reranker" in out.stderr
    assert "rerank=False" not in out.stderr and "set rerank to -1 (agreement) or 0" in out.stderr
    out = run("2")
    assert out.returncode == 1 and "keep_unmasked 2 must be 1 (keep), -1 (redraw) or 0" in out.stderr
    out = run("0", "middle")
    assert out.returncode == 1 and "locate must be one of" in out.stderr


def test_rerank_from_c_chooses_as_python(capi, reranker_engine, tmp_path):
    """unigs_params.rerank: 1 keeps the candidate the engine's reranker scores best, -1 the most
    agreed-on, as Python's rerank=True / False (on these inputs the two choose different draws)."""
    from unigs_deploy.pipeline import UniGSPipeline

    _, progs = capi
    engine = reranker_engine[1] / "unigs.onnx"
    image = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    region = np.zeros((32, 32), np.uint8)
    region[6:26, 6:26] = 255
    ppm = write_ppm(tmp_path / "img.ppm", image)
    (tmp_path / "mask.pgm").write_bytes(b"P5 32 32 255\n" + region.tobytes())
    pipe = UniGSPipeline.from_engine(engine)
    seeds = {}
    for flag, rerank in ((1, True), (-1, False)):
        out = subprocess.run([str(progs["inpaint"]), str(engine), str(ppm), str(tmp_path / "mask.pgm"), "a red star",
                              str(tmp_path / "out.ppm"), "2", "2", "-1", "refer", "4", str(flag)],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        got = np.frombuffer((tmp_path / "out.ppm").read_bytes()[len(b"P6 32 32 255\n"):], np.uint8).reshape(32, 32, 3)
        want = pipe.inpaint(image, [(region > 0, "a red star")], steps=2, seed=2, keep_unmasked=False, locate="refer",
                            candidates=4, rerank=rerank)
        assert (got == want.image).all()
        assert (np.fromfile(tmp_path / "out.ppm.labels", np.int32).reshape(32, 32) == want.labels).all()
        seeds[flag] = want.settings["seed"]
    assert seeds[1] != seeds[-1]


@pytest.mark.slow
def test_shipped_demo_model_from_c(capi, tmp_path):
    pytest.importorskip("torch")
    from unigs_deploy import modeling

    if not (modeling.demo_weights_dir() / "unet").is_dir():
        pytest.skip("the demo model is not in this checkout")
    from unigs_deploy.export.exporter import export_model
    from unigs_deploy.pipeline import UniGSPipeline

    _, progs = capi
    engine = tmp_path / "demo"
    export_model(modeling.load_demo(), engine)
    image, *_ = shapes.held_out_example(0, 64)
    ppm = write_ppm(tmp_path / "img.ppm", image)
    out = subprocess.run([str(progs["segment"]), str(engine / "unigs.onnx"), str(ppm), str(tmp_path / "l.raw"),
                          "5", "1"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    got = np.fromfile(tmp_path / "l.raw", np.int32).reshape(64, 64)
    assert (got == UniGSPipeline.from_engine(engine / "unigs.onnx").segment(image, steps=5, seed=1).labels).all()


def test_bad_input_through_c_gives_codes_and_messages(capi, tiny_engine):
    _, progs = capi
    out = subprocess.run([str(progs["errors"]), str(tiny_engine / "unigs.onnx")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in out.stdout.splitlines()}
    assert lines["null_colormap"] == "1 colormap is NULL"
    assert lines["zero_size"].startswith("1 image size 0x16")
    assert lines["bad_stride"].startswith("1 colormap stride 10")
    assert lines["small_buffer"].startswith("2 labels_out holds 10 bytes, 1024 are needed")
    assert lines["null_out"].startswith("1 labels_out is NULL")
    assert lines["ok"].strip() == "0"
    assert lines["missing_engine"].startswith("NULL engine /nonexistent/unigs.onnx does not exist")
    assert lines["null_engine"] == "NULL engine_path is NULL"
    assert lines["null_handle"].startswith("1 handle is NULL")
    assert lines["handle_small_buffer"].startswith("2 labels_out holds 100 bytes")
    assert lines["empty_mask"].startswith("1 mask is empty")
    assert lines["null_prompt"].startswith("1 prompt is NULL")
    assert lines["version"] == "0.7.0 0.7"
    assert lines["cancelled"] == "5 calls=2 cancelled by the progress callback after step 2 of 5"
    assert lines["low_guidance"].startswith("1 guidance must be a finite number >= 1")
    assert lines["bad_interval"] == ("1 guidance_interval {700, 600}: give timesteps 0 <= LOW <= HIGH "
                                     "(e.g. {600, 1000}), or {0, 0} for the task's default")


def test_cpp_example(capi, tmp_path):
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    out, _ = capi
    exe = tmp_path / "decode"
    subprocess.run(["g++", "-std=c++17", "-O2", str(ROOT / "examples" / "cpp" / "decode.cpp"), "-I",
                    str(out / "include"), "-L", str(out / "lib"), f"-Wl,-rpath,{out / 'lib'}", "-lunigs", "-o",
                    str(exe)], check=True)
    masks, _ = shapes.random_layout(np.random.default_rng(9), 64, 64, 5, min_pixels=64)
    cm = palette.encode_colormap(masks)
    res = subprocess.run([str(exe), str(write_ppm(tmp_path / "cm.ppm", cm))], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    labels = dichotomy.decode_colormap(cm)
    want = f"{labels.max()} entities" + "".join(f" {k}:{(labels == k).sum()}" for k in range(1, labels.max() + 1))
    assert res.stdout.strip() == want
    bad = subprocess.run([str(exe), str(tmp_path / "missing.ppm")], capture_output=True, text=True)
    assert bad.returncode == 1 and "not an 8-bit binary PPM" in bad.stderr


def test_readme_build_line_works_verbatim(capi, tmp_path):
    """The README's gcc + pkg-config line, with build/capi pointing at this test's build."""
    out, _ = capi
    readme = (ROOT / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith("gcc examples/c/segment.c $(PKG_CONFIG_PATH="))
    line = line.replace("build/capi", str(out)).replace("-o segment", f"-o {tmp_path / 'segment'}")
    subprocess.run(line, shell=True, cwd=ROOT, check=True)
    assert (tmp_path / "segment").is_file()
