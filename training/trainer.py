"""Fine-tune the UniGS UNet (or, for the demo model, train its small VAE) with accelerate.

`accelerate launch --multi_gpu unigs-train CONFIG` scales it out; on one CPU it runs as is.
Every batch is a pure function of (seed, step, rank), and checkpoints hold the model, optimiser,
lr schedule and EMA, so `--resume` continues exactly like an uninterrupted run.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from unigs_deploy import io, modeling
from unigs_deploy.tasks import NAMES as TASKS

from . import data as data_mod
from . import kind_fit, kind_judge, losses
from .config import teacher_paths

log = logging.getLogger("unigs.train")
KIND_PROBE = "kind_probe.pt"  # train.caption_kind_loss's probe, beside a trained model (modeling.save does not ship it)


def _dataset(cfg):
    d = cfg["data"]
    if d["datasets"]:
        named = []
        for k, entry in enumerate(d["datasets"]):
            one = {**{key: v for key, v in d.items() if key != "datasets"}, **entry}
            named.append((entry.get("name", f"dataset {k + 1}"), _dataset({**cfg, "data": {**one, "datasets": []}}),
                          entry["tasks"]))
        return data_mod.Mix(named)
    if d["kind"] == "shapes":
        return data_mod.ShapesOnTheFly(d["size"], seed=cfg["train"]["seed"], entities=d["entities"],
                                       upright=d["upright"])
    if d["kind"] == "coco":
        return data_mod.CocoEntities(d["annotations"], d["images"] or None, size=d["size"])
    if d["kind"] == "openimages":
        return data_mod.OpenImagesEntities(d["annotations"], d["images"], d["masks"], d["classes"] or None,
                                           size=d["size"])
    if d["kind"] == "panoptic":
        if not d["masks"]:
            raise ValueError("data.kind = panoptic needs data.masks: the folder of the panoptic PNGs")
        return data_mod.PanopticEntities(d["annotations"], d["masks"], d["images"] or None, size=d["size"])
    if d["kind"] == "refer":
        return data_mod.ReferExpressions(d["annotations"], d["images"] or None, size=d["size"])
    raise ValueError(f"data.kind must be shapes, coco, panoptic, openimages or refer, got {d['kind']!r}")


def _model(cfg) -> modeling.UniGSModel:
    m = cfg["model"]
    init = m["init"]
    if init.startswith("scale:"):
        model = modeling.build(init.split(":", 1)[1], task_embedding=m["task_embedding"], seed=m["seed"])
    else:
        model = modeling.load(init, task_embedding=m["task_embedding"])
    if m["prediction_type"]:
        if m["prediction_type"] not in ("epsilon", "sample", "v_prediction"):
            raise ValueError("model.prediction_type must be epsilon, sample or v_prediction, "
                             f"got {m['prediction_type']!r}")
        model.scheduler_config = {**model.scheduler_config, "prediction_type": m["prediction_type"]}
    if m["zero_terminal_snr"]:
        if model.scheduler_config.get("prediction_type", "epsilon") == "epsilon":
            raise ValueError("model.zero_terminal_snr needs model.prediction_type = \"sample\" or \"v_prediction\": "
                             "at t = T the input is noise alone, and a noise prediction cannot give x0 there")
        model.scheduler_config = {**model.scheduler_config, "rescale_betas_zero_snr": True}
    if m["transformer_layers"]:
        model.unet = modeling.deepen_unet(model.unet, m["transformer_layers"])
    if m["caption_pooling_heads"]:
        model.unet = modeling.pool_caption(model.unet, m["caption_pooling_heads"], gain=m["caption_pooling_gain"])
    if m["vae"]:
        from diffusers import AutoencoderKL

        model.vae = AutoencoderKL.from_pretrained(m["vae"], local_files_only=True).eval().requires_grad_(False)
    if m["text_encoder"]:
        model.text_encoder = _text_encoder(m["text_encoder"], model.text_encoder)
    return model


def _text_encoder(path: str, init) -> torch.nn.Module:
    """The text encoder in `path` (a model folder or its text_encoder/), checked to fit the init's
    tokenizer and UNet (same vocabulary and width), so the two can be mixed."""
    from transformers import CLIPTextModel

    folder = Path(path)
    if (folder / "text_encoder" / "config.json").is_file():
        folder = folder / "text_encoder"
    if not (folder / "config.json").is_file():
        raise modeling.ModelError(f"model.text_encoder: {path} holds no text encoder (no config.json in it or in "
                                  "its text_encoder/): give a model folder or its text_encoder/ folder")
    try:
        text = CLIPTextModel.from_pretrained(folder, local_files_only=True).float().eval()
    except (OSError, ValueError, RuntimeError) as e:
        raise modeling.ModelError(f"model.text_encoder: cannot load {folder}: {str(e).splitlines()[0]}") from None
    for key in ("vocab_size", "hidden_size"):
        if getattr(text.config, key) != getattr(init.config, key):
            raise modeling.ModelError(f"model.text_encoder: {path} has {key} {getattr(text.config, key)} but the "
                                      f"init's text encoder {getattr(init.config, key)}: use one trained with "
                                      "this model (the same tokenizer and width)")
    return text


def _batch_tensors(examples, dtype=torch.float32):
    img = torch.from_numpy(np.stack([e.image for e in examples])).permute(0, 3, 1, 2).to(dtype) / 127.5 - 1
    cmap = torch.from_numpy(np.stack([e.colormap for e in examples])).permute(0, 3, 1, 2).to(dtype) / 127.5 - 1
    ctrl = torch.from_numpy(np.stack([e.control for e in examples])).permute(0, 3, 1, 2).to(dtype)
    mask = torch.from_numpy(np.stack([e.mask for e in examples]))[:, None].to(dtype)
    tasks = torch.tensor([TASKS.index(e.task) for e in examples])
    return img, cmap, ctrl, mask, tasks


def _lr_factor(step: int, *, warm: int, total: int, cosine: bool) -> float:
    if step < warm:
        return (step + 1) / warm
    if not cosine:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))


class Trainer:
    def __init__(self, cfg: dict, *, resume: bool = False, progress: bool = True):
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        self.cfg = cfg
        t = cfg["train"]
        self.out = Path(t["output"])
        self.accelerator = Accelerator(
            gradient_accumulation_steps=t["grad_accum"], mixed_precision=t["mixed_precision"],
            cpu=not torch.cuda.is_available(), project_config=ProjectConfiguration(project_dir=str(self.out)))
        self.rank = self.accelerator.process_index
        self.progress = progress and self.accelerator.is_main_process
        self.model = _model(cfg)
        self.stage = t["stage"]
        self.source = data_mod.ExampleSource(_dataset(cfg), seed=t["seed"], task_ratios=t["tasks"], rank=self.rank,
                                             max_entities=cfg["data"]["max_entities"],
                                             inpaint_one_entity=cfg["data"]["inpaint_one_entity"])
        if self.stage in ("vae", "vae_decoder"):
            self.trained = [self.model.vae]
        elif self.stage == "tiny_vae":
            if self.model.tiny_vae is None:
                from diffusers import AutoencoderTiny

                self.model.tiny_vae = AutoencoderTiny(**modeling.tiny_vae_config(self.model.vae))
            self.trained = [self.model.tiny_vae]
        else:
            self.trained = [self.model.unet] + ([self.model.text_encoder] if cfg["model"]["train_text_encoder"] else [])
        for m in (self.model.unet, self.model.vae, self.model.text_encoder):
            m.requires_grad_(False).eval()
        for m in self.trained:
            m.requires_grad_(True).train()
        if self.stage == "vae_decoder":  # the encoder, and so the latent space a trained UNet knows, stays
            self.model.vae.encoder.requires_grad_(False).eval()
            self.model.vae.quant_conv.requires_grad_(False)
        if t["gradient_checkpointing"] and self.stage == "unet":
            self.model.unet.enable_gradient_checkpointing()
        self.kind_head = self._kind_head(t)
        self.teachers = self._teachers(t)
        self.optimizer = torch.optim.AdamW(self._param_groups(t), lr=t["lr"], weight_decay=t["weight_decay"])
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, functools.partial(_lr_factor, warm=max(1, t["warmup_steps"]), total=t["steps"],
                                              cosine=t["lr_schedule"] == "cosine"))
        from diffusers import DDPMScheduler
        from diffusers.training_utils import EMAModel

        self.noise_schedule = DDPMScheduler(**{k: v for k, v in self.model.scheduler_config.items()
                                               if k in ("num_train_timesteps", "beta_start", "beta_end",
                                                        "beta_schedule", "prediction_type", "steps_offset",
                                                        "rescale_betas_zero_snr")})
        last = self.noise_schedule.config.num_train_timesteps - 1
        if max(t["onestep_timesteps"]) > last:
            raise ValueError(f"train.onestep_timesteps {t['onestep_timesteps']} exceed the schedule's last "
                             f"timestep {last}")
        self.judges_kind = bool(t["kind_loss"]) and self.stage == "unet"
        self.kind_judge = None
        if self.judges_kind:
            if self.noise_schedule.config.prediction_type != "sample":
                raise ValueError("train.kind_loss needs model.prediction_type = \"sample\" (an x0 prediction to judge)")
            if t["kind_target"] == "judge":
                self.kind_judge = kind_judge.load_or_train(self.out / "kind_judge.pt", size=cfg["data"]["size"])
        self.ema = EMAModel(self.trained[0].parameters(), decay=t["ema_decay"])
        prepared = self.accelerator.prepare(*self.trained, self.optimizer, self.lr_schedule)
        self.trained = list(prepared[: len(self.trained)])
        self.optimizer, self.lr_schedule = prepared[len(self.trained):]
        self.accelerator.register_for_checkpointing(self.ema)
        if self.kind_head is not None:
            self.accelerator.register_for_checkpointing(self.kind_head)
        self.step = 0
        self.losses: list[float] = []
        self.evals: list[dict] = []
        if resume:
            self._resume()

    # -------------------------------------------------------------- checkpoints

    def _ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def save_checkpoint(self) -> Path:
        """Written into a temporary folder and renamed: a crash never leaves a half checkpoint."""
        final = self._ckpt_dir() / f"step-{self.step:07d}"
        tmp = self._ckpt_dir() / f".tmp-step-{self.step:07d}"
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        self.accelerator.save_state(str(tmp))
        if self.accelerator.is_main_process:
            (tmp / "trainer.json").write_text(json.dumps({"step": self.step, "losses": self.losses,
                                                          "evals": self.evals}))
            io.replace_dir(tmp, final)
            for old in sorted(self._ckpt_dir().glob("step-*"))[:-2]:  # keep the last two
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return final

    def _resume(self) -> None:
        ckpts = sorted(self._ckpt_dir().glob("step-*"))
        if not ckpts:
            raise ValueError(f"--resume: no checkpoint in {self._ckpt_dir()}")
        self.accelerator.load_state(str(ckpts[-1]))
        state = json.loads((ckpts[-1] / "trainer.json").read_text())
        self.step, self.losses, self.evals = state["step"], state["losses"], state.get("evals", [])
        log.info("resumed from %s at step %d", ckpts[-1], self.step)

    # -------------------------------------------------------------- one step

    def _latent(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        vae = self.model.vae
        with torch.no_grad():
            dist = vae.encode(x).latent_dist
            return (dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen)) * vae.config.scaling_factor

    def loss(self, step: int) -> torch.Tensor:
        t = self.cfg["train"]
        examples = [self.source.example(step, i) for i in range(t["batch_size"])]
        img, cmap, ctrl, mask, tasks = _batch_tensors(examples)
        gen = torch.Generator().manual_seed(int(np.random.default_rng([t["seed"], step, self.rank]).integers(1 << 62)))
        if self.stage in ("vae", "vae_decoder"):
            vae = self.trained[0]
            x = torch.cat([img, cmap])
            dist = self.accelerator.unwrap_model(vae).encode(x).latent_dist
            z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen)
            rec = self.accelerator.unwrap_model(vae).decode(z).sample
            return self._pixel_loss(rec, x, t["l1_weight"]) + 1e-6 * dist.kl().mean()
        if self.stage == "tiny_vae":
            return self._tiny_vae_loss(torch.cat([img, cmap]), gen)
        z_img, z_cmap, z_ctrl = self._latent(img, gen), self._latent(cmap, gen), self._latent(ctrl, gen)
        m = torch.nn.functional.interpolate(mask, size=z_img.shape[-2:])  # nearest, as the runtime
        target_latent = torch.cat([z_img, z_cmap], 1)
        noise = torch.randn(target_latent.shape, generator=gen)
        last = self.noise_schedule.config.num_train_timesteps - 1
        timesteps = torch.randint(0, last + 1, (len(examples),), generator=gen)
        if t["timestep_ranges"]:  # drawn only when set, so other configs' batches stay as they were
            ranges = t["timestep_ranges"]
            lo = torch.tensor([ranges.get(e.task, [0, last])[0] for e in examples])
            span = torch.tensor([ranges.get(e.task, [0, last])[1] for e in examples]) - lo + 1
            ranged = torch.tensor([e.task in ranges for e in examples])
            ranged &= torch.rand(len(examples), generator=gen) < t["timestep_range_share"]
            inside = lo + (torch.rand(len(examples), generator=gen) * span).long().clamp(max=span - 1)
            timesteps = torch.where(ranged, inside, timesteps)
        onestep = torch.zeros(len(examples), dtype=torch.bool)
        if t["onestep_tasks"]:
            onestep = torch.tensor([e.task in t["onestep_tasks"] for e in examples])
            onestep &= torch.rand(len(examples), generator=gen) < t["onestep_fraction"]
            choices = torch.tensor(t["onestep_timesteps"])
            pick = choices[0]  # one choice draws nothing, so earlier stages' batches stay as they were
            if len(choices) > 1:
                pick = choices[torch.randint(0, len(choices), (len(examples),), generator=gen)]
            timesteps = torch.where(onestep, pick, timesteps)
        judged = torch.tensor([e.kind >= 0 for e in examples]) if self.judges_kind else None
        if judged is not None and judged.any() and not t["kind_sampled_steps"]:
            lo, hi = t["kind_timesteps"]
            timesteps = torch.where(judged, torch.randint(lo, hi + 1, (len(examples),), generator=gen), timesteps)
        noisy = self.noise_schedule.add_noise(target_latent, noise, timesteps)  # one timestep for both halves
        drop = torch.rand(len(examples), generator=gen) < t["cfg_dropout"]
        prompts = ["" if d else e.prompt for e, d in zip(examples, drop.tolist(), strict=True)]
        ids = torch.from_numpy(self._tokenize(prompts))
        text_encoder = self.trained[1] if len(self.trained) > 1 else self.model.text_encoder
        hidden = text_encoder(ids)[0]
        only = self.cfg["model"]["text_encoder_tasks"]
        if len(self.trained) > 1 and only:
            trains = torch.tensor([e.task in only for e in examples]).view(-1, 1, 1)
            hidden = torch.where(trains, hidden, hidden.detach())
        unet = self.trained[0]
        labels = tasks if self.accelerator.unwrap_model(unet).config.num_class_embeds else None
        if t["onestep_unroll"]:
            noisy = self._unrolled(unet, noisy, noise, onestep & (timesteps < last), last, timesteps,
                                   torch.cat([m, z_ctrl], 1), hidden, labels)
        inputs = torch.cat([noisy, m, z_ctrl], 1)
        pred = unet(inputs, timesteps, hidden, class_labels=labels).sample
        kind = self.noise_schedule.config.prediction_type
        target = {"epsilon": noise, "sample": target_latent}.get(kind)
        if target is None:
            target = self.noise_schedule.get_velocity(target_latent, noise, timesteps)
        if t["snr_gamma"]:
            per_example = ((pred - target) ** 2).mean(dim=(1, 2, 3))
            loss = (per_example * torch.where(onestep, 1.0, self._snr_weight(timesteps, kind))).mean()
        else:
            loss = torch.nn.functional.mse_loss(pred, target)
        contrast = torch.tensor([bool(e.negative) for e in examples]) & ~drop if t["caption_contrast"] else None
        if contrast is not None and contrast.any():
            wrong = [e.negative for e, c in zip(examples, contrast.tolist(), strict=True) if c]
            hidden_neg = text_encoder(torch.from_numpy(self._tokenize(wrong)))[0]
            if only and "inpaint" not in only:
                hidden_neg = hidden_neg.detach()
            pred_neg = unet(inputs[contrast], timesteps[contrast], hidden_neg,
                            class_labels=None if labels is None else labels[contrast]).sample
            region = m[contrast]
            err = [(region * (p - target[contrast]) ** 2).sum((1, 2, 3)) / (region.sum((1, 2, 3)) * p.shape[1])
                   for p in (pred[contrast], pred_neg)]
            loss = loss + t["caption_contrast"] * losses.caption_contrast(*err)
        if self.kind_head is not None:
            loss = loss + t["caption_kind_loss"] * self._caption_kind_loss(unet, hidden, examples, drop)
        guided = torch.tensor([e.task in self.teachers for e in examples]) if self.teachers else None
        if guided is not None and guided.any():
            taught = pred.detach().clone()
            with torch.no_grad():
                for teacher in {id(m): m for m in self.teachers.values()}.values():
                    sel = torch.tensor([self.teachers.get(e.task) is teacher for e in examples])
                    if not sel.any():
                        continue
                    said = teacher.text_encoder(ids[sel])[0]
                    taught[sel] = teacher.unet(inputs[sel], timesteps[sel], said,
                                               class_labels=tasks[sel] if teacher.unet.config.num_class_embeds
                                               else None).sample
            if t["teacher_weights"]:
                w = torch.tensor([float(t["teacher_weights"].get(e.task, t["teacher_loss"])) for e in examples])[guided]
                loss = loss + (w * ((pred[guided] - taught[guided]) ** 2).mean(dim=(1, 2, 3))).mean()
            else:
                loss = loss + t["teacher_loss"] * torch.nn.functional.mse_loss(pred[guided], taught[guided])
        if judged is not None and (judged & ~drop).any():
            sel = judged & ~drop
            if t["kind_sampled_steps"]:
                x_T = torch.randn((int(sel.sum()), *target_latent.shape[1:]), generator=gen)
                cond = hidden[sel] if t["kind_loss_text_encoder"] else hidden[sel].detach()
                sampled = self._sampled(unet, x_T, torch.cat([m, z_ctrl], 1)[sel], cond,
                                        None if labels is None else labels[sel], t["kind_sampled_steps"])
                loss = loss + t["kind_loss"] * self._kind_loss(sampled, cmap[sel], mask[sel], examples, sel,
                                                               sampled=True)
            else:
                loss = loss + t["kind_loss"] * self._kind_loss(pred[sel], cmap[sel], mask[sel], examples, sel)
        if (t["colormap_pixel_loss"] or t["entity_separation_loss"]) and onestep.any():
            if kind != "sample":
                raise ValueError("train.colormap_pixel_loss and train.entity_separation_loss need "
                                 f"model.prediction_type = \"sample\" (an x0 prediction to decode), not {kind!r}")
            vae = self.model.vae
            c = z_cmap.shape[1]
            rec = vae.decode(pred[onestep, c:] / vae.config.scaling_factor).sample
            loss = loss + t["colormap_pixel_loss"] * self._pixel_loss(rec, cmap[onestep], 1.0)
            if t["entity_separation_loss"]:
                loss = loss + t["entity_separation_loss"] * losses.entity_separation(rec, cmap[onestep])
        return loss

    def _caption_kind_loss(self, unet, hidden, examples, drop) -> torch.Tensor:
        """Cross-entropy of the kind probe on the pooled caption against the kind the caption names."""
        named = torch.tensor([e.kind >= 0 for e in examples]) & ~drop
        if not named.any():
            return torch.zeros(())
        pooled = self.accelerator.unwrap_model(unet).add_embedding(hidden[named])
        kinds = torch.tensor([e.kind for e, n in zip(examples, named.tolist(), strict=True) if n])
        return torch.nn.functional.cross_entropy(self.kind_head(pooled), kinds)

    def _kind_loss(self, x0, target, region, examples, sel, *, sampled: bool = False) -> torch.Tensor:
        """The x0 colormap's entity (the pixels near the true entity's colour; in a sample, the
        pixels not background) scored against the kind the caption asks for: by the kind judge
        inside the region, or (train.kind_target = "fit") by its soft IoU with the asked kind's
        best-fitting shape over the whole image; "fit-image" does that inside the region with the
        image half's pixels near the caption's colour. x0, target, region: the `sel` examples'."""
        vae = self.model.vae
        how = self.cfg["train"]["kind_target"]
        entity = (target > -1 + 1e-3).any(1, keepdim=True).to(target.dtype)  # the background is black
        chosen = [e for e, s in zip(examples, sel.tolist(), strict=True) if s]
        kinds = [e.kind for e in chosen]
        if how == "fit-image":
            c = vae.config.latent_channels
            rec = vae.decode(x0[:, :c] / vae.config.scaling_factor).sample
            named = [e.prompt.split()[-2] for e in chosen]  # "a red star"
            soft = kind_judge.soft_entity_mask(rec, kind_fit.caption_colours(named)) * region
            return losses.soft_iou(soft, kind_fit.fitted_targets(soft, region, kinds, entity))
        rec = vae.decode(x0[:, -vae.config.latent_channels:] / vae.config.scaling_factor).sample
        if sampled:
            soft = kind_judge.soft_foreground_mask(rec)
        else:
            colours = (target * entity).sum((2, 3)) / entity.sum((2, 3)).clamp(min=1)
            soft = kind_judge.soft_entity_mask(rec, colours)
        if how == "fit":
            return losses.soft_iou(soft, kind_fit.fitted_targets(soft, region, kinds, entity))
        logits = self.kind_judge(kind_judge.region_crops(soft * region, region))
        return torch.nn.functional.cross_entropy(logits, torch.tensor(kinds))

    def _snr_weight(self, timesteps: torch.Tensor, kind: str) -> torch.Tensor:
        """Min-SNR-gamma: each example's loss becomes min(SNR, gamma) times its x0 error, whatever
        the model predicts (an epsilon loss is SNR times the x0 error, a v loss SNR + 1 times)."""
        ab = self.noise_schedule.alphas_cumprod[timesteps]
        snr = ab / (1 - ab)
        clipped = snr.clamp(max=self.cfg["train"]["snr_gamma"])
        return {"epsilon": clipped / snr, "sample": clipped}.get(kind, clipped / (snr + 1))

    def _unrolled(self, unet, noisy, noise, later, last, timesteps, fixed, hidden, labels) -> torch.Tensor:
        """The inputs a trailing sampler's later step sees, for the `later` examples: pure noise at
        t = T - 1, the model's own (no-grad) x0 prediction there, and the first-order move to t
        (DDIM, and DPM-Solver++'s first step, are this move for an x0 prediction). Trained on the
        noised truth instead, the demo model's 2-step segment scored no better than 1 step (docs/demo-model.md)."""
        if not later.any():
            return noisy
        if self.noise_schedule.config.prediction_type != "sample":
            raise ValueError("train.onestep_unroll needs model.prediction_type = \"sample\"")
        ab = self.noise_schedule.alphas_cumprod
        x_T = noise[later]
        with torch.no_grad():
            x0 = unet(torch.cat([x_T, fixed[later]], 1), torch.full((len(x_T),), last), hidden[later],
                      class_labels=None if labels is None else labels[later]).sample
        a_T, a_t = ab[last], ab[timesteps[later]].view(-1, 1, 1, 1)
        eps = (x_T - a_T.sqrt() * x0) / (1 - a_T).sqrt()
        out = noisy.clone()
        out[later] = a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps
        return out

    def _sampled(self, unet, x_T, fixed, hidden, labels, steps: int) -> torch.Tensor:
        """The x0 a `steps`-step trailing DDIM sampler (the conditional branch, no guidance) ends
        on from x_T, differentiable through every step: what train.kind_sampled_steps judges."""
        ab = self.noise_schedule.alphas_cumprod
        n = self.noise_schedule.config.num_train_timesteps
        ts = (np.round(np.arange(n, 0, -n / steps)) - 1).astype(int).tolist()  # diffusers' "trailing"
        x = x_T
        for k, t in enumerate(ts):
            x0 = unet(torch.cat([x, fixed], 1), torch.full((len(x),), t), hidden, class_labels=labels).sample
            if k + 1 < len(ts):
                eps = (x - ab[t].sqrt() * x0) / (1 - ab[t]).sqrt()
                x = ab[ts[k + 1]].sqrt() * x0 + (1 - ab[ts[k + 1]]).sqrt() * eps
        return x0

    @staticmethod
    def _pixel_loss(rec: torch.Tensor, x: torch.Tensor, l1_weight: float) -> torch.Tensor:
        loss = torch.nn.functional.mse_loss(rec, x)
        return loss + l1_weight * torch.nn.functional.l1_loss(rec, x) if l1_weight else loss

    def _tiny_vae_loss(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Distillation into the UNet's latent space (TAESD's recipe, without its adversarial term):
        the encoder regresses the VAE's scaled latent mean; the decoder maps the VAE's sampled
        latents (what the UNet learned to produce) back to the pixels."""
        tiny = self.accelerator.unwrap_model(self.trained[0])
        z = self._latent(x, gen)
        with torch.no_grad():
            mean = self.model.vae.encode(x).latent_dist.mean * self.model.vae.config.scaling_factor
        sf = tiny.config.scaling_factor
        enc = torch.nn.functional.mse_loss(tiny.encoder(x) * sf, mean)
        dec = self._pixel_loss(tiny.decoder(z / sf), x, self.cfg["train"]["l1_weight"])
        return enc + dec

    def _tokenize(self, prompts) -> np.ndarray:
        if not hasattr(self, "_tok"):
            from unigs_deploy.tokenizer import CLIPTokenizer

            self._tok = CLIPTokenizer.from_tokenizer(self.model.tokenizer)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self._tok(prompts)

    # -------------------------------------------------------------- the loop

    def _pools_caption(self, option: str) -> None:
        if self.stage != "unet" or self.model.unet.config.addition_embed_type != "text":
            raise ValueError(f"train.{option} needs a UNet that pools the caption: set "
                             "model.caption_pooling_heads (or start from a model that has it), stage unet")

    def _kind_head(self, t) -> torch.nn.Module | None:
        """train.caption_kind_loss's linear probe from the pooled caption to the shape kind it names:
        checkpointed for an exact resume, and written beside the model (KIND_PROBE, not shipped) so
        a stage that starts from it goes on with the probe it learned instead of a random one."""
        if not t["caption_kind_loss"]:
            return None
        self._pools_caption("caption_kind_loss")
        width = self.model.unet.add_embedding.proj.out_features
        head = torch.nn.Linear(width, len(data_mod.KINDS))
        saved = Path(self.cfg["model"]["init"]) / KIND_PROBE
        if saved.is_file():
            state = torch.load(saved, weights_only=True)
            if state["weight"].shape != head.weight.shape:
                raise ValueError(f"{saved} is a probe from a {state['weight'].shape[1]}-wide pooled caption, this "
                                 f"UNet's is {width} wide: delete it to start a new probe")
            head.load_state_dict(state)
            return head.train()
        g = torch.Generator().manual_seed(t["seed"])
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=g) / math.sqrt(width))
            head.bias.zero_()
        return head.train()

    def _teachers(self, t) -> dict:
        """{task: teacher model} from train.teacher (for each of train.teacher_tasks) and train.teachers,
        each folder loaded once however many tasks it teaches."""
        paths = teacher_paths(t)
        named = {}  # each folder once, with the first setting that names it
        for task, p in paths.items():
            named.setdefault(p, f"train.teachers.{task}" if task in t["teachers"] else "train.teacher")
        loaded = {p: self._teacher(p, key) for p, key in named.items()}
        return {task: loaded[p] for task, p in paths.items()}

    def _teacher(self, path: str, key: str) -> modeling.UniGSModel:
        """A teacher's model (`key` is the setting that named it, for the errors), checked to answer in
        the student's terms: the same UNet inputs and outputs, task labels and prediction type, and the
        same VAE (its latents are what both predict)."""
        teacher = modeling.load(path)
        mine, theirs = self.model.unet.config, teacher.unet.config
        for name in ("in_channels", "out_channels", "sample_size", "num_class_embeds"):
            if mine[name] != theirs[name]:
                raise modeling.ModelError(f"{key}: {path}'s UNet has {name} {theirs[name]}, the student's "
                                          f"{mine[name]}: a teacher must be a UniGS model of the same shape")
        kind = self.model.scheduler_config.get("prediction_type", "epsilon")
        their_kind = teacher.scheduler_config.get("prediction_type", "epsilon")
        if their_kind != kind:
            raise modeling.ModelError(f"{key}: {path} predicts {their_kind!r}, the student {kind!r}: distil between "
                                      "models that predict the same thing")
        ours, its = self.model.vae.state_dict(), teacher.vae.state_dict()
        # to fp16's rounding: a shipped (fp16) model and the run it was shipped from share a latent space
        if ours.keys() != its.keys() or any(not torch.allclose(ours[k].float(), its[k].float(), rtol=1e-3, atol=1e-7)
                                            for k in ours):
            raise modeling.ModelError(f"{key}: {path}'s VAE differs from the student's, so its predictions "
                                      "live in another latent space: use a teacher trained with the student's VAE")
        teacher.vae = None  # compared above, never run: not held for the whole run
        for m in (teacher.unet, teacher.text_encoder):
            m.requires_grad_(False).eval()
        return teacher

    def _param_groups(self, t) -> list[dict]:
        """One group at train.lr; with train.caption_pooling_lr, the caption pooling's (and the kind
        probe's) own: modules new to a trained UNet (at zero gain they stay a small voice at train.lr)."""
        params = [p for m in self.trained for p in m.parameters()]
        head = list(self.kind_head.parameters()) if self.kind_head is not None else []
        if not t["caption_pooling_lr"]:
            return [{"params": params + head}]
        self._pools_caption("caption_pooling_lr")
        pooled = {id(p) for p in self.model.unet.add_embedding.parameters()}
        return [{"params": [p for p in params if id(p) not in pooled]},
                {"params": list(self.model.unet.add_embedding.parameters()) + head, "lr": t["caption_pooling_lr"]}]

    def train(self) -> Path:
        from tqdm.auto import tqdm

        t = self.cfg["train"]
        end = t["stop_at"] or t["steps"]
        bar = tqdm(total=end, initial=self.step, disable=not self.progress, unit="step", desc="training")
        t0, seen = time.perf_counter(), 0
        if t["eval_every"] and not self.evals and self.accelerator.is_main_process:
            self.evals.append(self.evaluate())  # where the curve starts
        try:
            while self.step < end:
                with self.accelerator.accumulate(*self.trained):
                    loss = self.loss(self.step)
                    self.accelerator.backward(loss)
                    if self.accelerator.sync_gradients:
                        self.accelerator.clip_grad_norm_([p for m in self.trained for p in m.parameters()],
                                                         t["max_grad_norm"])
                    self.optimizer.step()
                    self.lr_schedule.step()
                    self.optimizer.zero_grad(set_to_none=True)
                self.ema.step(self.accelerator.unwrap_model(self.trained[0]).parameters())
                value = float(self.accelerator.reduce(loss.detach(), reduction="mean"))
                self.losses.append(value)
                self.step += 1
                seen += t["batch_size"] * self.accelerator.num_processes
                rate = seen / (time.perf_counter() - t0)
                bar.set_postfix(loss=f"{np.mean(self.losses[-t['log_every']:]):.4f}", img_s=f"{rate:.1f}")
                bar.update(1)
                # evaluated before the checkpoint, so a run resumed from this step keeps this step's point
                if t["eval_every"] and self.step % t["eval_every"] == 0 and self.accelerator.is_main_process:
                    self.evals.append(self.evaluate())
                    bar.write(f"step {self.step}: " + ", ".join(f"{k} {v:.3f}" for k, v in self.evals[-1].items()
                                                                 if isinstance(v, float)))
                    self.write_curves()
                if t["checkpoint_every"] and self.step % t["checkpoint_every"] == 0:
                    self.save_checkpoint()
                if t["sample_every"] and self.step % t["sample_every"] == 0 and self.accelerator.is_main_process:
                    self.write_samples()
        except KeyboardInterrupt:
            bar.close()
            path = self.save_checkpoint()
            log.warning("interrupted at step %d; checkpoint %s; continue with --resume", self.step, path)
            raise
        bar.close()
        if self.step % max(1, t["checkpoint_every"]) != 0:
            self.save_checkpoint()
        if self.accelerator.is_main_process:
            self.write_curves()
            if self.evals or self.losses:
                from .curves import plot

                plot(self.out / "curves.json", self.out / "curves.png", title=f"{self.out.name}: {self.stage} stage")
        return self.export_model()

    def final_model(self) -> modeling.UniGSModel:
        """The trained model with the EMA weights in place of the raw ones."""
        import copy

        module = copy.deepcopy(self.accelerator.unwrap_model(self.trained[0]))
        self.ema.copy_to(module.parameters())
        model = modeling.UniGSModel(self.model.unet, self.model.vae, self.model.text_encoder, self.model.tokenizer,
                                    self.model.scheduler_config, {"kind": "trained", "config": self.cfg,
                                                                  "steps": self.step},
                                    self.model.task_defaults, self.model.tiny_vae)
        if self.stage == "vae":
            model.vae = module
            model.vae.register_to_config(scaling_factor=self._latent_scale(module))
        elif self.stage == "vae_decoder":
            model.vae = module
        elif self.stage == "tiny_vae":
            model.tiny_vae = module
        else:
            model.unet = module
            if len(self.trained) > 1:  # a copy: UniGSModel.eval() freezes what it holds, the run trains on
                model.text_encoder = copy.deepcopy(self.accelerator.unwrap_model(self.trained[1]))
        # diffusers' sample_size is the latent size the UNet was trained at: the runtime's native resolution
        factor = 2 ** (len(model.vae.config.block_out_channels) - 1)
        model.unet.register_to_config(sample_size=self.cfg["data"]["size"] // factor)
        return model.eval()

    def _latent_scale(self, vae) -> float:
        """1 / std of the latents on training data, as SD's 0.18215 was found: the diffusion's noise
        schedule assumes unit-variance latents (a from-scratch VAE's are not)."""
        examples = [self.source.example(10**9, i) for i in range(32)]
        img, cmap, *_ = _batch_tensors(examples)
        with torch.no_grad():
            z = vae.encode(torch.cat([img, cmap])).latent_dist.mean
        return float(1.0 / z.std())

    def export_model(self) -> Path:
        """Save the EMA model as a diffusers-format UniGS folder (what unigs-export --weights takes)."""
        final = self.out / "model"
        if self.accelerator.is_main_process:
            with io.atomic_dir(final) as tmp:
                modeling.save(self.final_model(), tmp)
                (tmp / "training.json").write_text(json.dumps({"config": self.cfg, "steps": self.step,
                                                               "losses": self.losses}, indent=1))
                if self.kind_head is not None:
                    torch.save(self.accelerator.unwrap_model(self.kind_head).state_dict(), tmp / KIND_PROBE)
        self.accelerator.wait_for_everyone()
        return final

    # -------------------------------------------------------------- curves

    @property
    def eval_settings(self) -> dict:
        return {"steps": self.cfg["train"]["eval_steps"], "scheduler": "dpm++2m", "spacing": "trailing"}

    def evaluate(self) -> dict:
        """Held-out segment PQ and refer mIoU of the EMA model through the product pipeline (its
        schedulers, guidance rule and decoder) at train.eval_steps trailing steps. Held-out images
        5000.. (seeds 15000..): neither training's stream nor unigs-bench quality's (10000..)."""
        from unigs_deploy import metrics
        from unigs_deploy.evaluation.panoptic import PQAccumulator, labels_to_panoptic
        from unigs_deploy.export import eager
        from unigs_deploy.labels import masks_to_labels
        from unigs_deploy.synthetic.shapes import held_out_example

        if self.stage in ("vae", "vae_decoder"):
            return {"step": self.step}
        pipe = eager.pipeline(self.final_model())
        settings = dict(self.eval_settings, tiny_vae="all" if self.stage == "tiny_vae" else "off")
        pq, iou, decoder = PQAccumulator(), [], {}
        for i in range(self.cfg["train"]["eval_images"]):
            image, masks, captions, region, j = held_out_example(5000 + i, self.cfg["data"]["size"])
            res = pipe.segment(image, seed=i, **settings)
            truth = masks_to_labels(masks, background=len(masks) + 1)
            pq.add(*labels_to_panoptic(truth), *labels_to_panoptic(res.labels))
            ref = pipe.refer(image, region, captions[j], seed=i, **settings)
            iou.append(metrics.mask_iou(ref.mask, masks[j]))
        if iou:  # every image runs with the same split: the last one's says which
            decoder = {t: {k: r.settings[k] for k in ("stop", "threshold")} for t, r in (("segment", res),
                                                                                         ("refer", ref))}
        # dataset-level PQ, as unigs-bench quality and unigs-eval report it; the decoder's split
        # comes from the init model's task_defaults.json, so each point says which it used
        return {"step": self.step, "segment_pq": pq.result()["all"]["pq"], "refer_miou": float(np.mean(iou)),
                "decoder": decoder}

    def write_curves(self) -> Path:
        """<output>/curves.json: loss (mean per log_every steps) and the held-out evaluations."""
        from unigs_deploy.io import write_json

        n = max(1, self.cfg["train"]["log_every"])
        loss = [[k + n, float(np.mean(self.losses[k:k + n]))] for k in range(0, len(self.losses) - n + 1, n)]
        return write_json(self.out / "curves.json", {"loss": loss, "eval": self.evals,
                                                     "eval_settings": self.eval_settings,
                                                     "eval_images": self.cfg["train"]["eval_images"]})

    def write_samples(self) -> Path:
        """A sheet of the four tasks on fixed held-out examples, sampled with the EMA model."""
        from unigs_deploy.io import write_image

        from . import sample

        model = self.final_model()
        src = data_mod.ExampleSource(data_mod.ShapesOnTheFly(self.cfg["data"]["size"], seed=10_000),
                                     seed=1, task_ratios={k: 1 for k in TASKS})
        rows = []
        for i, task in enumerate(TASKS):
            ex = None
            for j in range(50):
                ex = src.example(0, i * 50 + j)
                if ex.task == task:
                    break
            if self.stage in ("vae", "vae_decoder"):
                x = torch.from_numpy(np.stack([ex.image, ex.colormap])).permute(0, 3, 1, 2).float() / 127.5 - 1
                with torch.no_grad():
                    rec = model.vae.decode(model.vae.encode(x).latent_dist.mean).sample
                rec = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
                rows.append(np.concatenate([ex.image, rec[0], ex.colormap, rec[1]], 1))
                continue
            ids = (self._tokenize([ex.prompt]), self._tokenize([""]))
            z = sample.run(model, ids, task, ex.control, ex.mask > 0, steps=20, guidance=3.0, seed=0)
            img, cmap = sample.decode(model, z)
            ctrl = ((ex.control + 1) * 127.5).clip(0, 255).astype(np.uint8)
            rows.append(np.concatenate([ctrl, ex.image, ex.colormap, img, cmap], 1))
        path = self.out / "samples" / f"step-{self.step:07d}.png"
        write_image(path, np.concatenate(rows, 0))
        return path

