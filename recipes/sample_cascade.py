"""Sample a cascade of trained stages and write a class grid and an `.npz`
(labels: the classes in turn; -1 for an unconditional cascade).

    KERAS_BACKEND=jax python recipes/sample_cascade.py \\
        runs/demo/base16_tiny.keras runs/demo/sr16to32_tiny.keras \\
        --aug_levels 100 --num_steps 100 50 --num_images 100 --output_dir runs/samples

Started as several processes (`torchrun`, or JAX's `JAX_COORDINATOR_ADDRESS`
/ `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID`, as the training recipes), each
samples its share of the images and the first writes them all: the same
images as one process. Under JAX each process also spreads its batches
over its local devices.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

import keras_cdm  # noqa: E402
from keras_cdm.backend import local_devices  # noqa: E402
from keras_cdm.utils.images import save_class_grid  # noqa: E402
from keras_cdm.utils.images import save_npz  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description="Sample a cascade of trained stages.")
    p.add_argument(
        "stages",
        nargs="+",
        help=".keras files or preset directories (e.g. weights/cifar10/base16), base stage first",
    )
    p.add_argument(
        "--aug_levels", type=int, nargs="*", default=None, help="one s per SR stage (default 0)"
    )
    p.add_argument("--mode", default="non_truncated", choices=["truncated", "non_truncated"])
    common.add_sampling_flags(p)
    p.add_argument("--num_images", type=common.POSITIVE_INT, default=100)
    p.add_argument("--batch_size", type=common.POSITIVE_INT, default=None)
    p.add_argument("--seed", type=common.NON_NEGATIVE_INT, default=0)
    p.add_argument("--output_dir", default="runs/samples")
    p.add_argument("--smoke", action="store_true", help="two images, two steps per stage")
    args = p.parse_args(argv)
    n = len(args.stages)
    rank, world = keras_cdm.distribute.initialize_processes()
    if args.smoke:
        args.num_steps, args.num_images = [2], 2
    kwargs = common.sampling_kwargs(args, n)  # FlagError: one value or one per stage
    try:
        cascade = keras_cdm.CascadeSampler(
            args.stages,
            aug_levels=args.aug_levels if args.aug_levels is not None else [0] * (n - 1),
            mode=args.mode,
            verbose=not args.smoke,
            **kwargs,
        )
    except (FileNotFoundError, ValueError) as e:  # a missing stage, stages that do not chain
        raise common.StageError(str(e)) from None
    # Class-conditional: classes in turn. Unconditional: no labels (the .npz
    # says -1, and the grid has rows of 8).
    conditional = cascade.num_classes > 0
    labels = np.arange(args.num_images) % cascade.num_classes if conditional else None
    share = np.array_split(np.arange(args.num_images), world)[rank]
    if len(share) and (world > 1 or local_devices() > 1):
        print(
            f"[keras_cdm] process {rank} of {world}: images {share[0]}-{share[-1]} of "
            f"{args.num_images}, each batch over {local_devices()} devices",
            flush=True,
        )
    final, per_stage = cascade.sample(
        labels,
        num_images=None if conditional else args.num_images,
        seed=args.seed,
        batch_size=args.batch_size,
        return_all_stages=True,
        across_processes=world > 1,
    )
    if rank > 0:
        return None
    os.makedirs(args.output_dir, exist_ok=True)
    grid = save_class_grid(
        os.path.join(args.output_dir, "grid.png"),
        final,
        labels if conditional else np.arange(args.num_images) // 8,
        extra_stages=per_stage[:-1],
        class_names=cascade.class_names,
    )
    npz = save_npz(
        os.path.join(args.output_dir, "samples.npz"),
        final,
        labels if conditional else np.full(args.num_images, -1),
    )
    print(f"[keras_cdm] wrote {grid} and {npz}")
    return grid, npz


if __name__ == "__main__":
    common.cli(main)
