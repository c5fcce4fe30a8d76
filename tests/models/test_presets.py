"""The preset table: every row builds what it says (backend-agnostic)."""

import pytest

from keras_cdm.models.presets import PRESETS
from keras_cdm.networks.architectures import ARCHITECTURES
from keras_cdm.networks.architectures import PAPER_NAMES


def test_every_paper_stage_has_small_and_tiny_rows():
    expected = {f"{n}{suffix}" for n in PAPER_NAMES for suffix in ("", "_small", "_tiny")}
    assert set(PRESETS) == expected


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_row_matches_its_architecture(name):
    preset = PRESETS[name]
    entry = ARCHITECTURES[preset.architecture]
    super_res = entry["class_name"] == "SuperResUNet"
    assert preset.model_class == ("SuperResDiffusionModel" if super_res else "DiffusionModel")
    if super_res:  # the paper's choice: Gaussian up to 64x64, blur at 128 and 256
        size = entry["config"]["image_size"]
        assert preset.model_kwargs["augmentation"] == ("blur" if size >= 128 else "gaussian")
        if not name.endswith(("_small", "_tiny")):
            assert preset.diffusion["mean_type"] == "epsilon"
        else:  # CPU-sized SR stages predict v
            assert preset.diffusion["mean_type"] == "v"
    else:
        assert "augmentation" not in preset.model_kwargs
    assert preset.diffusion["var_type"] == (
        "fixed_large"
        if entry["config"]["image_size"] >= 128 and name in PAPER_NAMES
        else "learned_range"
    )
