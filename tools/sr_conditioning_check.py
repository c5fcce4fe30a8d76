"""Does a super-resolution stage use its low-resolution conditioning?

    KERAS_BACKEND=jax python tools/sr_conditioning_check.py weights/cifar10/sr16to32 \\
        --data ../shared/data/cifar10/test --num_images 16

Two measurements on real images (the `--data` test images, or the synthetic
shapes), with the EMA network:
1. At noise level t, given the image's own low-resolution input and given
   another image's (the batch reversed): the MSE of the predicted ε, and the
   mean absolute difference between the box downsample of the predicted x0
   and the image's own input. A stage that uses its conditioning predicts
   much better with its own, above all at high t, where x_t says little.
2. Samples at `aug_level` 0: the mean absolute difference between the box
   downsample of each sample and its low-resolution input (0 for a sample
   that keeps its input exactly; compare with the same figure for the
   reversed batch, i.e. unrelated images).
"""

import argparse
import json
import os

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_cdm  # noqa: E402
from keras_cdm.data.stage_dataset import box_downsample  # noqa: E402


def real_batch(data, size, low, n, seed):
    source = (
        keras_cdm.data.synthetic(num_images=max(n, 64), resolution=size, seed=seed)
        if data == "synthetic"
        else keras_cdm.data.from_image_folder(data)
    )
    batch, labels = keras_cdm.data.super_res_dataset(source, low, size, n, seed=seed, flip=False)[0]
    return np.asarray(batch["high_res"]), np.asarray(batch["low_res"]), np.asarray(labels)


def load_sr(stage):
    sr = (
        keras_cdm.DiffusionModel.from_preset(stage)
        if os.path.isdir(stage)
        else (keras_cdm.models.load_stage(stage, compile=False))
    )
    if not isinstance(sr, keras_cdm.SuperResDiffusionModel):
        raise ValueError(f"{stage!r} is not a super-resolution stage")
    return sr


def measure(sr, hi, lo, labels, levels=(100, 500, 900), num_steps=50, sampler="ddpm", seed=0):
    """The two measurements on one batch, with `sr`'s EMA network; any
    `mean_type` (the network output is turned into ε and x0)."""
    labels = np.asarray(labels).astype("int32")
    n = len(hi)
    factor = sr.image_size // sr.low_res_size
    rng = np.random.default_rng(seed)
    out = {"eps_mse": {}, "x0_vs_low_res": {}}
    for t_level in levels:
        t = np.full((n,), t_level, "int32")
        eps = rng.normal(size=hi.shape).astype("float32")
        x_t = keras.ops.convert_to_numpy(sr.diffusion.q_sample(hi, t, eps))
        mse, x0_gap = [], []
        for cond in (lo, lo[::-1]):
            inputs = {"x_t": x_t, "t": t, "labels": labels, "low_res": cond}
            inputs["aug_level"] = np.zeros((n,), "int32")
            pred = sr.ema_network(inputs, training=False)
            terms = sr.diffusion.p_mean_variance(pred, x_t, t, clip_denoised=False)
            pred_eps = keras.ops.convert_to_numpy(terms["pred_eps"])
            pred_x0 = np.clip(keras.ops.convert_to_numpy(terms["pred_x0"]), -1, 1)
            mse.append(float(np.mean((pred_eps - eps) ** 2)))
            x0_gap.append(float(np.abs(box_downsample(pred_x0, factor) - lo).mean()))
        out["eps_mse"][t_level] = {"own_low_res": mse[0], "other_low_res": mse[1]}
        out["x0_vs_low_res"][t_level] = {"own_low_res": x0_gap[0], "other_low_res": x0_gap[1]}
    samples = sr.sample(lo, labels, seed=seed, num_steps=num_steps, sampler=sampler, aug_level=0)
    down = box_downsample(samples, factor)
    out["sample_vs_low_res"] = {
        "own": float(np.abs(down - lo).mean()),
        "unrelated (reversed batch)": float(np.abs(down - lo[::-1]).mean()),
        "num_steps": num_steps,
        "sampler": sampler,
    }
    return out


def check(stage, data, num_images=16, levels=(100, 500, 900), num_steps=50, sampler="ddpm", seed=0):
    sr = load_sr(stage)
    hi, lo, labels = real_batch(data, sr.image_size, sr.low_res_size, num_images, seed)
    result = measure(sr, hi, lo, labels, levels, num_steps, sampler, seed)
    return {"stage": stage, "num_images": num_images, "mean_type": sr.diffusion.mean_type, **result}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", help="an SR stage: preset directory or .keras file")
    p.add_argument("--data", default="synthetic", help="'synthetic' or an image folder")
    p.add_argument("--num_images", type=int, default=16)
    p.add_argument("--num_steps", type=int, default=50)
    p.add_argument("--sampler", default="ddpm")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    result = check(
        args.stage,
        args.data,
        args.num_images,
        num_steps=args.num_steps,
        sampler=args.sampler,
        seed=args.seed,
    )
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
