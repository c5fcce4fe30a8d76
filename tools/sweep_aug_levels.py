"""Non-truncated sweep over the SR stage's augmentation level s: the stages
below are sampled once and reused for every s; one grid per s.

    KERAS_BACKEND=jax python tools/sweep_aug_levels.py \\
        runs/demo/base16_tiny.keras runs/demo/sr16to32_tiny.keras \\
        --levels 0 50 100 250 500 --output_dir runs/sweep
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "recipes"))

import common  # noqa: E402
import numpy as np  # noqa: E402

import keras_cdm  # noqa: E402
from keras_cdm.utils.images import save_class_grid  # noqa: E402
from keras_cdm.utils.images import save_npz  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description="Sweep the last SR stage's aug level s.")
    p.add_argument("stages", nargs="+")
    p.add_argument(
        "--levels", type=common.NON_NEGATIVE_INT, nargs="+", default=[0, 100, 250, 500, 1000]
    )
    common.add_sampling_flags(p, num_steps=100)
    p.add_argument("--num_images", type=common.POSITIVE_INT, default=40)
    p.add_argument("--seed", type=common.NON_NEGATIVE_INT, default=0)
    p.add_argument("--output_dir", default="runs/sweep")
    args = p.parse_args(argv)
    stages = [keras_cdm.models.resolve_stage(s) for s in args.stages]
    settings = common.stage_settings_from_flags(args, stages)
    cascade = keras_cdm.CascadeSampler(stages, settings=settings)
    labels = np.arange(args.num_images) % cascade.num_classes
    results = cascade.sweep_aug_levels(args.levels, labels=labels, seed=args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    for s in args.levels:
        grid = save_class_grid(
            os.path.join(args.output_dir, f"grid_s{s:04d}.png"),
            results[s],
            labels,
            extra_stages=[results["low_res"]],
        )
        save_npz(os.path.join(args.output_dir, f"samples_s{s:04d}.npz"), results[s], labels)
        print(f"[keras_cdm] s={s}: {grid}")


if __name__ == "__main__":
    main()
