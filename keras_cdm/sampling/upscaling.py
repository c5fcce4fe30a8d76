"""Upscaling images of any size with a super-resolution stage.

A stage is trained at one size (16→32, say), but its U-Net is
convolutional, so it can run on other sizes in two ways:

- `"whole"`: the stage rebuilt at the image's own size
  (`SuperResDiffusionModel.with_low_res_size`), one reverse process per
  image. Attention then sees the whole image; its memory grows with the
  square of the image's pixel count, so an image whose largest attention
  map would exceed `MAX_ATTENTION_TOKENS` pixels is refused (use tiles).
- `"tiles"`: overlapping tiles of the stage's own low-resolution size, each
  sampled on its own and blended with linear ramps over the overlap. Any
  size, fixed memory, but the tiles do not see each other, so they can
  disagree where they meet.

`docs/UPSCALE.md` compares the two with bicubic upsampling on CIFAR-10 test
images (`python tools/upscale_quality.py`).
"""

import numpy as np

from keras_cdm.models.super_res_diffusion_model import SuperResDiffusionModel
from keras_cdm.utils.seeds import check_seed
from keras_cdm.utils.seeds import derive_seed
from keras_cdm.utils.validation import check_positive_int

MODES = ("whole", "tiles")


def _pad_to(image, height, width):
    """Mirror-pads `(h, w, c)` at the bottom and right to `(height, width)`."""
    h, w = image.shape[:2]
    return np.pad(image, ((0, height - h), (0, width - w), (0, 0)), mode="symmetric")


def _ramp(n, ramp):
    """1D blending weights: linear over `ramp` pixels at both ends."""
    i = np.arange(n, dtype=np.float32) + 0.5
    return np.clip(np.minimum(i, n - i) / max(ramp, 1), 1e-3, 1.0)


def _tile_starts(length, tile, stride):
    starts = list(range(0, max(length - tile, 0) + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


MAX_ATTENTION_TOKENS = 128 * 128  # 1 GiB of float32 scores per image and head


def attention_tokens(stage, low_res_size):
    """Pixels of the largest self-attention map of `stage` rebuilt for
    `low_res_size` inputs (its middle block attends at the lowest level)."""
    levels = len(stage.network.get_config()["channel_mult"])
    image_size = low_res_size * (stage.image_size // stage.low_res_size)
    attended = stage.attention_resolutions_at(image_size) + (image_size // 2 ** (levels - 1),)
    return max(attended) ** 2


class _Sizes:
    """`stage` rebuilt per low-resolution size, built once each."""

    def __init__(self, stage):
        self.stage = stage
        self.built = {stage.low_res_size: stage}

    def __call__(self, size):
        if size not in self.built:
            self.built[size] = self.stage.with_low_res_size(size)
        return self.built[size]


def upscale(
    stage,
    images,
    labels=None,
    mode="whole",
    aug_level=0,
    seed=None,
    settings=None,
    batch_size=16,
    overlap=None,
    verbose=False,
):
    """Upscales images of any sizes by `stage`'s factor.

    Args:
        stage: `keras_cdm.SuperResDiffusionModel`.
        images: list of float arrays `(height, width, channels)` in
            [-1, 1], any sizes (`"whole"`: sizes of any shape; each is
            mirror-padded at its bottom and right to a square the stage can
            take, and the output cropped back).
        labels: ints, one per image (class-conditional stages), or `None`.
        mode: `"whole"` or `"tiles"` (see the module).
        aug_level: int. Conditioning-augmentation level `s` (0: clean).
        seed: int or None. Each image draws from its own noise streams, so
            an image's result does not depend on the others.
        settings: `keras_cdm.models.SamplerSettings` of the stage.
        batch_size: int. Images (or tiles) per reverse process.
        overlap: int. `"tiles"`: overlap of neighbouring tiles in
            low-resolution pixels. Defaults to half a tile.
        verbose: bool. Progress bars.

    Returns:
        A list of float32 arrays `(factor * height, factor * width,
        channels)`, in the order of `images`.

    Example:

    >>> sr = keras_cdm.SuperResDiffusionModel.from_preset("sr16to32_tiny")
    >>> images = [np.zeros((24, 40, 3), "float32"), np.zeros((8, 8, 3), "float32")]
    >>> out = keras_cdm.sampling.upscale(sr, images, labels=[1, 2], settings=
    ...     keras_cdm.models.SamplerSettings(num_steps=2, sampler="dpm++2m"))
    >>> [o.shape for o in out]
    [(48, 80, 3), (16, 16, 3)]
    """
    if not isinstance(stage, SuperResDiffusionModel):
        raise ValueError(
            f"Upscaling needs a SuperResDiffusionModel. Received: {type(stage).__name__}"
        )
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
    check_positive_int("batch_size", batch_size)
    seed = check_seed(seed)
    images = [np.asarray(image, np.float32) for image in images]
    for i, image in enumerate(images):
        if image.ndim != 3 or image.shape[-1] != stage.channels or 0 in image.shape:
            raise ValueError(
                f"Image {i} must be (height, width, {stage.channels}). Received: {image.shape}"
            )
    if stage.unconditional:
        if labels is not None:
            raise ValueError("An unconditional stage takes no labels. Received: labels")
        labels = [None] * len(images)
    else:
        labels = stage.resolve_labels(labels, len(images))
    if mode == "whole":
        return _upscale_whole(stage, images, labels, aug_level, seed, settings, batch_size, verbose)
    overlap = stage.low_res_size // 2 if overlap is None else overlap
    if not 0 <= overlap < stage.low_res_size:
        raise ValueError(
            f"`overlap` must be in [0, {stage.low_res_size}) low-resolution pixels. "
            f"Received: overlap={overlap}"
        )
    return [
        _upscale_tiled(
            stage,
            image,
            label,
            aug_level,
            derive_seed(seed, i),
            settings,
            batch_size,
            overlap,
            verbose,
        )
        for i, (image, label) in enumerate(zip(images, labels))
    ]


def _sample(stage, low_res, labels, indices, aug_level, seed, settings, verbose):
    """`stage.sample` of a batch (labels None for an unconditional stage)."""
    return stage.sample(
        low_res,
        None if labels[0] is None else np.asarray(labels, "int32"),
        aug_level=aug_level,
        seed=seed,
        image_indices=indices,
        settings=settings,
        verbose=verbose,
    )


def _upscale_whole(stage, images, labels, aug_level, seed, settings, batch_size, verbose):
    factor = stage.image_size // stage.low_res_size
    step = stage.low_res_size_step
    sizes = _Sizes(stage)
    side = [step * -(-max(image.shape[:2]) // step) for image in images]
    for i, s in enumerate(side):
        tokens = attention_tokens(stage, s)
        if tokens > MAX_ATTENTION_TOKENS:
            raise ValueError(
                f"Image {i} ({images[i].shape[0]}x{images[i].shape[1]}) is too large to "
                f"upscale whole: the stage would attend over {tokens:,} pixels at once "
                f"({tokens**2 * 4 / 2**30:.0f} GiB per image and head; at most "
                f"{MAX_ATTENTION_TOKENS:,}). Use mode='tiles' (--mode tiles)."
            )
    out = [None] * len(images)
    for s in sorted(set(side)):
        members = [i for i in range(len(images)) if side[i] == s]
        for start in range(0, len(members), batch_size):
            idx = members[start : start + batch_size]
            batch = np.stack([_pad_to(images[i], s, s) for i in idx])
            result = _sample(
                sizes(s), batch, [labels[i] for i in idx], idx, aug_level, seed, settings, verbose
            )
            for i, r in zip(idx, result):
                h, w = images[i].shape[:2]
                out[i] = r[: h * factor, : w * factor]
    return out


def _upscale_tiled(stage, image, label, aug_level, seed, settings, batch_size, overlap, verbose):
    size = stage.low_res_size
    factor = stage.image_size // size
    h, w = image.shape[:2]
    padded = _pad_to(image, max(h, size), max(w, size))
    stride = size - overlap
    corners = [
        (top, left)
        for top in _tile_starts(padded.shape[0], size, stride)
        for left in _tile_starts(padded.shape[1], size, stride)
    ]
    total = np.zeros((padded.shape[0] * factor, padded.shape[1] * factor, image.shape[-1]))
    weight = np.zeros(total.shape[:2] + (1,))
    window = np.outer(
        _ramp(stage.image_size, overlap * factor), _ramp(stage.image_size, overlap * factor)
    )[..., None]
    for start in range(0, len(corners), batch_size):
        idx = list(range(start, min(start + batch_size, len(corners))))
        tiles = np.stack([padded[y : y + size, x : x + size] for y, x in (corners[i] for i in idx)])
        result = _sample(stage, tiles, [label] * len(idx), idx, aug_level, seed, settings, verbose)
        for i, r in zip(idx, result):
            y, x = corners[i][0] * factor, corners[i][1] * factor
            total[y : y + stage.image_size, x : x + stage.image_size] += window * r
            weight[y : y + stage.image_size, x : x + stage.image_size] += window
    return (total / weight)[: h * factor, : w * factor].astype(np.float32)
