"""Test fixture: write a diffusers UNet/VAE/CLIP as one CompVis/LDM-format checkpoint, so the
single-file loader (diffusers' own conversion) can be tested offline on tiny models. The key
layout is the SD-1.x one (input_blocks / middle_block / output_blocks, first_stage_model, ...)."""

from __future__ import annotations

RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
          ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]


def _sub(key: str, pairs) -> str:
    for a, b in pairs:
        key = key.replace(a, b)
    return key


def unet_to_ldm(unet) -> dict:
    per = unet.config.layers_per_block
    out = {}
    for k, v in unet.state_dict().items():
        parts = k.split(".")
        if k.startswith("down_blocks."):
            i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                new = f"input_blocks.{1 + i * (per + 1) + j}.0.{_sub(rest, RESNET)}"
            elif kind == "attentions":
                new = f"input_blocks.{1 + i * (per + 1) + j}.1.{rest}"
            else:  # downsamplers.0.conv
                new = f"input_blocks.{(i + 1) * (per + 1)}.0.op.{'.'.join(parts[5:])}"
        elif k.startswith("up_blocks."):
            i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            has_attn = hasattr(unet.up_blocks[i], "attentions")
            if kind == "resnets":
                new = f"output_blocks.{i * (per + 1) + j}.0.{_sub(rest, RESNET)}"
            elif kind == "attentions":
                new = f"output_blocks.{i * (per + 1) + j}.1.{rest}"
            else:  # upsamplers.0.conv
                new = f"output_blocks.{i * (per + 1) + per}.{2 if has_attn else 1}.conv.{'.'.join(parts[5:])}"
        elif k.startswith("mid_block."):
            kind, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            rest = _sub(rest, RESNET) if kind == "resnets" else rest
            new = f"middle_block.{1 if kind == 'attentions' else 2 * j}.{rest}"
        else:
            new = _sub(k, [("time_embedding.linear_1", "time_embed.0"), ("time_embedding.linear_2", "time_embed.2"),
                           ("conv_in", "input_blocks.0.0"), ("conv_norm_out", "out.0"), ("conv_out", "out.2")])
        out["model.diffusion_model." + new] = v
    return out


def vae_to_ldm(vae) -> dict:
    n = len(vae.config.block_out_channels)
    out = {}
    for k, v in vae.state_dict().items():
        parts = k.split(".")
        if ".down_blocks." in k:
            i, kind, j = int(parts[2]), parts[3], parts[4]
            rest = ".".join(parts[5:])
            new = (f"encoder.down.{i}.block.{j}.{rest.replace('conv_shortcut', 'nin_shortcut')}" if kind == "resnets"
                   else f"encoder.down.{i}.downsample.conv.{'.'.join(parts[6:])}")
        elif ".up_blocks." in k:
            i, kind, j = int(parts[2]), parts[3], parts[4]
            rest = ".".join(parts[5:])
            new = (f"decoder.up.{n - 1 - i}.block.{j}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
                   if kind == "resnets" else f"decoder.up.{n - 1 - i}.upsample.conv.{'.'.join(parts[6:])}")
        elif ".mid_block." in k:
            part, kind, j = parts[0], parts[2], int(parts[3])
            rest = ".".join(parts[4:])
            if kind == "resnets":
                new = f"{part}.mid.block_{j + 1}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
            else:
                rest = _sub(rest, [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"),
                                   ("to_out.0", "proj_out")])
                new = f"{part}.mid.attn_1.{rest}"
                if v.ndim == 2:
                    v = v[:, :, None, None]  # LDM's attention projections are 1x1 convolutions
        else:
            new = k.replace("conv_norm_out", "norm_out")
        out["first_stage_model." + new] = v
    return out


def clip_to_ldm(text_encoder) -> dict:
    """As SD-1.x files hold it: cond_stage_model.transformer.text_model.*"""
    return {"cond_stage_model.transformer.text_model." + k.removeprefix("text_model."): v
            for k, v in text_encoder.state_dict().items()}
