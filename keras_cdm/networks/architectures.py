"""Named network architectures: the U-Net of each stage preset.

This table holds only networks (class name and constructor config); the
whole stage (diffusion, augmentation, training defaults) is a preset in
`keras_cdm.models.presets`, which refers to these by name.

Paper architectures follow CDM's Appendix B as summarised in the project's
paper notes (`shared/docs/PAPER.md`, which says to check them against the
PDF): channels, multipliers, residual blocks, attention resolutions, heads
and dropout per stage. Where the notes are silent the value is marked
"assumed" and follows ADM / Improved DDPM, whose U-Net CDM uses. The output
doubles (`learn_sigma`) at 32 and 64, where the paper learns the variance.

`_tiny` variants train in seconds on a CPU (tests, the README demo);
`_small` ones are a few hundred thousand to a few million parameters for
CPU experiments and benchmarks.
"""

import copy

IMAGENET_CLASSES = 1000  # the paper's data set


def _unet(**config):
    return {"class_name": "UNet", "config": config}


def _sr_unet(**config):
    return {"class_name": "SuperResUNet", "config": config}


# learn_sigma: the paper learns the variance at 32 and 64, not at 128 and 256.
ARCHITECTURES = {
    # Appendix B: ch 256, mult 1,2,3,4, 6 blocks, attention at 8 and 16,
    # 4 heads, dropout 0.1.
    "base32": _unet(
        image_size=32,
        base_channels=256,
        channel_mult=(1, 2, 3, 4),
        num_res_blocks=6,
        attention_resolutions=(16, 8),
        num_heads=4,
        dropout=0.1,
        num_classes=IMAGENET_CLASSES,
        learn_sigma=True,
    ),
    # Appendix B: ch 256, mult 1,2,3,4, 5 blocks, attention 8 and 16, 4 heads.
    "sr32to64": _sr_unet(
        image_size=64,
        low_res_size=32,
        base_channels=256,
        channel_mult=(1, 2, 3, 4),
        num_res_blocks=5,
        attention_resolutions=(16, 8),
        num_heads=4,
        dropout=0.1,
        num_classes=IMAGENET_CLASSES,
        learn_sigma=True,
    ),
    # Appendix B: ch 128, mult 1,2,4,8,8, 3 blocks, attention at 16, 1 head.
    "sr64to128": _sr_unet(
        image_size=128,
        low_res_size=64,
        base_channels=128,
        channel_mult=(1, 2, 4, 8, 8),
        num_res_blocks=3,
        attention_resolutions=(16,),
        num_heads=1,
        dropout=0.0,
        num_classes=IMAGENET_CLASSES,
        learn_sigma=False,
    ),
    # Appendix B: ch 128, mult 1,2,4,4,8,8, 3 blocks, attention at 16, 1 head.
    "sr64to256": _sr_unet(
        image_size=256,
        low_res_size=64,
        base_channels=128,
        channel_mult=(1, 2, 4, 4, 8, 8),
        num_res_blocks=3,
        attention_resolutions=(16,),
        num_heads=1,
        dropout=0.0,
        num_classes=IMAGENET_CLASSES,
        learn_sigma=False,
    ),
    # The 16→64 ablation (Section 4.4): the notes give no architecture; we
    # assume the 32-base / 32→64 settings with one level fewer at 16.
    "base16": _unet(
        image_size=16,
        base_channels=256,
        channel_mult=(1, 2, 3),
        num_res_blocks=6,
        attention_resolutions=(8, 4),
        num_heads=4,
        dropout=0.1,
        num_classes=IMAGENET_CLASSES,
        learn_sigma=True,
    ),
    "sr16to64": _sr_unet(
        image_size=64,
        low_res_size=16,
        base_channels=256,
        channel_mult=(1, 2, 3, 4),
        num_res_blocks=5,
        attention_resolutions=(16, 8),
        num_heads=4,
        dropout=0.1,
        num_classes=IMAGENET_CLASSES,
        learn_sigma=True,
    ),
    # 16→32: the CIFAR-10 ablation of this project (not in the paper).
    "sr16to32": _sr_unet(
        image_size=32,
        low_res_size=16,
        base_channels=256,
        channel_mult=(1, 2, 3, 4),
        num_res_blocks=5,
        attention_resolutions=(16, 8),
        num_heads=4,
        dropout=0.1,
        num_classes=IMAGENET_CLASSES,
        learn_sigma=True,
    ),
}

PAPER_NAMES = tuple(ARCHITECTURES)


def _scaled(name, base_channels, channel_mult, num_res_blocks, attention_levels):
    """A smaller variant of a paper architecture: same resolutions, fewer channels."""
    entry = copy.deepcopy(ARCHITECTURES[name])
    network = entry["config"]
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
            # The small and tiny stages all learn the variance (1000 steps).
            "learn_sigma": True,
        }
    )
    return entry


for _name in PAPER_NAMES:
    ARCHITECTURES[f"{_name}_tiny"] = _scaled(_name, 16, (1, 2), 1, 1)
    ARCHITECTURES[f"{_name}_small"] = _scaled(_name, 64, (1, 2, 2), 2, 1)


def architecture_names(class_name):
    """Names of the architectures built by the network class `class_name`."""
    return sorted(n for n, a in ARCHITECTURES.items() if a["class_name"] == class_name)


def get_architecture(name, class_name):
    """A copy of the constructor config of architecture `name`, checked to be
    one that `class_name` builds."""
    if name not in ARCHITECTURES:
        raise ValueError(
            f"Unknown preset. Expected one of {sorted(ARCHITECTURES)}. Received: name={name!r}"
        )
    entry = ARCHITECTURES[name]
    if entry["class_name"] != class_name:
        raise ValueError(
            f"Preset {name!r} is not a {class_name} preset (it builds a "
            f"{entry['class_name']}). Expected one of {architecture_names(class_name)}."
        )
    return copy.deepcopy(entry["config"])
