"""Named stage configurations: the network and the diffusion of each stage.

Paper presets follow CDM's Appendix B as summarised in the project's paper
notes (`shared/docs/PAPER.md`, which says to check them against the PDF):
channels, multipliers, residual blocks, attention resolutions, heads and
dropout per stage; 4000 steps, learned variance and the hybrid loss at 32 and
64; fixed variance at 128 and 256. Where the notes are silent the value is
marked "assumed" and follows ADM / Improved DDPM, whose U-Net CDM uses.

`_tiny` presets train in seconds on a CPU (tests, the README demo);
`_small` presets are a few hundred thousand to a few million parameters for
CPU experiments and benchmarks.
"""

import copy

_CIFAR_LIKE_CLASSES = 1000  # ImageNet, the paper's data set.


def _stage(network, diffusion):
    return {"network": network, "diffusion": diffusion}


_PAPER_DIFFUSION_LOW = {
    # 4000 steps, learned variance, hybrid loss at 32 and 64 (Appendix B).
    "schedule": "cosine",  # assumed: Improved DDPM's schedule.
    "num_timesteps": 4000,
    "mean_type": "epsilon",
    "var_type": "learned_range",
    "loss_type": "hybrid",
}
_PAPER_DIFFUSION_HIGH = {
    # Fixed variance at 128 and 256 (Appendix B); 1000 steps assumed
    # (sampled with 100 respaced steps, as in the paper).
    "schedule": "cosine",
    "num_timesteps": 1000,
    "mean_type": "epsilon",
    "var_type": "fixed_large",
    "loss_type": "simple",
}

PRESETS = {
    # Appendix B: ch 256, mult 1,2,3,4, 6 blocks, attention at 8 and 16,
    # 4 heads, dropout 0.1.
    "base32": _stage(
        {
            "image_size": 32,
            "base_channels": 256,
            "channel_mult": (1, 2, 3, 4),
            "num_res_blocks": 6,
            "attention_resolutions": (16, 8),
            "num_heads": 4,
            "dropout": 0.1,
            "num_classes": _CIFAR_LIKE_CLASSES,
        },
        _PAPER_DIFFUSION_LOW,
    ),
    # Appendix B: ch 256, mult 1,2,3,4, 5 blocks, attention 8 and 16, 4 heads.
    "sr32to64": _stage(
        {
            "image_size": 64,
            "low_res_size": 32,
            "base_channels": 256,
            "channel_mult": (1, 2, 3, 4),
            "num_res_blocks": 5,
            "attention_resolutions": (16, 8),
            "num_heads": 4,
            "dropout": 0.1,
            "num_classes": _CIFAR_LIKE_CLASSES,
        },
        _PAPER_DIFFUSION_LOW,
    ),
    # Appendix B: ch 128, mult 1,2,4,8,8, 3 blocks, attention at 16, 1 head.
    "sr64to128": _stage(
        {
            "image_size": 128,
            "low_res_size": 64,
            "base_channels": 128,
            "channel_mult": (1, 2, 4, 8, 8),
            "num_res_blocks": 3,
            "attention_resolutions": (16,),
            "num_heads": 1,
            "dropout": 0.0,
            "num_classes": _CIFAR_LIKE_CLASSES,
        },
        _PAPER_DIFFUSION_HIGH,
    ),
    # Appendix B: ch 128, mult 1,2,4,4,8,8, 3 blocks, attention at 16, 1 head.
    "sr64to256": _stage(
        {
            "image_size": 256,
            "low_res_size": 64,
            "base_channels": 128,
            "channel_mult": (1, 2, 4, 4, 8, 8),
            "num_res_blocks": 3,
            "attention_resolutions": (16,),
            "num_heads": 1,
            "dropout": 0.0,
            "num_classes": _CIFAR_LIKE_CLASSES,
        },
        _PAPER_DIFFUSION_HIGH,
    ),
    # The 16→64 ablation (Section 4.4): the notes give no architecture; we
    # assume the 32-base / 32→64 settings with one level fewer at 16.
    "base16": _stage(
        {
            "image_size": 16,
            "base_channels": 256,
            "channel_mult": (1, 2, 3),
            "num_res_blocks": 6,
            "attention_resolutions": (8, 4),
            "num_heads": 4,
            "dropout": 0.1,
            "num_classes": _CIFAR_LIKE_CLASSES,
        },
        _PAPER_DIFFUSION_LOW,
    ),
    "sr16to64": _stage(
        {
            "image_size": 64,
            "low_res_size": 16,
            "base_channels": 256,
            "channel_mult": (1, 2, 3, 4),
            "num_res_blocks": 5,
            "attention_resolutions": (16, 8),
            "num_heads": 4,
            "dropout": 0.1,
            "num_classes": _CIFAR_LIKE_CLASSES,
        },
        _PAPER_DIFFUSION_LOW,
    ),
    # 16→32: the CIFAR-10 ablation of this project (not in the paper).
    "sr16to32": _stage(
        {
            "image_size": 32,
            "low_res_size": 16,
            "base_channels": 256,
            "channel_mult": (1, 2, 3, 4),
            "num_res_blocks": 5,
            "attention_resolutions": (16, 8),
            "num_heads": 4,
            "dropout": 0.1,
            "num_classes": _CIFAR_LIKE_CLASSES,
        },
        _PAPER_DIFFUSION_LOW,
    ),
}

_SMALL_DIFFUSION = dict(_PAPER_DIFFUSION_LOW, num_timesteps=1000)
_TINY_DIFFUSION = dict(_PAPER_DIFFUSION_LOW, num_timesteps=1000)


def _scaled(name, base_channels, channel_mult, num_res_blocks, attention_levels, diffusion):
    """A smaller variant of a paper preset: same resolutions, fewer channels."""
    network = copy.deepcopy(PRESETS[name]["network"])
    size = network["image_size"]
    levels = tuple(channel_mult)
    # Add levels until the lowest resolution is at most 16, so attention
    # there stays cheap at every image size.
    while size // 2 ** (len(levels) - 1) > 16:
        levels = levels + (levels[-1],)
    network.update(
        {
            "base_channels": base_channels,
            "channel_mult": levels,
            "num_res_blocks": num_res_blocks,
            # Attention at the lowest `attention_levels` resolutions.
            "attention_resolutions": tuple(
                size // 2 ** (len(levels) - 1 - i) for i in range(attention_levels)
            ),
            "num_heads": 1,
            "head_channels": None,
            "dropout": 0.0,
            "num_classes": 10,
            "norm_groups": 8,
        }
    )
    return _stage(network, diffusion)


for _name in list(PRESETS):
    PRESETS[f"{_name}_tiny"] = _scaled(_name, 16, (1, 2), 1, 1, _TINY_DIFFUSION)
    PRESETS[f"{_name}_small"] = _scaled(_name, 64, (1, 2, 2), 2, 1, _SMALL_DIFFUSION)


def _is_super_res(name):
    return "low_res_size" in PRESETS[name]["network"]


def presets_for(cls):
    """Names of the presets whose network `cls` builds."""
    from keras_cdm.networks.super_res_unet import SuperResUNet

    want_sr = issubclass(cls, SuperResUNet)
    return sorted(n for n in PRESETS if _is_super_res(n) == want_sr)


def get_preset(name):
    """Returns a deep copy of `{"network": ..., "diffusion": ...}` for `name`."""
    if name not in PRESETS:
        raise ValueError(
            f"Unknown preset. Expected one of {sorted(PRESETS)}. Received: name={name!r}"
        )
    return copy.deepcopy(PRESETS[name])


def get_preset_config(cls, name):
    """The network config of preset `name`, checked against the class `cls`."""
    preset = get_preset(name)
    if name not in presets_for(cls):
        raise ValueError(
            f"Preset {name!r} is not a {cls.__name__} preset. Expected one of {presets_for(cls)}."
        )
    network = preset["network"]
    network.setdefault("learn_sigma", preset["diffusion"]["var_type"] == "learned_range")
    return network
