"""UniGS sampling in torch from the diffusers components (UNet, VAE, CLIP, diffusers'
DDIMScheduler): training's periodic samples, and the reference the numpy runtime is checked
against. It draws its random numbers from the same numpy generator in the same order as the
runtime, so equal seeds mean equal noise."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DDIMScheduler

from unigs_deploy import tasks


@torch.no_grad()
def run(model, tokenizer_ids, task: str, control_unit: np.ndarray, mask: np.ndarray, *, steps: int,
        guidance: float, seed: int, guidance_interval: tuple[float, float] | None = None) -> np.ndarray:
    """-> final joint latent (1, 8, h, w). control_unit: (H, W, 3) in [-1, 1]; mask (H, W) bool.
    guidance_interval (low, high): guide only the timesteps inside it, the conditional pass alone elsewhere."""
    rng = np.random.default_rng(seed)
    cond_ids, uncond_ids = tokenizer_ids
    cond = model.text_encoder(torch.from_numpy(cond_ids))[0]
    uncond = model.text_encoder(torch.from_numpy(uncond_ids))[0]
    vae = model.vae
    x = torch.from_numpy(np.ascontiguousarray(control_unit.transpose(2, 0, 1)[None], dtype=np.float32))
    dist = vae.encode(x).latent_dist
    noise = torch.from_numpy(rng.standard_normal(dist.mean.shape, dtype=np.float32))
    control = (dist.mean + dist.std * noise) * vae.config.scaling_factor
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    m = torch.nn.functional.interpolate(torch.from_numpy(mask[None, None].astype(np.float32)),
                                        size=(mask.shape[0] // f, mask.shape[1] // f))
    sched = DDIMScheduler(**{k: v for k, v in model.scheduler_config.items() if not k.startswith("_")})
    sched.set_timesteps(steps)
    c = vae.config.latent_channels
    z = torch.from_numpy(rng.standard_normal((1, 2 * c) + tuple(control.shape[2:]), dtype=np.float32))
    labels = torch.full((2,), tasks.get(task).id) if model.unet.config.num_class_embeds else None
    for t in sched.timesteps:
        inp = torch.cat([z, m, control], 1).repeat(2, 1, 1, 1)
        eps = model.unet(inp, torch.full((2,), float(t)), torch.cat([uncond, cond]), class_labels=labels).sample
        guided = guidance_interval is None or guidance_interval[0] <= float(t) <= guidance_interval[1]
        eps = eps[:1] + guidance * (eps[1:] - eps[:1]) if guided else eps[1:]
        z = sched.step(eps, t, z).prev_sample
    return z.numpy()


@torch.no_grad()
def decode(model, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Final joint latent -> (image, colormap) uint8."""
    c = model.vae.config.latent_channels
    out = []
    for half in (z[:, :c], z[:, c:]):
        x = model.vae.decode(torch.from_numpy(half) / model.vae.config.scaling_factor).sample[0]
        out.append(((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())
    return out[0], out[1]
