"""How fast does an SR stage learn to use its conditioning, by what it predicts?

    KERAS_BACKEND=jax python tools/sr_prediction_ab.py --mean_types epsilon v \\
        --rounds 3 --steps_per_round 100 --out results/sr_prediction_ab.jsonl

Trains one copy of the same SR stage (`--preset`, same seed, same batches)
per `--mean_type`, interleaved in one process: `--steps_per_round` steps of
each in turn. After every round it runs `tools/sr_conditioning_check.py`'s
measurements on a fixed batch of images (synthetic: scenes of another seed,
unseen in training; an image folder: a batch of the training folder itself,
not held out): the box downsample of the
predicted x0 at t = 900 and 700 against the image's own input and against
another image's (a stage that ignores its input scores the same on both),
and the same for samples drawn at `aug_level` 0. Each round is appended to
`--out` (JSON lines) as it ends.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
from sr_conditioning_check import measure  # noqa: E402
from sr_conditioning_check import real_batch  # noqa: E402

import keras_cdm  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="sr16to32_tiny")
    p.add_argument("--network", type=json.loads, default=None, help="JSON network overrides")
    p.add_argument("--mean_types", nargs="+", default=["epsilon", "v"])
    p.add_argument("--data", default="synthetic", help="'synthetic' or an image folder")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps_per_round", type=int, default=100)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--learning_rate", type=float, default=2e-3)
    p.add_argument("--ema_decay", type=float, default=0.99)
    p.add_argument("--num_images", type=int, default=16, help="images measured")
    p.add_argument("--num_steps", type=int, default=50, help="sampling steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON lines file, one line per model and round")
    args = p.parse_args(argv)
    for name in ("rounds", "steps_per_round", "batch_size", "num_images", "num_steps"):
        if getattr(args, name) < 1:
            p.error(f"argument --{name}: expected a positive int, received {getattr(args, name)}")

    spec = keras_cdm.presets.get_preset(args.preset)
    if not spec.is_super_res:
        p.error(f"argument --preset: {args.preset!r} is not a super-resolution preset")
    models = {}
    for mean_type in args.mean_types:
        model = keras_cdm.DiffusionModel.from_preset(
            args.preset,
            network_overrides=args.network,
            diffusion={"mean_type": mean_type},
            ema_decay=args.ema_decay,
            seed=args.seed,
        )
        model.compile(optimizer=keras.optimizers.Adam(args.learning_rate))
        models[mean_type] = model
    any_model = next(iter(models.values()))
    size, low = any_model.image_size, any_model.low_res_size
    if args.data == "synthetic":
        source = keras_cdm.data.synthetic(num_images=2000, resolution=size, seed=args.seed)
    else:
        source = keras_cdm.data.from_image_folder(args.data)
    data = keras_cdm.data.super_res_dataset(source, low, size, args.batch_size, seed=args.seed)
    # Measured images: another seed of the synthetic set (unseen in
    # training), or a batch of the folder in another order.
    hi, lo, labels = real_batch(args.data, size, low, args.num_images, args.seed + 7)
    rows = []
    for r in range(args.rounds):
        for mean_type, model in models.items():
            start = time.time()
            history = model.fit(data, steps_per_epoch=args.steps_per_round, epochs=1, verbose=0)
            seconds = time.time() - start
            result = measure(model, hi, lo, labels, (900, 700), args.num_steps, seed=args.seed)
            row = {
                "mean_type": mean_type,
                "steps": (r + 1) * args.steps_per_round,
                "loss": float(history.history["loss"][-1]),
                "train_seconds": round(seconds, 1),
                **result,
            }
            rows.append(row)
            gap = {
                t: v["own_low_res"] / v["other_low_res"] for t, v in row["x0_vs_low_res"].items()
            }
            s = row["sample_vs_low_res"]
            print(
                f"{mean_type:>8} step {row['steps']:5d}: x0 own/other at t=900 {gap[900]:.2f}, "
                f"t=700 {gap[700]:.2f}; samples own {s['own']:.3f} vs unrelated "
                f"{s['unrelated (reversed batch)']:.3f}",
                flush=True,
            )
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    return rows


if __name__ == "__main__":
    main()
