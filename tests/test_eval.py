"""unigs-eval: dataset-level PQ as panopticapi defines it (hand-checked), AP, refer scores, the
CLI's errors, and `run` (resume, two processes) against unigs-bench quality."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from unigs_deploy import io, metrics
from unigs_deploy.evaluation import scoring
from unigs_deploy.evaluation.cli import main
from unigs_deploy.evaluation.panoptic import PQAccumulator, id2rgb, rgb2id
from unigs_deploy.synthetic.coco import write_dataset


def _hand_case():
    """10x10. Truth: g1 (cat 1) rows 0-3 cols 0-4, g2 (cat 2) rows 0-3 cols 5-9, g3 crowd (cat 1)
    rows 4-8 cols 0-4, g4 (cat 1) rows 4-8 cols 5-9, void row 9. Predictions: p1 (cat 1) rows 0-3
    cols 0-3 + 4 void pixels; p2 (cat 1) rows 0-3 cols 4-9; p3 (cat 1) inside the crowd; p4
    (cat 2) in void only."""
    g = np.zeros((10, 10), np.int64)
    g[0:4, 0:5], g[0:4, 5:10], g[4:9, 0:5], g[4:9, 5:10] = 1, 2, 3, 4
    gs = [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 2}, {"id": 3, "category_id": 1, "iscrowd": 1},
          {"id": 4, "category_id": 1}]
    p = np.zeros((10, 10), np.int64)
    p[0:4, 0:4], p[9, 0:4], p[0:4, 4:10], p[4:9, 0:4], p[9, 4:10] = 1, 1, 2, 3, 4
    ps = [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 1}, {"id": 3, "category_id": 1},
          {"id": 4, "category_id": 2}]
    return g, gs, p, ps


def test_pq_by_hand():
    g, gs, p, ps = _hand_case()
    acc = PQAccumulator(agnostic=True)
    acc.add(g, gs, p, ps)
    r = acc.result()["all"]
    # p1-g1: I 16, U 20 + 20 - 16 - 4 (void) = 20 -> 0.8; p2-g2: 20 / 24; FN g4; p3 (crowd), p4 (void) ignored
    assert r["sq"] == pytest.approx((0.8 + 20 / 24) / 2)
    assert r["rq"] == pytest.approx(2 / 2.5)
    assert r["pq"] == pytest.approx((0.8 + 20 / 24) / 2.5)
    acc = PQAccumulator(agnostic=False, isthing={1: True, 2: False})
    acc.add(g, gs, p, ps)
    res = acc.result()
    # cat 1: TP p1 (0.8), FP p2 (wrong category for g2), FN g4; cat 2: FN g2
    assert res["per_category"]["1"]["pq"] == pytest.approx(0.8 / 2)
    assert res["per_category"]["2"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 0, "fn": 1}
    assert res["all"]["pq"] == pytest.approx(0.2)
    assert res["things"]["pq"] == pytest.approx(0.4) and res["stuff"]["pq"] == 0.0


def test_dataset_pq_sums_over_images_unlike_the_per_image_mean(rng):
    """One image: equal to the runtime's independent per-image PQ (metrics.py); two images:
    the dataset-level sums, not the mean of the two; `add` returns each image's share of them."""
    acc = PQAccumulator()
    per_image, sums = [], np.zeros(4)
    for _ in range(2):
        t = rng.integers(1, 4, (12, 12))
        p = t.copy()
        p[rng.random((12, 12)) < 0.3] = rng.integers(1, 6)
        segs = lambda x: [{"id": int(k), "category_id": 1} for k in np.unique(x)]  # noqa: E731
        one = PQAccumulator()
        one.add(t, segs(t), p, segs(p))
        ref = metrics.panoptic_quality(p, t)
        assert one.result()["all"]["pq"] == pytest.approx(ref["pq"])
        per_image.append(ref["pq"])
        share = acc.add(t, segs(t), p, segs(p))
        st = one.stats[1]
        assert share == pytest.approx([st.iou, st.tp, st.fp, st.fn])
        sums += share
    assert acc.result()["all"]["pq"] == pytest.approx(sums[0] / (sums[1] + 0.5 * sums[2] + 0.5 * sums[3]))


def test_refer_scores():
    r = scoring.score_refer([(5, 10), (0, 10), (30, 30)])
    assert r["miou"] == pytest.approx((0.5 + 0 + 1) / 3) and r["ciou"] == pytest.approx(35 / 50)


def test_rgb_ids_round_trip(rng):
    ids = rng.integers(0, 256**3, (5, 7))
    np.testing.assert_array_equal(rgb2id(id2rgb(ids)), ids)


@pytest.fixture(scope="module")
def shapes_coco(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("coco"), 4, 32)


def _score(paths, pred_json, pred_dir, *extra):
    return CliRunner().invoke(main, ["score", "--gt-json", str(paths["panoptic_json"]), "--gt-dir",
                                     str(paths["panoptic_dir"]), "--pred-json", str(pred_json), "--pred-dir",
                                     str(pred_dir), *extra])


def test_score_cli_perfect_and_damaged(shapes_coco, tmp_path):
    res = _score(shapes_coco, shapes_coco["panoptic_json"], shapes_coco["panoptic_dir"], "--json",
                 str(tmp_path / "s.json"))
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["panoptic"]["all"]["pq"] == 1.0 and s["mask_ap"]["ap"] == pytest.approx(1.0)
    assert "| all | 100.0 | 100.0 | 100.0 | 1 |" in res.output
    # merge two segments of the first image in the predictions: one FP-free miss at least
    pred_dir = tmp_path / "pred"
    data = json.loads(shapes_coco["panoptic_json"].read_text())
    for a in data["annotations"]:
        ids = rgb2id(io.read_image(shapes_coco["panoptic_dir"] / a["file_name"]))
        if a is data["annotations"][0] and len(a["segments_info"]) > 2:
            ids[ids == 1] = 2
            a["segments_info"] = a["segments_info"][1:]
        io.write_image(pred_dir / a["file_name"], id2rgb(ids))
    io.write_json(tmp_path / "pred.json", data)
    res = _score(shapes_coco, tmp_path / "pred.json", pred_dir, "--per-category")
    assert res.exit_code == 0, res.output
    assert "per category" in res.output and "| things |" in res.output


def test_score_cli_errors(shapes_coco, tmp_path):
    bad = _score(shapes_coco, tmp_path / "none.json", shapes_coco["panoptic_dir"])
    assert bad.exit_code == 2 and "prediction JSON" in bad.output and "does not exist" in bad.output
    bad = _score(shapes_coco, shapes_coco["instances_json"], shapes_coco["panoptic_dir"])
    assert "is a instances file, not COCO panoptic" in bad.output
    data = json.loads(shapes_coco["panoptic_json"].read_text())
    data["annotations"][0]["image_id"] = 999
    io.write_json(tmp_path / "p.json", data)
    bad = _score(shapes_coco, tmp_path / "p.json", shapes_coco["panoptic_dir"])
    assert "predictions for 1 image(s) the ground truth does not have (ids 999)" in bad.output
    data = json.loads(shapes_coco["panoptic_json"].read_text())
    (tmp_path / "small").mkdir()
    for a in data["annotations"]:
        ids = rgb2id(io.read_image(shapes_coco["panoptic_dir"] / a["file_name"]))
        io.write_image(tmp_path / "small" / a["file_name"], id2rgb(ids[:16]))
    bad = _score(shapes_coco, shapes_coco["panoptic_json"], tmp_path / "small")
    assert bad.exit_code == 2 and "prediction is 32x16 but the ground truth is 32x32" in bad.output
    assert len(bad.output.strip().splitlines()) == 1


def _run(engine, paths, out, task="segment", *extra, env=None):
    data = ["--data", str(paths["panoptic_json"]), "--gt-dir", str(paths["panoptic_dir"])] if task == "segment" \
        else ["--data", str(paths["refs_json"])]
    args = ["run", "--engine", str(engine), "--task", task, *data, "--images", str(paths["images"]),
            "--out", str(out), "--threads", "1", "--quiet", *extra]
    if env is None:
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, res.output
        return res.output
    return subprocess.Popen([sys.executable, "-m", "unigs_deploy.evaluation.cli", *args], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_run_matches_the_quality_benchmark_and_resumes(tiny_engine, shapes_coco, tmp_path):
    from unigs_deploy.benchmarks import quality

    out = _run(tiny_engine, shapes_coco, tmp_path / "full")
    full = json.loads((tmp_path / "full" / "scores.json").read_text())
    bench = quality.segment_pq(tiny_engine, n=4, size=32, threads=1)
    assert full["panoptic"]["all"]["pq"] == pytest.approx(bench)
    assert "| all |" in out
    # interrupted after 2 images (and a line cut short by the crash), then resumed
    _run(tiny_engine, shapes_coco, tmp_path / "part", "segment", "--limit", "2")
    with open(next((tmp_path / "part").glob("progress.*.jsonl")), "a") as f:
        f.write('{"key": "2", "cut')
    _run(tiny_engine, shapes_coco, tmp_path / "part")
    lines = next((tmp_path / "part").glob("progress.*.jsonl")).read_text().splitlines()
    assert len(lines) == 4
    for name in ("scores.json", "results.json", "panoptic.json"):
        assert (tmp_path / "part" / name).read_text() == (tmp_path / "full" / name).read_text()
    results = json.loads((tmp_path / "full" / "results.json").read_text())
    assert {r["image_id"] for r in results} == {0, 1, 2, 3} and all(r["score"] == 1.0 for r in results)

    out = _run(tiny_engine, shapes_coco, tmp_path / "refer", "refer")
    refer = json.loads((tmp_path / "refer" / "scores.json").read_text())["refer"]
    assert refer["n"] == 4 and 0 <= refer["ciou"] <= 1


@pytest.mark.slow
def test_two_processes_merge_to_the_one_process_result(tiny_engine, shapes_coco, tmp_path):
    _run(tiny_engine, shapes_coco, tmp_path / "one")
    procs = [_run(tiny_engine, shapes_coco, tmp_path / "two", "segment", env={"RANK": str(r), "WORLD_SIZE": "2"})
             for r in (1, 0)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    assert sorted(f.name for f in (tmp_path / "two").glob("progress.*")) == ["progress.rank0-of-2.jsonl",
                                                                            "progress.rank1-of-2.jsonl"]
    for name in ("scores.json", "results.json", "panoptic.json"):
        assert (tmp_path / "two" / name).read_text() == (tmp_path / "one" / name).read_text()


def test_run_errors(tiny_engine, shapes_coco, tmp_path):
    args = ["run", "--engine", str(tiny_engine), "--task", "segment", "--data", str(shapes_coco["panoptic_json"]),
            "--images", str(shapes_coco["images"]), "--out", str(tmp_path / "o"), "--quiet"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "also give --gt-dir" in res.output
    args[args.index("--images") + 1] = str(tmp_path / "nope")
    res = CliRunner().invoke(main, args + ["--gt-dir", str(shapes_coco["panoptic_dir"])])
    assert res.exit_code == 2 and "image folder" in res.output and "does not exist" in res.output
    res = CliRunner().invoke(main, ["run", "--engine", str(tiny_engine), "--task", "refer", "--data",
                                    str(shapes_coco["instances_json"]), "--images", str(shapes_coco["images"]),
                                    "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "is not a refer JSON" in res.output
