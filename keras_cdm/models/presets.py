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
from keras_cdm.networks.architectures import PAPER_NAMES

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


# Appendix B: batch sizes and steps of the paper's training.
_PAPER_TRAINING = {
    "base32": (2048, 700_000, "base 32x32 (paper, Appendix B)"),
    "sr32to64": (2048, 400_000, "SR 32→64 (paper, Appendix B), Gaussian augmentation"),
    "sr64to128": (1024, 500_000, "SR 64→128 (paper, Appendix B), blur augmentation"),
    "sr64to256": (1024, 500_000, "SR 64→256 (paper, Appendix B), blur augmentation"),
    "base16": (2048, 700_000, "base 16x16 (paper's 16→64 ablation, assumed architecture)"),
    "sr16to64": (2048, 400_000, "SR 16→64 (paper's ablation), Gaussian augmentation"),
    "sr16to32": (2048, 400_000, "SR 16→32 (this project's CIFAR-10 ablation)"),
}


def _preset(name, architecture, diffusion, batch_size, train_steps, description, ema_decay):
    entry = ARCHITECTURES[architecture]
    model_class = (
        "SuperResDiffusionModel" if entry["class_name"] == "SuperResUNet" else ("DiffusionModel")
    )
    kwargs = {"ema_decay": ema_decay}
    if model_class == "SuperResDiffusionModel":
        size = entry["config"]["image_size"]
        # The paper's choice: Gaussian noise augmentation up to 64x64, blur
        # at 128 and 256.
        kwargs["augmentation"] = "blur" if size >= 128 else "gaussian"
    return StagePreset(
        name=name,
        description=description,
        model_class=model_class,
        architecture=architecture,
        diffusion=dict(diffusion),
        model_kwargs=kwargs,
        batch_size=batch_size,
        train_steps=train_steps,
    )


PRESETS = {}
for _name in PAPER_NAMES:
    _batch, _steps, _what = _PAPER_TRAINING[_name]
    _high = ARCHITECTURES[_name]["config"]["image_size"] >= 128
    PRESETS[_name] = _preset(
        _name, _name, _DIFFUSION_HIGH if _high else _DIFFUSION_LOW, _batch, _steps, _what, 0.9999
    )
    _cpu = (
        _DIFFUSION_CPU_SR
        if ARCHITECTURES[_name]["class_name"] == "SuperResUNet"
        else _DIFFUSION_CPU
    )
    PRESETS[f"{_name}_small"] = _preset(
        f"{_name}_small",
        f"{_name}_small",
        _cpu,
        32,
        20_000,
        f"{_what.split(' (')[0]}, small CPU variant",
        0.9999,
    )
    PRESETS[f"{_name}_tiny"] = _preset(
        f"{_name}_tiny",
        f"{_name}_tiny",
        _cpu,
        32,
        20_000,
        f"{_what.split(' (')[0]}, tiny variant for tests and the demo",
        0.999,
    )


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
