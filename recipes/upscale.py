"""Upscale your own images with trained super-resolution stages.

    KERAS_BACKEND=jax python recipes/upscale.py photos/ --stage runs/sr16to32/sr16to32.keras \\
        --out runs/upscaled --label 3 --aug_level 0 --num_steps 50 --sampler dpm++2m

Reads PNG/JPEG files (a folder is read without recursing) of any size. Each
image is brought to the first stage's low resolution: its centred square
crop (the largest that fits), resized with the box filter when the side is
an integer multiple of the target (the filter the stages were trained on)
and anti-aliased bilinear otherwise; images smaller than the target are
padded, not upsampled, to keep their pixels (pad with `--pad_value`). Then
every `--stage` runs in turn (several SR stages chain: 16→32 then 32→64),
each conditioned on the last output at `--aug_level` (0: clean). Writes one
PNG per input with the same name (`.png`) and `comparison.png`: each row the
low-resolution input, then each stage's output.

Labels: for class-conditional stages `--label k` names the class of every
image (the conditioning image carries most of the content; the label steers
texture and detail); unconditional stages take none.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import numpy as np  # noqa: E402

import keras_cdm  # noqa: E402
from keras_cdm.data.sources import IMAGE_EXTENSIONS  # noqa: E402
from keras_cdm.data.stage_dataset import resize_square  # noqa: E402
from keras_cdm.data.stage_dataset import square_crop_offsets  # noqa: E402
from keras_cdm.utils.images import make_grid  # noqa: E402
from keras_cdm.utils.images import save_png  # noqa: E402
from keras_cdm.utils.images import to_uint8  # noqa: E402


def list_images(inputs):
    """Image files from files and folders (a folder's images, sorted)."""
    files = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(item, f)
                for f in os.listdir(item)
                if f.lower().endswith(IMAGE_EXTENSIONS)
            )
            if not found:
                raise ValueError(f"{item!r}: the folder holds no images ({IMAGE_EXTENSIONS}).")
            files += found
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise ValueError(f"{item!r}: no such file or folder.")
    names = [os.path.splitext(os.path.basename(f))[0] for f in files]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ValueError(f"Two inputs would write the same output file: {clash[0]}.png")
    return files


def to_low_res(image, size, pad_value=0):
    """uint8 `(h, w, 3)` → float32 `(size, size, 3)` in [-1, 1] (see above)."""
    side, top, left = square_crop_offsets(*image.shape[:2])
    square = image[top : top + side, left : left + side]
    if side < size:
        out = np.full((size, size, 3), pad_value, np.uint8)
        o = (size - side) // 2
        out[o : o + side, o : o + side] = square
        square = out
    return resize_square(square, size) / 127.5 - 1.0


def read_image(path):
    from keras_cdm.data.sources import _read_rgb

    return _read_rgb(path)  # a ValueError naming the file if it cannot be decoded


def load_stages(paths):
    stages = [keras_cdm.sampling.cascade_sampler._load_stage(p) for p in paths]
    for path, stage in zip(paths, stages):
        if not isinstance(stage, keras_cdm.SuperResDiffusionModel):
            raise ValueError(
                f"--stage {path!r} is a base stage ({type(stage).__name__}); upscaling needs "
                "super-resolution stages (SuperResDiffusionModel)."
            )
    for (pa, a), (pb, b) in zip(zip(paths, stages), zip(paths[1:], stages[1:])):
        if b.low_res_size != a.image_size:
            raise ValueError(
                f"--stage {pb!r} takes {b.low_res_size}x{b.low_res_size} inputs but {pa!r} "
                f"makes {a.image_size}x{a.image_size}: give the stages in cascade order."
            )
    return stages


def check_label(paths, stages, label):
    conditional = [(p, st) for p, st in zip(paths, stages) if not st.unconditional]
    if label is not None and not conditional:
        raise ValueError(f"--label {label}: every --stage is unconditional (no classes).")
    for path, stage in conditional:
        if label is None:
            raise ValueError(
                f"--label is required: --stage {path!r} is class-conditional "
                f"(classes [0, {stage.num_classes}))."
            )
        if not 0 <= label < stage.num_classes:
            raise ValueError(
                f"--label {label}: --stage {path!r} knows classes [0, {stage.num_classes})."
            )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    p.add_argument("--stage", action="append", required=True, help="an SR stage; repeat to chain")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--label", type=common.NON_NEGATIVE_INT, default=None)
    p.add_argument("--aug_level", type=common.NON_NEGATIVE_INT, nargs="+", default=[0])
    p.add_argument("--pad_value", type=int, default=0, choices=range(256), metavar="0..255")
    p.add_argument("--batch_size", type=common.POSITIVE_INT, default=16)
    p.add_argument("--seed", type=common.NON_NEGATIVE_INT, default=0)
    common.add_sampling_flags(p)
    args = p.parse_args(argv)
    files = list_images(args.inputs)
    stages = load_stages(args.stage)
    check_label(args.stage, stages, args.label)
    n = len(stages)
    aug = args.aug_level if len(args.aug_level) == n else args.aug_level * n
    if len(aug) != n:
        p.error(f"--aug_level: one value or one per stage ({n}). Received: {args.aug_level}")
    settings = keras_cdm.models.SamplerSettings.per_stage(n, **common.sampling_kwargs(args, n))
    low = np.stack(
        [to_low_res(read_image(f), stages[0].low_res_size, args.pad_value) for f in files]
    )
    labels = np.full((len(files),), 0 if args.label is None else args.label)
    outputs = [low]
    for k, (stage, s, setting) in enumerate(zip(stages, aug, settings)):
        parts = []
        for start in range(0, len(files), args.batch_size):
            idx = range(start, min(start + args.batch_size, len(files)))
            parts.append(
                stage.sample(
                    outputs[-1][start : idx.stop],
                    None if stage.unconditional else labels[start : idx.stop],
                    aug_level=s,
                    seed=keras_cdm.utils.seeds.derive_seed(args.seed, k),
                    image_indices=idx,
                    settings=setting,
                )
            )
        outputs.append(np.concatenate(parts))
    os.makedirs(args.out, exist_ok=True)
    written = []
    for f, image in zip(files, to_uint8(outputs[-1])):
        name = os.path.splitext(os.path.basename(f))[0] + ".png"
        written.append(save_png(os.path.join(args.out, name), image))
    rows = [[to_uint8(o[i]) for o in outputs] for i in range(len(files))]
    grid = save_png(os.path.join(args.out, "comparison.png"), make_grid(rows))
    print(f"[keras_cdm] upscaled {len(files)} image(s) -> {args.out} (grid: {grid})")
    return written, grid


if __name__ == "__main__":
    main()
