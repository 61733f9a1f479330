"""The four UniGS tasks on top of the backends: one readable denoising loop, numpy only.

What the model sees for each task is assembled by `tasks.model_inputs` (docs/design.md). A run
works at the model's native resolution by default (the manifest says what it was trained at)
and maps every output back to the input's size; it does only the work its result needs:
classifier-free guidance only where it can change the result, the image latent decoded only
for tasks whose output is a new image.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import dichotomy, memory, metrics, palette, tasks
from . import rerank as rerank_mod
from .io import to_rgb8
from .labels import dominant_in
from .manifest import Manifest
from .scheduler import make_scheduler
from .tokenizer import CLIPTokenizer


class MissingComponent(ValueError):
    """A setting that needs a component the engine was exported without. It carries the setting and
    the reason, so each front end (Python, unigs-run, the C API) words the fix in its own spelling."""

    def __init__(self, setting: str, reason: str):
        self.setting, self.reason = setting, reason
        super().__init__(f"{setting} {reason}: use {setting}=False")


@dataclass
class Result:
    task: str
    image: np.ndarray | None  # (H, W, 3) uint8, the generated image half (None when not decoded)
    colormap: np.ndarray  # (H, W, 3) uint8, the generated colormap half
    labels: np.ndarray  # (H, W) int32 from the dichotomy decoder
    mask: np.ndarray | None = None  # refer: the referred entity; inpaint: union of generated entities
    latents: np.ndarray | None = None  # (1, 8, h, w): the final [z_img, z_cmap], for checks against a reference
    timings: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)


_LOOP_ARGS = ("steps", "guidance", "guidance_interval", "seed", "eta", "scheduler", "spacing", "resolution",
              "decode_image", "tiny_vae", "threshold", "stop", "negative_prompt", "progress", "callback")
LOCATE = ("colormap", "refer")  # where inpaint reads each region's entity from
TINY_VAE = ("off", "colormap", "all")  # where an exported AutoencoderTiny replaces the full VAE


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
    def from_engine(cls, engine: str | Path, *, provider: str = "auto", threads: int = 0,
                    backend: str = "onnxruntime", int8: bool = False) -> UniGSPipeline:
        """backend: "onnxruntime" or "openvino" for .onnx engines; a .plan engine runs on TensorRT.
        int8: the UNet quantized by `unigs-export --int8`, on OpenVINO."""
        from .backends import open_components

        components, manifest = open_components(engine, provider=provider, threads=threads, backend=backend,
                                               int8=int8)
        tok = CLIPTokenizer(manifest.tokenizer_path(), max_length=manifest.model.max_text_length)
        return cls(components, manifest, tok)

    @property
    def provider(self) -> str:
        """Where the UNet runs (e.g. CPUExecutionProvider, TensorRT, OpenVINO CPU)."""
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

    def decode_latent(self, z: np.ndarray, *, tiny: bool = False) -> np.ndarray:
        """scaled latent (1, C, h, w) -> uint8 (H, W, 3); tiny: through the AutoencoderTiny."""
        if tiny:
            x = self.components["tiny_vae_decoder"](latent_sample=np.ascontiguousarray(z, np.float32))
        else:
            x = self.components["vae_decoder"](latent_sample=(z / self.scaling).astype(np.float32))
        return palette.unit_to_colormap(x[0].transpose(1, 2, 0))

    def encode_unit_tiny(self, unit: np.ndarray) -> np.ndarray:
        """(H, W, 3) in [-1, 1] -> scaled latent through the AutoencoderTiny (deterministic)."""
        x = np.ascontiguousarray(unit.transpose(2, 0, 1)[None], dtype=np.float32)
        return self.components["tiny_vae_encoder"](sample=x).copy()

    @property
    def has_tiny_vae(self) -> bool:
        return "tiny_vae_decoder" in self.components and "tiny_vae_encoder" in self.components

    @property
    def has_reranker(self) -> bool:
        return "reranker" in self.components

    def _tiny_vae(self, given: str | None, model_default: str | None, notes: list) -> str:
        """Default: the model's for the task, else the tiny decoder for colormaps where the engine
        has one: the dichotomy decoder only needs colours (demo model: PQ 0.99x the full VAE's;
        docs/design.md). Only the caller's own choice fails on an engine without a tiny VAE; a
        model's default falls back to the VAE and says so."""
        if given is None and model_default is not None:
            if model_default != "off" and not self.has_tiny_vae:
                notes.append(f"this model's default tiny_vae={model_default!r} needs an engine exported with a "
                             "tiny VAE (unigs-export --tiny-vae DIR): decoded with the VAE")
                return "off"
            given = model_default
        if given is None:
            return "colormap" if self.has_tiny_vae else "off"
        if given not in TINY_VAE:
            raise ValueError(f"tiny_vae must be one of {', '.join(TINY_VAE)}, not {given!r}")
        if given != "off" and not self.has_tiny_vae:
            raise ValueError(f"tiny_vae={given!r} needs an engine exported with a tiny VAE "
                             "(unigs-export --tiny-vae DIR); use tiny_vae='off'")
        return given

    def denoise(self, control: np.ndarray, mask: np.ndarray, cond: np.ndarray, uncond: np.ndarray | None,
                task: str, *, steps: int, guidance: float, rng: np.random.Generator, eta: float = 0.0,
                scheduler="ddim", spacing: str | None = None, guidance_interval: tuple[float, float] | None = None,
                progress: bool = False, callback=None) -> tuple[np.ndarray, np.ndarray]:
        """The denoising loop over the joint 8-channel latent `[z_img, z_cmap]`; returns both halves.

        Guidance runs (a batch-2 UNet) only when `uncond` is given, and then only at the timesteps
        inside `guidance_interval` (low, high) where one is given; the other steps run the
        conditional pass alone. `callback(i, n, t, z)`, if given, is called after step i of n (as
        diffusers' `callback_on_step_end`); raising stops the run.
        """
        from tqdm.auto import tqdm

        # a name, or a scheduler already made for this run (its state is reset by set_timesteps)
        sched = make_scheduler(scheduler, self.manifest.scheduler, spacing=spacing) \
            if isinstance(scheduler, str) else scheduler
        timesteps = sched.set_timesteps(steps)
        c = self.latent_channels
        z = rng.standard_normal((1, 2 * c) + control.shape[2:], dtype=np.float32) * sched.init_noise_sigma
        z = z.astype(np.float32, copy=False)
        cfg = uncond is not None
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
            guided = cfg and guided_at(t, guidance_interval)
            rows = slice(None) if guided or not cfg else slice(1, None)  # row 1 is the conditional pass
            sample[:, : 2 * c] = sched.scale_model_input(z, t)
            eps = unet(sample=sample[rows], timestep=np.full(batch, t, np.float32)[rows],
                       **{k: v[rows] for k, v in feed.items()})
            if guided:
                eps = eps[:1] + guidance * (eps[1:] - eps[:1])
            z = sched.step(eps, t, z, eta=eta, generator=rng)
            if callback is not None:
                callback(i, len(timesteps), t, z)
        return z[:, :c], z[:, c:]

    # ------------------------------------------------------------ sizes

    def working_size(self, size: tuple[int, int], resolution) -> tuple[tuple[int, int], str]:
        """The (H, W) a run works at, before padding to the model's multiple, and why.

        resolution: "native" (the side the model was trained at: the longer side is scaled to it),
        "input" (the image's own size) or an int N (the longer side scaled to N pixels).
        """
        h, w = size
        if resolution == "input":
            return (h, w), "input"
        if resolution == "native":
            side = self.manifest.model.resolution
            if side is None:
                return (h, w), "input (the manifest records no training resolution)"
            why = f"native {side} px"
        else:
            try:
                side = int(resolution)
            except (TypeError, ValueError):
                raise ValueError(f"resolution {resolution!r}: give native, input or a side in pixels") from None
            if side < self.multiple:
                raise ValueError(f"resolution {side} is under the model's minimum of {self.multiple} px")
            why = f"{side} px"
        scale = side / max(h, w)
        return self._fit_profile((max(1, round(h * scale)), max(1, round(w * scale))), why)

    def _fit_profile(self, hw: tuple[int, int], why: str) -> tuple[tuple[int, int], str]:
        """On TensorRT, scale a working size into the engines' optimisation profile (aspect kept),
        so a photo of any size runs; --resolution input is left as asked (out of range: the
        session's one-line error names the range)."""
        trt = self.manifest.engines.get("tensorrt", {})
        if self.components["unet"].provider != "TensorRT" or "height" not in trt:
            return hw, why
        m = self.multiple
        (hmin, _, hmax), (wmin, _, wmax) = trt["height"], trt["width"]
        hmax, wmax = hmax // m * m, wmax // m * m  # padding rounds up to the multiple
        h, w = hw
        if h > hmax or w > wmax:
            s = min(hmax / h, wmax / w)
            new = (max(1, math.floor(h * s)), max(1, math.floor(w * s)))
        elif h < hmin or w < wmin:
            s = max(hmin / h, wmin / w)
            new = (math.ceil(h * s), math.ceil(w * s))
        else:
            return hw, why
        if not (hmin <= -(-new[0] // m) * m <= hmax and wmin <= -(-new[1] // m) * m <= wmax):
            raise ValueError(f"a {w}x{h} working size cannot fit the TensorRT engines' profile (width {wmin}-{wmax}, "
                             f"height {hmin}-{hmax} px) at its aspect ratio: rebuild with unigs-export --from-onnx "
                             "DIR --trt --height MIN:OPT:MAX --width MIN:OPT:MAX")
        return new, f"{why}, fitted to the TensorRT profile"

    def _fit(self, rgb: np.ndarray, regions: list[np.ndarray], work: tuple[int, int], *, exact_colours: bool):
        """Resize to the working size and pad to the model's multiple (image: edge, masks: zeros)."""
        if work != rgb.shape[:2]:
            shrink = work[0] < rgb.shape[0]
            interp = cv2.INTER_NEAREST if exact_colours else (cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
            rgb = cv2.resize(rgb, (work[1], work[0]), interpolation=interp)
            regions = [cv2.resize(m.astype(np.uint8), (work[1], work[0]), interpolation=cv2.INTER_NEAREST) > 0
                       for m in regions]
        ph, pw = -work[0] % self.multiple, -work[1] % self.multiple
        rgb = np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="edge")
        regions = [np.pad(m, ((0, ph), (0, pw))) for m in regions]
        return rgb, regions

    @staticmethod
    def _back(x: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
        """An output at the working size -> the input's size."""
        if x.shape[:2] == size:
            return x
        shrink = size[0] < x.shape[0]
        interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        return cv2.resize(x, (size[1], size[0]), interpolation=interp)

    # ------------------------------------------------------------ input checks

    def _prepare(self, image: np.ndarray, what: str = "image") -> tuple[np.ndarray, list[str]]:
        return to_rgb8(image, what)

    def _mask(self, mask: np.ndarray, size: tuple[int, int], what: str = "mask") -> np.ndarray:
        m = np.asarray(mask)
        if m.ndim == 3:
            m = m.any(axis=2)
        if m.shape != size:
            raise ValueError(f"{what} is {m.shape[1]}x{m.shape[0]} but the image is {size[1]}x{size[0]}: "
                             "give a mask of the image's size")
        m = m.astype(bool)
        if not m.any():
            raise ValueError(f"{what} is empty: mark the region with non-zero pixels")
        return m

    def _latent_mask(self, m: np.ndarray) -> np.ndarray:
        f = self.vae_scale_factor
        return m[::f, ::f][None, None].astype(np.float32)  # nearest, as diffusers' interpolate does

    # ------------------------------------------------------------ tasks

    def _run(self, task: str, rgb: np.ndarray, regions: list[np.ndarray], prompt: str, notes: list, *,
             steps: int | None = None, guidance: float | None = None, guidance_interval=None, seed: int = 0,
             eta: float | None = None, scheduler: str | None = None, spacing: str | None = None, resolution="native",
             decode_image: bool | None = None, tiny_vae: str | None = None, threshold: float | None = None,
             stop: str | None = None, negative_prompt: str = "", progress: bool = False, callback=None) -> Result:
        """One task on an image (or colormap) and its regions at the input's size -> the result at that size."""
        spec = tasks.get(task)
        model = self.manifest.task_defaults.get(task, {})  # what was measured best for this model

        def default(name, given, runtime=None):
            """given, else this model's, else the task's, else the runtime's."""
            return given if given is not None else model.get(name, getattr(spec, name, runtime))

        steps, guidance, eta = int(default("steps", steps)), float(default("guidance", guidance)), \
            float(default("eta", eta))
        scheduler, spacing = default("scheduler", scheduler), default("spacing", spacing)
        # the dichotomy decoder's split rule: a model whose colours come out muted is measured best
        # at a lower threshold, so a model may carry its own (task_defaults.json)
        threshold = float(default("threshold", threshold, dichotomy.DEFAULT_THRESHOLD))
        stop = default("stop", stop, dichotomy.DEFAULT_STOP)
        dichotomy.check_split(threshold, stop)
        decode_image = spec.decodes_image if decode_image is None else bool(decode_image)
        # a model may name its own per task: the demo model's tiny VAE saves no time at 128x128
        # and scores segment lower than its VAE does (docs/demo-model.md)
        tiny_vae = self._tiny_vae(tiny_vae, model.get("tiny_vae"), notes)
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        if not math.isfinite(guidance) or guidance < 1:
            raise ValueError(f"guidance must be a finite number >= 1 (1 = off), got {guidance}")
        guidance_interval = check_interval(default("guidance_interval", guidance_interval))
        if not math.isfinite(eta) or eta < 0:
            raise ValueError(f"eta must be a finite number >= 0, got {eta}")
        if eta and scheduler != "ddim":
            raise ValueError(f"eta applies to the ddim scheduler only, not {scheduler}")
        sched = make_scheduler(scheduler, self.manifest.scheduler, spacing=spacing)  # bad names fail before any work
        size = rgb.shape[:2]
        work, why = self.working_size(size, resolution)
        if work != size:
            notes.append(f"ran at {work[1]}x{work[0]} ({why}); outputs mapped back to {size[1]}x{size[0]}")
        rgb_w, regions_w = self._fit(rgb, regions, work, exact_colours=spec.control == "colormap")
        if rgb_w.shape[:2] != work:
            what = "colormap" if spec.control == "colormap" else "image"
            notes.append(f"{what}: {work[1]}x{work[0]} padded to {rgb_w.shape[1]}x{rgb_w.shape[0]} (a multiple of "
                         f"{self.multiple}); outputs are cropped back")
        # guidance changes the result only when the prompt differs from the unconditional one: the
        # negative prompt's embedding where one is given (what to steer away from), else the empty prompt's
        negative_prompt = negative_prompt or ""
        cfg = guidance != 1.0 and prompt != negative_prompt
        if negative_prompt and guidance == 1.0:
            notes.append("negative_prompt has no effect at guidance 1 (classifier-free guidance off): raise guidance")
        guided_steps = sum(guided_at(t, guidance_interval) for t in sched.set_timesteps(steps)) if cfg else 0
        if cfg and not guided_steps:
            notes.append(f"guidance_interval {list(guidance_interval)} holds none of this run's timesteps: "
                         "guidance is off; widen the interval")
            cfg = False
        latent_hw = (rgb_w.shape[0] // self.vae_scale_factor, rgb_w.shape[1] // self.vae_scale_factor)
        memory.check(self.manifest, latent_hw, batch=2 if cfg else 1, work=work)

        unit = palette.colormap_to_unit(rgb_w)
        region = np.logical_or.reduce(regions_w) if regions_w else None
        control_unit, mask = tasks.model_inputs(task, unit, region, unit)
        rng = np.random.default_rng(seed)
        timings = {}
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cond = self.encode_text([prompt])
            uncond = (self.encode_text([negative_prompt]) if negative_prompt else self._empty_text()) if cfg else None
        notes += [str(w.message) for w in caught]
        timings["text_encoder_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        control = self.encode_unit_tiny(control_unit) if tiny_vae == "all" else self.encode_unit(control_unit, rng)
        timings["vae_encoder_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        z_img, z_cmap = self.denoise(control, self._latent_mask(mask), cond, uncond, task, steps=steps,
                                     guidance=guidance, rng=rng, eta=eta, scheduler=sched,
                                     guidance_interval=guidance_interval,
                                     progress=progress, callback=callback)
        timings["denoise_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        colormap = self.decode_latent(z_cmap, tiny=tiny_vae != "off")[: work[0], : work[1]]
        image = self.decode_latent(z_img, tiny=tiny_vae == "all")[: work[0], : work[1]] if decode_image else None
        timings["vae_decoder_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        labels = dichotomy.decode_colormap(colormap, keep_background=spec.keep_background,
                                           min_area=dichotomy.min_area_for(*work), threshold=threshold, stop=stop)
        timings["dichotomy_s"] = time.perf_counter() - t0
        timings["total_s"] = sum(timings.values())
        settings = {"task": task, "prompt": prompt, "steps": steps, "guidance": guidance, "seed": seed, "eta": eta,
                    "scheduler": scheduler, "spacing": sched.config["timestep_spacing"],
                    "resolution": str(resolution), "working_size": [int(work[1]), int(work[0])],
                    "guidance_applied": cfg, "unet_batch": 2 if cfg else 1,
                    "guidance_interval": None if guidance_interval is None else list(guidance_interval),
                    "guided_steps": guided_steps,
                    "decoded": ["colormap"] + (["image"] if decode_image else []), "tiny_vae": tiny_vae,
                    "threshold": threshold, "stop": stop, "negative_prompt": negative_prompt}
        return Result(task, None if image is None else self._back(image, size, nearest=False),
                      self._back(colormap, size, nearest=True), self._back(labels, size, nearest=True),
                      timings=timings, notes=notes, settings=settings, latents=np.concatenate([z_img, z_cmap], axis=1))

    def inpaint(self, image, regions: list[tuple[np.ndarray, str]], *, locate: str | None = None,
                keep_unmasked: bool | None = None, candidates: int | None = None, rerank: bool | None = None,
                **kw) -> Result:
        """Multi-class, multi-region inpainting: every region is a coarse mask with its own text.

        One pass, as the model was trained: the union of the regions is inpainted with the texts
        joined. locate says where each region's entity is read from: "colormap" (the paper's
        reading: the jointly generated colormap's entities, each given to the region it overlaps
        most; labels are entities) or "refer" (the refer task on the generated image, with the
        region and its text, so the mask follows what the image shows; label i is region i's
        entity; one more refer pass a region). None: the model's default, else "colormap".
        keep_unmasked: the returned image takes the input's pixels outside the regions (the model
        redraws the whole image through its VAE; diffusers' apply_overlay), with a hard seam at
        the regions' edge; entities are located before it, in the model's own image. None: the
        model's default (where the image is decoded), else False.
        candidates: draw this many (seeds seed, seed + 1, ...) and return the one whose generated
        entities agree most with the others' (the largest mean mask IoU, region by region: a
        minimum-Bayes-risk choice, so the answer is a typical drawing, not an unlucky one; its
        settings' seed reproduces it with candidates=1). Costs one inpaint a candidate. None: the
        model's default, else 1.
        rerank: choose among the candidates by the engine's reranker instead (rerank.py: how well each
        region's entity matches its text), agreement breaking near-ties. None: the model's default,
        else False.
        """
        if not regions:
            raise ValueError("inpaint needs at least one region (a mask and its text)")
        model = self.manifest.task_defaults.get("inpaint", {})
        decoded = kw.get("decode_image") is None or bool(kw["decode_image"])  # inpaint decodes its image by default
        if keep_unmasked is None:  # a model's default, where it can apply
            keep_unmasked = bool(model.get("keep_unmasked", False)) and decoded
        if keep_unmasked and not decoded:
            raise ValueError("keep_unmasked pastes the input into the generated image: leave decode_image on, "
                             "or drop keep_unmasked")
        locate = locate or model.get("locate", "colormap")
        if locate not in LOCATE:
            raise ValueError(f"locate must be one of {', '.join(LOCATE)}, got {locate!r}")
        if locate == "refer" and not decoded:
            raise ValueError("locate='refer' reads the entities from the generated image: leave decode_image on, "
                             "or use locate='colormap'")
        if candidates is None:
            candidates = model.get("candidates", 1)
        if isinstance(candidates, bool) or not isinstance(candidates, int | np.integer) or candidates < 1:
            raise ValueError(f"candidates must be a whole number >= 1, got {candidates!r}")
        if rerank is None:  # a model's default, where it can apply
            rerank = bool(model.get("rerank", False)) and self.has_reranker and decoded
        if rerank and not self.has_reranker:
            raise MissingComponent("rerank", "needs an engine exported with a reranker (a model folder's reranker/, "
                                             "python -m unigs_deploy.training.reranker)")
        if rerank and not decoded:
            raise ValueError("rerank reads each drawn entity from the generated image: leave decode_image on, "
                             "or use rerank=False")
        rgb, notes = self._prepare(image)
        masks = [self._mask(m, rgb.shape[:2], f"mask {i + 1}") for i, (m, _) in enumerate(regions)]
        texts = [p for _, p in regions]
        seed = kw.pop("seed", 0)
        if candidates == 1:
            res = self._inpaint(rgb, notes, masks, texts, locate, keep_unmasked, seed=seed, **kw)
            res.settings["candidates"], res.settings["rerank"] = 1, False
            return res
        from tqdm.auto import tqdm

        callback, runs = kw.pop("callback", None), []
        for k in tqdm(range(candidates), desc="inpaint: candidates", unit="candidate", disable=not kw.get("progress"),
                      leave=False):
            # one count over every candidate's steps, so a progress bar (or the C API's callback) runs once to the end
            step = None if callback is None else \
                lambda i, n, t, z, k=k: callback(k * n + i, candidates * n, t, z)
            runs.append(self._inpaint(rgb, list(notes), masks, texts, locate, keep_unmasked, seed=seed + k,
                                      callback=step, **kw))
        entities = [_entities_by_region(r, masks) for r in runs]
        agreement = [float(np.mean([np.mean([metrics.mask_iou(x, y) for x, y in zip(a, b, strict=True)])
                                    for b in entities if b is not a])) for a in entities]
        choice = np.asarray(agreement)
        scores = self._rerank(runs, entities, masks, texts) if rerank else None
        if scores is not None:
            # a candidate missing a region's entity loses to any that drew them all; agreement orders the rest
            choice = choice * rerank_mod.AGREEMENT_WEIGHT + np.where(np.isfinite(scores), scores, -1e9)
        res = runs[int(np.argmax(choice))]
        if rerank and scores is None:
            res.notes.append("inpaint: the reranker knows none of the texts' words; the candidate most agreed on "
                             "was chosen")
        res.timings["total_s"] = sum(r.timings["total_s"] for r in runs)
        res.settings["candidates"] = candidates
        res.settings["agreement"] = [round(a, 4) for a in agreement]
        res.settings["rerank"] = scores is not None
        if scores is not None:
            res.settings["rerank_scores"] = [round(float(v), 4) if np.isfinite(v) else None for v in scores]
        return res

    def _rerank(self, runs: list[Result], entities: list[list[np.ndarray]], masks: list[np.ndarray],
                texts: list[str]) -> np.ndarray | None:
        """Each candidate's summed log-probability of its regions' texts under the reranker (a region
        whose entity is missing scores -inf); None where no text has a word the reranker knows."""
        info = self.manifest.components["reranker"]
        groups, size = info["groups"], int(info["crop"])
        known = [i for i, t in enumerate(texts) if rerank_mod.text_words(groups, t)]
        if not known:
            return None
        crops, where = [], []
        for k, (r, ents) in enumerate(zip(runs, entities, strict=True)):
            for i in known:
                if ents[i].any():
                    crops.append(rerank_mod.crop(r.image, ents[i], masks[i], size))
                    where.append((k, i))
        scores = np.zeros(len(runs))
        drawn = np.zeros((len(runs), len(texts)), bool)
        if crops:
            logits = self.components["reranker"](crop=np.stack(crops).astype(np.float32))
            for (k, i), row in zip(where, logits, strict=True):
                scores[k] += rerank_mod.score(row, groups, texts[i])
                drawn[k, i] = True
        scores[~drawn[:, known].all(axis=1)] = -np.inf
        return scores

    def _inpaint(self, rgb: np.ndarray, notes: list, masks: list[np.ndarray], texts: list[str], locate: str,
                 keep_unmasked: bool, **kw) -> Result:
        """One drawing of inpaint's prepared inputs, its entities located."""
        res = self._run("inpaint", rgb, masks, ", ".join(p for p in texts if p), notes, **_loop_kw(kw))
        region_of = _region_of(res.labels, masks)
        res.labels = np.where(region_of[res.labels] > 0, res.labels, 0).astype(np.int32)
        if locate == "refer":
            t0 = time.perf_counter()
            res.labels = self._refer_back(res, masks, texts, region_of, kw.get("seed", 0))
            res.timings["locate_s"] = time.perf_counter() - t0
            res.timings["total_s"] += res.timings["locate_s"]
        else:
            for i in sorted(set(range(1, len(masks) + 1)) - set(region_of.tolist())):
                res.notes.append(f"inpaint: the generated colormap holds no entity in region {i}; its mask is "
                                 "empty (locate='refer' reads the entity from the generated image instead)")
        res.mask = res.labels > 0
        if keep_unmasked:
            res.image = np.where(np.logical_or.reduce(masks)[..., None], res.image, rgb)
        res.settings["regions"] = texts
        res.settings["locate"] = locate
        res.settings["keep_unmasked"] = bool(keep_unmasked)
        return res

    def _refer_back(self, res: Result, masks: list[np.ndarray], texts: list[str], region_of: np.ndarray,
                    seed: int) -> np.ndarray:
        """Label i = region i's entity, found by refer in the generated image (earlier regions win
        overlaps); a region without text keeps the colormap's entities."""
        labels = np.zeros(res.labels.shape, np.int32)
        for i, (region, text) in enumerate(zip(masks, texts, strict=True), 1):
            if text.strip():
                found = self.refer(res.image, region, text, seed=seed)
                if not found.mask.any():
                    res.notes.append(f"inpaint: refer found no entity in region {i}; its mask is empty")
                entity = found.mask
            else:
                entity = region_of[res.labels] == i
            labels[entity & (labels == 0)] = i
        return labels

    def synthesize(self, colormap, prompt: str = "", **kw) -> Result:
        """An image whose entities follow the colormap (location-aware palette colours)."""
        rgb, notes = self._prepare(colormap, "colormap")
        return self._run("synthesize", rgb, [], prompt, notes, **_loop_kw(kw))

    def refer(self, image, mask, prompt: str, **kw) -> Result:
        """Image + coarse region + text -> the mask of the referred entity."""
        if not prompt.strip():
            raise ValueError("refer needs a prompt that names the entity to find")
        rgb, notes = self._prepare(image)
        region = self._mask(mask, rgb.shape[:2])
        res = self._run("refer", rgb, [region], prompt, notes, **_loop_kw(kw))
        res.mask = dominant_in(res.labels, region)
        if not res.mask.any():
            res.notes.append("refer: no entity was generated inside the region; the mask is empty")
        return res

    def segment(self, image, prompt: str = "", **kw) -> Result:
        """Every entity of the image; background clusters are entities too (as in the paper)."""
        rgb, notes = self._prepare(image)
        return self._run("segment", rgb, [], prompt, notes, **_loop_kw(kw))


def _region_of(labels: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """Entity label -> the 1-based region it overlaps most (0: none)."""
    region_of = np.zeros(labels.max() + 1, np.int32)
    for k in range(1, labels.max() + 1):
        overlap = [np.count_nonzero((labels == k) & m) for m in masks]
        region_of[k] = 1 + int(np.argmax(overlap)) if max(overlap) > 0 else 0
    return region_of


def check_interval(interval) -> tuple[float, float] | None:
    """A guidance interval as (low, high) timesteps, or None (every step)."""
    if interval is None:
        return None
    try:
        if isinstance(interval, str):
            raise TypeError
        low, high = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"guidance_interval must be two timesteps LOW, HIGH (e.g. 600, 1000: guidance on the "
                         f"noisiest steps only), got {interval!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or not 0 <= low <= high:
        raise ValueError(f"guidance_interval {interval!r}: give timesteps 0 <= LOW <= HIGH (e.g. 600, 1000)")
    return low, high


def guided_at(t, interval: tuple[float, float] | None) -> bool:
    """Guidance in a limited interval (Kynkaanniemi et al. 2024): the timesteps that carry the caption's
    steering; outside them the conditional pass alone, at half the UNet's batch."""
    return interval is None or interval[0] <= float(t) <= interval[1]


def _entities_by_region(res: Result, masks: list[np.ndarray]) -> list[np.ndarray]:
    """Each region's generated entity in an inpaint result: label i where located by refer, else the
    colormap's entities that overlap region i most. Candidates agree region by region, so two
    drawings that swap their regions' entities do not count as alike."""
    if res.settings.get("locate") == "refer":
        return [res.labels == i for i in range(1, len(masks) + 1)]
    region_of = _region_of(res.labels, masks)
    return [region_of[res.labels] == i for i in range(1, len(masks) + 1)]


def _loop_kw(kw: dict) -> dict:
    """steps, guidance, eta, scheduler and spacing default to the task's (tasks.py) when left out or None."""
    unknown = set(kw) - set(_LOOP_ARGS)
    if unknown:
        raise TypeError(f"unexpected arguments: {', '.join(sorted(unknown))}")
    return kw
