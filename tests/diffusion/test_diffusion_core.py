"""The diffusion math against independent float64 NumPy formulas."""

import math

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import to_numpy
from keras import ops

from keras_cdm import GaussianDiffusion
from keras_cdm import get_beta_schedule
from keras_cdm import space_timesteps
from keras_cdm.diffusion.likelihoods import discretized_gaussian_log_likelihood
from keras_cdm.diffusion.likelihoods import normal_kl

RNG = np.random.default_rng(0)


def np_tables(betas):
    alphas = 1 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.append(1.0, ac[:-1])
    return alphas, ac, ac_prev


# --------------------------------------------------------------- schedules
def test_linear_schedule_keeps_ddpm_endpoints():
    b1000 = get_beta_schedule("linear", 1000)
    np.testing.assert_allclose([b1000[0], b1000[-1]], [1e-4, 0.02], rtol=1e-12)
    b4000 = get_beta_schedule("linear", 4000)
    np.testing.assert_allclose([b4000[0], b4000[-1]], [0.25e-4, 0.005], rtol=1e-12)
    assert b4000.dtype == np.float64


def test_cosine_alpha_bar_matches_closed_form():
    T = 4000
    betas = get_beta_schedule("cosine", T)
    ac = np.cumprod(1 - betas)
    f = lambda t: np.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2
    expected = f(np.arange(1, T + 1)) / f(0)
    unclipped = betas < 0.999
    np.testing.assert_allclose(ac[unclipped], expected[unclipped], rtol=1e-9)
    assert betas.max() <= 0.999
    assert betas[-1] == pytest.approx(0.999)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_schedule_rejects_bad_step_counts(bad):
    with pytest.raises(ValueError, match="positive integer"):
        get_beta_schedule("cosine", bad)


def test_unknown_schedule_name():
    with pytest.raises(ValueError, match="Unknown beta schedule"):
        get_beta_schedule("sigmoid", 10)


# --------------------------------------------------------------- q and posterior
@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion("cosine", 100)


def test_posterior_mean_variance(diffusion):
    betas = get_beta_schedule("cosine", 100)
    alphas, ac, ac_prev = np_tables(betas)
    x0 = RNG.normal(size=(4, 3, 3, 2)).astype("float32")
    xt = RNG.normal(size=(4, 3, 3, 2)).astype("float32")
    t = np.array([0, 1, 50, 99])
    mean, var, logvar = diffusion.q_posterior_mean_variance(
        ops.convert_to_tensor(x0), ops.convert_to_tensor(xt), ops.convert_to_tensor(t)
    )
    c1 = betas * np.sqrt(ac_prev) / (1 - ac)
    c2 = (1 - ac_prev) * np.sqrt(alphas) / (1 - ac)
    exp_mean = c1[t][:, None, None, None] * x0 + c2[t][:, None, None, None] * xt
    exp_var = betas * (1 - ac_prev) / (1 - ac)
    np.testing.assert_allclose(to_numpy(mean), exp_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(var).ravel(), exp_var[t], rtol=1e-5)
    exp_log = np.log(np.append(exp_var[1], exp_var[1:]))[t]
    np.testing.assert_allclose(to_numpy(logvar).ravel(), exp_log, rtol=1e-5)


def test_q_sample_statistics(diffusion):
    ac = np.cumprod(1 - get_beta_schedule("cosine", 100))
    x0 = np.full((20000, 1, 1, 1), 0.7, "float32")
    t = np.full((20000,), 30)
    noise = keras.random.normal(x0.shape, seed=3)
    xt = to_numpy(diffusion.q_sample(ops.convert_to_tensor(x0), ops.convert_to_tensor(t), noise))
    assert abs(xt.mean() - np.sqrt(ac[30]) * 0.7) < 0.02
    assert abs(xt.std() - np.sqrt(1 - ac[30])) < 0.02
    mean, var, _ = diffusion.q_mean_variance(ops.convert_to_tensor(x0[:2]), t[:2])
    np.testing.assert_allclose(to_numpy(mean).ravel(), np.sqrt(ac[30]) * 0.7, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(var).ravel(), 1 - ac[30], rtol=1e-5)


def test_augmentation_levels_follow_paper_indexing(diffusion):
    z0 = ops.convert_to_tensor(RNG.uniform(-1, 1, (3, 2, 2, 3)).astype("float32"))
    noise = ops.convert_to_tensor(RNG.normal(size=(3, 2, 2, 3)).astype("float32"))
    s = ops.convert_to_tensor(np.array([0, 1, 100]))
    out = to_numpy(diffusion.q_sample_augmentation(z0, s, noise))
    np.testing.assert_allclose(out[0], to_numpy(z0)[0], atol=1e-7)  # s = 0 is clean
    ref = to_numpy(diffusion.q_sample(z0, ops.convert_to_tensor(np.array([0, 0, 99])), noise))
    np.testing.assert_allclose(out[1:], ref[1:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mean_type", ["epsilon", "x0", "v"])
def test_parameterisations_convert_into_each_other(diffusion, mean_type):
    ac = np.cumprod(1 - get_beta_schedule("cosine", 100))
    x0 = RNG.uniform(-1, 1, (3, 2, 2, 1))
    eps = RNG.normal(size=(3, 2, 2, 1))
    t = np.array([0, 40, 99])
    a = ac[t][:, None, None, None]
    xt = np.sqrt(a) * x0 + np.sqrt(1 - a) * eps
    v = np.sqrt(a) * eps - np.sqrt(1 - a) * x0
    f32 = lambda z: ops.convert_to_tensor(np.asarray(z, "float32"))
    np.testing.assert_allclose(to_numpy(diffusion.get_v(f32(x0), t, f32(eps))), v, atol=1e-5)
    np.testing.assert_allclose(
        to_numpy(diffusion.predict_x0_from_eps(f32(xt), t, f32(eps))), x0, atol=2e-3
    )
    np.testing.assert_allclose(
        to_numpy(diffusion.predict_eps_from_x0(f32(xt), t, f32(x0))), eps, atol=2e-3
    )
    np.testing.assert_allclose(
        to_numpy(diffusion.predict_x0_from_v(f32(xt), t, f32(v))), x0, atol=1e-5
    )
    np.testing.assert_allclose(
        to_numpy(diffusion.predict_eps_from_v(f32(xt), t, f32(v))), eps, atol=1e-5
    )
    d = GaussianDiffusion("cosine", 100, mean_type=mean_type)
    target = {"epsilon": eps, "x0": x0, "v": v}[mean_type]
    out = d.p_mean_variance(f32(target), f32(xt), t, clip_denoised=False)
    np.testing.assert_allclose(to_numpy(out["pred_x0"])[1:], x0[1:], atol=1e-3)


def test_learned_range_reaches_both_ends(diffusion):
    betas = get_beta_schedule("cosine", 100)
    _, ac, ac_prev = np_tables(betas)
    post = betas * (1 - ac_prev) / (1 - ac)
    d = GaussianDiffusion("cosine", 100, var_type="learned_range")
    xt = ops.zeros((2, 2, 2, 1))
    t = np.array([5, 60])
    for v, expected in [(-1.0, post[t]), (1.0, betas[t])]:
        out = ops.concatenate([ops.zeros((2, 2, 2, 1)), ops.full((2, 2, 2, 1), v)], axis=-1)
        var = to_numpy(d.p_mean_variance(out, xt, t)["variance"])[:, 0, 0, 0]
        np.testing.assert_allclose(var, expected, rtol=1e-4)


def test_fixed_variances(diffusion):
    betas = get_beta_schedule("cosine", 100)
    t = np.array([3, 70])
    large = GaussianDiffusion("cosine", 100, var_type="fixed_large")
    out = large.p_mean_variance(ops.zeros((2, 1, 1, 1)), ops.zeros((2, 1, 1, 1)), t)
    np.testing.assert_allclose(to_numpy(out["variance"]).ravel(), betas[t], rtol=1e-5)


# --------------------------------------------------------------- likelihoods
def test_discretized_likelihood_sums_to_one():
    bins = np.linspace(-1, 1, 256, dtype="float32")[:, None]
    for mean, log_scale in [(0.1, -2.0), (-0.8, -4.0), (0.95, -1.0)]:
        ll = discretized_gaussian_log_likelihood(
            ops.convert_to_tensor(bins), ops.full((256, 1), mean), ops.full((256, 1), log_scale)
        )
        assert np.exp(to_numpy(ll)).sum() == pytest.approx(1.0, abs=1e-3)


def test_kl_of_identical_gaussians_is_zero_and_matches_formula():
    m = RNG.normal(size=(5,)).astype("float32")
    lv = RNG.normal(size=(5,)).astype("float32")
    T = ops.convert_to_tensor
    np.testing.assert_allclose(to_numpy(normal_kl(T(m), T(lv), T(m), T(lv))), 0.0, atol=1e-7)
    m2, lv2 = m + 0.3, lv - 0.2
    expected = 0.5 * (-1 + lv2 - lv + np.exp(lv - lv2) + (m - m2) ** 2 * np.exp(-lv2))
    np.testing.assert_allclose(to_numpy(normal_kl(T(m), T(lv), T(m2), T(lv2))), expected, rtol=1e-5)


def test_vb_terms_zero_for_true_posterior_mean():
    # A learned-range output equal to the true posterior's mean and variance
    # gives KL = 0 for t > 0.
    d = GaussianDiffusion("linear", 50, var_type="learned_range", loss_type="hybrid")
    x0 = ops.convert_to_tensor(RNG.uniform(-1, 1, (2, 2, 2, 1)).astype("float32"))
    eps = ops.convert_to_tensor(RNG.normal(size=(2, 2, 2, 1)).astype("float32"))
    t = ops.convert_to_tensor(np.array([10, 30]))
    xt = d.q_sample(x0, t, eps)
    out = ops.concatenate([eps, -ops.ones_like(eps)], axis=-1)
    vb = to_numpy(d.vb_terms_bpd(out, x0, xt, t))
    np.testing.assert_allclose(vb, 0.0, atol=2e-4)


def test_prior_bpd_small_for_long_schedule():
    d = GaussianDiffusion("linear", 1000)
    x0 = ops.convert_to_tensor(RNG.uniform(-1, 1, (2, 2, 2, 3)).astype("float32"))
    assert to_numpy(d.prior_bpd(x0)).max() < 1e-3


def test_hybrid_requires_learned_variance():
    with pytest.raises(ValueError, match="learned_range"):
        GaussianDiffusion(loss_type="hybrid", var_type="fixed_small")


# --------------------------------------------------------------- respacing
def test_respacing_all_steps_is_identical(diffusion):
    full = diffusion.respace(100)
    np.testing.assert_array_equal(full.timestep_map, np.arange(100))
    np.testing.assert_allclose(full.betas, diffusion.betas, rtol=1e-12)
    np.testing.assert_allclose(full.posterior_variance, diffusion.posterior_variance, rtol=1e-12)


def test_respacing_keeps_alphas_cumprod():
    d = GaussianDiffusion("cosine", 4000)
    r = d.respace(100)
    assert r.num_timesteps == 100
    np.testing.assert_allclose(r.alphas_cumprod, d.alphas_cumprod[r.timestep_map], rtol=1e-10)
    assert r.timestep_map[0] == 0 and r.timestep_map[-1] == 3999
    t = to_numpy(r.original_timesteps(ops.convert_to_tensor(np.array([0, 99]))))
    np.testing.assert_array_equal(t, [0, 3999])


def test_space_timesteps_sections_and_ddim():
    kept = space_timesteps(300, [10, 15, 20])
    assert len(kept) == 45 and kept[0] == 0 and kept.max() == 299
    np.testing.assert_array_equal(space_timesteps(1000, "ddim10"), np.arange(0, 1000, 100))


def test_quadratic_timesteps_are_distinct_and_dense_at_low_noise():
    from keras_cdm.diffusion.respacing import quadratic_timesteps

    np.testing.assert_array_equal(quadratic_timesteps(0, 999, 6), [0, 40, 160, 360, 639, 999])
    for start, end, count in [(0, 999, 20), (0, 999, 100), (124, 999, 21), (0, 9, 10)]:
        steps = quadratic_timesteps(start, end, count)
        assert len(steps) == count and steps[0] == start and steps[-1] == end
        assert np.all(np.diff(steps) >= 1)
    gaps = np.diff(quadratic_timesteps(0, 999, 20))
    assert gaps[0] < 5 and gaps[-1] > 90  # dense at low noise, sparse at high
    with pytest.raises(ValueError, match="Cannot keep 11 steps out of 10"):
        quadratic_timesteps(0, 9, 11)


def test_respacing_errors():
    with pytest.raises(ValueError, match="at most as many steps"):
        space_timesteps(10, 11)
    with pytest.raises(ValueError, match="positive integers"):
        space_timesteps(10, 0)
    with pytest.raises(ValueError, match="strictly increasing"):
        GaussianDiffusion("cosine", 10, timesteps=[3, 2])


def test_timesteps_out_of_range(diffusion):
    with pytest.raises(ValueError, match=r"Timesteps must lie in \[0, 100\)"):
        diffusion.check_timesteps(np.array([0, 100]))


# --------------------------------------------------------------- steps
def test_ddpm_step_adds_no_noise_at_zero(diffusion):
    out = ops.zeros((2, 2, 2, 1))
    xt = ops.ones((2, 2, 2, 1)) * 0.3
    noise = ops.ones((2, 2, 2, 1))
    t = ops.convert_to_tensor(np.array([0, 0]))
    a, _ = diffusion.p_sample_step(out, xt, t, noise)
    b, _ = diffusion.p_sample_step(out, xt, t, noise * 5)
    np.testing.assert_allclose(to_numpy(a), to_numpy(b))


def test_ddim_eta_zero_is_deterministic_and_matches_formula(diffusion):
    ac = np.cumprod(1 - get_beta_schedule("cosine", 100))
    eps = RNG.normal(size=(1, 2, 2, 1)).astype("float32")
    xt = RNG.normal(size=(1, 2, 2, 1)).astype("float32")
    t = np.array([50])
    x_prev, x0 = diffusion.ddim_step(eps, xt, t, np.zeros_like(xt), eta=0.0, clip_denoised=False)
    x0_ref = (xt - np.sqrt(1 - ac[50]) * eps) / np.sqrt(ac[50])
    ref = np.sqrt(ac[49]) * x0_ref + np.sqrt(1 - ac[49]) * eps
    np.testing.assert_allclose(to_numpy(x_prev), ref, rtol=1e-4, atol=1e-4)


def _compiled(fn):
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    return fn


def test_math_runs_compiled_with_eager_numbers():
    d = GaussianDiffusion("cosine", 100, var_type="learned_range", loss_type="hybrid")
    x0 = ops.convert_to_tensor(RNG.uniform(-1, 1, (2, 4, 4, 3)).astype("float32"))
    noise = ops.convert_to_tensor(RNG.normal(size=(2, 4, 4, 3)).astype("float32"))
    out = ops.convert_to_tensor(RNG.normal(size=(2, 4, 4, 6)).astype("float32") * 0.5)
    t = ops.convert_to_tensor(np.array([0, 77], "int32"))

    def fn(x0, t, noise, out):
        xt = d.q_sample(x0, t, noise)
        x_prev, _ = d.p_sample_step(out, xt, t, noise)
        losses = d.training_losses(out, x0, xt, t, noise)
        return xt, x_prev, losses["loss"]

    eager = fn(x0, t, noise, out)
    compiled = _compiled(fn)(x0, t, noise, out)
    for e, c in zip(eager[:2], compiled[:2]):
        np.testing.assert_allclose(to_numpy(e), to_numpy(c), rtol=1e-5, atol=1e-5)
    # The t = 0 decoder NLL differences two close CDFs; XLA's fused exp/tanh
    # move it by ~1e-4 relative.
    np.testing.assert_allclose(to_numpy(eager[2]), to_numpy(compiled[2]), rtol=1e-3)
