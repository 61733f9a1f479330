"""Schedulers in numpy: the same timesteps and samples as diffusers' `DDIMScheduler`,
`EulerDiscreteScheduler` and `DPMSolverMultistepScheduler` (DPM-Solver++ 2M) on the same config.

Configured from a diffusers `scheduler_config.json` dict (the manifest carries one). The model
is separate: the loop calls `scale_model_input()` on the UNet's input and `step()` on its
output, nothing else. `make_scheduler(name, config, spacing=...)` picks one by name, as
diffusers' `from_config` does: keys another scheduler does not use are ignored.
"""

from __future__ import annotations

import math

import numpy as np

_COMMON = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "steps_offset": 0,
    "rescale_betas_zero_snr": False,
}
# keys of diffusers' configs that change nothing here (or are checked below)
_IGNORED = {"_class_name", "_diffusers_version", "skip_prk_steps", "dynamic_thresholding_ratio", "sample_max_value",
            "timestep_type", "trained_betas", "thresholding", "variance_type",
            "clip_sample_range", "interpolation_type", "use_karras_sigmas", "use_exponential_sigmas",
            "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas", "flow_shift", "final_sigmas_type",
            "lambda_min_clipped", "euler_at_final", "algorithm_type", "solver_type", "lower_order_final",
            "solver_order", "use_dynamic_shifting", "time_shift_type", "set_alpha_to_one", "clip_sample"}
SPACINGS = ("leading", "trailing", "linspace")


def _linspace32(start: float, end: float, n: int) -> np.ndarray:
    """float32 linspace rounded the way torch.linspace rounds (diffusers builds betas with it)."""
    start32, end32 = np.float32(start), np.float32(end)
    step = (end32 - start32) / np.float32(n - 1)
    i = np.arange(n, dtype=np.float32)
    half = n // 2
    return np.where(np.arange(n) < half, start32 + step * i, end32 - step * (np.float32(n - 1) - i)).astype(np.float32)


def _cumprod(x: np.ndarray) -> np.ndarray:
    """float32 cumulative product accumulated in float64, as torch.cumprod does on the CPU."""
    return np.cumprod(x.astype(np.float64)).astype(np.float32)


def _rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Betas whose sqrt(alphas_cumprod) is shifted and scaled to end at 0 and start where it did
    (Lin et al. 2024, Algorithm 1): x_T is pure noise in training too."""
    root = np.sqrt(_cumprod(1.0 - betas.astype(np.float32)))
    first, last = root[0], root[-1]
    root = (root - last) * (first / (first - last))
    bar = root**2
    return (1.0 - np.concatenate([bar[:1], bar[1:] / bar[:-1]])).astype(np.float32)


class _Scheduler:
    """Betas, alphas and config handling shared by every scheduler."""

    name = ""
    fields: dict = {}
    init_noise_sigma = 1.0
    sigma_based = False  # works in sigma = sqrt((1 - alpha_bar) / alpha_bar), infinite at zero terminal SNR

    def __init__(self, **config):
        fields = {**_COMMON, **self.fields}
        unknown = set(config) - set(fields) - _IGNORED
        if unknown:
            raise ValueError(f"unknown {self.name.upper()} scheduler settings: {', '.join(sorted(unknown))}")
        if config.get("thresholding"):
            raise ValueError("thresholding is not supported by the runtime schedulers")
        self._check_unsupported(config)
        self.config = {**fields, **{k: v for k, v in config.items() if k in fields}}
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
        if c["timestep_spacing"] not in SPACINGS:
            raise ValueError(f"timestep_spacing {c['timestep_spacing']!r} is not supported ({', '.join(SPACINGS)})")
        if c["rescale_betas_zero_snr"]:
            if c["prediction_type"] == "epsilon":
                raise ValueError("rescale_betas_zero_snr needs prediction_type sample or v_prediction: at t = T the "
                                 "sample is noise alone, and a noise prediction cannot give x0 there")
            betas = _rescale_zero_terminal_snr(betas)
        self.betas = betas.astype(np.float32)
        self.alphas_cumprod = _cumprod(1.0 - self.betas)
        if c["rescale_betas_zero_snr"] and self.sigma_based:
            self.alphas_cumprod[-1] = 2.0**-24  # as diffusers: a finite sigma at t = T
        self.num_inference_steps: int | None = None
        self.timesteps = np.arange(n)[::-1].copy()

    @classmethod
    def from_config(cls, config: dict, **overrides):
        """Like diffusers' `from_config`: keys this scheduler does not use are dropped."""
        keep = set(_COMMON) | set(cls.fields) | {"trained_betas", "thresholding"}
        return cls(**{k: v for k, v in {**config, **overrides}.items() if k in keep})

    def _check_unsupported(self, config: dict) -> None:
        pass

    def _check_steps(self, num_inference_steps: int) -> None:
        n = self.config["num_train_timesteps"]
        if not 1 <= num_inference_steps <= n:
            raise ValueError(f"steps must be between 1 and {n}, got {num_inference_steps}")
        self.num_inference_steps = num_inference_steps

    def scale_model_input(self, sample: np.ndarray, timestep) -> np.ndarray:
        return sample


class DDIMScheduler(_Scheduler):
    name = "ddim"
    fields = {"clip_sample": True, "clip_sample_range": 1.0, "set_alpha_to_one": True, "timestep_spacing": "leading"}

    def __init__(self, **config):
        super().__init__(**config)
        c = self.config
        self.final_alpha_cumprod = np.float32(1.0) if c["set_alpha_to_one"] else self.alphas_cumprod[0]

    def set_timesteps(self, num_inference_steps: int) -> np.ndarray:
        self._check_steps(num_inference_steps)
        c = self.config
        n = c["num_train_timesteps"]
        spacing = c["timestep_spacing"]
        if spacing == "linspace":
            ts = np.linspace(0, n - 1, num_inference_steps).round()[::-1].copy().astype(np.int64)
        elif spacing == "leading":
            ratio = n // num_inference_steps
            ts = (np.arange(0, num_inference_steps) * ratio).round()[::-1].copy().astype(np.int64) + c["steps_offset"]
        else:  # trailing
            ratio = n / num_inference_steps
            ts = np.round(np.arange(n, 0, -ratio)).astype(np.int64) - 1
        if ts.max() >= n:  # diffusers indexes past its table here; say what to do instead
            raise ValueError(f"{num_inference_steps} steps with {spacing} spacing and steps_offset "
                             f"{c['steps_offset']} reach timestep {ts.max()}, past the model's {n}: use fewer steps "
                             "or trailing spacing")
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


def _sigmas(alphas_cumprod: np.ndarray) -> np.ndarray:
    """The noise levels of the variance-exploding view (x = x0 + sigma * eps), as diffusers computes them."""
    return (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).astype(np.float32)


class EulerDiscreteScheduler(_Scheduler):
    """Euler (Karras et al. 2022, Algorithm 2 without churn) in diffusers' discrete-sigma form."""

    name = "euler"
    sigma_based = True
    fields = {"interpolation_type": "linear", "final_sigmas_type": "zero", "timestep_spacing": "linspace"}

    def _check_unsupported(self, config: dict) -> None:
        bad = [k for k in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas") if config.get(k)]
        if config.get("interpolation_type", "linear") != "linear" or config.get("timestep_type", "discrete") != \
                "discrete" or bad:
            raise ValueError("the runtime Euler scheduler supports linear sigma interpolation of discrete timesteps "
                             "only")

    def set_timesteps(self, num_inference_steps: int) -> np.ndarray:
        self._check_steps(num_inference_steps)
        c = self.config
        n, steps = c["num_train_timesteps"], num_inference_steps
        if c["timestep_spacing"] == "linspace":
            ts = np.linspace(0, n - 1, steps, dtype=np.float32)[::-1].copy()
        elif c["timestep_spacing"] == "leading":
            ts = (np.arange(0, steps) * (n // steps)).round()[::-1].copy().astype(np.float32) + c["steps_offset"]
        else:
            ts = np.arange(n, 0, -n / steps).round().astype(np.float32) - 1
        sigmas = np.interp(ts, np.arange(n), _sigmas(self.alphas_cumprod))
        last = 0.0 if c["final_sigmas_type"] == "zero" else float(_sigmas(self.alphas_cumprod)[0])
        self.sigmas = np.concatenate([sigmas, [last]]).astype(np.float32)
        self.timesteps = ts.astype(np.float32)
        self._index = 0
        max_sigma = float(self.sigmas.max())
        self.init_noise_sigma = max_sigma if c["timestep_spacing"] in ("linspace", "trailing") \
            else (max_sigma**2 + 1) ** 0.5
        return self.timesteps

    def _sigma_at(self, timestep) -> tuple[float, int]:
        i = np.flatnonzero(self.timesteps == np.float32(timestep))
        if not len(i):
            raise ValueError(f"timestep {timestep} is not one of this schedule's")
        return float(self.sigmas[i[0]]), int(i[0])

    def scale_model_input(self, sample: np.ndarray, timestep) -> np.ndarray:
        sigma, _ = self._sigma_at(timestep)
        return (sample / np.float32((sigma**2 + 1) ** 0.5)).astype(np.float32, copy=False)

    def step(self, model_output: np.ndarray, timestep, sample: np.ndarray, **_) -> np.ndarray:
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps() before step()")
        sigma, i = self._sigma_at(timestep)
        p = self.config["prediction_type"]
        if p == "sample":
            x0 = model_output
        elif p == "epsilon":
            x0 = sample - sigma * model_output
        else:
            x0 = model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
        s32 = np.float32(sigma)  # float32 arithmetic, as diffusers': sigma reaches 4096 at zero terminal SNR
        prev = sample + (sample - x0) / s32 * (self.sigmas[i + 1] - s32)
        return prev.astype(np.float32, copy=False)


class DPMSolverMultistepScheduler(_Scheduler):
    """DPM-Solver++ (Lu et al. 2022), multistep, order 2 ("2M"); first order on the first step and,
    as diffusers does, on the last (and second-order on the one before it below 15 steps)."""

    name = "dpm++2m"
    sigma_based = True
    fields = {"solver_order": 2, "algorithm_type": "dpmsolver++", "solver_type": "midpoint",
              "lower_order_final": True, "euler_at_final": False, "final_sigmas_type": "zero",
              "lambda_min_clipped": -float("inf"), "timestep_spacing": "linspace"}

    def _check_unsupported(self, config: dict) -> None:
        if config.get("algorithm_type", "dpmsolver++") != "dpmsolver++" or config.get("solver_order", 2) not in (1, 2):
            raise ValueError("the runtime DPM-Solver supports algorithm_type dpmsolver++ with solver_order 1 or 2")
        bad = [k for k in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas",
                           "use_flow_sigmas", "variance_type") if config.get(k)]
        if bad or config.get("lambda_min_clipped", -float("inf")) != -float("inf"):
            raise ValueError(f"the runtime DPM-Solver does not support {', '.join(bad) or 'lambda_min_clipped'}")

    def set_timesteps(self, num_inference_steps: int) -> np.ndarray:
        self._check_steps(num_inference_steps)
        c = self.config
        n, steps = c["num_train_timesteps"], num_inference_steps
        last = n  # lambda_min_clipped = -inf clips nothing
        if c["timestep_spacing"] == "linspace":
            ts = np.linspace(0, last - 1, steps + 1).round()[::-1][:-1].copy().astype(np.int64)
        elif c["timestep_spacing"] == "leading":
            ratio = last // (steps + 1)
            ts = (np.arange(0, steps + 1) * ratio).round()[::-1][:-1].copy().astype(np.int64) + c["steps_offset"]
        else:
            ts = np.arange(last, 0, -n / steps).round().copy().astype(np.int64) - 1
        sigmas = np.interp(ts, np.arange(n), _sigmas(self.alphas_cumprod))
        final = 0.0 if c["final_sigmas_type"] == "zero" else float(_sigmas(self.alphas_cumprod)[0])
        self.sigmas = np.concatenate([sigmas, [final]]).astype(np.float32)
        self.timesteps = ts
        self.num_inference_steps = len(ts)
        self._index = 0
        self._x0: list[np.ndarray] = []
        return ts

    @staticmethod
    def _alpha_sigma_lambda(sigma: float) -> tuple[float, float, float]:
        alpha = 1.0 / (sigma**2 + 1) ** 0.5
        s = sigma * alpha
        lam = math.log(alpha) - math.log(s) if s > 0 else math.inf
        return alpha, s, lam

    def step(self, model_output: np.ndarray, timestep, sample: np.ndarray, **_) -> np.ndarray:
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps() before step()")
        c, i = self.config, self._index
        steps = len(self.timesteps)
        if i >= steps or int(self.timesteps[i]) != int(timestep):
            raise ValueError(f"timestep {timestep} is not step {i} of this schedule: call step() once per timestep, "
                             "in order")
        alpha_s, sigma_s, lam_s = self._alpha_sigma_lambda(float(self.sigmas[i]))
        alpha_t, sigma_t, lam_t = self._alpha_sigma_lambda(float(self.sigmas[i + 1]))
        p = c["prediction_type"]
        if p == "epsilon":
            x0 = (sample - sigma_s * model_output) / alpha_s
        elif p == "sample":
            x0 = model_output
        else:
            x0 = alpha_s * sample - sigma_s * model_output
        self._x0 = (self._x0 + [x0])[-2:]
        final = i == steps - 1 and (c["euler_at_final"] or (c["lower_order_final"] and steps < 15)
                                    or c["final_sigmas_type"] == "zero")
        h = lam_t - lam_s
        decay = math.exp(-h)  # 0 at the final sigma 0: the result is x0
        if c["solver_order"] == 1 or len(self._x0) < 2 or final:
            prev = (sigma_t / sigma_s) * sample - alpha_t * (decay - 1.0) * x0
        else:
            _, _, lam_s1 = self._alpha_sigma_lambda(float(self.sigmas[i - 1]))
            m0, m1 = self._x0[-1], self._x0[-2]
            d1 = (m0 - m1) / ((lam_s - lam_s1) / h)
            prev = (sigma_t / sigma_s) * sample - alpha_t * (decay - 1.0) * m0
            if c["solver_type"] == "midpoint":
                prev = prev - 0.5 * alpha_t * (decay - 1.0) * d1
            else:
                prev = prev + alpha_t * ((decay - 1.0) / h + 1.0) * d1
        self._index += 1
        return np.asarray(prev, np.float32)


SCHEDULERS = {cls.name: cls for cls in (DDIMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler)}


def make_scheduler(name: str, config: dict, *, spacing: str | None = None) -> _Scheduler:
    """A scheduler by name ("ddim", "euler", "dpm++2m") on a model's scheduler config (the
    manifest's); `spacing` overrides its timestep_spacing."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}: choose one of {', '.join(SCHEDULERS)}")
    if spacing is not None and spacing not in SPACINGS:
        raise ValueError(f"unknown timestep spacing {spacing!r}: choose one of {', '.join(SPACINGS)}")
    return SCHEDULERS[name].from_config(config, **({"timestep_spacing": spacing} if spacing else {}))
