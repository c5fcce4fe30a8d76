"""Train a tiny two-stage cascade (16x16 base → 16→32 super-resolution) on the
embedded synthetic shapes, sample it, and write the grid and `.keras` files.

    KERAS_BACKEND=jax python recipes/demo.py

No download is needed. A few minutes on a laptop CPU with JAX (the fastest
CPU backend for these tiny models, measured by `tools/benchmark.py`).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_cdm  # noqa: E402
from keras_cdm.utils.images import save_class_grid  # noqa: E402
from keras_cdm.utils.images import save_npz  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output_dir", default="runs/demo")
    p.add_argument("--base_steps", type=int, default=1200)
    p.add_argument("--sr_steps", type=int, default=200)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--aug_level", type=int, default=100, help="s for the SR stage (of 1000)")
    p.add_argument(
        "--guidance_scale",
        type=float,
        default=3.0,
        help="classifier-free guidance of the base stage (trained with 10%% label dropout)",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    start = time.time()

    source = keras_cdm.data.synthetic(num_images=2000, resolution=32, seed=args.seed)
    stages = []
    for name, steps in (("base16_tiny", args.base_steps), ("sr16to32_tiny", args.sr_steps)):
        if name.startswith("sr"):
            model = keras_cdm.SuperResDiffusionModel.from_preset(name, ema_decay=0.995)
            data = keras_cdm.data.super_res_dataset(source, 16, 32, args.batch_size, seed=args.seed)
        else:
            # Label dropout makes the base stage usable with classifier-free
            # guidance, which makes the classes distinct after a short run.
            model = keras_cdm.DiffusionModel.from_preset(name, ema_decay=0.995, label_dropout=0.1)
            data = keras_cdm.data.base_dataset(source, 16, args.batch_size, seed=args.seed)
        model.compile(optimizer=keras.optimizers.Adam(2e-3))
        print(
            f"[demo] training {name} ({model.network.count_params():,} parameters) "
            f"for {steps} steps on {keras_cdm.backend.name()}",
            flush=True,
        )
        # A progress line (step, loss, img/s, ETA) every ~5% of the run.
        progress = keras_cdm.utils.progress.TrainingProgress(
            steps, args.batch_size, every=max(1, steps // 20)
        )
        model.fit(data, epochs=1, steps_per_epoch=steps, callbacks=[progress], verbose=0)
        path = os.path.join(args.output_dir, f"{name}.keras")
        model.save(path)
        stages.append(path)

    cascade = keras_cdm.CascadeSampler(
        stages,
        aug_levels=[args.aug_level],
        mode="non_truncated",
        num_steps=[100, 50],
        guidance_scale=[args.guidance_scale, 1.0],
    )
    labels = np.repeat(np.arange(10), 6)
    images, (low, high) = cascade.sample(labels, seed=args.seed, return_all_stages=True)
    grid = save_class_grid(
        os.path.join(args.output_dir, "cascade_grid.png"), high, labels, extra_stages=[low]
    )
    npz = save_npz(os.path.join(args.output_dir, "samples.npz"), high, labels)
    print(f"[demo] done in {time.time() - start:.0f} s")
    print(f"[demo] stages:  {', '.join(stages)}")
    print(
        f"[demo] grid:    {grid}  (rows = classes {', '.join(keras_cdm.data.CLASS_NAMES)};"
        " each sample shown as 16x16 base output then 32x32 SR output)"
    )
    print(f"[demo] samples: {npz}")


if __name__ == "__main__":
    main()
