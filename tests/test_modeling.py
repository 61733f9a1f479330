import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from unigs_deploy import modeling  # noqa: E402
from unigs_deploy.modeling import ModelError  # noqa: E402


def _sd_unet(in_channels, scale="tiny", seed=0):
    torch.manual_seed(seed)
    return diffusers.UNet2DConditionModel(**modeling.unet_config(scale, in_channels=in_channels, out_channels=4)).eval()


def test_parameter_counts_match_the_paper():
    """Table 1: SD-inpainting UNet 859.54M, UniGS 859.56M (built on the meta device: shapes only)."""
    with torch.device("meta"):
        sd = diffusers.UNet2DConditionModel(**modeling.unet_config("sd15", in_channels=9, out_channels=4))
        unigs = diffusers.UNet2DConditionModel(**modeling.unet_config("sd15"))
    assert modeling.count_parameters(sd) == 859_535_364
    assert modeling.count_parameters(unigs) == 859_558_408


def test_expansion_starts_exactly_as_sd_inpainting():
    sd = _sd_unet(9)
    unigs = modeling.expand_unet(sd).eval()
    g = torch.Generator().manual_seed(1)
    z, ctrl = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    mask = torch.rand(2, 1, 8, 8, generator=g)
    cmap = torch.randn(2, 4, 8, 8, generator=g)
    t, text = torch.tensor([10.0, 500.0]), torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        old = sd(torch.cat([z, mask, ctrl], 1), t, text).sample
        new = unigs(torch.cat([z, cmap, mask, ctrl], 1), t, text).sample
    assert new.shape[1] == 8
    torch.testing.assert_close(new[:, :4], old, atol=1e-5, rtol=1e-5)
    assert (new[:, 4:] == 0).all()


def test_text_to_image_unet_expands_with_a_warning():
    sd = _sd_unet(4)
    with pytest.warns(UserWarning, match="inpainting UNet is the better start"):
        unigs = modeling.expand_unet(sd)
    assert (unigs.config.in_channels, unigs.config.out_channels) == (13, 8)
    assert (unigs.conv_in.weight[:, 4:] == 0).all()


def test_foreign_unet_shape_is_a_clear_error():
    with pytest.raises(ModelError, match=r"5 input and 4 output channels; expected Stable Diffusion"):
        modeling.expand_unet(_sd_unet(5))


def test_deepening_starts_exactly_as_the_init():
    """Added transformer blocks are identity until trained; the kept ones keep their weights."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(**modeling.unet_config("tiny")).eval()
    for p in unet.parameters():  # diffusers zero-inits some projections: make every weight count
        p.data.normal_(0, 0.05)
    deep = modeling.deepen_unet(unet, [3, 1]).eval()
    assert deep.config.transformer_layers_per_block == [3, 1]
    assert len(deep.down_blocks[0].attentions[0].transformer_blocks) == 3
    assert len(deep.up_blocks[1].attentions[0].transformer_blocks) == 3
    added = deep.down_blocks[0].attentions[0].transformer_blocks[2]
    assert (added.attn2.to_out[0].weight == 0).all() and (added.ff.net[-1].weight == 0).all()
    assert added.attn1.to_q.weight.abs().sum() > 0  # the branch's inside is initialised: it can learn
    g = torch.Generator().manual_seed(1)
    x, t, text = torch.randn(2, 13, 8, 8, generator=g), torch.tensor([10.0, 900.0]), torch.randn(2, 7, 32, generator=g)
    with torch.no_grad():
        assert torch.equal(deep(x, t, text).sample, unet(x, t, text).sample)
    assert modeling.deepen_unet(unet, [1, 1]) is unet
    with pytest.raises(ModelError, match=r"needs 2 depths of at least 1"):
        modeling.deepen_unet(unet, [2])
    with pytest.raises(ModelError, match=r"shallower than the init's \[3, 1\]: layers can be added, not removed"):
        modeling.deepen_unet(deep, [2, 1])


def test_caption_pooling_starts_exactly_as_the_init():
    """The pooled caption is added to the time embedding at zero gain: the same output until trained;
    at gain 1 one the caption moves (the pooling really reads encoder_hidden_states)."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(**modeling.unet_config("tiny", task_embedding=True)).eval()
    pooled = modeling.pool_caption(unet, 4).eval()
    assert pooled.config.addition_embed_type == "text" and pooled.config.addition_embed_type_num_heads == 4
    assert (pooled.add_embedding.norm2.weight == 0).all()
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 13, 8, 8, generator=g), torch.tensor([10.0, 900.0])
    text, other = torch.randn(2, 7, 32, generator=g), torch.randn(2, 7, 32, generator=g)
    labels = torch.tensor([0, 3])
    live = modeling.pool_caption(unet, 4, gain=1.0).eval()  # diffusers' default: live from the start
    assert (live.add_embedding.norm2.weight == 1).all()
    with torch.no_grad():
        assert torch.equal(pooled(x, t, text, class_labels=labels).sample, unet(x, t, text, class_labels=labels).sample)
        moved = live(x, t, text, class_labels=labels).sample - unet(x, t, text, class_labels=labels).sample
        assert moved.abs().max() > 1e-3
        # with the cross-attention shut, only the pooled caption carries the text
        for m in live.modules():
            if isinstance(m, diffusers.models.attention_processor.Attention) and m.is_cross_attention:
                m.to_out[0].weight.zero_()
                m.to_out[0].bias.zero_()
        a, b = (live(x, t, e, class_labels=labels).sample for e in (text, other))
        assert (a - b).abs().max() > 1e-3
    assert modeling.pool_caption(pooled, 4) is pooled
    with pytest.raises(ModelError, match=r"already pools the caption with 4 heads"):
        modeling.pool_caption(pooled, 8)
    with pytest.raises(ModelError, match=r"must divide the text width 32, got 5"):
        modeling.pool_caption(unet, 5)


def _sd_folder(tmp_path, in_channels=9):
    """A tiny diffusers-format Stable-Diffusion(-inpainting) folder, made locally."""
    m = modeling.build("tiny")
    folder = tmp_path / "sd"
    modeling.save(m, folder)
    _sd_unet(in_channels).save_pretrained(folder / "unet")
    return folder


def test_load_sd_inpainting_folder_expands(tmp_path):
    folder = _sd_folder(tmp_path)
    m = modeling.load(folder)
    assert (m.unet.config.in_channels, m.unet.config.out_channels) == (13, 8)
    assert m.source["unet_channels_in_out"] == [9, 4] and len(m.source["sha256"]) == 64
    assert m.scheduler_config["beta_schedule"] == "scaled_linear"
    joint = modeling.load(folder, task_embedding=True)
    assert joint.task_embedding


def test_unigs_folder_round_trip(tmp_path):
    m = modeling.build("tiny", task_embedding=True, seed=3)
    modeling.save(m, tmp_path / "u")
    back = modeling.load(tmp_path / "u")
    assert back.task_embedding
    for a, b in zip(m.unet.state_dict().values(), back.unet.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert back.tokenizer.encode("a red star").ids == m.tokenizer.encode("a red star").ids


def test_partial_folders_are_clear_errors(tmp_path):
    folder = _sd_folder(tmp_path)
    with pytest.raises(ModelError, match="does not exist"):
        modeling.load(tmp_path / "nope")
    for f in (folder / "unet").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelError, match="has no weights"):
        modeling.load(folder)
    import shutil

    shutil.rmtree(folder / "vae")
    with pytest.raises(ModelError, match=r"missing vae/"):
        modeling.load(folder)


def test_scheduler_config_is_read_from_the_folder(tmp_path):
    folder = _sd_folder(tmp_path)
    cfg = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    cfg["timestep_spacing"] = "trailing"
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(cfg))
    assert modeling.load(folder).scheduler_config["timestep_spacing"] == "trailing"


def test_single_file_ldm_checkpoint_loads_through_diffusers_conversion(tmp_path):
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from unigs_deploy.modeling.vocabulary import save_tokenizer_folder

    from .ldm_format import clip_to_ldm, unet_to_ldm, vae_to_ldm

    src = modeling.build("tiny", seed=5)
    # CLIP's head size is 64 and single files do not record the head count: the loader assumes
    # hidden // 64 heads (12 for SD-1.x), so the tiny source gets the count that rule gives.
    src.text_encoder = CLIPTextModel(CLIPTextConfig(**{**src.text_encoder.config.to_dict(),
                                                       "num_attention_heads": 1})).eval()
    sd_unet = _sd_unet(9, seed=5)
    ckpt = {**unet_to_ldm(sd_unet), **vae_to_ldm(src.vae), **clip_to_ldm(src.text_encoder)}
    path = tmp_path / "sd-inpainting-tiny.safetensors"
    save_file({k: v.contiguous() for k, v in ckpt.items()}, str(path))
    with pytest.raises(ModelError, match="carries no tokenizer"):
        modeling.load(path)
    save_tokenizer_folder(src.tokenizer, tmp_path / "tokenizer")
    m = modeling.load(path)
    assert (m.unet.config.in_channels, m.unet.config.out_channels) == (13, 8)
    assert m.source["kind"] == "single-file" and m.source["unet_channels_in_out"] == [9, 4]
    g = torch.Generator().manual_seed(0)
    x, t, text = torch.randn(1, 9, 8, 8, generator=g), torch.tensor([50.0]), torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        want = sd_unet(x, t, text).sample
        got = m.unet(torch.cat([x[:, :4], torch.zeros(1, 4, 8, 8), x[:, 4:]], 1), t, text).sample[:, :4]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        img = torch.randn(1, 3, 16, 16, generator=g)
        torch.testing.assert_close(m.vae.encode(img).latent_dist.mean, src.vae.encode(img).latent_dist.mean)
        ids = torch.randint(0, 100, (1, 77), generator=g)
        torch.testing.assert_close(m.text_encoder(ids)[0], src.text_encoder(ids)[0])


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.ckpt"
    bad.write_bytes(b"not a checkpoint")
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelError, match="cannot read"):
        modeling.load(bad)
