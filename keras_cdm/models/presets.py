"""Stage presets: everything about a cascade stage under one name.

A preset says which model class it builds, its network (an architecture of
`keras_cdm.networks.architectures`), its diffusion, its conditioning
augmentation and its training defaults (batch size, steps, EMA decay), so
no caller has to guess any of them.

    >>> keras_cdm.presets.list_presets()["sr64to256"]
    'SR 64→256 (paper, Appendix B), blur augmentation'

Paper stages follow CDM's Appendix B (`shared/docs/PAPER.md`): 4000 steps,
learned variance and the hybrid loss at 32 and 64; fixed variance at 128 and
256, where the paper uses blur augmentation; batch sizes and steps of its
training. The cosine schedule is assumed (Improved DDPM's). `_small` and
`_tiny` stages keep the paper stage's resolutions with far fewer channels,
1000 steps and CPU-sized training defaults; their SR stages predict v.
"""

import copy
import dataclasses
import os

from keras_cdm.networks.architectures import ARCHITECTURES

_DIFFUSION_LOW = {
    # 4000 steps, learned variance, hybrid loss at 32 and 64 (Appendix B).
    "schedule": "cosine",  # assumed: Improved DDPM's schedule.
    "num_timesteps": 4000,
    "mean_type": "epsilon",
    "var_type": "learned_range",
    "loss_type": "hybrid",
}
_DIFFUSION_HIGH = {
    # Fixed variance at 128 and 256 (Appendix B); 1000 steps assumed
    # (sampled with 100 respaced steps, as in the paper).
    "schedule": "cosine",
    "num_timesteps": 1000,
    "mean_type": "epsilon",
    "var_type": "fixed_large",
    "loss_type": "simple",
}
# Small and tiny stages: the low-resolution recipe with 1000 steps.
_DIFFUSION_CPU = dict(_DIFFUSION_LOW, num_timesteps=1000)
# Small and tiny SR stages predict v (Salimans & Ho, 2022), not ε. An
# ε-prediction SR stage learns to use its conditioning very slowly: the ε loss
# weighs an error in x0 by ᾱ/(1−ᾱ), near 0 at the high noise levels where a
# sample's layout is decided, so after 3,000 CPU steps its samples still
# ignored their low-resolution input; v weighs it by 1/(1−ᾱ) >= 1 and the same
# network follows its input within 300 steps (`tools/sr_prediction_ab.py`,
# docs/RESULTS.md). Paper SR presets keep the paper's ε.
_DIFFUSION_CPU_SR = dict(_DIFFUSION_CPU, mean_type="v")


@dataclasses.dataclass(frozen=True)
class StagePreset:
    """A whole stage: what `DiffusionModel.from_preset(name)` builds and how
    the recipes train it.

    Attributes:
        name: str.
        description: str. One line.
        model_class: str. `"DiffusionModel"` or `"SuperResDiffusionModel"`.
        architecture: str. Name in `keras_cdm.networks.ARCHITECTURES`.
        diffusion: dict. `GaussianDiffusion` config.
        model_kwargs: dict. Model arguments (augmentation, EMA decay, ...).
        batch_size: int. Global training batch size.
        train_steps: int. Training steps.
    """

    name: str
    description: str
    model_class: str
    architecture: str
    diffusion: dict
    model_kwargs: dict
    batch_size: int
    train_steps: int

    @property
    def is_super_res(self):
        return self.model_class == "SuperResDiffusionModel"

    @property
    def network(self):
        """The network's constructor config (a copy)."""
        return copy.deepcopy(ARCHITECTURES[self.architecture]["config"])


# Every preset, one row each: name (also its architecture in
# `keras_cdm.networks.ARCHITECTURES`), diffusion, global batch, training
# steps, EMA decay, model class, conditioning augmentation (the paper's:
# Gaussian up to 64x64, blur at 128 and 256) and description. Paper rows
# follow Appendix B's batch sizes and steps.
_BASE, _SR = "DiffusionModel", "SuperResDiffusionModel"
_LOW, _HIGH, _CPU, _CPU_SR = _DIFFUSION_LOW, _DIFFUSION_HIGH, _DIFFUSION_CPU, _DIFFUSION_CPU_SR
# fmt: off
_TABLE = [
    ("base32", _LOW, 2_048, 700_000, 0.9999, _BASE, None, "base 32x32 (paper, Appendix B)"),
    ("base32_small", _CPU, 32, 20_000, 0.9999, _BASE, None, "base 32x32, small CPU variant"),
    ("base32_tiny", _CPU, 32, 20_000, 0.999, _BASE, None, "base 32x32, tiny variant for tests and the demo"),
    ("sr32to64", _LOW, 2_048, 400_000, 0.9999, _SR, "gaussian", "SR 32→64 (paper, Appendix B), Gaussian augmentation"),
    ("sr32to64_small", _CPU_SR, 32, 20_000, 0.9999, _SR, "gaussian", "SR 32→64, small CPU variant"),
    ("sr32to64_tiny", _CPU_SR, 32, 20_000, 0.999, _SR, "gaussian", "SR 32→64, tiny variant for tests and the demo"),
    ("sr64to128", _HIGH, 1_024, 500_000, 0.9999, _SR, "blur", "SR 64→128 (paper, Appendix B), blur augmentation"),
    ("sr64to128_small", _CPU_SR, 32, 20_000, 0.9999, _SR, "blur", "SR 64→128, small CPU variant"),
    ("sr64to128_tiny", _CPU_SR, 32, 20_000, 0.999, _SR, "blur", "SR 64→128, tiny variant for tests and the demo"),
    ("sr64to256", _HIGH, 1_024, 500_000, 0.9999, _SR, "blur", "SR 64→256 (paper, Appendix B), blur augmentation"),
    ("sr64to256_small", _CPU_SR, 32, 20_000, 0.9999, _SR, "blur", "SR 64→256, small CPU variant"),
    ("sr64to256_tiny", _CPU_SR, 32, 20_000, 0.999, _SR, "blur", "SR 64→256, tiny variant for tests and the demo"),
    ("base16", _LOW, 2_048, 700_000, 0.9999, _BASE, None, "base 16x16 (paper's 16→64 ablation, assumed architecture)"),
    ("base16_small", _CPU, 32, 20_000, 0.9999, _BASE, None, "base 16x16, small CPU variant"),
    ("base16_tiny", _CPU, 32, 20_000, 0.999, _BASE, None, "base 16x16, tiny variant for tests and the demo"),
    ("sr16to64", _LOW, 2_048, 400_000, 0.9999, _SR, "gaussian", "SR 16→64 (paper's ablation), Gaussian augmentation"),
    ("sr16to64_small", _CPU_SR, 32, 20_000, 0.9999, _SR, "gaussian", "SR 16→64, small CPU variant"),
    ("sr16to64_tiny", _CPU_SR, 32, 20_000, 0.999, _SR, "gaussian", "SR 16→64, tiny variant for tests and the demo"),
    ("sr16to32", _LOW, 2_048, 400_000, 0.9999, _SR, "gaussian", "SR 16→32 (this project's CIFAR-10 ablation)"),
    ("sr16to32_small", _CPU_SR, 32, 20_000, 0.9999, _SR, "gaussian", "SR 16→32, small CPU variant"),
    ("sr16to32_tiny", _CPU_SR, 32, 20_000, 0.999, _SR, "gaussian", "SR 16→32, tiny variant for tests and the demo"),
]
# fmt: on

PRESETS = {
    name: StagePreset(
        name=name,
        description=description,
        model_class=model_class,
        architecture=name,
        diffusion=dict(diffusion),
        model_kwargs={"ema_decay": ema} | ({"augmentation": augmentation} if augmentation else {}),
        batch_size=batch,
        train_steps=steps,
    )
    for name, diffusion, batch, steps, ema, model_class, augmentation, description in _TABLE
}


def get_preset(name):
    """The `StagePreset` called `name` (a copy)."""
    if isinstance(name, str) and name not in PRESETS and ("/" in name or os.sep in name):
        # A path, not a name: say that it is missing.
        raise FileNotFoundError(
            f"Preset directory not found: {name!r} does not exist. Expected a directory "
            "written by model.save_to_preset(dir) (e.g. weights/cifar10/base16), a .keras "
            f"file, or a preset name, one of {sorted(PRESETS)}."
        )
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(
            f"Unknown preset. Expected a preset name, one of {sorted(PRESETS)}, or a preset "
            f"directory written by model.save_to_preset(dir). Received: name={name!r}"
        )
    return copy.deepcopy(PRESETS[name])


def list_presets(model_class=None):
    """`{name: one-line description}` of every preset (of `model_class` only,
    a class name, when given)."""
    return {
        n: p.description
        for n, p in sorted(PRESETS.items())
        if model_class is None or p.model_class == model_class
    }
