"""The inpaint reranker: its crops and scores (rerank.py), its torch module and folder, its export
as an optional component, and how inpaint chooses among candidates with it."""

from types import SimpleNamespace

import numpy as np
import pytest

from unigs_deploy import rerank

from .conftest import RERANKER_GROUPS as GROUPS


def test_crop_is_the_square_around_the_region_with_an_inside_plane():
    image = np.zeros((40, 40, 3), np.uint8)
    image[..., 0] = 255
    region = np.zeros((40, 40), bool)
    region[10:20, 10:30] = True  # 20 wide, 10 tall: a 22-pixel square centred on (15, 20)
    entity = np.zeros((40, 40), bool)
    entity[12:18, 15:25] = True
    x = rerank.crop(image, entity, region, 22)  # at its own size: no resampling
    assert x.shape == (len(rerank.CHANNELS), 22, 22) and x.dtype == np.float32
    want = np.zeros((22, 22), np.float32)
    want[12 - 4:18 - 4, 15 - 9:25 - 9] = 1  # the square starts at row 4, column 9
    np.testing.assert_array_equal(x[0], want)
    np.testing.assert_array_equal(x[1], np.ones((22, 22)))
    np.testing.assert_array_equal(x[2], np.ones((22, 22)))  # red / 255
    assert not x[3:].any()

    # at the border the square leaves the image: outside it, every plane is 0
    corner = np.zeros((40, 40), bool)
    corner[0:20, 0:20] = True  # a 22-pixel square from row -1, column -1
    x = rerank.crop(image, corner, corner, 22)
    assert not x[1, 0].any() and not x[1, :, 0].any() and x[1, 1:, 1:].all()
    assert x[0, 1:21, 1:21].all() and x[0].sum() == 400 and not x[2, 0].any()

    small = rerank.crop(image, entity, region, 11)  # area averaging halves the square
    assert small.shape == (5, 11, 11) and small[0].sum() == pytest.approx(60 / 4)
    with pytest.raises(ValueError, match="empty region"):
        rerank.crop(image, entity, np.zeros_like(region), 8)


def test_a_text_scores_the_log_probability_of_the_words_the_reranker_knows():
    assert rerank.text_words(GROUPS, "a Red star") == {"colour": 0, "kind": 1}
    assert rerank.text_words(GROUPS, "a red, blue star") == {"kind": 1}  # two colours say nothing
    assert rerank.text_words(GROUPS, "a green cube") == {}
    logits = np.array([2.0, 0.0, 1.0, 3.0, 0.0])
    colour = 2 - np.log(np.exp(2) + 1)
    kind = 3 - np.log(np.exp(1) + np.exp(3) + 1)
    assert rerank.score(logits, GROUPS, "a red star") == pytest.approx(colour + kind, abs=1e-12)
    assert rerank.score(logits, GROUPS, "a star") == pytest.approx(kind, abs=1e-12)
    assert rerank.score(logits, GROUPS, "a green cube") is None


def test_the_generative_benchmark_reads_rerank_switches():
    import click

    from unigs_deploy.benchmarks.cli import _switches

    assert _switches("on,off") == (True, False) and _switches("") == (None,) and _switches(" off") == (False,)
    with pytest.raises(click.BadParameter, match="yes: give on and / or off"):
        _switches("on,yes")


torch = pytest.importorskip("torch")


def test_the_reranker_exports_as_a_validated_component_with_its_vocabulary(reranker_engine):
    from unigs_deploy.manifest import Manifest
    from unigs_deploy.pipeline import UniGSPipeline

    model, out = reranker_engine
    entry = Manifest.load(out).components["reranker"]
    assert entry["groups"] == GROUPS and entry["crop"] == 16 and entry["channels"] == list(rerank.CHANNELS)
    assert all(c["ok"] for c in entry["validation"]) and (out / "reranker.onnx").is_file()
    pipe = UniGSPipeline.from_engine(out, threads=1)
    x = np.random.default_rng(0).random((3, 5, 16, 16), dtype=np.float32)
    with torch.no_grad():
        want = model.reranker(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(pipe.components["reranker"](crop=x), want, rtol=1e-4, atol=1e-5)


def test_a_model_folder_keeps_its_reranker(tmp_path):
    from unigs_deploy import modeling
    from unigs_deploy.modeling import reranker

    model = modeling.build("tiny", seed=6)
    model.reranker = reranker.Reranker(GROUPS, crop=16, width=4)
    loaded = modeling.load(modeling.save(model, tmp_path / "m"))
    assert loaded.reranker.groups == GROUPS and loaded.reranker.crop == 16
    for a, b in zip(model.reranker.state_dict().values(), loaded.reranker.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    (tmp_path / "m" / "reranker" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(modeling.ModelError, match="cannot load the reranker in .*train it again"):
        modeling.load(tmp_path / "m")


def test_reranker_training_teaches_blobs_to_name_no_kind():
    """Outlier exposure: a blob drawn where an entity lay is one connected piece of about its size,
    labelled kind -1 with the entity's colour, and its kind loss is least at the uniform distribution."""
    import cv2

    from unigs_deploy.training import reranker as tr

    mask = np.zeros((64, 64), bool)
    mask[20:40, 12:48] = True
    blobs = [b for b in (tr.blob(mask, np.random.default_rng(s)) for s in range(12)) if b is not None]
    assert len(blobs) >= 8
    for b in blobs:
        assert cv2.connectedComponents(b.astype(np.uint8))[0] == 2
        assert 0.3 <= b.sum() / mask.sum() <= 2.5 and not np.array_equal(b, mask)
    x, y = tr.examples(8, 64, 3, outliers=1.0)
    plain, y0 = tr.examples(8, 64, 3)
    assert (y[:, 1] == -1).sum() >= 6 and (y0[:, 1] >= 0).all() and torch.equal(y[:, 0], y0[:, 0])
    assert not torch.equal(plain[y[:, 1] == -1, 0], x[y[:, 1] == -1, 0])  # the entity plane is the blob
    model = tr.Reranker(tr.GROUPS, crop=tr.CROP)
    torch.nn.init.zeros_(model.net[-1].weight)
    torch.nn.init.zeros_(model.net[-1].bias)
    blobs_only = y[:, 1] == -1
    loss, _ = tr.loss_and_accuracy(model, x[blobs_only], y[blobs_only], outlier_weight=0.5)
    uniform = np.log(len(tr.GROUPS["colour"])) + 0.5 * np.log(len(tr.GROUPS["kind"]))
    assert float(loss) == pytest.approx(uniform, rel=1e-5)
    with torch.no_grad():
        model.net[-1].bias[len(tr.GROUPS["colour"])] = 3.0  # sure of one kind: a blob costs more
    assert float(tr.loss_and_accuracy(model, x[blobs_only], y[blobs_only], outlier_weight=0.5)[0]) > float(loss)


def test_inpaint_chooses_the_candidate_whose_entity_matches_its_text(reranker_engine, monkeypatch):
    """With rerank, the candidate with the highest log-probability of its text (plus agreement x
    AGREEMENT_WEIGHT) wins; without, the one most agreed on. A candidate that drew nothing in a
    region loses to any that did."""
    from unigs_deploy.pipeline import UniGSPipeline

    _, out = reranker_engine
    pipe = UniGSPipeline.from_engine(out, threads=1)
    image = np.zeros((32, 32, 3), np.uint8)
    region = np.zeros((32, 32), bool)
    region[4:28, 4:28] = True
    drawn = {}
    for k, cols in enumerate(((4, 14), (12, 24), (14, 28))):  # the middle one agrees most
        m = np.zeros_like(region)
        m[8:20, slice(*cols)] = True
        drawn[7 + k] = m
    monkeypatch.setattr(pipe, "_inpaint", lambda *a, seed, **kw: SimpleNamespace(
        labels=drawn[seed].astype(np.int32), image=np.full((32, 32, 3), 10 * seed, np.uint8), notes=[],
        settings={"seed": seed, "locate": "refer"}, timings={"total_s": 1.0}))
    # a reranker that calls the narrowest entity (120 of the 27 x 27 square's pixels, 42 of the
    # 16 x 16 crop's) a star and knows nothing of the others
    monkeypatch.setitem(pipe.components, "reranker", lambda crop: np.array(
        [[0, 0, 0, 5.0 if c[0].sum() < 46 else 0, 0] for c in crop]))
    regions = [(region, "a red star")]
    assert pipe.inpaint(image, regions, seed=7, candidates=3).settings["seed"] == 8  # no model default: agreement
    res = pipe.inpaint(image, regions, seed=7, candidates=3, rerank=True)
    assert res.settings["seed"] == 7 and res.settings["rerank"] is True
    red, star, other = np.log(0.5), 5 - np.log(np.exp(5) + 2), -np.log(3)
    assert res.settings["rerank_scores"] == pytest.approx([red + star, red + other, red + other], abs=1e-4)
    monkeypatch.setitem(pipe.manifest.task_defaults, "inpaint", {"rerank": True, "candidates": 3})
    assert pipe.inpaint(image, regions, seed=7).settings["seed"] == 7  # the model's default
    assert pipe.inpaint(image, regions, seed=7, rerank=False).settings["seed"] == 8

    drawn[7] = np.zeros_like(region)  # the star is gone: it drew nothing
    res = pipe.inpaint(image, regions, seed=7)
    assert res.settings["seed"] == 8 and res.settings["rerank_scores"][0] is None  # run.json stays valid JSON
    res = pipe.inpaint(image, [(region, "a green cube")], seed=7)
    assert res.settings["rerank"] is False and res.settings["seed"] == 8
    assert "the reranker knows none of the texts' words" in res.notes[-1]


def test_rerank_without_a_reranker_or_an_image_says_what_to_do(tiny_pipe, reranker_engine, monkeypatch):
    from unigs_deploy.pipeline import UniGSPipeline

    image = np.zeros((32, 32, 3), np.uint8)
    region = np.ones((32, 32), bool)
    with pytest.raises(ValueError, match="rerank needs an engine exported with a reranker"):
        tiny_pipe.inpaint(image, [(region, "a red star")], candidates=2, rerank=True)
    pipe = UniGSPipeline.from_engine(reranker_engine[1], threads=1)
    with pytest.raises(ValueError, match="rerank reads each drawn entity from the generated image"):
        pipe.inpaint(image, [(region, "a red star")], candidates=2, rerank=True, decode_image=False, locate="colormap")
    # the model's default gives way where it cannot apply
    monkeypatch.setitem(pipe.manifest.task_defaults, "inpaint", {"rerank": True})
    res = pipe.inpaint(image, [(region, "a red star")], candidates=2, decode_image=False, locate="colormap", steps=1)
    assert res.settings["rerank"] is False and res.image is None


def test_the_generative_benchmark_runs_a_row_per_rerank_switch(reranker_engine):
    """`unigs-bench generative --rerank on,off`: one row a switch, each recording what inpaint did
    (reranked where the caption has a word the reranker knows, the most agreed-on draw otherwise)."""
    from unigs_deploy.benchmarks import generative
    from unigs_deploy.synthetic.shapes import held_out_example

    offset = next(i for i in range(5000, 5100) if rerank.text_words(GROUPS, (ex := held_out_example(i, 32))[2][ex[4]]))
    out = generative.run(reranker_engine[1], n=1, offset=offset, steps=(1,), guidance=(3.0,), candidates=(2,),
                         rerank=(True, False), tasks=("inpaint",), size=32, threads=1)
    assert [(r["candidates"], r["rerank"]) for r in out["rows"]] == [(2, True), (2, False)]
    assert all(len(r["per_image"]["inpaint_kind"]) == 1 for r in out["rows"])
