"""Weight interpolation between two models (training/soup.py): exact mixes, the --only filter, clear errors."""

import pytest

torch = pytest.importorskip("torch")

from unigs_deploy import modeling  # noqa: E402
from unigs_deploy.training import soup  # noqa: E402


def _pair():
    return modeling.build("tiny", task_embedding=True, seed=1), modeling.build("tiny", task_embedding=True, seed=2)


def test_alpha_mixes_unet_and_text_encoder_and_keeps_the_rest():
    a, b = _pair()
    before = {n: {k: v.clone() for k, v in getattr(a, n).state_dict().items()} for n in ("unet", "text_encoder", "vae")}
    moved = soup.soup(a, b, 0.25)
    assert moved == sum(v.numel() for n in soup.MIXED for v in before[n].values() if v.is_floating_point())
    for n in soup.MIXED:
        sb = getattr(b, n).state_dict()
        for k, v in getattr(a, n).state_dict().items():
            if v.is_floating_point():
                torch.testing.assert_close(v, 0.75 * before[n][k] + 0.25 * sb[k], rtol=1e-6, atol=1e-7)
            else:
                assert torch.equal(v, before[n][k])
    for k, v in a.vae.state_dict().items():
        assert torch.equal(v, before["vae"][k])


def test_alpha_one_on_only_the_caption_path_takes_exactly_those_weights():
    a, b = _pair()
    start = {k: v.clone() for k, v in a.unet.state_dict().items()}
    soup.soup(a, b, 1.0, only=r"attn2")
    sb = b.unet.state_dict()
    hits = 0
    for k, v in a.unet.state_dict().items():
        assert torch.equal(v, sb[k] if "attn2" in k else start[k]), k
        hits += "attn2" in k
    assert hits > 0
    for k, v in a.text_encoder.state_dict().items():
        assert torch.equal(v, b.text_encoder.state_dict()[k])


@pytest.mark.parametrize("kwargs, message", [
    (dict(alpha=1.5), r"alpha must be in \[0, 1\]"),
    (dict(alpha=0.5, only="no-such-weight"), "^only='no-such-weight' matches no UNet weight"),
    (dict(alpha=0.5, only="attn2("), r"^only='attn2\(' is not a regular expression"),
])
def test_bad_settings_are_one_clear_error_and_change_nothing(kwargs, message):
    a, b = _pair()
    start = {k: v.clone() for k, v in a.unet.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        soup.soup(a, b, **kwargs)
    assert all(torch.equal(v, start[k]) for k, v in a.unet.state_dict().items())


def test_another_architecture_is_refused():
    a = modeling.build("tiny", task_embedding=True, seed=1)
    with pytest.raises(ValueError, match="differ in architecture: B must be a fine-tune of A"):
        soup.soup(a, modeling.build("tiny", task_embedding=False, seed=1), 0.5)


def test_cli_writes_the_mixed_model_and_will_not_overwrite(tmp_path, capsys):
    a, b = _pair()
    modeling.save(a, tmp_path / "a")
    modeling.save(b, tmp_path / "b")
    out = tmp_path / "mix"
    argv = [str(tmp_path / "a"), str(tmp_path / "b"), "--alpha", "1", "--out", str(out)]
    assert soup.main(argv) == 0
    mixed = modeling.load(out)
    for k, v in mixed.unet.state_dict().items():
        assert torch.equal(v, b.unet.state_dict()[k])
    assert not list(tmp_path.glob(".*tmp"))
    assert soup.main(argv) == 2
    assert "exists: pass --overwrite" in capsys.readouterr().err
    assert soup.main(argv[:3] + ["2", "--out", str(tmp_path / "new")]) == 2
    assert "alpha must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    assert soup.main(argv[:4] + ["--out", str(tmp_path / "new"), "--only", "attn2("]) == 2
    # checked before either model is loaded: the error is all it prints
    assert capsys.readouterr().err.startswith("error: --only 'attn2(' is not a regular expression")
    assert soup.main(argv[:4] + ["--out", str(tmp_path / "new"), "--only", "no-such-weight"]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: --only 'no-such-weight' matches no UNet weight")
    assert not (tmp_path / "new").exists()
