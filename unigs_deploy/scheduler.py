"""DDIM in numpy: the same timesteps and samples as diffusers' `DDIMScheduler`.

Configured from a diffusers `scheduler_config.json` dict (the manifest carries one). The model
is separate: `step()` takes its output and returns the previous sample, nothing else.
"""

from __future__ import annotations

import math

import numpy as np

_FIELDS = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}


def _linspace32(start: float, end: float, n: int) -> np.ndarray:
    """float32 linspace rounded the way torch.linspace rounds (diffusers builds betas with it)."""
    start32, end32 = np.float32(start), np.float32(end)
    step = (end32 - start32) / np.float32(n - 1)
    i = np.arange(n, dtype=np.float32)
    half = n // 2
    return np.where(np.arange(n) < half, start32 + step * i, end32 - step * (np.float32(n - 1) - i)).astype(np.float32)


class DDIMScheduler:
    init_noise_sigma = 1.0

    def __init__(self, **config):
        ignored = {"_class_name", "_diffusers_version", "skip_prk_steps", "dynamic_thresholding_ratio",
                   "sample_max_value", "timestep_type", "trained_betas", "thresholding", "rescale_betas_zero_snr"}
        unknown = set(config) - set(_FIELDS) - ignored
        if unknown:
            raise ValueError(f"unknown DDIM scheduler settings: {', '.join(sorted(unknown))}")
        if config.get("thresholding") or config.get("rescale_betas_zero_snr"):
            raise ValueError("thresholding and rescale_betas_zero_snr are not supported by the runtime DDIM")
        self.config = {**_FIELDS, **{k: v for k, v in config.items() if k in _FIELDS}}
        c = self.config
        n = c["num_train_timesteps"]
        if config.get("trained_betas") is not None:
            betas = np.asarray(config["trained_betas"], np.float32)
        elif c["beta_schedule"] == "linear":
            betas = _linspace32(c["beta_start"], c["beta_end"], n)
        elif c["beta_schedule"] == "scaled_linear":
            betas = _linspace32(c["beta_start"] ** 0.5, c["beta_end"] ** 0.5, n) ** 2
        elif c["beta_schedule"] == "squaredcos_cap_v2":
            def alpha_bar(t):
                return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

            betas = np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)], np.float32)
        else:
            raise ValueError(f"beta_schedule {c['beta_schedule']!r} is not supported "
                             "(linear, scaled_linear, squaredcos_cap_v2)")
        if c["prediction_type"] not in ("epsilon", "sample", "v_prediction"):
            raise ValueError(f"prediction_type {c['prediction_type']!r} is not supported")
        self.betas = betas.astype(np.float32)
        self.alphas_cumprod = np.cumprod(1.0 - self.betas, dtype=np.float32)
        self.final_alpha_cumprod = np.float32(1.0) if c["set_alpha_to_one"] else self.alphas_cumprod[0]
        self.num_inference_steps: int | None = None
        self.timesteps = np.arange(n)[::-1].copy()

    def set_timesteps(self, num_inference_steps: int) -> np.ndarray:
        c = self.config
        n = c["num_train_timesteps"]
        if not 1 <= num_inference_steps <= n:
            raise ValueError(f"steps must be between 1 and {n}, got {num_inference_steps}")
        self.num_inference_steps = num_inference_steps
        spacing = c["timestep_spacing"]
        if spacing == "linspace":
            ts = np.linspace(0, n - 1, num_inference_steps).round()[::-1].copy().astype(np.int64)
        elif spacing == "leading":
            ratio = n // num_inference_steps
            ts = (np.arange(0, num_inference_steps) * ratio).round()[::-1].copy().astype(np.int64) + c["steps_offset"]
        elif spacing == "trailing":
            ratio = n / num_inference_steps
            ts = np.round(np.arange(n, 0, -ratio)).astype(np.int64) - 1
        else:
            raise ValueError(f"timestep_spacing {spacing!r} is not supported (linspace, leading, trailing)")
        self.timesteps = ts
        return ts

    def step(self, model_output: np.ndarray, timestep: int, sample: np.ndarray, *, eta: float = 0.0,
             generator: np.random.Generator | None = None, variance_noise: np.ndarray | None = None) -> np.ndarray:
        """x_t -> x_{t-1}. With eta > 0 the noise comes from `variance_noise` or `generator`."""
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps() before step()")
        c = self.config
        prev_t = timestep - c["num_train_timesteps"] // self.num_inference_steps
        a_t = self.alphas_cumprod[timestep]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        b_t = 1 - a_t
        if c["prediction_type"] == "epsilon":
            x0 = (sample - b_t ** 0.5 * model_output) / a_t ** 0.5
            eps = model_output
        elif c["prediction_type"] == "sample":
            x0 = model_output
            eps = (sample - a_t ** 0.5 * x0) / b_t ** 0.5
        else:
            x0 = a_t ** 0.5 * sample - b_t ** 0.5 * model_output
            eps = a_t ** 0.5 * model_output + b_t ** 0.5 * sample
        if c["clip_sample"]:
            r = c["clip_sample_range"]
            x0 = np.clip(x0, -r, r)
        variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
        std = eta * variance ** 0.5
        prev = a_prev ** 0.5 * x0 + (1 - a_prev - std ** 2) ** 0.5 * eps
        if eta > 0:
            if variance_noise is None:
                if generator is None:
                    raise ValueError("eta > 0 needs a generator or variance_noise")
                variance_noise = generator.standard_normal(model_output.shape, dtype=np.float32)
            prev = prev + std * variance_noise
        return prev.astype(np.float32, copy=False)
