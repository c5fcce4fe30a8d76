"""DPM-Solver++(2M) and its stochastic form SDE-DPM-Solver++(2M): against an
independent float64 NumPy implementation, against diffusers'
`DPMSolverMultistepScheduler` (when installed; the same noise fed to both),
exact on a perfect predictor (full and truncated chains), and through
`sample`."""

import keras
import numpy as np
import pytest
from conftest import micro_network_config
from conftest import to_numpy
from keras import ops

import keras_cdm
from keras_cdm import GaussianDiffusion
from keras_cdm.models.reverse_process import truncated_timesteps

T = 1000


def fake_eps(x, t):
    """A fixed, smooth stand-in for a trained ε-network (float64)."""
    return 0.3 * np.tanh(x) * (1.0 + t / T) + 0.1 * np.sin(3.0 * x + t / 100.0)


def run_ours(diffusion, x, mean_type="epsilon", noises=None):
    """Our step over a whole respaced chain (SDE form when `noises`, one
    array per step, are given); returns every x along the way."""
    xs, prev_x0 = [x], np.zeros_like(x)
    for n, i in enumerate(range(diffusion.num_timesteps - 1, -1, -1)):
        noise = None if noises is None else ops.convert_to_tensor(noises[n].astype("float32"))
        t = np.full((len(x),), i, "int32")
        orig = diffusion.timestep_map[i]
        eps = fake_eps(xs[-1], orig)
        if mean_type == "v":  # the same ε expressed as v = α ε - σ x0
            a, s = np.sqrt(diffusion.alphas_cumprod[i]), np.sqrt(1 - diffusion.alphas_cumprod[i])
            x0 = (xs[-1] - s * eps) / a
            out = a * eps - s * x0
        else:
            out = eps
        x_prev, x0 = diffusion.dpm_solver_2m_step(
            ops.convert_to_tensor(out.astype("float32")),
            ops.convert_to_tensor(xs[-1].astype("float32")),
            ops.convert_to_tensor(t),
            ops.convert_to_tensor(prev_x0.astype("float32")),
            float(n > 0),
            clip_denoised=False,
            noise=noise,
        )
        xs.append(to_numpy(x_prev).astype("float64"))
        prev_x0 = to_numpy(x0).astype("float64")
    return xs


def run_reference(alphas_cumprod, timesteps, x, noises=None):
    """DPM-Solver++(2M) written from the paper's Algorithm 2 in float64,
    with λ explicitly; the last step goes to σ = 0 at first order. With
    `noises`, SDE-DPM-Solver++(2M): x' = (σ'/σ) e^{-h} x + α'(1 - e^{-2h}) D
    + σ' sqrt(1 - e^{-2h}) z."""
    xs, prev, h_prev = [x], None, None
    for k, t in enumerate(timesteps):
        a_t, s_t = np.sqrt(alphas_cumprod[t]), np.sqrt(1 - alphas_cumprod[t])
        x0 = (xs[-1] - s_t * fake_eps(xs[-1], t)) / a_t
        if k + 1 < len(timesteps):
            nxt = timesteps[k + 1]
            a_n, s_n = np.sqrt(alphas_cumprod[nxt]), np.sqrt(1 - alphas_cumprod[nxt])
            h = np.log(a_n / s_n) - np.log(a_t / s_t)
            d = x0 if prev is None else x0 + (x0 - prev) * h / (2 * h_prev)
            if noises is None:
                x_new = (s_n / s_t) * xs[-1] - a_n * np.expm1(-h) * d
            else:
                x_new = (
                    (s_n / s_t) * np.exp(-h) * xs[-1]
                    - a_n * np.expm1(-2 * h) * d
                    + s_n * np.sqrt(-np.expm1(-2 * h)) * noises[k]
                )
            h_prev = h
        else:
            x_new = x0  # σ_next = 0: x = α·x0 with α = 1
        prev = x0
        xs.append(x_new)
    return xs


@pytest.mark.parametrize("sde", [False, True])
@pytest.mark.parametrize("mean_type", ["epsilon", "v"])
def test_matches_a_float64_reference(mean_type, sde):
    base = GaussianDiffusion("cosine", T, mean_type=mean_type)
    timesteps = np.array([0, 30, 120, 300, 520, 760, 999])
    diffusion = base.respace(timesteps=timesteps)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 4, 3))
    noises = rng.normal(size=(len(timesteps), 2, 4, 4, 3)) if sde else None
    ours = run_ours(diffusion, x, mean_type, noises)
    ref = run_reference(base.alphas_cumprod, timesteps[::-1], x, noises)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, atol=2e-4, rtol=1e-4)
    if sde:  # the noise matters: the deterministic chain ends elsewhere
        assert np.abs(ours[-2] - run_ours(diffusion, x, mean_type)[-2]).max() > 1e-2


@pytest.mark.parametrize("algorithm", ["dpmsolver++", "sde-dpmsolver++"])
@pytest.mark.parametrize("num_steps", [5, 20])
def test_matches_diffusers_dpm_solver_multistep(num_steps, algorithm):
    diffusers = pytest.importorskip("diffusers", reason="diffusers is a test/benchmark extra")
    torch = pytest.importorskip("torch")
    base = GaussianDiffusion("linear", T)
    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=T,
        trained_betas=base.betas,
        algorithm_type=algorithm,
        solver_order=2,
        prediction_type="epsilon",
        final_sigmas_type="zero",
    )
    scheduler.set_timesteps(num_steps)
    timesteps = scheduler.timesteps.numpy()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 4, 4, 3))
    noises = rng.normal(size=(num_steps, 2, 4, 4, 3)) if algorithm.startswith("sde") else None
    theirs = [x]
    sample = torch.tensor(x, dtype=torch.float64)
    for n, t in enumerate(scheduler.timesteps):
        eps = torch.tensor(fake_eps(sample.numpy(), int(t)), dtype=torch.float64)
        noise = None if noises is None else torch.tensor(noises[n])
        sample = scheduler.step(eps, t, sample, variance_noise=noise).prev_sample
        theirs.append(sample.numpy())
    ours = run_ours(base.respace(timesteps=np.sort(timesteps)), x, noises=noises)
    assert len(ours) == len(theirs) == num_steps + 1
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, atol=3e-4, rtol=1e-4)


@pytest.mark.parametrize("stop_at", [0, 250])
def test_exact_on_a_perfect_predictor_and_stops_at_the_level(stop_at):
    """With the true x0 predicted at every step, a deterministic sampler
    keeps x on α x0 + σ ε: the chain ends exactly at z_s (or at x0)."""
    base = GaussianDiffusion("cosine", T, mean_type="x0")
    diffusion = base.respace(timesteps=truncated_timesteps(T, 10, stop_at))
    rng = np.random.default_rng(2)
    x0, eps = rng.uniform(-1, 1, (2, 4, 4, 3)), rng.normal(size=(2, 4, 4, 3))
    last = diffusion.num_timesteps - 1
    a, s = np.sqrt(diffusion.alphas_cumprod[last]), np.sqrt(1 - diffusion.alphas_cumprod[last])
    x, prev = a * x0 + s * eps, np.zeros_like(x0)
    stop = 1 if stop_at else 0
    for n, i in enumerate(range(last, stop - 1, -1)):
        out, prev = diffusion.dpm_solver_2m_step(
            ops.convert_to_tensor(x0.astype("float32")),
            ops.convert_to_tensor(x.astype("float32")),
            ops.convert_to_tensor(np.full((2,), i, "int32")),
            ops.convert_to_tensor(np.asarray(prev, "float32")),
            float(n > 0),
            clip_denoised=False,
        )
        x = to_numpy(out).astype("float64")
    if stop_at:
        assert diffusion.timestep_map[0] == stop_at - 1  # z_s is the sample at step s - 1
        ac = diffusion.alphas_cumprod[0]
        np.testing.assert_allclose(x, np.sqrt(ac) * x0 + np.sqrt(1 - ac) * eps, atol=1e-4)
    else:
        np.testing.assert_allclose(x, x0, atol=1e-4)


def test_sample_with_dpm_solver_guidance_and_truncation():
    keras.utils.set_random_seed(0)
    net = keras_cdm.UNet(**micro_network_config(learn_sigma=True))
    model = keras_cdm.DiffusionModel(
        net, diffusion={"num_timesteps": 100, "var_type": "learned_range"}, label_dropout=0.1
    )
    labels = np.array([0, 1])
    a = model.sample(labels, seed=0, num_steps=8, sampler="dpm++2m", guidance_scale=2.0)
    b = model.sample(labels, seed=0, num_steps=8, sampler="dpm++2m", guidance_scale=2.0)
    assert a.shape == (2, 8, 8, 3) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)  # deterministic given the seed (x_T only)
    z = model.sample(labels, seed=0, num_steps=8, sampler="dpm++2m", stop_at=20)
    assert np.isfinite(z).all() and not np.allclose(z, a)
    sampler = model.stage_sampler(
        keras_cdm.models.SamplerSettings(num_steps=8, sampler="dpm++2m"), stop_at=20
    )
    assert sampler.diffusion.timestep_map[0] == 19 and sampler.num_steps == 8
    with pytest.raises(ValueError, match="`eta` is DDIM's stochasticity"):
        keras_cdm.models.SamplerSettings(sampler="dpm++2m", eta=0.5)


def test_sample_with_the_sde_solver_draws_per_image_noise():
    keras.utils.set_random_seed(0)
    net = keras_cdm.UNet(**micro_network_config(learn_sigma=True))
    model = keras_cdm.DiffusionModel(
        net, diffusion={"num_timesteps": 100, "var_type": "learned_range"}, label_dropout=0.1
    )
    labels = np.array([0, 1, 2])
    kw = dict(num_steps=8, sampler="dpm++2m_sde", guidance_scale=2.0)
    a = model.sample(labels, seed=0, **kw)
    assert a.shape == (3, 8, 8, 3) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, model.sample(labels, seed=0, **kw))
    # Fresh noise every step: the same x_T gives another image than the ODE's.
    ode = model.sample(labels, seed=0, num_steps=8, sampler="dpm++2m", guidance_scale=2.0)
    assert np.abs(a - ode).max() > 1e-3
    # Image i draws from its own stream: the same image in a smaller batch.
    alone = model.sample(labels[1:2], seed=0, image_indices=[1], **kw)
    np.testing.assert_allclose(alone[0], a[1], atol=1e-5)
    z = model.sample(labels, seed=0, num_steps=8, sampler="dpm++2m_sde", stop_at=20)
    assert np.isfinite(z).all()
    with pytest.raises(ValueError, match="`eta` is DDIM's stochasticity"):
        keras_cdm.models.SamplerSettings(sampler="dpm++2m_sde", eta=0.5)


@pytest.mark.parametrize("stop_at", [0, 250])
def test_quadratic_spacing_visits_its_steps_and_stops_at_the_level(stop_at):
    keras.utils.set_random_seed(0)
    net = keras_cdm.UNet(**micro_network_config(learn_sigma=True))
    model = keras_cdm.DiffusionModel(
        net, diffusion={"num_timesteps": 1000, "var_type": "learned_range"}
    )
    settings = keras_cdm.models.SamplerSettings(num_steps=10, spacing="quadratic")
    sampler = model.stage_sampler(settings, stop_at=stop_at)
    visited = sampler.diffusion.timestep_map
    first = stop_at - 1 if stop_at else 0
    assert visited[0] == first and visited[-1] == 999 and sampler.num_steps == 10
    assert np.diff(visited)[0] < np.diff(visited)[-1]  # dense at low noise
    uniform = model.stage_sampler(keras_cdm.models.SamplerSettings(num_steps=10), stop_at)
    assert uniform.num_steps == 10 and not np.array_equal(uniform.diffusion.timestep_map, visited)
    labels = np.array([0, 1])
    a = model.sample(labels, seed=0, num_steps=10, sampler="dpm++2m_sde", spacing="quadratic")
    b = model.sample(labels, seed=0, num_steps=10, sampler="dpm++2m_sde")
    assert np.isfinite(a).all() and np.abs(a - b).max() > 1e-3
    with pytest.raises(ValueError, match="`spacing` must be one of"):
        keras_cdm.models.SamplerSettings(spacing="karras")


@pytest.mark.parametrize("stop_at", [0, 250])
def test_sde_solver_on_a_perfect_predictor_ends_on_the_right_marginal(stop_at):
    """With the true x0 predicted at every step, each SDE step maps
    q(x_t | x0) onto q(x_{t-1} | x0): the chain ends at z_s ~ N(α_s x0, σ_s²)
    (or exactly at x0)."""
    base = GaussianDiffusion("cosine", T, mean_type="x0")
    diffusion = base.respace(timesteps=truncated_timesteps(T, 10, stop_at, "quadratic"))
    rng = np.random.default_rng(3)
    n = 4000
    x0 = np.full((n, 1, 1, 1), 0.6)
    last = diffusion.num_timesteps - 1
    a, s = np.sqrt(diffusion.alphas_cumprod[last]), np.sqrt(1 - diffusion.alphas_cumprod[last])
    x, prev = a * x0 + s * rng.normal(size=x0.shape), np.zeros_like(x0)
    stop = 1 if stop_at else 0
    for n_step, i in enumerate(range(last, stop - 1, -1)):
        out, prev = diffusion.dpm_solver_2m_step(
            ops.convert_to_tensor(x0.astype("float32")),
            ops.convert_to_tensor(x.astype("float32")),
            ops.convert_to_tensor(np.full((n,), i, "int32")),
            ops.convert_to_tensor(np.asarray(prev, "float32")),
            float(n_step > 0),
            clip_denoised=False,
            noise=ops.convert_to_tensor(rng.normal(size=x0.shape).astype("float32")),
        )
        x = to_numpy(out).astype("float64")
    if stop_at:
        ac = diffusion.alphas_cumprod[0]
        z = (x - np.sqrt(ac) * x0) / np.sqrt(1 - ac)
        assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05
    else:
        np.testing.assert_allclose(x, x0, atol=1e-5)
