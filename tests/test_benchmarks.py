"""unigs-bench's instrument: fits, the report files, and one quick `all` run end to end."""

import json
import subprocess
import sys

import numpy as np
import pytest

from unigs_deploy.benchmarks import report, scaling

README = """# x

## Performance

intro

{begin}
old numbers
{end}

## After
kept
"""


def test_fit_power_and_line_recover_known_laws():
    px = np.array([128, 256, 512]) ** 2
    k, c = scaling.fit_power(px, 3e-4 * px**1.25)
    assert k == pytest.approx(1.25, abs=1e-9) and c == pytest.approx(3e-4, rel=1e-6)
    slope, intercept = scaling.fit_line([1, 2, 4, 8], [0.5 + 2.0 * n for n in (1, 2, 4, 8)])
    assert slope == pytest.approx(2.0) and intercept == pytest.approx(0.5)


def test_runtime_closure_is_the_runtime_install():
    from unigs_deploy.benchmarks import decoder

    closure = decoder.runtime_closure()
    assert {"unigs-deploy", "numba", "llvmlite", "numpy", "onnxruntime", "opencv-python-headless"} <= closure
    assert not {"torch", "scikit-learn", "scipy", "cffi", "pytest"} & closure
    hidden = decoder._outside_runtime()
    assert {"torch", "sklearn", "scipy", "pytest"} <= set(hidden) and not {"numba", "numpy", "cv2"} & set(hidden)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`unigs-bench all --quick` on the tiny model: every part, the JSON, REPORT.md, README, plot."""
    tmp = tmp_path_factory.mktemp("bench")
    readme = tmp / "README.md"
    readme.write_text(README.format(begin=report.README_BEGIN, end=report.README_END))
    out = subprocess.run([sys.executable, "-m", "unigs_deploy.benchmarks.cli", "all", "--quick", "--workdir",
                          str(tmp / "work"), "--out-dir", str(tmp / "results"), "--readme", str(readme)],
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-2000:]
    (json_path,) = (tmp / "results").glob("*-quick.json")
    return tmp, json.loads(json_path.read_text()), readme


@pytest.mark.slow
def test_all_measures_every_part(quick_run):
    tmp, run, _ = quick_run
    assert set(run["results"]) == {"table1", "backends", "scaling", "components", "decoder", "capi"}
    assert run["skipped"] == {}
    t1 = run["results"]["table1"]
    assert t1["unigs_over_sd_time"] > 0 and [r["in_out"] for r in t1["rows"]] == ["9->4", "13->8"]
    b = run["results"]["backends"]
    assert [r["backend"] for r in b["rows"]] == 2 * ["torch eager fp32", "onnxruntime", "onnxruntime + CPU fusions"]
    assert all(r["peak_rss_mb"] > 0 and r["median_ms"] > 0 for r in b["rows"])
    s = run["results"]["scaling"]
    assert [r["size"] for r in s["rows"]] == [32, 64, 128] and np.isfinite(s["time_exponent"])
    png = tmp / "results" / f"{run['key']}-scaling.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cold = run["results"]["decoder"]["cold_start_ms"]
    assert cold["runtime_only"] > 0 and cold["installed"] > 0
    assert cold["runtime_only_imports_outside_runtime"] == []  # the hidden packages stayed hidden


@pytest.mark.slow
def test_report_and_readme_are_generated(quick_run):
    tmp, run, readme = quick_run
    text = readme.read_text()
    assert "old numbers" not in text and "## After\nkept" in text and "intro" in text
    assert f"### {run['key']}" in text and "Table 1 on our machinery" in text
    assert f"({run['key']}-scaling.png)" not in text  # the README links the plot by its path from the README
    assert f"results/{run['key']}-scaling.png" in text
    rep = tmp / "results" / "REPORT.md"
    assert rep.read_text().count(f"## {run['key']}\n") == 1
    report.update_report(rep, run, None)  # the same run again replaces its section
    report.update_report(rep, {**run, "key": "another-run"}, None)
    again = rep.read_text()
    assert again.count(f"## {run['key']}\n") == 1 and again.count("## another-run\n") == 1


@pytest.mark.slow
def test_readme_without_markers_is_a_clear_error(tmp_path, quick_run):
    _, run, _ = quick_run
    readme = tmp_path / "README.md"
    readme.write_text("# no block\n")
    with pytest.raises(Exception, match="no generated Performance block"):
        report.update_readme(readme, run, None)
    assert readme.read_text() == "# no block\n"


@pytest.mark.slow
def test_only_reruns_parts_into_the_same_json(quick_run):
    """--only merges into the host's latest run, whatever its date (a run may cross midnight)."""
    tmp, run, readme = quick_run
    earlier = tmp / "earlier"
    earlier.mkdir()
    (earlier / f"2000-01-01-{run['key'][11:]}.json").write_text(json.dumps(run))
    (earlier / f"1999-12-31-{run['key'][11:]}.json").write_text("{}")
    args = [sys.executable, "-m", "unigs_deploy.benchmarks.cli", "all", "--quick", "--workdir", str(tmp / "work"),
            "--out-dir", str(earlier), "--readme", str(readme)]
    bad = subprocess.run([*args, "--only", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown part(s) nope" in bad.stderr
    none = subprocess.run([*args[:-4], "--out-dir", str(tmp / "empty"), "--only", "capi"],
                          capture_output=True, text=True)
    assert none.returncode == 1 and "there is none: run without --only" in none.stderr
    out = subprocess.run([*args, "--only", "capi"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert sorted(p.name for p in earlier.glob("*.json")) == [
        f"1999-12-31-{run['key'][11:]}.json", f"2000-01-01-{run['key'][11:]}.json"]
    again = json.loads((earlier / f"2000-01-01-{run['key'][11:]}.json").read_text())
    assert again["results"]["table1"] == run["results"]["table1"]
    assert again["results"]["capi"]["machine"]["date"] >= run["results"]["capi"]["machine"]["date"]
    assert [r["parts"] for r in again["reruns"]] == ["capi"]
    assert again["reruns"][0]["replaced"]["capi"] == run["results"]["capi"]
    assert "Re-run with `--only capi`" in readme.read_text()


def test_steps_fast_and_memory_benchmarks_on_tiny_engines(tiny_engine, tmp_path):
    from click.testing import CliRunner

    from unigs_deploy.benchmarks.cli import main

    engine = str(tiny_engine / "unigs.onnx")
    res = CliRunner().invoke(main, ["steps", "--engine", engine, "--images", "2", "--steps", "1,2",
                                    "--json", str(tmp_path / "s.json"), "--plot", str(tmp_path / "s.png")])
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert {(r["scheduler"], r["spacing"], r["steps"]) for r in rows} == {
        (s, sp, k) for s, sp in (("ddim", "leading"), ("ddim", "trailing"), ("euler", "trailing"),
                                 ("dpm++2m", "trailing")) for k in (1, 2)}
    assert all(0 <= r["segment_pq"] <= 1 and 0 <= r["refer_miou"] <= 1 for r in rows)
    assert (tmp_path / "s.png").stat().st_size > 0

    res = CliRunner().invoke(main, ["fast", "--engine", engine, "--demo-engine", engine, "--size", "32",
                                    "--rounds", "2", "--images", "2", "--json", str(tmp_path / "f.json")])
    assert res.exit_code == 0, res.output
    fast = json.loads((tmp_path / "f.json").read_text())
    rows = {r["config"]: r for r in fast["speed"]["rows"]}
    old, new = rows["0.1 defaults"]["settings"], rows["new defaults"]["settings"]
    assert (old["steps"], old["unet_batch"], old["decoded"], old["tiny_vae"]) == (25, 2, ["colormap", "image"], "off")
    assert (new["steps"], new["unet_batch"], new["decoded"], new["scheduler"]) == (1, 1, ["colormap"], "dpm++2m")
    torch_row = rows["0.1 defaults, torch eager"]["settings"]  # the engine's torch model, rebuilt from its source
    assert torch_row["unet_on"] == "torch eager (CPU)" and torch_row["steps"] == 25
    assert not any("tiny VAE" in r for r in rows)  # this engine has none
    assert [r["config"] for r in fast["quality"]["rows"]][:3] == ["0.1 defaults", "0.1 defaults, torch eager",
                                                                  "new defaults"]
    assert "new defaults, OpenVINO" in [r["config"] for r in fast["speed"]["rows"]]  # openvino is a test extra

    res = CliRunner().invoke(main, ["memory", "--scale", "tiny", "--sizes", "32,64", "--no-exports", "--workdir",
                                    str(tmp_path / "w"), "--json", str(tmp_path / "m.json")])
    assert res.exit_code == 0, res.output
    mem = json.loads((tmp_path / "m.json").read_text())
    assert len(mem["step_rows"]) == 4 and all(r["peak_rss_mb"] > 0 for r in mem["step_rows"])
    assert "Peak RSS ~ pixels^k" in res.output


def test_gpu_check_says_in_one_line_that_it_needs_a_gpu():
    from click.testing import CliRunner

    from unigs_deploy.backends import tensorrt as trt_backend
    from unigs_deploy.benchmarks.cli import main

    if trt_backend.available():
        pytest.skip("tensorrt imports here: gpu-check runs for real (make gpu-check)")
    res = CliRunner().invoke(main, ["gpu-check", "--workdir", "unused"])
    assert res.exit_code == 3, res.output
    assert res.output.strip().count("\n") == 0 and "needs an NVIDIA GPU" in res.output


def test_gpu_check_parts_run_here_up_to_the_gpu(tiny_pipe):
    """What gpu-check does with the engines, on onnxruntime in TensorRT's place."""
    from unigs_deploy.benchmarks import gpu_check

    rows = gpu_check.compare(tiny_pipe, tiny_pipe, sizes=((32, 32), (32, 48)), precision="fp16", steps=1)
    assert [(r["task"], r["size"]) for r in rows][:4] == [(t, "32x32") for t in gpu_check.TASKS] and len(rows) == 8
    assert all(r["ok"] and r["max_abs_error"] == 0.0 and r["label_pq_vs_reference"] == 1.0 for r in rows)
    timing = gpu_check.time_unet({"a": tiny_pipe, "b": tiny_pipe}, size=32, rounds=2)
    assert [t["runtime"] for t in timing] == ["a", "b"] and all(t["median_s"] > 0 for t in timing)
    text = gpu_check.render({"rows": rows, "out_of_range": [], "timing": timing, "tolerance": gpu_check.TOLERANCE,
                             "ok": True})
    assert "| tiny" not in text and "all checks passed" in text and "labels PQ vs ref" in text


def test_pq_breakdown_counts_a_merge_as_one_false_and_two_missed_segments():
    """Two halves predicted as one segment: neither half matches (IoU 0.5 is not > 0.5), so the
    merge costs 1 FP and 2 FN; an exact image beside it adds 2 TP at SQ 1."""
    from unigs_deploy.benchmarks.quality import add_image, breakdown
    from unigs_deploy.evaluation.panoptic import PQAccumulator

    truth = np.ones((8, 8), np.int32)
    truth[:, 4:] = 2
    acc = PQAccumulator()
    add_image(acc, np.ones_like(truth), truth)
    add_image(acc, truth, truth)
    got = breakdown(acc)
    assert (got["tp"], got["fp"], got["fn"]) == (2, 1, 2)
    assert got["sq"] == pytest.approx(1.0)
    assert got["rq"] == pytest.approx(2 / (2 + 0.5 * 1 + 0.5 * 2))
    assert got["pq"] == pytest.approx(got["sq"] * got["rq"])


def test_vae_round_trip_reads_the_encoders_mean_and_decodes_like_the_pipeline():
    """With an identity autoencoder the ceiling is the dichotomy decoder on the true colormap
    (PQ 1 on a clean layout); the encoder's logvar half is never decoded."""
    from unigs_deploy import dichotomy, metrics, palette
    from unigs_deploy.benchmarks.quality import truth_labels, vae_round_trip
    from unigs_deploy.synthetic.shapes import held_out_example

    class Identity:
        scaling = 2.0
        has_tiny_vae = False
        components = {"vae_encoder": lambda sample: np.concatenate([sample, -sample], axis=1)}

        def decode_latent(self, z, *, tiny=False):
            return palette.unit_to_colormap(z[0].transpose(1, 2, 0) / self.scaling)

    _, masks, *_ = held_out_example(0, 64)
    cmap = palette.encode_colormap(masks)
    labels = vae_round_trip(Identity(), cmap)["vae"]
    assert np.array_equal(labels, dichotomy.decode_colormap(cmap, keep_background=True, min_area=2))
    assert metrics.panoptic_quality(labels, truth_labels(masks, with_background=True))["pq"] == pytest.approx(1.0)


def test_thresholds_bench_decodes_like_the_pipeline(tiny_engine):
    """Its (centres, 32) row, the pipeline's own defaults, equals unigs-bench quality's segment PQ
    on the same images: one run per image re-decoded is the pipeline's decode."""
    from unigs_deploy.benchmarks import compare, quality, thresholds

    r = thresholds.run(tiny_engine, n=3, offset=0, thresholds=(16, 32), size=32, threads=1)
    assert [(row["stop"], row["threshold"]) for row in r["rows"]] == [
        ("centres", 16.0), ("centres", 32.0), ("spread", 16.0), ("spread", 32.0)]
    default = next(row for row in r["rows"] if (row["stop"], row["threshold"]) == ("centres", 32.0))
    assert default["segment_pq"] == pytest.approx(quality.segment_pq(tiny_engine, n=3, size=32, threads=1,
                                                                                resolution="input"), abs=1e-12)
    assert r["best"]["segment_pq"]["segment_pq"] == max(row["segment_pq"] for row in r["rows"])
    assert "Best: segment_pq" in report.RENDER["thresholds"](r)
    for row in r["rows"]:  # quality's per-image record, for unigs-bench compare --rows
        per = {k: np.asarray(v, float) for k, v in row["per_image"].items()}
        assert compare._score(per["segment"], "pq") == pytest.approx(row["segment_pq"], abs=1e-12)
        assert per["refer"].mean() == pytest.approx(row["refer_miou"], abs=1e-12)
        assert per["inpaint_region_iou"].mean() == pytest.approx(row["inpaint_iou"], abs=1e-12)
    only = thresholds.run(tiny_engine, n=3, offset=0, thresholds=(16, 32), size=32, threads=1, tasks=("segment",))
    assert only["rows"] == [{**{k: row[k] for k in ("stop", "threshold", "segment_pq")},
                             "per_image": {"segment": row["per_image"]["segment"]}} for row in r["rows"]]
    assert list(only["best"]) == ["segment_pq"] and "refer mIoU" not in report.RENDER["thresholds"](only)
    with pytest.raises(ValueError, match="unknown task"):
        thresholds.run(tiny_engine, n=1, tasks=("synthesize",))


def test_thresholds_bench_decodes_with_the_vae_it_is_told(tiny_engine):
    """--tiny-vae reaches the pipeline: this engine has no tiny VAE, so asking for one fails, and
    'off' is its default decode."""
    from unigs_deploy.benchmarks import thresholds

    kw = dict(n=1, offset=0, thresholds=(32,), stops=("centres",), threads=1)
    assert thresholds.run(tiny_engine, tiny_vae="off", **kw)["rows"] == thresholds.run(tiny_engine, **kw)["rows"]
    with pytest.raises(ValueError, match="needs an engine exported with a tiny VAE"):
        thresholds.run(tiny_engine, tiny_vae="colormap", **kw)


def test_generative_bench_scores_every_steps_guidance_pair_as_quality_does(tiny_engine, tiny_pipe):
    """One row per (steps, guidance), each the mean of unigs-bench quality's inpaint scores over
    the same images and seeds; an unknown task is a one-line error."""
    from click.testing import CliRunner

    from unigs_deploy import palette
    from unigs_deploy.benchmarks import compare, generative, quality
    from unigs_deploy.benchmarks.cli import main
    from unigs_deploy.synthetic.shapes import held_out_example

    r = generative.run(tiny_engine, n=2, offset=7, steps=(1, 2), guidance=(1.0, 3.0), size=32, threads=1)
    assert [(row["steps"], row["guidance"]) for row in r["rows"]] == [(1, 1.0), (1, 3.0), (2, 1.0), (2, 3.0)]
    scores = []
    for i in range(2):
        image, masks, captions, region, j = held_out_example(7 + i, 32)
        res = tiny_pipe.inpaint(image, [(region, captions[j])], seed=i, steps=2, guidance=3.0)
        scores.append(quality.inpaint_scores(res, region, masks[j], captions[j]))
    row = r["rows"][3]
    assert [row["inpaint_iou"], row["colour_match"], row["shape_kind"]] == pytest.approx(
        np.mean(np.asarray(scores, float), axis=0).tolist(), abs=1e-12)
    assert 0.0 <= row["synthesize_pq"] <= 1.0
    per = row["per_image"]  # quality's per-image record, for unigs-bench compare
    assert per["inpaint_region_iou"] == [float(s[0]) for s in scores]
    assert per["inpaint_kind"] == [bool(s[2]) for s in scores] and len(per["synthesize"]) == 2
    assert compare._score(np.asarray(per["synthesize"], float), "pq") == pytest.approx(row["synthesize_pq"])
    assert row["inpaint_scheduler"] == res.settings["scheduler"]
    assert row["synthesize_scheduler"] == tiny_pipe.synthesize(
        palette.encode_colormap(masks), ", ".join(captions), seed=1, steps=2, guidance=3.0).settings["scheduler"]
    assert "synthesize PQ" in report.RENDER["generative"](r)
    out = CliRunner().invoke(main, ["generative", "--engine", str(tiny_engine), "--tasks", "inpaint,segment"])
    assert out.exit_code == 2 and "unknown task(s) segment" in out.output


def test_generative_bench_scores_each_way_of_locating_the_inpainted_entity(tiny_engine, tiny_pipe):
    """--locate adds a grid axis: each row is quality's inpaint scores with the entity read that way."""
    from click.testing import CliRunner

    from unigs_deploy.benchmarks import generative, quality
    from unigs_deploy.benchmarks.cli import main
    from unigs_deploy.synthetic.shapes import held_out_example

    r = generative.run(tiny_engine, n=2, offset=7, steps=(1,), guidance=(3.0,), locate=("colormap", "refer"),
                       tasks=("inpaint",), size=32, threads=1)
    assert [row["locate"] for row in r["rows"]] == ["colormap", "refer"]
    for row in r["rows"]:
        scores = []
        for i in range(2):
            image, masks, captions, region, j = held_out_example(7 + i, 32)
            res = tiny_pipe.inpaint(image, [(region, captions[j])], seed=i, steps=1, guidance=3.0,
                                    locate=row["locate"])
            scores.append(quality.inpaint_scores(res, region, masks[j], captions[j]))
        assert [row["inpaint_iou"], row["colour_match"], row["shape_kind"]] == pytest.approx(
            np.mean(np.asarray(scores, float), axis=0).tolist(), abs=1e-12)
    assert "located by" in report.RENDER["generative"](r)
    out = CliRunner().invoke(main, ["generative", "--engine", str(tiny_engine), "--locate", "colormap,image"])
    assert out.exit_code == 2 and "unknown image: choose from colormap, refer" in out.output


def test_generative_bench_scores_each_guidance_interval(tiny_engine, tiny_pipe):
    """--guidance-interval adds a grid axis: each row is quality's inpaint scores with guidance on
    the timesteps inside it only, and compare names two rows by it."""
    from click.testing import CliRunner

    from unigs_deploy.benchmarks import compare, generative, quality
    from unigs_deploy.benchmarks.cli import main
    from unigs_deploy.synthetic.shapes import held_out_example

    r = generative.run(tiny_engine, n=2, offset=7, steps=(4,), guidance=(5.0,), guidance_interval=(None, (400, 1000)),
                       tasks=("inpaint",), size=32, threads=1)
    assert [row["guidance_interval"] for row in r["rows"]] == [None, [400.0, 1000.0]]
    assert r["rows"][1]["inpaint_guidance_interval"] == [400.0, 1000.0]
    scores = []
    for i in range(2):
        image, masks, captions, region, j = held_out_example(7 + i, 32)
        res = tiny_pipe.inpaint(image, [(region, captions[j])], seed=i, steps=4, guidance=5.0,
                                guidance_interval=(400, 1000))
        scores.append(quality.inpaint_scores(res, region, masks[j], captions[j]))
    assert r["rows"][1]["per_image"]["inpaint_region_iou"] == [float(s[0]) for s in scores]
    runs = [compare.select(r, row, "x") for row in (0, 1)]
    assert compare.default_names(runs, ["a", "b"], one_file=True) == ["guidance_interval None",
                                                                       "guidance_interval 400..1000"]
    table = report.RENDER["generative"](r)
    assert "| every step |" in table and "| t in 400..1000 |" in table
    out = CliRunner().invoke(main, ["generative", "--engine", str(tiny_engine), "--guidance-interval", "600"])
    assert out.exit_code == 2 and "give LOW:HIGH timesteps, comma-separated" in out.output


@pytest.mark.parametrize("entities, guidance", [((1, 6), None), ((1, 1), 2.0)])
def test_kinds_bench_inpaints_each_region_once_per_kind(tiny_engine, tiny_pipe, entities, guidance):
    """The confusion matrix and the masks' likeness are those of the four inpaintings of each
    region (same seed and colour, one per kind) judged as unigs-bench quality judges them; the
    judge's ceiling is its verdict on the true entities; --entities sets the held-out scenes,
    --guidance inpaint's guidance."""
    import itertools

    from click.testing import CliRunner

    from unigs_deploy import metrics
    from unigs_deploy.benchmarks import detect, generative
    from unigs_deploy.benchmarks.cli import main
    from unigs_deploy.labels import dominant_in
    from unigs_deploy.synthetic.shapes import KINDS, caption, held_out_example

    r = generative.kinds(tiny_engine, n=2, offset=3, size=32, entities=entities, guidance=guidance, threads=1)
    confusion, alike, truth = np.zeros((4, 4), int), [], 0
    for i in range(2):
        image, masks, captions, region, j = held_out_example(3 + i, 32, entities)
        if entities == (1, 1):
            assert len(masks) == 1
        colour, kind_j = captions[j].split()[1:]
        truth += detect.shape_kind(masks[j], hidden=masks.any(0) & ~masks[j]) == kind_j
        drawn = []
        for asked, kind in enumerate(KINDS):
            res = tiny_pipe.inpaint(image, [(region, caption(colour, kind))], seed=i, guidance=guidance)
            assert res.settings["guidance"] == (guidance or 7.5)
            drawn.append(dominant_in(res.labels, region))
            if drawn[-1].any():
                confusion[asked, KINDS.index(detect.shape_kind(drawn[-1], hidden=(res.labels > 0) & ~drawn[-1]))] += 1
        alike += [metrics.mask_iou(a, b) for a, b in itertools.combinations(drawn, 2)]
    assert r["confusion"] == confusion.tolist() and r["kinds"] == list(KINDS) and r["entities"] == list(entities)
    assert r["match"] == pytest.approx(np.trace(confusion) / max(1, confusion.sum()))
    assert r["mask_iou_between_kinds"] == pytest.approx(np.mean(alike))
    assert r["truth_match"] == truth / 2
    text = report.RENDER["kinds"](r)
    assert "asked \\ judged" in text and "chance 0.25" in text and "the judge's ceiling" in text
    assert ("(scenes of 1 entity)" in text) == (entities == (1, 1))
    assert ("but guidance 2," in text) == (guidance == 2.0) and r["guidance"] == guidance
    out = CliRunner().invoke(main, ["kinds", "--engine", str(tiny_engine), "--entities", "2,1"])
    assert out.exit_code == 2 and "give FEWEST,MOST with 1 <= FEWEST <= MOST" in out.output


def test_quality_bench_reports_what_its_inpaint_metrics_can_reach(tiny_engine):
    """The references are computed from the truth: the detector on each true entity, the coarse
    region's own IoU, a perfect inpainter's on the box regions beside the model's there (the mean
    of its per-image region IoUs on those images)."""
    from unigs_deploy import metrics
    from unigs_deploy.benchmarks import detect, posterior, quality
    from unigs_deploy.synthetic.shapes import held_out_example

    r = quality.run(tiny_engine, n=3, steps=2, size=32, threads=1)
    assert [row["task"] for row in r["rows"]] == ["segment", "segment", "refer", "inpaint", "inpaint", "inpaint",
                                                  "synthesize"]
    examples = [held_out_example(i, 32) for i in range(3)]
    ref = r["inpaint_references"]
    assert ref["shape_kind_of_the_truth"] == pytest.approx(
        np.mean([detect.shape_kind(m[j], quality.others(m, j)) == c[j].split()[2] for _, m, c, _, j in examples]))
    assert ref["region_iou_of_the_region"] == pytest.approx(
        np.mean([metrics.mask_iou(region, m[j]) for _, m, _, region, j in examples]))
    perfect = {i: posterior.posterior_region_iou(i, 32) for i in range(3)}
    boxes = [i for i, v in perfect.items() if v is not None]
    assert boxes and ref["box_region_images"] == len(boxes)
    want = np.mean([perfect[i] for i in boxes])
    assert ref["region_iou_of_a_perfect_inpainter_on_box_regions"] == pytest.approx(want)
    per_image = r["per_image"]["inpaint_region_iou"]
    assert r["rows"][3]["value"] == pytest.approx(np.mean(per_image))
    assert ref["region_iou_on_box_regions"] == pytest.approx(np.mean([per_image[i] for i in boxes]))
    assert "inpaint references" in report.RENDER["quality"](r) and "perfect inpainter" in report.RENDER["quality"](r)
    assert r["pq_breakdown"]["segment"]["pq"] == r["rows"][0]["value"]
    assert r["pq_breakdown"]["synthesize"]["pq"] == r["rows"][-1]["value"]
    assert "segment PQ" in report.RENDER["quality"](r) and "missed" in report.RENDER["quality"](r)
    # the per-image record gives back every per-image row (PQ from its [IoU sum, tp, fp, fn] shares)
    from unigs_deploy.benchmarks import compare

    per = r["per_image"]
    for (task, metric, key, how), row in zip(compare.METRICS, [r["rows"][i] for i in (0, 2, 3, 4, 5, 6)],
                                             strict=True):
        assert (row["task"], row["metric"]) == (task, metric)
        assert compare._score(np.asarray(per[key], dtype=float), how) == pytest.approx(row["value"])


def test_quality_benchmarks_draw_images_at_the_models_training_side(tiny_engine, tiny_pipe, tmp_path):
    """A model trained at 128 px is judged on 128 px images unless told otherwise."""
    from click.testing import CliRunner

    from unigs_deploy.benchmarks import thresholds
    from unigs_deploy.benchmarks.cli import main
    from unigs_deploy.benchmarks.common import held_out_size

    assert tiny_pipe.manifest.model.resolution == 16
    assert held_out_size(tiny_pipe, None) == 16 and held_out_size(tiny_pipe, 32) == 32
    assert thresholds.run(tiny_engine, n=1, thresholds=(32,), stops=("centres",), threads=1)["size"] == 16
    res = CliRunner().invoke(main, ["thresholds", "--engine", str(tiny_engine / "unigs.onnx"), "--images", "1",
                                    "--thresholds", "32", "--size", "32", "--threads", "1", "--json",
                                    str(tmp_path / "t.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "t.json").read_text())["size"] == 32


def test_the_box_region_likelihood_fits_the_coarse_mask_process():
    """Every box region coarse_mask makes around a mask has a positive likelihood under
    posterior.box_likelihood (the inpaint reference's model of it), curved ones are told apart,
    and a region moved further than half the free space has none."""
    from unigs_deploy.benchmarks.posterior import box_likelihood, is_box
    from unigs_deploy.synthetic import coarse, shapes

    rng = np.random.default_rng(0)
    curved_as_box = 0
    for size in (64, 128):
        for _ in range(100):
            _, masks, _ = shapes.shapes_image(rng, size)
            m = masks[rng.integers(len(masks))]
            box, _ = coarse.coarse_mask(m, rng, curve_prob=0.0)
            assert is_box(box) and box_likelihood(m, box) > 0
            curved_as_box += is_box(coarse.coarse_mask(m, rng, curve_prob=1.0)[0])
    assert curved_as_box <= 8  # bulges clipped flat by the border: 2.5% of 400 at 128x128
    m = np.zeros((64, 64), bool)
    m[20:30, 20:30] = True
    far = np.zeros_like(m)
    far[5:30, 20:30] = True  # 15 pixels up where at most half of the 20 free ones may be taken
    near = np.zeros_like(m)
    near[12:30, 20:30] = True
    assert box_likelihood(m, far) == 0 and box_likelihood(m, near) > 0


def test_a_perfect_inpainters_region_iou_is_estimated_on_box_regions(monkeypatch):
    """posterior_region_iou: None on a curved region unless asked; on a box one a seeded estimate
    in (0, 1) that more draws leave within 0.1, and that the approximate likelihood the curved
    regions use reproduces within 0.05."""
    from unigs_deploy.benchmarks.posterior import is_box, posterior_region_iou
    from unigs_deploy.synthetic import shapes
    from unigs_deploy.synthetic.shapes import ENTITIES, HELD_OUT_SEED, held_out_example

    asked, layout = [], shapes.random_layout

    def spy(rng, h, w, n, **kw):
        asked.append(n)
        return layout(rng, h, w, n, **kw)

    monkeypatch.setattr(shapes, "random_layout", spy)
    for i in range(20):  # the entity count it reads back is the one the image asked for
        held_out_example(i, 128)
        assert asked[-1] == int(np.random.default_rng(HELD_OUT_SEED + i).integers(ENTITIES[0], ENTITIES[1] + 1))
    monkeypatch.undo()
    kinds = {is_box(held_out_example(i, 128)[3]): i for i in range(10)}
    assert posterior_region_iou(kinds[False], 128, draws=100) is None
    few = posterior_region_iou(kinds[True], 128, draws=3000)
    assert 0 < few < 1 and few == posterior_region_iou(kinds[True], 128, draws=3000)
    assert abs(posterior_region_iou(kinds[True], 128, draws=12000, seed=1) - few) < 0.1
    first_curved = next(i for i in range(10) if not is_box(held_out_example(i, 128)[3]))
    curved = posterior_region_iou(first_curved, 128, draws=3000, abc={})
    assert 0 < curved < 1 and curved == posterior_region_iou(first_curved, 128, draws=3000, abc={})
    # the approximate likelihood, tried where the exact one is known (the box regions), agrees
    assert posterior_region_iou(kinds[True], 128, draws=3000, abc={"sims": 8}) == pytest.approx(few, abs=0.05)


def test_the_approximate_region_likelihood():
    """abc_likelihood: the share of regions drawn around a mask that match the given one; regions
    the process made around the mask are matched by some, none around a mask elsewhere."""
    from unigs_deploy.benchmarks.posterior import abc_likelihood
    from unigs_deploy.synthetic import coarse

    m = np.zeros((128, 128), bool)
    m[40:68, 48:80] = True
    elsewhere = np.roll(m, 40, axis=1)
    rng = np.random.default_rng(0)
    for curved in (False, True):  # a match is rare (1-4% of draws at 0.8): many proposals make up for it
        regions = [coarse.coarse_mask(m, rng, curve_prob=float(curved))[0] for _ in range(10)]
        assert np.mean([abc_likelihood(m, r, rng, curved=curved, sims=32, tau=0.8) for r in regions]) > 0
        assert all(abc_likelihood(elsewhere, r, rng, curved=curved, sims=32, tau=0.8) == 0 for r in regions)


def test_teacher_forced_probe_on_a_caption_blind_oracle(tiny_model):
    """A model answering every noised input with the truth, whatever the caption: the four kinds'
    masks are one mask (1.0 between kinds), the true caption's IoU is 1, and the asked kind is
    judged exactly once in four. It reads the truth from x_t: from the noise alone (the batch's last
    input) it draws nothing, IoU 0."""
    from types import SimpleNamespace

    import torch

    from unigs_deploy import modeling, palette
    from unigs_deploy.benchmarks import teacher_forced
    from unigs_deploy.synthetic.shapes import held_out_example

    n, size, timesteps = 2, 32, (100, 900)
    truths = []
    for i in range(n):
        image, masks, _, _, j = held_out_example(5000 + i, size)
        pair = [palette.colormap_to_unit(image), palette.colormap_to_unit(palette.encode_colormap(masks[j:j + 1]))]
        truths += [torch.from_numpy(np.concatenate(pair, -1)).permute(2, 0, 1)[None].float()] * len(timesteps)

    class Identity(torch.nn.Module):  # a VAE whose latent is the image
        config = SimpleNamespace(scaling_factor=1.0)

        def encode(self, x):
            return SimpleNamespace(latent_dist=SimpleNamespace(mean=x))

        def decode(self, z):
            return SimpleNamespace(sample=z)

    class Oracle(torch.nn.Module):
        config = SimpleNamespace(num_class_embeds=4)

        def forward(self, sample, timestep, hidden, class_labels=None):
            out = truths.pop(0).repeat(len(sample), 1, 1, 1)
            out[-1] = -1.0  # a black colormap: no entity
            return SimpleNamespace(sample=out)

    class Text(torch.nn.Module):
        def forward(self, ids):
            return (torch.randn(len(ids), ids.shape[1], 8),)

    model = modeling.UniGSModel(unet=Oracle(), vae=Identity(), text_encoder=Text(), tokenizer=tiny_model.tokenizer,
                                scheduler_config=tiny_model.scheduler_config)
    r = teacher_forced.run(model, n=n, size=size, timesteps=timesteps)
    assert not truths and [x["t"] for x in r["rows"]] == list(timesteps)
    for x in r["rows"]:
        assert x["masks_between_kinds"] == 1.0 and x["true_caption_region_iou"] == 1.0
        assert x["true_caption_iou_all_images"] == 1.0 and x["true_caption_iou_from_noise_alone"] == 0.0
        assert x["asked_kind_match"] == 0.25 and x["judged"] == 4 * n
    assert "masks between kinds" in report.RENDER["teacher-forced"](r)


def test_inpaint_reference_covers_both_region_branches():
    """unigs-bench inpaint-reference: every image gets a row; the summaries are the means of their
    branch's rows (box regions by the exact likelihood, curved ones approximately)."""
    from unigs_deploy.benchmarks import posterior

    r = posterior.run(n=4, size=64, draws=1500, curved_draws=300)
    assert [row["image"] for row in r["rows"]] == [0, 1, 2, 3]
    s = r["summary"]
    assert s["box"]["images"] + s["curved"]["images"] == s["all"]["images"] == 4
    for branch, summary in s.items():
        rows = [x for x in r["rows"] if branch in ("all", x["region"]) and x["perfect"] is not None]
        assert summary["estimated"] == len(rows)
        if rows:
            assert summary["perfect"] == pytest.approx(np.mean([x["perfect"] for x in rows]))
        if rows:
            assert summary["bayes"] == pytest.approx(np.mean([x["bayes"] for x in rows]))
            assert summary["bayes_kind"] == pytest.approx(np.mean([x["bayes_kind"] for x in rows]))
    box = [x for x in r["rows"] if x["region"] == "box"]
    assert all(x["perfect"] == posterior.posterior_region_iou(x["image"], 64, draws=1500) for x in box)
    assert all((x["bayes"], x["bayes_kind"]) == posterior.bayes_answer(x["image"], 64, draws=1500) for x in box)
    text = report.RENDER["inpaint-reference"](r)
    assert "perfect inpainter" in text and "Bayes answer" in text


def test_central_is_the_minimum_bayes_risk_mask():
    """posterior.central: of three overlapping boxes in a row the middle one has the highest mean
    IoU with all; enough weight on the left one makes it the answer."""
    from unigs_deploy.benchmarks import posterior

    boxes = [np.zeros((8, 16), bool) for _ in range(3)]
    for k, m in enumerate(boxes):
        m[2:6, 3 * k:3 * k + 6] = True
    assert posterior.central(boxes, np.ones(3)) == 1
    assert posterior.central(boxes, np.array([10.0, 1.0, 1.0])) == 0
    assert posterior.central(boxes[::-1], np.ones(3)) == 1


def test_bayes_answer_is_a_seeded_draw_of_the_asked_kind():
    """On held-out 5 (a box region, an ellipse asked) the Bayes answer is seeded, judged the asked
    kind and overlaps the truth; curved regions have none without abc, as the sample's reference."""
    from unigs_deploy.benchmarks import posterior

    iou, judged = posterior.bayes_answer(5, 128, draws=2000)
    assert (iou, judged) == posterior.bayes_answer(5, 128, draws=2000)
    assert judged and 0.5 < iou < 1
    assert posterior.bayes_answer(0, 128, draws=100) is None  # held-out 0's region is curved


def test_kind_means_judge_the_posterior_mean_per_kind():
    """kind-means on one box region (held-out 5010): rotated, every kind's posterior mean is an
    ellipse-like blob; unrotated, the rectangle's and the triangle's keep their outline. The
    refactored draws still give posterior_region_iou's seeded value."""
    from unigs_deploy.benchmarks import posterior, report

    rotated = posterior.kind_means(n=1, offset=5010, draws=4000)
    unrotated = posterior.kind_means(n=1, offset=5010, draws=4000, rotate=False)
    assert rotated["regions"] == unrotated["regions"] == 1
    assert rotated["rows"][0]["judged"] == ["ellipse"] * 4 and rotated["match"] == 0.25
    assert unrotated["rows"][0]["judged"][:3] == ["ellipse", "rectangle", "triangle"]
    assert 0 < unrotated["means_iou_between_kinds"] < 1
    assert "judged its own kind 0.25" in report.RENDER["kind-means"](rotated)
    assert posterior.kind_means(n=1, offset=5000)["regions"] == 0  # 5000's region is curved
    assert posterior.posterior_region_iou(5, 128, draws=2000) == pytest.approx(0.8140189907077156, abs=1e-12)


def _quality_run(per_image: dict, n: int, size: int = 128) -> dict:
    return {"benchmark": "quality", "images": n, "size": size, "engine": "x", "per_image": per_image}


def _per_image(kind, segment, refer=None):
    n = len(kind)
    return {"segment": segment, "refer": refer if refer is not None else [0.5] * n,
            "inpaint_region_iou": [0.5] * n, "inpaint_colour": [True] * n, "inpaint_kind": kind,
            "synthesize": segment}


def test_compare_tells_a_consistent_gain_from_the_images_noise():
    """B right on the same images as A plus 12 more of 100 is apart; the same 12 against 10 the
    other way is not. PQ is recomputed from the images' shares, as panopticapi sums them."""
    from unigs_deploy.benchmarks import compare

    rng = np.random.default_rng(0)
    kind_a = list(rng.random(100) < 0.35)
    off = [i for i in range(100) if not kind_a[i]]
    on = [i for i in range(100) if kind_a[i]]
    gained = [kind_a[i] or i in off[:12] for i in range(100)]
    traded = [(kind_a[i] or i in off[:12]) and i not in on[:10] for i in range(100)]
    seg = [[0.9, 1, 0, 1]] * 50 + [[1.8, 2, 1, 0]] * 50
    seg_b = [[0.9, 1, 0, 1]] * 50 + [[2.7, 3, 0, 0]] * 50
    a = _quality_run(_per_image(kind_a, seg), 100)

    r = compare.compare(a, _quality_run(_per_image(gained, seg_b), 100), resamples=2000, names=("s21", "m"))
    rows = {row["metric"]: row for row in r["rows"]}
    kind = rows["shape-kind match"]
    assert kind["difference"] == pytest.approx(0.12) and (kind["only_a"], kind["only_b"]) == (0, 12)
    assert kind["apart"] and kind["low"] > 0
    pq = rows["PQ"]
    assert pq["a"] == pytest.approx(135 / (150 + 0.5 * 100)) and pq["b"] == pytest.approx(180 / (200 + 0.5 * 50))
    assert pq["apart"]
    assert not rows["mIoU"]["apart"] and rows["mIoU"]["difference"] == 0
    assert "m better" in report.RENDER["compare"](r) and "12" in report.RENDER["compare"](r)

    r = compare.compare(a, _quality_run(_per_image(traded, seg), 100), resamples=2000)
    kind = next(row for row in r["rows"] if row["metric"] == "shape-kind match")
    assert (kind["only_a"], kind["only_b"]) == (10, 12) and kind["difference"] == pytest.approx(0.02)
    assert not kind["apart"] and kind["low"] < 0 < kind["high"]


def test_compare_says_in_one_line_what_it_cannot_compare(tmp_path):
    from click.testing import CliRunner

    from unigs_deploy.benchmarks import cli

    seg = [[0.9, 1, 0, 1]] * 3
    ok = _quality_run(_per_image([True, False, True], seg), 3)
    cases = {"old": ({k: v for k, v in ok.items() if k != "per_image"},
                     "old.json has no per-image scores (a quality run from before they were recorded): "
                     "run `unigs-bench quality --json` again"),
             "other": ({**ok, "size": 64},
                       "other.json scored images at 64 px and ok.json at 128 px: compare runs at the same size "
                       "(unigs-bench quality --size S)"),
             "kinds": ({"benchmark": "kinds"},
                       "kinds.json is a 'kinds' result, not unigs-bench quality's, generative's or thresholds'")}
    (tmp_path / "ok.json").write_text(json.dumps(ok))
    for name, (run, message) in cases.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(run))
        res = CliRunner().invoke(cli.main, ["compare", str(tmp_path / f"{name}.json"), str(tmp_path / "ok.json"),
                                            "--names", f"{name}.json,ok.json"])
        assert res.exit_code == 1
        assert res.output.strip().splitlines() == [f"Error: {message}"]
    (tmp_path / "cut.json").write_text('{"benchmark": "quality", ')
    res = CliRunner().invoke(cli.main, ["compare", str(tmp_path / "cut.json"), str(tmp_path / "ok.json")])
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1
    assert res.output.startswith(f"Error: benchmark result {tmp_path / 'cut.json'} is not valid JSON")
    res = CliRunner().invoke(cli.main, ["compare", str(tmp_path / "ok.json"), str(tmp_path / "ok.json"),
                                        "--names", "one"])
    assert res.exit_code == 2 and "give two names" in res.output
    out = tmp_path / "c.json"
    res = CliRunner().invoke(cli.main, ["compare", str(tmp_path / "ok.json"), str(tmp_path / "ok.json"),
                                        "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["rows"][0]["difference"] == 0


def test_compare_reads_runs_of_different_lengths_on_their_common_images():
    """Held-out image i is the same in every run: 3 images against 5 compares images 0..2."""
    from unigs_deploy.benchmarks import compare

    seg = [[0.9, 1, 0, 1]] * 5
    short = _quality_run(_per_image([True, False, True], seg[:3], refer=[0.2, 0.4, 0.6]), 3)
    long = _quality_run(_per_image([True, True, True, False, False], seg, refer=[0.5] * 5), 5)
    r = compare.compare(short, long, resamples=100)
    rows = {row["metric"]: row for row in r["rows"]}
    assert r["images"] == 3 and rows["shape-kind match"]["b"] == 1.0 and rows["mIoU"]["a"] == pytest.approx(0.4)
    assert "images 0..2" in report.RENDER["compare"](r)


def _generative_run(kinds: list[list[bool]], offset: int = 5000, guidance=(3.0, 7.5)) -> dict:
    n = len(kinds[0])
    return {"benchmark": "generative", "images": n, "offset": offset, "size": 128, "engine": "x",
            "rows": [{"steps": 25, "guidance": g, "locate": "refer", "candidates": 1,
                      "per_image": {"inpaint_region_iou": [0.5] * n, "inpaint_colour": [True] * n,
                                    "inpaint_kind": k}}
                     for g, k in zip(guidance, kinds, strict=True)]}


def test_compare_reads_two_rows_of_a_generative_run(tmp_path):
    """Two settings scored on the same images: --rows picks them, the table names them by the
    setting they differ in and compares the tasks both scored, on the run's own images."""
    from click.testing import CliRunner

    from unigs_deploy.benchmarks import cli

    kinds = [[i % 3 == 0 for i in range(30)], [i % 3 == 0 or i % 3 == 1 for i in range(30)]]
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(_generative_run(kinds)))
    out = tmp_path / "c.json"
    res = CliRunner().invoke(cli.main, ["compare", str(path), str(path), "--rows", "0,1", "--resamples", "500",
                                        "--json", str(out)])
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert r["names"] == ["guidance 3", "guidance 7.5"] and r["offset"] == 5000 and r["images"] == 30
    assert [row["metric"] for row in r["rows"]] == ["region IoU", "colour match", "shape-kind match"]
    kind = r["rows"][2]
    assert (kind["a"], kind["b"], kind["only_a"], kind["only_b"]) == (pytest.approx(1 / 3), pytest.approx(2 / 3), 0, 10)
    assert kind["apart"]
    assert "Held-out images 5000..5029" in report.RENDER["compare"](r)


def test_compare_names_two_thresholds_rows_by_their_setting(tmp_path):
    from click.testing import CliRunner

    from unigs_deploy.benchmarks import cli

    seg_a, seg_b = [[0.9, 1, 0, 1]] * 20, [[0.9, 1, 0, 0]] * 20
    run = {"benchmark": "thresholds", "images": 20, "offset": 5000, "size": 128, "engine": "x",
           "rows": [{"stop": "centres", "threshold": t, "per_image": {"segment": seg, "refer": [0.5] * 20}}
                    for t, seg in ((56.0, seg_a), (64.0, seg_b))]}
    (tmp_path / "thr.json").write_text(json.dumps(run))
    out = tmp_path / "c.json"
    res = CliRunner().invoke(cli.main, ["compare", str(tmp_path / "thr.json"), str(tmp_path / "thr.json"),
                                        "--rows", "0,1", "--resamples", "200", "--json", str(out)])
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert r["names"] == ["threshold 56", "threshold 64"] and [row["metric"] for row in r["rows"]] == ["PQ", "mIoU"]
    assert (r["rows"][0]["a"], r["rows"][0]["b"]) == (pytest.approx(0.9 / 1.5), pytest.approx(0.9))


def test_compare_says_which_generative_row_it_cannot_read(tmp_path):
    from click.testing import CliRunner

    from unigs_deploy.benchmarks import cli

    kinds = [[True, False, True], [True, True, True]]
    (tmp_path / "cal.json").write_text(json.dumps(_generative_run(kinds)))
    (tmp_path / "one.json").write_text(json.dumps(_generative_run(kinds[:1], offset=0, guidance=(3.0,))))
    seg = [[0.9, 1, 0, 1]] * 3
    quality_run = _quality_run(_per_image([True, False, True], seg), 3)
    (tmp_path / "q.json").write_text(json.dumps(quality_run))
    synth_only = _generative_run(kinds[:1], offset=0, guidance=(1.0,))
    synth_only["rows"][0]["per_image"] = {"synthesize": seg}
    (tmp_path / "syn.json").write_text(json.dumps({**synth_only}))
    cases = [(["cal.json", "cal.json"], "cal.json has 2 rows (one per setting): pick one of each file with --rows, "
                                        "e.g. --rows 0,1"),
             (["cal.json", "cal.json", "--rows", "0,2"], "cal.json has rows 0..1, not row 2"),
             (["q.json", "cal.json", "--rows", "1,0"], "q.json is a quality run, which has one row (0), not row 1"),
             (["q.json", "cal.json", "--rows", "0,1"],
              "q scored held-out images from 0 and cal from 5000: compare runs on the same images "
              "(--offset N of generative and thresholds)"),
             (["syn.json", "one.json"], "syn and one scored no task in common: nothing to compare")]
    for args, message in cases:
        res = CliRunner().invoke(cli.main, ["compare", *(str(tmp_path / a) if a.endswith(".json") else a
                                                         for a in args)])
        assert res.exit_code == 1, res.output
        assert res.output.strip().splitlines() == [f"Error: {message}"]
    res = CliRunner().invoke(cli.main, ["compare", str(tmp_path / "q.json"), str(tmp_path / "one.json"), "--rows",
                                        "0,x"])
    assert res.exit_code == 2 and "give two row numbers" in res.output
    res = CliRunner().invoke(cli.main, ["compare", str(tmp_path / "q.json"), str(tmp_path / "one.json")])
    assert res.exit_code == 0, res.output
    assert "shape-kind match" in res.output and "PQ" not in res.output
