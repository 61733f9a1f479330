"""Where does an inpainting model consult its caption? The true joint latent of held-out examples
noised to timestep t, the model's x0 colormap decoded once under each shape kind's caption (same
noise, same colour), at several t. How alike the four entity masks are says whether the caption
changes the answer there; how often the judged kind is the asked one, whether it changes it
rightly. The true caption's x0 from the noise alone (the truth's share of x_t removed) says how
much of the shape the model reads from the truth left in x_t, which sampling from noise lacks.
Needs the torch model (a training run's model folder), not an engine: it is a training
diagnostic (train.kind_timesteps were chosen from it, docs/demo-model.md)."""

from __future__ import annotations

import itertools

import numpy as np

from .common import machine

TIMESTEPS = (100, 300, 500, 700, 900)
COLOUR_RADIUS = 60.0  # a decoded pixel within this distance (0..255 RGB) of the entity's colour is the entity's


def run(model, *, n: int = 20, offset: int = 5000, size: int = 128, timesteps=TIMESTEPS, seed: int = 0) -> dict:
    """model: a modeling.UniGSModel or the path of a model folder."""
    import torch
    from diffusers import DDPMScheduler
    from tqdm.auto import tqdm

    from unigs_deploy import metrics, modeling, palette, tasks
    from unigs_deploy.synthetic.shapes import KINDS, caption, held_out_example
    from unigs_deploy.tokenizer import CLIPTokenizer

    from . import detect

    if not isinstance(model, modeling.UniGSModel):
        model = modeling.load(model)
    model.eval()
    tokenize = CLIPTokenizer.from_tokenizer(model.tokenizer)
    schedule = DDPMScheduler.from_config(model.scheduler_config)
    vae, scale = model.vae, model.vae.config.scaling_factor

    def encode(unit):
        x = torch.from_numpy(np.ascontiguousarray(unit)).permute(2, 0, 1)[None].float()
        return vae.encode(x).latent_dist.mean * scale

    per_t = {t: {"asked": 0, "judged": 0, "true_right": 0, "true_judged": 0, "iou": [], "alike": [], "all": [],
                 "alone": []} for t in timesteps}
    labels = torch.full((len(KINDS) + 1,), tasks.get("inpaint").id) if model.task_embedding else None
    with torch.no_grad():
        for i in tqdm(range(n), desc="teacher-forced", unit="image"):
            image, masks, captions, region, j = held_out_example(offset + i, size)
            colour, truth = captions[j].split()[1], captions[j].split()[-1]
            cmap = palette.encode_colormap(masks[j:j + 1])
            entity_colour = cmap[masks[j]][0].astype(np.float32)
            control, mask = tasks.model_inputs("inpaint", palette.colormap_to_unit(image), region,
                                               palette.colormap_to_unit(cmap))
            z = torch.cat([encode(palette.colormap_to_unit(image)), encode(palette.colormap_to_unit(cmap))], 1)
            fixed = torch.cat([torch.nn.functional.interpolate(torch.from_numpy(mask)[None, None], size=z.shape[-2:]),
                               encode(control)], 1)
            noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed + i))
            hidden = model.text_encoder(torch.from_numpy(tokenize([caption(colour, k) for k in KINDS + (truth,)])))[0]
            for t in timesteps:
                noisy = schedule.add_noise(z, noise, torch.tensor([t]))
                alone = noise * (1 - schedule.alphas_cumprod[t]).sqrt()
                inputs = torch.cat([noisy.repeat(len(KINDS), 1, 1, 1), alone])
                x0 = model.unet(torch.cat([inputs, fixed.repeat(len(inputs), 1, 1, 1)], 1),
                                torch.full((len(inputs),), t), hidden, class_labels=labels).sample
                rec = vae.decode(x0[:, z.shape[1] // 2:] / scale).sample.clamp(-1, 1)
                rec = (rec.permute(0, 2, 3, 1).numpy() + 1) * 127.5
                *drawn, from_noise = [(np.linalg.norm(r - entity_colour, axis=-1) < COLOUR_RADIUS) & region
                                      for r in rec]
                r = per_t[t]
                r["all"].append(metrics.mask_iou(drawn[KINDS.index(truth)], masks[j]))
                r["alone"].append(metrics.mask_iou(from_noise, masks[j]))
                r["alike"] += [metrics.mask_iou(a, b) for a, b in itertools.combinations(drawn, 2)]
                for kind, ent in zip(KINDS, drawn, strict=True):
                    if not ent.any():
                        continue
                    judged = detect.shape_kind(ent)
                    r["judged"] += 1
                    r["asked"] += judged == kind
                    if kind == truth:
                        r["true_judged"] += 1
                        r["true_right"] += judged == kind
                        r["iou"].append(metrics.mask_iou(ent, masks[j]))
    rows = [{"t": t, "masks_between_kinds": float(np.mean(r["alike"])),
             "asked_kind_match": r["asked"] / max(1, r["judged"]), "judged": r["judged"],
             "true_caption_kind_match": r["true_right"] / max(1, r["true_judged"]),
             "true_caption_region_iou": float(np.mean(r["iou"])) if r["iou"] else None,
             # over every image (an empty mask scores 0): from x_t, and from the noise alone
             "true_caption_iou_all_images": float(np.mean(r["all"])),
             "true_caption_iou_from_noise_alone": float(np.mean(r["alone"]))}
            for t, r in per_t.items()]
    return {"benchmark": "teacher-forced", "machine": machine(), "images": n, "offset": offset, "size": size,
            "rows": rows}


def render(r: dict) -> str:
    head = ("| t | masks between kinds | asked kind judged | true caption: kind judged | true caption: IoU | "
            "every image: IoU from x_t / from the noise alone |\n|---|---|---|---|---|---|\n")
    body = "".join(f"| {x['t']} | {x['masks_between_kinds']:.3f} | {x['asked_kind_match']:.2f} ({x['judged']}) | "
                   f"{x['true_caption_kind_match']:.2f} | "
                   f"{'-' if x['true_caption_region_iou'] is None else format(x['true_caption_region_iou'], '.3f')} | "
                   f"{x['true_caption_iou_all_images']:.3f} / {x['true_caption_iou_from_noise_alone']:.3f} |\n"
                   for x in r["rows"])
    return head + body + (f"\n{r['images']} held-out {r['size']}x{r['size']} images from index {r['offset']}: the true "
                          "latent noised to t, x0 under each kind's caption (masks between kinds 1: the caption "
                          "changes nothing there; chance for the kind 0.25).")
