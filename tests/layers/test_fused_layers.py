"""The fused GroupNorm / Conv2D fast paths equal the Keras layers they extend."""

import keras
import numpy as np
import pytest
from conftest import to_numpy

from keras_cdm.layers.convolution import Conv2D
from keras_cdm.layers.normalization import GroupNorm32


def test_group_norm_matches_keras_and_trains():
    x = np.random.default_rng(0).normal(2.0, 3.0, (2, 8, 8, 16)).astype("float32")
    ours = GroupNorm32(groups=4, epsilon=1e-5)
    ref = keras.layers.GroupNormalization(groups=4, epsilon=1e-5)
    ours.build(x.shape)
    ref.build(x.shape)
    rng = np.random.default_rng(1)
    for a, b in zip(ours.weights, ref.weights):
        value = rng.normal(size=a.shape).astype("float32")
        a.assign(value)
        b.assign(value)
    np.testing.assert_allclose(to_numpy(ours(x)), to_numpy(ref(x)), atol=1e-5)
    restored = GroupNorm32.from_config(ours.get_config())
    assert restored.groups == 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel_size": 3, "padding": "same"},
        {"kernel_size": 1, "padding": "valid"},
        {"kernel_size": 3, "padding": "valid"},
        {"kernel_size": 3, "padding": "same", "activation": "silu"},
        {"kernel_size": 3, "padding": "same", "use_bias": False},
        {"kernel_size": 3, "padding": "same", "strides": 2},  # falls back to Keras
    ],
)
def test_conv2d_matches_keras(kwargs):
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 5)).astype("float32")
    ours = Conv2D(7, **kwargs)
    ref = keras.layers.Conv2D(7, **kwargs)
    ours.build(x.shape)
    ref.build(x.shape)
    rng = np.random.default_rng(1)
    for a, b in zip(ours.weights, ref.weights):
        value = rng.normal(size=a.shape).astype("float32")  # non-zero bias too
        a.assign(value)
        b.assign(value)
    out = to_numpy(ours(x))
    np.testing.assert_allclose(out, to_numpy(ref(x)), atol=1e-5)


def test_fused_layers_receive_gradients():
    # The fast paths must stay differentiable (training uses them on torch).
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")
    model = keras.Sequential([Conv2D(8, 3, padding="same"), GroupNorm32(groups=2), Conv2D(1, 1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [to_numpy(w).copy() for w in model.weights]
    model.fit(x, np.ones((2, 8, 8, 1), "float32"), epochs=1, verbose=0)
    moved = [not np.allclose(b, to_numpy(w)) for b, w in zip(before, model.weights)]
    assert all(moved), moved


def test_group_norm_large_mean_small_spread():
    # One-pass statistics (E[x^2] - E[x]^2 in float32) stay accurate when the
    # mean is 50x the spread; the error bound is documented in GroupNorm32.
    x = np.random.default_rng(0).normal(50.0, 1.0, (2, 8, 8, 16)).astype("float32")
    ours = GroupNorm32(groups=4, epsilon=1e-5)
    ref = keras.layers.GroupNormalization(groups=4, epsilon=1e-5)
    out, expected = to_numpy(ours(x)), to_numpy(ref(x))
    np.testing.assert_allclose(out, expected, atol=2e-2)
    assert abs(out.std() - 1.0) < 1e-2
