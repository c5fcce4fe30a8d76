"""Per-image noise drawn on the device: a pure function of (key, counter,
position), equal to a NumPy uint32 reference of the same construction on
every backend, standard normal, and independent of batching; the sampling
loop draws no noise on the host after `x_T`."""

import keras
import numpy as np
import pytest
from conftest import micro_network_config
from conftest import to_numpy

import keras_cdm
from keras_cdm.utils import seeds


def reference_normal(keys, counter, shape):
    """`device_normal` in NumPy uint32 arithmetic (wrapping products)."""
    keys = np.asarray(keys).view(np.uint32).astype(np.uint64)
    mask = np.uint64(0xFFFFFFFF)

    def mix(x):
        x = x ^ (x >> np.uint64(16))
        x = (x * np.uint64(0x7FEB352D)) & mask
        x = x ^ (x >> np.uint64(15))
        x = (x * np.uint64(0x846CA68B)) & mask
        return x ^ (x >> np.uint64(16))

    size = int(np.prod(shape))
    pairs = (size + 1) // 2
    k0, k1 = keys[:, :1], keys[:, 1:]
    step = (np.uint64(counter) * np.uint64(0x9E3779B9)) & mask
    state = mix(k0 ^ mix((k1 + step) & mask))
    position = np.arange(2 * pairs, dtype=np.uint64)[None]
    bits = mix(mix((position + state) & mask) ^ k1)
    uniform = ((bits >> np.uint64(8)).astype(np.float64) + 0.5) / 2**24
    u1, u2 = uniform[:, :pairs], uniform[:, pairs:]
    r = np.sqrt(-2 * np.log(u1))
    z = np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)], axis=1)
    return z[:, :size].reshape((-1,) + tuple(shape))


def test_device_normal_matches_the_uint32_reference_and_is_standard_normal():
    keys = seeds.image_keys(7, range(32), stream=2)
    assert keys.dtype == np.int32 and keys.shape == (32, 2)
    shape = (16, 16, 3)
    for counter in (0, 1, 999):
        z = to_numpy(seeds.device_normal(keys, counter, shape))
        assert z.shape == (32,) + shape and z.dtype == np.float32
        # Same bits on every backend; float32 log/cos differ by a few ulps.
        np.testing.assert_allclose(z, reference_normal(keys, counter, shape), atol=2e-5)
    z = to_numpy(seeds.device_normal(keys, 5, shape))
    assert abs(z.mean()) < 4 / np.sqrt(z.size) and abs(z.std() - 1) < 0.01
    # Tails: P(|z| > 3) = 0.0027.
    assert abs(np.mean(np.abs(z) > 3) - 0.0027) < 0.0015
    # No image, step or half of an image repeats another's noise.
    flat = z.reshape(32, -1)
    corr = np.corrcoef(flat)[np.triu_indices(32, 1)]
    assert np.abs(corr).max() < 5 / np.sqrt(flat.shape[1])
    nxt = to_numpy(seeds.device_normal(keys, 6, shape)).reshape(32, -1)
    assert abs(np.corrcoef(flat.ravel(), nxt.ravel())[0, 1]) < 5 / np.sqrt(flat.size)
    half = flat.shape[1] // 2
    assert abs(np.corrcoef(flat[:, :half].ravel(), flat[:, half:].ravel())[0, 1]) < 0.02
    # An odd element count and one image: the same numbers as in a batch.
    one = to_numpy(seeds.device_normal(seeds.image_keys(7, [3], stream=2), 5, shape))
    np.testing.assert_array_equal(one[0], z[3])
    odd = to_numpy(seeds.device_normal(keys[:2], 5, (3, 3, 1)))
    np.testing.assert_allclose(odd, reference_normal(keys[:2], 5, (3, 3, 1)), atol=2e-5)


def test_sampling_draws_step_noise_on_the_device(monkeypatch):
    keras.utils.set_random_seed(0)
    model = keras_cdm.DiffusionModel(
        keras_cdm.UNet(**micro_network_config(image_size=4, channel_mult=(1,))),
        diffusion={"schedule": "cosine", "num_timesteps": 20},
    )
    calls = []
    normal = seeds.ImageNoise.normal
    monkeypatch.setattr(
        seeds.ImageNoise, "normal", lambda self, shape: calls.append(shape) or normal(self, shape)
    )
    for sampler in ("ddpm", "dpm++2m_sde"):
        calls.clear()
        out = model.sample(np.array([0, 1, 2]), num_steps=6, sampler=sampler, seed=3)
        assert calls == [(4, 4, 3)]  # x_T alone: each step's noise comes from the device
        assert np.isfinite(out).all()
        again = model.sample(np.array([2]), num_steps=6, sampler=sampler, seed=3, image_indices=[2])
        np.testing.assert_allclose(again[0], out[2], atol=1e-5)


@pytest.mark.parametrize("bad", [-1, 1.5, "0"])
def test_image_keys_refuse_a_bad_seed(bad):
    with pytest.raises(ValueError, match="`seed` must be a non-negative int or None"):
        seeds.image_keys(bad, range(2))
