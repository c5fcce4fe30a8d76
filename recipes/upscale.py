"""Upscale your own images with trained super-resolution stages.

    KERAS_BACKEND=jax python recipes/upscale.py photos/ --stage weights/cifar10/sr16to32 \\
        --label cat --out runs/upscaled

Reads PNG/JPEG files of any size and shape. Nothing is cropped or resized:
each output is exactly the stages' factor times its input's height and
width. `--mode whole` (default) runs each stage at the image's own size,
`--mode tiles` over overlapping tiles of the stage's own input size, blended
(`keras_cdm.sampling.upscale`; docs/UPSCALE.md measures both against
bicubic: whole keeps more detail in half the time, tiles bound the memory;
an image too large for whole is refused with a pointer to tiles).
Several `--stage`s chain (16→32 then 32→64), each conditioned on the last output at
`--aug_levels` (0: clean; one value or one per stage).

Labels, for class-conditional stages, one of: `--label cat` (a class name
the stage was saved with, or an id) for every image; `--labels FILE.csv`
with lines `file,label`; or an input folder with one sub-folder per class,
named like the classes (or by id). Unconditional stages take none.

Sampling defaults to 20 quadratic steps of SDE-DPM-Solver++(2M) per stage
(on the released CIFAR-10 base as good as 100 DDPM steps; docs/RESULTS.md),
with a progress bar per stage; the sampling flags are `sample_cascade.py`'s.
Writes `OUT/NAME.png` per input and `OUT/comparison.png` (a row per image:
the input, then each stage's output), and refuses to replace files already
in `OUT` unless `--overwrite`.
"""

import argparse
import csv
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import numpy as np  # noqa: E402

import keras_cdm  # noqa: E402
from keras_cdm.data.sources import IMAGE_EXTENSIONS  # noqa: E402
from keras_cdm.models import resolve_stage  # noqa: E402
from keras_cdm.models import stage_outline  # noqa: E402
from keras_cdm.utils.images import save_png  # noqa: E402
from keras_cdm.utils.images import to_uint8  # noqa: E402


def _images_in(folder):
    return sorted(
        os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS)
    )


def list_images(inputs):
    """`(files, folder labels)`: image files from files and folders; a folder
    of class sub-folders gives each image its sub-folder's name as label
    (None otherwise)."""
    files, folder_labels = [], []
    for item in inputs:
        if os.path.isdir(item):
            classes = sorted(d for d in os.listdir(item) if os.path.isdir(os.path.join(item, d)))
            loose = _images_in(item)
            if classes and loose:
                raise common.FlagError(
                    f"{item!r} holds both class sub-folders ({classes[0]!r}, ...) and images "
                    f"({os.path.basename(loose[0])!r}, ...): give one or the other."
                )
            found = [(f, c) for c in classes for f in _images_in(os.path.join(item, c))]
            found += [(f, None) for f in loose]
            if not found:
                raise common.FlagError(
                    f"{item!r}: the folder holds no images ({', '.join(IMAGE_EXTENSIONS)})."
                )
            files += [f for f, _ in found]
            folder_labels += [c for _, c in found]
        elif os.path.isfile(item):
            files.append(item)
            folder_labels.append(None)
        else:
            raise common.FlagError(f"{item!r}: no such file or folder.")
    names = [os.path.splitext(os.path.basename(f))[0] for f in files]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise common.FlagError(
            f"Two inputs would write the same output file: {clash[0]}.png "
            f"({', '.join(f for f, n in zip(files, names) if n == clash[0])})."
        )
    return files, folder_labels


def read_labels_csv(path, files):
    """A label per file from `file,label` lines (an optional `file,label`
    header); files are matched by name."""
    if not os.path.isfile(path):
        raise common.FlagError(f"--labels {path!r}: no such file.")
    table = {}
    with open(path, newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or (n == 1 and [c.strip().lower() for c in row] == ["file", "label"]):
                continue
            if len(row) != 2:
                raise common.FlagError(
                    f"--labels {path!r} line {n}: expected `file,label`. Received: {row}"
                )
            table[os.path.basename(row[0].strip())] = row[1].strip()
    missing = [f for f in files if os.path.basename(f) not in table]
    if missing:
        raise common.FlagError(
            f"--labels {path!r} has no line for {os.path.basename(missing[0])!r} "
            f"({len(missing)} of {len(files)} inputs have none)."
        )
    return [table[os.path.basename(f)] for f in files]


def _as_label(text):
    return int(text) if isinstance(text, str) and text.isdigit() else text


def resolve_labels(args, stages, files, folder_labels):
    """The labels, one per image, as the class-conditional stages take them
    (None when every stage is unconditional)."""
    given = {
        "--label": args.label is not None,
        "--labels": args.labels is not None,
        "class sub-folders": any(c is not None for c in folder_labels),
    }
    ways = [k for k, v in given.items() if v]
    conditional = [(p, st) for p, st in zip(args.stage, stages) if not st.unconditional]
    if len(ways) > 1:
        raise common.FlagError(f"Give labels one way; received {' and '.join(ways)}.")
    if not conditional:
        if ways:
            raise common.FlagError(f"{ways[0]}: every --stage is unconditional (no classes).")
        return None
    path, stage = conditional[0]
    if not ways:
        raise common.FlagError(
            f"--stage {path!r} is class-conditional ({stage.describe_classes()}): give "
            "--label for every image, --labels FILE.csv, or a folder of class sub-folders."
        )
    if args.label is not None:
        raw = [args.label] * len(files)
    elif args.labels is not None:
        raw = read_labels_csv(args.labels, files)
    else:
        loose = [f for f, c in zip(files, folder_labels) if c is None]
        if loose:
            raise common.FlagError(
                f"{loose[0]!r} is not in a class sub-folder: with class sub-folders every "
                "input needs one."
            )
        raw = folder_labels
    raw = [_as_label(v) for v in raw]
    # Names are read by the first stage saved with class names; the others
    # must name their classes alike, or not at all.
    path, stage = next(((p, st) for p, st in conditional if st.class_names), conditional[0])
    for p, st in conditional:
        if st.class_names and st.class_names != stage.class_names:
            raise common.StageError(
                f"--stage {p!r} and --stage {path!r} name their classes differently "
                f"({st.describe_classes()} vs {stage.describe_classes()})."
            )
    try:
        ids = stage.class_ids(raw)
        for p, st in conditional:
            path = p
            st.check_labels(ids)
    except ValueError as e:
        raise common.FlagError(f"{ways[0]}: --stage {path!r}: {e}") from None
    return ids


def load_stages(paths):
    """The SR stages, in cascade order, checked from their configs before
    any weights load."""
    outlines = [stage_outline(p) for p in paths]
    for path, outline in zip(paths, outlines):
        if outline is not None and not outline[0]:
            raise common.StageError(
                f"--stage {path!r} is a base stage; upscaling needs super-resolution stages."
            )
    for k in range(1, len(paths)):
        if outlines[k - 1] and outlines[k] and outlines[k][2] != outlines[k - 1][1]:
            raise common.StageError(
                f"--stage {paths[k]!r} takes {outlines[k][2]}x{outlines[k][2]} inputs but "
                f"{paths[k - 1]!r} makes {outlines[k - 1][1]}x{outlines[k - 1][1]}: give the "
                "stages in cascade order."
            )
    stages = []
    for path in paths:
        try:
            stage = resolve_stage(path)
        except (FileNotFoundError, ValueError) as e:
            raise common.StageError(f"--stage {path!r}: {e}") from None
        if not isinstance(stage, keras_cdm.SuperResDiffusionModel):
            raise common.StageError(
                f"--stage {path!r} is a base stage ({type(stage).__name__}); upscaling needs "
                "super-resolution stages."
            )
        stages.append(stage)
    return stages


def comparison(columns):
    """A uint8 grid, a row per image: each column's image (nearest-enlarged
    to the last column's size) side by side."""
    pad = 2
    rows = []
    for images in zip(*columns):
        h, w = images[-1].shape[:2]
        cells = [
            np.repeat(np.repeat(im, h // im.shape[0], 0), w // im.shape[1], 1) for im in images
        ]
        rows.append(cells)
    width = max(sum(c.shape[1] + pad for c in row) for row in rows) + pad
    height = sum(row[0].shape[0] + pad for row in rows) + pad
    grid = np.full((height, width, 3), 255, np.uint8)
    y = pad
    for row in rows:
        x = pad
        for cell in row:
            grid[y : y + cell.shape[0], x : x + cell.shape[1]] = cell
            x += cell.shape[1] + pad
        y += row[0].shape[0] + pad
    return grid


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    p.add_argument(
        "--stage",
        action="append",
        required=True,
        help="an SR stage (.keras or preset folder); repeat to chain",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--label", default=None, help="class name or id of every image")
    p.add_argument("--labels", default=None, help="CSV file of `file,label` lines")
    p.add_argument(
        "--aug_levels",
        type=common.NON_NEGATIVE_INT,
        nargs="+",
        default=[0],
        help="conditioning augmentation s: one for all stages or one per stage",
    )
    p.add_argument("--mode", default="whole", choices=keras_cdm.sampling.upscaling.MODES)
    p.add_argument(
        "--overlap",
        type=common.NON_NEGATIVE_INT,
        default=None,
        help="--mode tiles: overlap of tiles in input pixels (default: half a tile)",
    )
    p.add_argument("--batch_size", type=common.POSITIVE_INT, default=16)
    p.add_argument("--seed", type=common.NON_NEGATIVE_INT, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace files already in --out")
    common.add_sampling_flags(p, num_steps=20, sampler="dpm++2m_sde", spacing="quadratic")
    args = p.parse_args(argv)
    files, folder_labels = list_images(args.inputs)
    n = len(args.stage)
    aug = common.per_stage_flag("--aug_levels", args.aug_levels, n)
    common.sampling_kwargs(args, n)  # FlagError: one value or one per stage
    names = [os.path.splitext(os.path.basename(f))[0] + ".png" for f in files]
    targets = [os.path.join(args.out, name) for name in names + ["comparison.png"]]
    existing = [t for t in targets if os.path.exists(t)]
    if existing and not args.overwrite:
        raise common.FlagError(
            f"{existing[0]!r} already exists ({len(existing)} of the outputs do): pass "
            "--overwrite to replace them, or another --out."
        )
    stages = load_stages(args.stage)
    settings = common.stage_settings_from_flags(args, stages)
    labels = resolve_labels(args, stages, files, folder_labels)
    for k, (stage, s) in enumerate(zip(stages, aug)):
        if s > stage.low_res_diffusion.num_timesteps:
            raise common.FlagError(
                f"--aug_levels {s} for --stage {args.stage[k]!r}: its levels are "
                f"0..{stage.low_res_diffusion.num_timesteps}."
            )
        if args.overlap is not None and args.overlap >= stage.low_res_size:
            raise common.FlagError(
                f"--overlap {args.overlap}: --stage {args.stage[k]!r} takes "
                f"{stage.low_res_size}x{stage.low_res_size} tiles, so at most "
                f"{stage.low_res_size - 1}."
            )
    images = []
    for f in files:
        try:
            images.append(keras_cdm.data.read_rgb(f) / 127.5 - 1.0)
        except ValueError as e:  # a file Pillow cannot decode
            raise common.FlagError(str(e)) from None
    outputs = [images]
    for k, (stage, s, setting) in enumerate(zip(stages, aug, settings)):
        factor = stage.image_size // stage.low_res_size
        print(f"[keras_cdm] stage {k + 1} of {n}: {args.stage[k]} (x{factor})", flush=True)
        try:
            upscaled = keras_cdm.sampling.upscale(
                stage,
                outputs[-1],
                None if stage.unconditional else labels,
                mode=args.mode,
                aug_level=s,
                seed=keras_cdm.utils.seeds.derive_seed(args.seed, k),
                settings=setting,
                batch_size=args.batch_size,
                overlap=args.overlap,
                verbose=True,
            )
        except ValueError as e:  # an image too large to upscale whole
            raise common.FlagError(f"--stage {args.stage[k]!r}: {e}") from None
        outputs.append(upscaled)
    os.makedirs(args.out, exist_ok=True)
    written = [save_png(t, to_uint8(o)) for t, o in zip(targets, outputs[-1])]
    grid = save_png(targets[-1], comparison([[to_uint8(im) for im in c] for c in outputs]))
    print(f"[keras_cdm] upscaled {len(files)} image(s) -> {args.out} (grid: {grid})")
    return written, grid


if __name__ == "__main__":
    common.cli(main)
