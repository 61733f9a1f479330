import numpy as np
import pytest

from unigs_deploy.scheduler import DDIMScheduler

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

SD15 = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "prediction_type": "epsilon",
        "timestep_spacing": "leading"}
CONFIGS = {
    "sd15": SD15,
    "trailing-v": {**SD15, "timestep_spacing": "trailing", "prediction_type": "v_prediction"},
    "linspace-linear-clip": {"beta_schedule": "linear", "timestep_spacing": "linspace", "clip_sample": True},
    "cosine-sample": {"beta_schedule": "squaredcos_cap_v2", "prediction_type": "sample", "set_alpha_to_one": True},
}


@pytest.mark.parametrize("eta", [0.0, 0.7])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_same_timesteps_and_samples_as_diffusers_over_50_steps(name, eta):
    ours = DDIMScheduler(**CONFIGS[name])
    ref = diffusers.DDIMScheduler(**CONFIGS[name])
    ours.set_timesteps(50)
    ref.set_timesteps(50)
    assert (ours.timesteps == ref.timesteps.numpy()).all()
    rng = np.random.default_rng(0)
    x0 = np.clip(rng.standard_normal((2, 8, 8, 8), dtype=np.float32), -1, 1)  # the "clean" sample
    x = rng.standard_normal(x0.shape, dtype=np.float32)
    xr = torch.from_numpy(x.copy())

    def model(sample, t):
        """A near-perfect denoiser towards x0 (so the trajectory stays realistic), plus a
        sample-dependent error term; one numpy function serves both schedulers."""
        a = ours.alphas_cumprod[t]
        target = {"epsilon": (sample - a**0.5 * x0) / (1 - a) ** 0.5, "sample": x0,
                  "v_prediction": (a**0.5 * (sample - a**0.5 * x0) / (1 - a) ** 0.5 - (1 - a) ** 0.5 * x0)}
        return (target[ours.config["prediction_type"]] + 0.05 * np.tanh(sample)).astype(np.float32)

    for t in ours.timesteps:
        noise = rng.standard_normal(x.shape, dtype=np.float32)
        x = ours.step(model(x, t), int(t), x, eta=eta, variance_noise=noise)
        out_r = torch.from_numpy(model(xr.numpy(), t))
        xr = ref.step(out_r, int(t), xr, eta=eta, variance_noise=torch.from_numpy(noise)).prev_sample
    assert np.abs(x - xr.numpy()).max() < 1e-5


def test_seeded_generator_is_reproducible():
    s = DDIMScheduler(**SD15)
    s.set_timesteps(10)
    x = np.ones((1, 4, 2, 2), np.float32)
    a = s.step(x * 0.1, 901, x, eta=1.0, generator=np.random.default_rng(5))
    b = s.step(x * 0.1, 901, x, eta=1.0, generator=np.random.default_rng(5))
    assert (a == b).all()


def test_bad_configuration_and_use():
    with pytest.raises(ValueError, match="unknown DDIM scheduler settings: bogus"):
        DDIMScheduler(bogus=1)
    with pytest.raises(ValueError, match="beta_schedule"):
        DDIMScheduler(beta_schedule="sigmoid")
    s = DDIMScheduler(**SD15)
    with pytest.raises(RuntimeError, match="set_timesteps"):
        s.step(np.zeros(1, np.float32), 1, np.zeros(1, np.float32))
    with pytest.raises(ValueError, match="steps must be between 1 and 1000"):
        s.set_timesteps(0)


def test_trained_betas_are_used():
    betas = np.linspace(0.001, 0.02, 1000).tolist()
    ours, ref = DDIMScheduler(trained_betas=betas), diffusers.DDIMScheduler(trained_betas=betas)
    assert np.abs(ours.alphas_cumprod - ref.alphas_cumprod.numpy()).max() < 1e-6


# ------------------------------------------------------------------ every scheduler against diffusers

LOOP_CONFIGS = {
    "sd15": SD15,
    "sd15-trailing": {**SD15, "timestep_spacing": "trailing"},
    "sd15-linspace-v": {**SD15, "timestep_spacing": "linspace", "prediction_type": "v_prediction"},
    "demo-sample-trailing": {**SD15, "timestep_spacing": "trailing", "prediction_type": "sample"},
    "linear-leading-sample": {"beta_schedule": "linear", "prediction_type": "sample", "steps_offset": 1},
    "zero-snr-sample-trailing": {**SD15, "timestep_spacing": "trailing", "prediction_type": "sample",
                                 "rescale_betas_zero_snr": True},
    "zero-snr-v-leading": {**SD15, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True},
}
DIFFUSERS_CLASS = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler",
                   "dpm++2m": "DPMSolverMultistepScheduler"}


def _loop(sched, steps, x, x0, alphas_cumprod, to_np, from_np, step_kw=None):
    """A whole sampling loop with a near-perfect denoiser towards x0 plus a state-dependent error."""
    sched.set_timesteps(steps)
    x = from_np(x * float(sched.init_noise_sigma))
    for t in sched.timesteps:
        inp = to_np(sched.scale_model_input(x, t))
        a = np.float32(np.interp(float(t), np.arange(len(alphas_cumprod)), alphas_cumprod))
        target = {"epsilon": (inp - a**0.5 * x0) / (1 - a) ** 0.5, "sample": x0,
                  "v_prediction": a**0.5 * (inp - a**0.5 * x0) / (1 - a) ** 0.5 - (1 - a) ** 0.5 * x0}
        out = (target[sched.config["prediction_type"]] + 0.05 * np.tanh(inp)).astype(np.float32)
        x = sched.step(from_np(out), t, x, **(step_kw or {}))
        x = getattr(x, "prev_sample", x)
    return to_np(x), [float(t) for t in sched.timesteps]


@pytest.mark.parametrize("steps", [1, 4, 25])
@pytest.mark.parametrize("config", list(LOOP_CONFIGS))
@pytest.mark.parametrize("name", ["ddim", "euler", "dpm++2m"])
def test_every_scheduler_matches_diffusers_over_whole_loops(name, config, steps):
    from unigs_deploy.scheduler import make_scheduler

    cfg = LOOP_CONFIGS[config]
    ours = make_scheduler(name, cfg)
    ref = getattr(diffusers, DIFFUSERS_CLASS[name]).from_config(cfg)
    rng = np.random.default_rng(1)
    x0 = np.clip(rng.standard_normal((2, 4, 8, 8), dtype=np.float32), -1, 1)
    x = rng.standard_normal(x0.shape, dtype=np.float32)
    acp = ours.alphas_cumprod
    got, t_ours = _loop(ours, steps, x, x0, acp, np.asarray, lambda a: a)
    want, t_ref = _loop(ref, steps, x, x0, acp, lambda a: a.numpy(), torch.from_numpy)
    assert t_ours == t_ref
    # at zero terminal SNR the sigma schedulers start from sigma = 4096, where torch's float32 sqrt
    # and numpy's differ by one unit in the last place (numpy's is the correctly rounded one)
    rtol = 2e-4 if cfg.get("rescale_betas_zero_snr") and name != "ddim" else 1e-5
    assert np.abs(got - want).max() <= rtol * np.abs(want).max()


def test_make_scheduler_spacing_override_and_errors():
    from unigs_deploy.scheduler import make_scheduler

    assert make_scheduler("ddim", SD15, spacing="trailing").set_timesteps(1).tolist() == [999]
    assert make_scheduler("dpm++2m", SD15, spacing="trailing").set_timesteps(2).tolist() == [999, 499]
    with pytest.raises(ValueError, match="unknown scheduler 'pndm': choose one of ddim, euler, dpm"):
        make_scheduler("pndm", SD15)
    with pytest.raises(ValueError, match="1000 steps with leading spacing and steps_offset 1 reach timestep 1000"):
        make_scheduler("ddim", SD15).set_timesteps(1000)
    with pytest.raises(ValueError, match="unknown timestep spacing 'middle'"):
        make_scheduler("ddim", SD15, spacing="middle")
    for name in ("ddim", "euler", "dpm++2m"):  # SD15 predicts epsilon: no x0 from noise alone at t = T
        with pytest.raises(ValueError, match="rescale_betas_zero_snr needs prediction_type sample or v_prediction"):
            make_scheduler(name, {**SD15, "rescale_betas_zero_snr": True})
