"""The distillation target against a float64 reference of the paper's formulas."""

import keras
import numpy as np
from conftest import to_numpy

import keras_cdm
from keras_cdm.diffusion.distillation import truncated_snr_weight
from keras_cdm.diffusion.distillation import two_step_target
from keras_cdm.diffusion.respacing import trailing_timesteps


def ddim64(z, x_hat, abar, abar_next):
    """One deterministic DDIM step in float64: z' = a' x + s' (z - a x) / s."""
    a, s = np.sqrt(abar), np.sqrt(1 - abar)
    return np.sqrt(abar_next) * x_hat + np.sqrt(1 - abar_next) * (z - a * x_hat) / s


def test_target_makes_one_step_land_where_two_teacher_steps_land():
    rng = np.random.default_rng(0)
    abar = keras_cdm.GaussianDiffusion("cosine", 1000).alphas_cumprod
    grid = trailing_timesteps(1000, 8)  # a teacher of 8 steps, a student of 4
    levels = np.append(1.0, abar[grid])  # level 0: the clean image
    x = rng.uniform(-1, 1, (4, 5, 5, 3))
    for i in range(4):  # the student's steps: from level 2i+2 to 2i
        top, mid, low = levels[2 * i + 2], levels[2 * i + 1], levels[2 * i]
        z = np.sqrt(top) * x + np.sqrt(1 - top) * rng.normal(size=x.shape)

        # A teacher whose x-prediction is some nonlinear function of z.
        def teacher(zz):
            return np.tanh(0.7 * zz + 0.1)

        z_mid = ddim64(z, teacher(z), top, mid)
        z_low = ddim64(z_mid, teacher(z_mid), mid, low)
        ratio = np.sqrt(1 - low) / np.sqrt(1 - top)  # the paper's x~, in float64
        ref = (z_low - ratio * z) / (np.sqrt(low) - ratio * np.sqrt(top))
        got = to_numpy(
            two_step_target(
                keras.ops.convert_to_tensor(z, "float32"),
                keras.ops.convert_to_tensor(z_low, "float32"),
                keras.ops.convert_to_tensor(np.full(4, top), "float32"),
                keras.ops.convert_to_tensor(np.full(4, low), "float32"),
            )
        )
        # The float64 target is exact: one step with it lands on z_low.
        np.testing.assert_allclose(ddim64(z, ref, top, low), z_low, atol=1e-9)
        # The backend's float32 computation agrees (relative to the
        # target's size; at high noise x~ amplifies z's round-off).
        np.testing.assert_allclose(got, ref, atol=2e-4 * max(1.0, np.abs(ref).max()))
    # The last step lands on the clean image: x~ = z''.
    assert levels[0] == 1.0


def test_truncated_snr_weight():
    abar = np.array([0.999, 0.5, 0.2, 1e-6])
    w = to_numpy(truncated_snr_weight(keras.ops.convert_to_tensor(abar, "float32")))
    np.testing.assert_allclose(w, [999.0, 1.0, 1.0, 1.0], rtol=1e-3)


def test_trailing_grids_nest():
    for T in (1000, 999, 64):
        for n in (1, 2, 3, 4, 8, 16):
            if 2 * n <= T:
                np.testing.assert_array_equal(
                    trailing_timesteps(T, 2 * n)[1::2], trailing_timesteps(T, n)
                )
    np.testing.assert_array_equal(trailing_timesteps(1000, 4), [249, 499, 749, 999])
