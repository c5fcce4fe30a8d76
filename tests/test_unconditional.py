"""Unconditional stages (num_classes=0) through every layer: network, data,
fit, sampling, a cascade (also mixed with a class-conditional base), saving,
and the recipes."""

import importlib
import os
import sys

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import ROOT
from conftest import to_numpy
from PIL import Image

import keras_cdm

MICRO = {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "norm_groups": 4}
UNCOND = dict(MICRO, num_classes=0)


def _stage(preset, **network):
    keras.utils.set_random_seed(0)
    model = keras_cdm.DiffusionModel.from_preset(preset, network_overrides=network)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def test_network_has_no_class_embedding():
    net = keras_cdm.UNet(
        image_size=8,
        base_channels=8,
        channel_mult=(1, 2),
        num_res_blocks=1,
        norm_groups=4,
        attention_resolutions=(),
        num_classes=None,
    )
    assert net.num_classes == 0
    assert "label_embed" not in [layer.name for layer in net.layers]
    x = {
        "x_t": np.zeros((2, 8, 8, 3), "float32"),
        "t": np.array([1, 2]),
        "labels": np.array([0, 5]),
    }
    y = {**x, "labels": np.array([3, 1])}
    np.testing.assert_allclose(to_numpy(net(x)), to_numpy(net(y)))  # labels unused
    with pytest.raises(ValueError, match="num_classes` must be an int >= 0"):
        keras_cdm.UNet(image_size=8, num_classes=-1)


# The model logic is the same on every backend, and compilation makes this
# 3.5 min on TensorFlow and 1.3 on JAX here (torch: seconds): from the torch
# pass by default, `-m large` elsewhere (the other tests here run everywhere).
@pytest.mark.parametrize(
    "_", [pytest.param(0, marks=[] if BACKEND == "torch" else [pytest.mark.large])]
)
def test_fit_sample_save_and_cascade(_, tmp_path):
    source = keras_cdm.data.synthetic(num_images=16, resolution=32).without_labels()
    assert source.num_classes == 0 and source.labels is None
    base, sr = _stage("base16_tiny", **UNCOND), _stage("sr16to32_tiny", **UNCOND)
    assert base.unconditional and sr.unconditional
    ds = keras_cdm.data.base_dataset(source, 16, 4, seed=0)
    assert ds[0].shape == (4, 16, 16, 3)  # images alone
    assert np.isfinite(base.fit(ds, steps_per_epoch=2, verbose=0).history["loss"]).all()
    sr_ds = keras_cdm.data.super_res_dataset(source, 16, 32, 4, seed=0)
    assert set(sr_ds[0]) == {"high_res", "low_res"}
    if BACKEND == "torch":  # the label handling is the base stage's (compiled above)
        assert np.isfinite(sr.fit(sr_ds, steps_per_epoch=2, verbose=0).history["loss"]).all()
    images = np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 3)).astype("float32")
    base.fit(images, batch_size=4, epochs=1, verbose=0)  # arrays without labels
    x = base.sample(num_images=3, seed=0, num_steps=2)
    assert x.shape == (3, 16, 16, 3) and np.isfinite(x).all()
    path = str(tmp_path / "base.keras")
    base.save(path)
    again = keras_cdm.models.load_stage(path)
    assert again.unconditional
    np.testing.assert_allclose(again.sample(num_images=3, seed=0, num_steps=2), x, atol=1e-5)
    cascade = keras_cdm.CascadeSampler([base, sr], aug_levels=[10], num_steps=2)
    assert cascade.num_classes == 0
    out = cascade.sample(num_images=3, seed=0)
    assert out.shape == (3, 32, 32, 3)
    # Errors that say what to pass instead.
    with pytest.raises(ValueError, match="unconditional.*num_images"):
        base.sample([0, 1], seed=0, num_steps=2)
    with pytest.raises(ValueError, match="unconditional.*num_images"):
        cascade.sample(labels=[0, 1])
    # The sampling recipe: no labels asked for; the .npz says -1, unlabelled.
    sr_path = str(tmp_path / "sr.keras")
    sr.save(sr_path)
    sys.path.insert(0, os.path.join(ROOT, "recipes"))
    sample_cascade = importlib.import_module("sample_cascade")
    _, npz = sample_cascade.main(
        [path, sr_path, "--aug_levels", "10", "--num_steps", "2", "--num_images", "3"]
        + ["--output_dir", str(tmp_path / "samples")]
    )
    samples = np.load(npz)
    assert samples["images"].shape == (3, 32, 32, 3) and (samples["labels"] == -1).all()
    with pytest.raises(ValueError, match="batch holds labels"):
        base.fit(images, np.zeros(4, "int32"), batch_size=2, verbose=0)
    with pytest.raises(ValueError, match="no labels to drop"):
        keras_cdm.DiffusionModel.from_preset(
            "base16_tiny", network_overrides=UNCOND, label_dropout=0.1
        )
    short = keras_cdm.DiffusionModel.from_preset(
        "base16_tiny", network_overrides=UNCOND, diffusion={"num_timesteps": 10}
    )
    bpd = short.compute_bpd(images[:2])
    assert bpd.shape == (2,) and np.isfinite(bpd).all() and (bpd > 0).all()


def test_unconditional_sr_under_a_conditional_base():
    base = _stage("base16_tiny", **MICRO)
    sr = _stage("sr16to32_tiny", **UNCOND)
    cascade = keras_cdm.CascadeSampler([base, sr], aug_levels=[10], num_steps=2)
    assert cascade.num_classes == 10
    out, stages = cascade.sample(labels=[0, 3], seed=0, return_all_stages=True)
    assert out.shape == (2, 32, 32, 3) and stages[0].shape == (2, 16, 16, 3)
    with pytest.raises(ValueError, match="class-conditional.*pass `labels`"):
        base.sample(num_images=2, seed=0, num_steps=2)


def test_image_folder_without_classes(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(5):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    source = keras_cdm.data.from_image_folder(str(tmp_path))
    assert source.num_classes == 0 and source.size == 5 and source.labels is None
    (tmp_path / "cats").mkdir()
    with pytest.raises(ValueError, match="both class sub-folders.*and images"):
        keras_cdm.data.from_image_folder(str(tmp_path))
    with pytest.raises(ValueError, match="unlabelled source has no classes"):
        keras_cdm.data.from_arrays(np.zeros((2, 8, 8, 3), "uint8"), num_classes=3)


@pytest.mark.skipif(BACKEND != "torch", reason="recipe logic; runs from the torch pass")
def test_recipe_infers_or_is_told_unconditional(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "recipes"))
    common = importlib.import_module("common")
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    net = '{"base_channels": 8, "norm_groups": 4}'
    final = common.main(
        "base16",
        [
            "--smoke",
            "--dataset",
            str(folder),
            "--network",
            net,
            "--output_dir",
            str(tmp_path / "a"),
        ],
    )
    assert keras_cdm.models.load_stage(final).unconditional
    final = common.main(
        "sr16to32",
        ["--smoke", "--unconditional", "--network", net, "--output_dir", str(tmp_path / "b")],
    )
    assert keras_cdm.models.load_stage(final).unconditional
    with pytest.raises(ValueError, match="no labels to drop"):
        common.main(
            "base16",
            ["--smoke", "--unconditional", "--label_dropout", "0.1", "--output_dir", str(tmp_path)],
        )
