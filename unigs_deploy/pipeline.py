"""The four UniGS tasks on top of the backends: one readable DDIM loop, numpy only.

What the model sees for each task is assembled by `tasks.model_inputs` (docs/design.md).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import dichotomy, palette, tasks
from .io import to_rgb8
from .manifest import Manifest
from .scheduler import DDIMScheduler
from .tokenizer import CLIPTokenizer


@dataclass
class Result:
    task: str
    image: np.ndarray  # (H, W, 3) uint8, the generated image half
    colormap: np.ndarray  # (H, W, 3) uint8, the generated colormap half
    labels: np.ndarray  # (H, W) int32 from the dichotomy decoder
    mask: np.ndarray | None = None  # refer: the referred entity; inpaint: union of generated entities
    latents: np.ndarray | None = None  # (1, 8, h, w): the final [z_img, z_cmap], for checks against a reference
    timings: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)


class UniGSPipeline:
    def __init__(self, components: dict, manifest: Manifest, tokenizer: CLIPTokenizer):
        self.components = components
        self.manifest = manifest
        self.tokenizer = tokenizer
        m = manifest.model
        self.vae_scale_factor = m.vae_scale_factor
        self.scaling = m.vae_scaling_factor
        self.latent_channels = m.latent_channels
        self.multiple = m.pixel_multiple
        self.task_embedding = m.task_embedding

    @classmethod
    def from_engine(cls, engine: str | Path, *, provider: str = "auto", threads: int = 0) -> UniGSPipeline:
        from .backends import open_components

        components, manifest = open_components(engine, provider=provider, threads=threads)
        tok = CLIPTokenizer(manifest.tokenizer_path(), max_length=manifest.model.max_text_length)
        return cls(components, manifest, tok)

    @property
    def provider(self) -> str:
        """Where the UNet runs (e.g. CPUExecutionProvider, TensorRT)."""
        return self.components["unet"].provider

    # ------------------------------------------------------------ building blocks

    def encode_text(self, prompts: list[str]) -> np.ndarray:
        return self.components["text_encoder"](input_ids=self.tokenizer(prompts)).copy()

    def _empty_text(self) -> np.ndarray:
        """The unconditional embedding, computed once per pipeline."""
        if not hasattr(self, "_uncond"):
            self._uncond = self.encode_text([""])
        return self._uncond

    def encode_image(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint8 (H, W, 3) -> scaled latent (1, C, h, w); the VAE's sample drawn from `rng`."""
        return self.encode_unit(palette.colormap_to_unit(rgb), rng)

    def encode_unit(self, unit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = np.ascontiguousarray(unit.transpose(2, 0, 1)[None], dtype=np.float32)
        params = self.components["vae_encoder"](sample=x)
        mean, logvar = np.split(params, 2, axis=1)
        std = np.exp(0.5 * np.clip(logvar, -30.0, 20.0))
        return ((mean + std * rng.standard_normal(mean.shape, dtype=np.float32)) * self.scaling).astype(np.float32)

    def decode_latent(self, z: np.ndarray) -> np.ndarray:
        """scaled latent (1, C, h, w) -> uint8 (H, W, 3)."""
        x = self.components["vae_decoder"](latent_sample=(z / self.scaling).astype(np.float32))
        return palette.unit_to_colormap(x[0].transpose(1, 2, 0))

    def denoise(self, control: np.ndarray, mask: np.ndarray, cond: np.ndarray, uncond: np.ndarray | None,
                task: str, *, steps: int, guidance: float, rng: np.random.Generator, eta: float = 0.0,
                progress: bool = False, callback=None) -> tuple[np.ndarray, np.ndarray]:
        """The DDIM loop over the joint 8-channel latent `[z_img, z_cmap]`; returns both halves.

        `callback(i, t, z)`, if given, is called after each step (as diffusers' `callback_on_step_end`).
        """
        from tqdm.auto import tqdm

        sched = DDIMScheduler(**self.manifest.scheduler)
        timesteps = sched.set_timesteps(steps)
        c = self.latent_channels
        z = rng.standard_normal((1, 2 * c) + control.shape[2:], dtype=np.float32) * sched.init_noise_sigma
        cfg = uncond is not None and guidance != 1.0
        text = np.concatenate([uncond, cond]) if cfg else cond
        batch = text.shape[0]
        fixed = np.concatenate([mask, control], axis=1).astype(np.float32)
        sample = np.empty((batch, 2 * c + fixed.shape[1]) + control.shape[2:], np.float32)
        sample[:, 2 * c:] = fixed
        feed = {"encoder_hidden_states": text}
        if self.task_embedding:
            feed["class_labels"] = np.full(batch, tasks.get(task).id, np.int64)
        unet = self.components["unet"]
        steps_bar = tqdm(timesteps, desc=f"{task}: denoising", unit="step", disable=not progress, leave=False)
        for i, t in enumerate(steps_bar):
            sample[:, : 2 * c] = z
            eps = unet(sample=sample, timestep=np.full(batch, t, np.float32), **feed)
            if cfg:
                eps = eps[:1] + guidance * (eps[1:] - eps[:1])
            z = sched.step(eps, int(t), z, eta=eta, generator=rng)
            if callback is not None:
                callback(i, int(t), z)
        return z[:, :c], z[:, c:]

    # ------------------------------------------------------------ input checks

    def _prepare(self, image: np.ndarray, what: str = "image") -> tuple[np.ndarray, list[str], tuple[int, int]]:
        rgb, notes = to_rgb8(image, what)
        h, w = rgb.shape[:2]
        ph, pw = -h % self.multiple, -w % self.multiple
        if ph or pw:
            rgb = np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="edge")
            notes.append(f"{what}: {w}x{h} padded to {w + pw}x{h + ph} (a multiple of {self.multiple}); "
                         "outputs are cropped back")
        return rgb, notes, (h, w)

    def _mask(self, mask: np.ndarray, size: tuple[int, int], padded: tuple[int, int], what: str = "mask"):
        m = np.asarray(mask)
        if m.ndim == 3:
            m = m.any(axis=2)
        if m.shape != size:
            raise ValueError(f"{what} is {m.shape[1]}x{m.shape[0]} but the image is {size[1]}x{size[0]}: "
                             "give a mask of the image's size")
        m = m.astype(bool)
        if not m.any():
            raise ValueError(f"{what} is empty: mark the region with non-zero pixels")
        return np.pad(m, ((0, padded[0] - size[0]), (0, padded[1] - size[1])))

    def _latent_mask(self, m: np.ndarray) -> np.ndarray:
        f = self.vae_scale_factor
        return m[::f, ::f][None, None].astype(np.float32)  # nearest, as diffusers' interpolate does

    # ------------------------------------------------------------ tasks

    def _run(self, task: str, rgb: np.ndarray, region: np.ndarray | None, prompt: str, size: tuple[int, int],
             notes: list, *, steps: int | None = None, guidance: float | None = None, seed: int = 0,
             eta: float | None = None, progress: bool = False, callback=None) -> Result:
        """One task on an image (or colormap) already padded to the model's multiple."""
        spec = tasks.get(task)
        steps = spec.steps if steps is None else steps
        guidance = spec.guidance if guidance is None else guidance
        eta = spec.eta if eta is None else eta
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        unit = palette.colormap_to_unit(rgb)
        control_unit, mask = tasks.model_inputs(task, unit, region, unit)
        rng = np.random.default_rng(seed)
        timings = {}
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cond = self.encode_text([prompt])
        uncond = self._empty_text() if guidance != 1.0 else None
        notes += [str(w.message) for w in caught]
        timings["text_encoder_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        control = self.encode_unit(control_unit, rng)
        timings["vae_encoder_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        z_img, z_cmap = self.denoise(control, self._latent_mask(mask), cond, uncond, task, steps=steps,
                                     guidance=guidance, rng=rng, eta=eta, progress=progress, callback=callback)
        timings["denoise_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        image = self.decode_latent(z_img)[: size[0], : size[1]]
        colormap = self.decode_latent(z_cmap)[: size[0], : size[1]]
        timings["vae_decoder_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        # specks are judged relative to the image: the default min_area is meant for 512x512
        min_area = max(2, round(dichotomy.DEFAULT_MIN_AREA * size[0] * size[1] / 512**2))
        labels = dichotomy.decode_colormap(colormap, keep_background=spec.keep_background, min_area=min_area)
        timings["dichotomy_s"] = time.perf_counter() - t0
        timings["total_s"] = sum(timings.values())
        settings = {"task": task, "prompt": prompt, "steps": steps, "guidance": guidance, "seed": seed, "eta": eta}
        return Result(task, image, colormap, labels, timings=timings, notes=notes, settings=settings,
                      latents=np.concatenate([z_img, z_cmap], axis=1))

    def inpaint(self, image, regions: list[tuple[np.ndarray, str]], **kw) -> Result:
        """Multi-class, multi-region inpainting: every region is a coarse mask with its own text.

        One pass, as the model was trained: the union of the regions is inpainted with the texts
        joined; each generated entity is then given to the region it overlaps most.
        """
        if not regions:
            raise ValueError("inpaint needs at least one region (a mask and its text)")
        rgb, notes, size = self._prepare(image)
        masks = [self._mask(m, size, rgb.shape[:2], f"mask {i + 1}") for i, (m, _) in enumerate(regions)]
        union = np.logical_or.reduce(masks)
        prompt = ", ".join(p for _, p in regions if p)
        res = self._run("inpaint", rgb, union, prompt, size, notes, **_loop_kw(kw))
        crop = [m[: size[0], : size[1]] for m in masks]
        region_of = np.zeros(res.labels.max() + 1, np.int32)
        for k in range(1, res.labels.max() + 1):
            overlap = [np.count_nonzero((res.labels == k) & m) for m in crop]
            region_of[k] = 1 + int(np.argmax(overlap)) if max(overlap) > 0 else 0
        res.labels = np.where(region_of[res.labels] > 0, res.labels, 0).astype(np.int32)
        res.mask = res.labels > 0
        res.settings["regions"] = [p for _, p in regions]
        return res

    def synthesize(self, colormap, prompt: str = "", **kw) -> Result:
        """An image whose entities follow the colormap (location-aware palette colours)."""
        rgb, notes, size = self._prepare(colormap, "colormap")
        return self._run("synthesize", rgb, None, prompt, size, notes, **_loop_kw(kw))

    def refer(self, image, mask, prompt: str, **kw) -> Result:
        """Image + coarse region + text -> the mask of the referred entity."""
        rgb, notes, size = self._prepare(image)
        region = self._mask(mask, size, rgb.shape[:2])
        res = self._run("refer", rgb, region, prompt, size, notes, **_loop_kw(kw))
        inside = res.labels[region[: size[0], : size[1]]]
        inside = inside[inside > 0]
        if inside.size:
            res.mask = res.labels == np.bincount(inside).argmax()
        else:
            res.mask = np.zeros(size, bool)
            res.notes.append("refer: no entity was generated inside the region; the mask is empty")
        return res

    def segment(self, image, prompt: str = "", **kw) -> Result:
        """Every entity of the image; background clusters are entities too (as in the paper)."""
        rgb, notes, size = self._prepare(image)
        return self._run("segment", rgb, None, prompt, size, notes, **_loop_kw(kw))


_LOOP_ARGS = ("steps", "guidance", "seed", "eta", "progress", "callback")


def _loop_kw(kw: dict) -> dict:
    """steps, guidance and eta default to the task's (tasks.py) when left out or None."""
    unknown = set(kw) - set(_LOOP_ARGS)
    if unknown:
        raise TypeError(f"unexpected arguments: {', '.join(sorted(unknown))}")
    return kw
