"""keras_cdm.sampling.upscale and SuperResDiffusionModel.with_low_res_size:
a stage at other sizes, with its weights, and images of any shape."""

import numpy as np
import pytest
from conftest import micro_network_config
from conftest import to_numpy
from conftest import torch_pass_only

import keras_cdm
from keras_cdm.models import SamplerSettings

# Backend-agnostic (NumPy around a stage's own sample): once per CI pass.
pytestmark = torch_pass_only
FAST = SamplerSettings(num_steps=2, sampler="dpm++2m")


def _stage(**kwargs):
    config = micro_network_config(image_size=8, low_res_size=4, learn_sigma=True)
    network = keras_cdm.SuperResUNet(**config)
    return keras_cdm.SuperResDiffusionModel(
        network, diffusion={"num_timesteps": 20, "var_type": "learned_range"}, **kwargs
    )


def test_with_low_res_size_runs_the_same_weights():
    stage = _stage()
    big = stage.with_low_res_size(8)
    assert (big.low_res_size, big.image_size) == (8, 16)
    # Attention stays at the same level of the U-Net (8x8 → 4 of 8, now 8 of 16).
    assert big.network.get_config()["attention_resolutions"] == (8,)
    back = big.with_low_res_size(4)
    rng = np.random.default_rng(0)
    inputs = {
        "x_t": rng.normal(size=(2, 8, 8, 3)).astype("float32"),
        "low_res": rng.normal(size=(2, 4, 4, 3)).astype("float32"),
        "t": np.array([3, 7]),
        "aug_level": np.array([0, 2]),
        "labels": np.array([0, 1]),
    }
    np.testing.assert_allclose(
        to_numpy(back.ema_network(inputs)),
        to_numpy(stage.ema_network(inputs)),
        atol=1e-5,
    )
    assert stage.with_low_res_size(4) is stage
    with pytest.raises(ValueError, match=r"2 levels.*multiple of 1|low_res_size"):
        stage.with_low_res_size(0)


def test_upscale_any_shape_whole_and_tiles():
    stage = _stage()
    rng = np.random.default_rng(1)
    images = [rng.uniform(-1, 1, (3, 7, 3)).astype("float32"), np.zeros((4, 4, 3), "float32")]
    for mode in ("whole", "tiles"):
        out = keras_cdm.sampling.upscale(
            stage, images, labels=[1, 2], mode=mode, seed=5, settings=FAST
        )
        assert [o.shape for o in out] == [(6, 14, 3), (8, 8, 3)]
        assert all(np.isfinite(o).all() and np.abs(o).max() <= 1 for o in out)
    # At the stage's own size, "whole" is the stage's own sample (same noise).
    alone = keras_cdm.sampling.upscale(stage, images[1:], labels=[2], seed=5, settings=FAST)
    direct = stage.sample(images[1][None], np.array([2]), seed=5, settings=FAST)
    np.testing.assert_allclose(alone[0], direct[0], atol=1e-5)
    # Each image is its own: the same result alone or beside another image.
    pair = keras_cdm.sampling.upscale(stage, [images[1], images[1]], [2, 2], seed=5, settings=FAST)
    np.testing.assert_allclose(pair[0], alone[0], atol=1e-5)
    with pytest.raises(ValueError, match="overlap"):
        keras_cdm.sampling.upscale(stage, images, [1, 2], mode="tiles", overlap=4)
    with pytest.raises(ValueError, match=r"Image 0 must be \(height, width, 3\)"):
        keras_cdm.sampling.upscale(stage, [np.zeros((4, 4))], [1])
    # The micro network attends at 4x4 of 8x8 (level 1): a 700x700 image would
    # attend over 700x700 pixels at once.
    assert keras_cdm.sampling.upscaling.attention_tokens(stage, 4) == 16
    with pytest.raises(ValueError, match=r"Image 0 \(700x700\) is too large.*mode='tiles'"):
        keras_cdm.sampling.upscale(stage, [np.zeros((700, 700, 3), "float32")], [1])
    with pytest.raises(ValueError, match="`mode` must be one of"):
        keras_cdm.sampling.upscale(stage, images, [1, 2], mode="tiled")
