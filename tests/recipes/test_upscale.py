"""recipes/upscale.py: your own images through SR stages (chained), and its
errors for bad files, stages and labels."""

import importlib
import os
import sys

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import ROOT
from PIL import Image

import keras_cdm

sys.path.insert(0, os.path.join(ROOT, "recipes"))
pytestmark = pytest.mark.skipif(
    BACKEND != "torch",
    reason="backend-agnostic recipe logic; runs once per CI pass, from torch (fastest here)",
)
MICRO = {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "norm_groups": 4}


def _stage(tmp_path, preset):
    keras.utils.set_random_seed(0)
    model = keras_cdm.DiffusionModel.from_preset(preset, network_overrides=MICRO)
    path = str(tmp_path / f"{preset}.keras")
    model.save(path)
    return path


def test_upscale_folder_chained_and_errors(tmp_path):
    upscale = importlib.import_module("upscale")
    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(photos / "wide.png")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(photos / "big.jpg")
    Image.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8)).save(photos / "small.png")
    sr32 = _stage(tmp_path, "sr16to32_tiny")
    sr64 = _stage(tmp_path, "sr32to64_tiny")
    out = tmp_path / "out"
    flags = ["--label", "2", "--num_steps", "2", "--sampler", "dpm++2m"]
    written, grid = upscale.main(
        [str(photos), "--stage", sr32, "--stage", sr64, "--out", str(out)] + flags
    )
    assert sorted(os.path.basename(w) for w in written) == ["big.png", "small.png", "wide.png"]
    for w in written:
        assert Image.open(w).size == (64, 64)
    assert Image.open(grid).size[0] > 64 * 3  # input, 32x32 and 64x64 side by side
    # The low-resolution input: centre crop, box filter (64 -> 16), padding (10 -> 16).
    big = np.asarray(Image.open(photos / "big.jpg").convert("RGB"), "float64")
    expected = big.reshape(16, 4, 16, 4, 3).mean(axis=(1, 3)) / 127.5 - 1
    np.testing.assert_allclose(upscale.to_low_res(big.astype("uint8"), 16), expected, atol=1e-4)
    small = upscale.to_low_res(np.full((10, 10, 3), 255, np.uint8), 16)
    assert small[0, 0, 0] == -1.0 and small[8, 8, 0] == 1.0

    base = _stage(tmp_path, "base16_tiny")
    cases = [
        ([str(photos), "--stage", base], "is a base stage"),
        ([str(photos), "--stage", sr64, "--stage", sr32], "cascade order"),
        ([str(photos), "--stage", sr32, "--label", "99"], r"--label 99.*classes \[0, 10\)"),
        ([str(tmp_path / "missing.png"), "--stage", sr32], "no such file or folder"),
    ]
    (photos / "broken.jpg").write_bytes(b"not an image")
    cases.append(([str(photos / "broken.jpg"), "--stage", sr32, "--label", "0"], "broken.jpg"))
    for argv, message in cases:
        with pytest.raises(ValueError, match=message):
            upscale.main(
                argv + ["--out", str(out)] + (["--label", "1"] if "--label" not in argv else [])
            )
    with pytest.raises(ValueError, match="--label is required"):
        upscale.main([str(photos / "wide.png"), "--stage", sr32, "--out", str(out)])
    # An unconditional SR stage takes no label.
    keras.utils.set_random_seed(0)
    free = keras_cdm.DiffusionModel.from_preset(
        "sr16to32_tiny", network_overrides=dict(MICRO, num_classes=0)
    )
    free_path = str(tmp_path / "free.keras")
    free.save(free_path)
    written, _ = upscale.main(
        [str(photos / "wide.png"), "--stage", free_path, "--out", str(tmp_path / "free")]
        + ["--num_steps", "2"]
    )
    assert Image.open(written[0]).size == (32, 32)
    with pytest.raises(ValueError, match="every --stage is unconditional"):
        upscale.main(
            [str(photos / "wide.png"), "--stage", free_path, "--out", str(out), "--label", "1"]
        )
