"""train.kind_target = "fit": the asked kind's best-fitting shape as the drawn entity's target."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

from unigs_deploy.benchmarks import detect  # noqa: E402
from unigs_deploy.synthetic import shapes  # noqa: E402
from unigs_deploy.training import kind_fit, kind_judge, losses  # noqa: E402
from unigs_deploy.training.config import ConfigError, load_config  # noqa: E402


def _t(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(mask).float()[None, None]


def test_a_blob_asked_for_a_star_is_pulled_towards_a_star_inside_the_region():
    region = np.zeros((64, 64), bool)
    region[8:56, 10:58] = True
    blob = shapes.draw_shape(64, 64, "ellipse", 34, 32, 18, 16)
    blob[30:34, :] = True  # a stripe across the image: only its part in the region is fitted
    truth = shapes.draw_shape(64, 64, "triangle", 30, 30, 10, 10)
    target = kind_fit.fitted_targets(_t(blob) * 0.9, _t(region), [shapes.KINDS.index("star")], _t(truth))
    t = target[0, 0].numpy() > 0.5
    assert not (t & ~region).any()
    assert detect.shape_kind(t) == "star"
    assert (t & blob).sum() / (t | blob).sum() > 0.5  # the star that covers the blob, not any star


def test_too_little_drawn_falls_back_to_the_truth():
    region = torch.zeros(2, 1, 32, 32)
    region[:, :, 4:28, 4:28] = 1
    drawn = torch.zeros(2, 1, 32, 32)
    drawn[0, :, 0:32, 0:2] = 1  # outside the region
    drawn[1, :, 10:13, 10:13] = 0.9  # 9 pixels
    truth = torch.zeros(2, 1, 32, 32)
    truth[:, :, 8:20, 8:20] = 1
    assert torch.equal(kind_fit.fitted_targets(drawn, region, [0, 3], truth), truth)


def test_soft_iou():
    a = torch.zeros(2, 1, 4, 4)
    a[:, :, :2] = 1
    b = a.clone()
    b[1] = 1 - a[1]
    assert losses.soft_iou(a, b).item() == pytest.approx(0.5)  # one equal (0), one disjoint (1)
    assert losses.soft_iou(a[:1], a[:1] * 0.5).item() == pytest.approx(0.5)


@pytest.mark.parametrize("how", ["fit", "fit-image"])
def test_kind_target_fit_scores_the_sample_against_its_fitted_shape(tmp_path, monkeypatch, how):
    """No judge is trained or loaded; the term is one minus the soft IoU of the sample's drawn
    entity (colormap: its foreground; image: the pixels near the caption's colour, inside the
    region) with the fitted targets, and is linear in its weight."""
    from unigs_deploy.training.trainer import Trainer

    monkeypatch.setattr(kind_judge, "load_or_train", lambda *a, **k: pytest.fail("a judge was loaded"))
    seen = {}

    def fitted(drawn, regions, kinds, truths):
        seen["drawn"], seen["regions"], seen["kinds"] = drawn.detach(), regions, kinds
        return truths  # a known target: the true entity

    monkeypatch.setattr(kind_fit, "fitted_targets", fitted)
    base = ["train.batch_size=8", "data.size=32", "train.tasks={inpaint = 1.0}", "model.prediction_type=sample",
            f"train.output='{tmp_path}'", "train.cfg_dropout=0.0", "train.kind_sampled_steps=2",
            f"train.kind_target={how}"]

    def loss(weight):
        return Trainer(load_config(None, base + [f"train.kind_loss={weight}"]), progress=False).loss(0).item()

    one, two, three = loss(1.0), loss(2.0), loss(3.0)
    t = Trainer(load_config(None, base + ["train.kind_loss=1.0"]), progress=False)
    judged = [t.source.example(0, i) for i in range(8)]
    judged = [e for e in judged if e.kind >= 0]
    assert judged and seen["kinds"] == [e.kind for e in judged]
    if how == "fit-image":
        assert seen["drawn"][seen["regions"] < 0.5].abs().max() == 0
    truths = torch.stack([torch.from_numpy((e.colormap > 0).any(-1)).float()[None] for e in judged])
    term = losses.soft_iou(seen["drawn"], truths).item()
    assert two - one == pytest.approx(term, rel=1e-3)
    assert three - one == pytest.approx(2 * term, rel=1e-3)


def test_caption_colours_are_the_named_rgb_in_unit_range():
    c = kind_fit.caption_colours(["red", "white"])
    assert torch.allclose(c, torch.tensor([[220, 40, 40], [245, 245, 245]]) / 127.5 - 1)


def test_kind_target_is_checked():
    with pytest.raises(ConfigError, match='kind_target must be "judge", "fit" or "fit-image"'):
        load_config(None, ["train.kind_target=fitted"])
