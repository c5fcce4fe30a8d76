"""How well an SR stage upscales, against bicubic, at its own size and at a
larger one (the two ways of `keras_cdm.sampling.upscale`).

    KERAS_BACKEND=jax python tools/upscale_quality.py weights/cifar10/sr16to32 \\
        --data ../shared/data/cifar10/test --num_images 256 --num_mosaics 64 \\
        --out results/upscale_quality

- Own size: CIFAR-10 test images (32x32) box-downsampled to the stage's
  16x16 input, upscaled back: the stage vs bicubic.
- Larger: 64x64 crops, at offset (16, 16), of 3x3 mosaics of test images (so
  crops cut across image borders), box-downsampled to 32x32 and upscaled to
  64x64: `whole` (the stage rebuilt at 32→64), `tiles` (16x16 tiles,
  overlap 8), `shrink` (the input box-filtered to 16x16, the stage, then
  bicubic to 64x64: what `recipes/upscale.py` did before) and bicubic.

Per method, means over images: PSNR to the real image (dB; blurry outputs
score well on it), PSNR of the output box-downsampled against the input
(consistency: does it keep the input's content?), and detail: the energy
of `x - up(down(x))` (what the low-res image does not hold) relative to the
real image's (1 is natural detail, bicubic is far below, noise above).
Same sampler settings and seed for every stage row; times per image are
ratios to bicubic's, on this machine, after a first untimed batch.
"""

import argparse
import json
import os
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import keras_cdm  # noqa: E402
from keras_cdm.data.stage_dataset import box_downsample  # noqa: E402


def bicubic(image, factor):
    """Float `(h, w, c)` → `(factor*h, factor*w, c)`, per channel (Pillow)."""
    h, w = image.shape[:2]
    return np.stack(
        [
            np.asarray(
                Image.fromarray(image[..., c], mode="F").resize(
                    (w * factor, h * factor), Image.BICUBIC
                )
            )
            for c in range(image.shape[-1])
        ],
        axis=-1,
    )


def psnr(a, b):
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = np.mean((np.clip(a, -1, 1) - b) ** 2)
    return float(10 * np.log10(4.0 / max(mse, 1e-12)))


def detail(x, factor):
    return float(np.mean((x - bicubic(box_downsample(x, factor), factor)) ** 2))


def scores(outputs, truths, inputs, factor):
    return {
        "psnr_db": float(np.mean([psnr(o, t) for o, t in zip(outputs, truths)])),
        "consistency_db": float(
            np.mean([psnr(box_downsample(o, factor), i) for o, i in zip(outputs, inputs)])
        ),
        "detail": float(
            np.mean([detail(o, factor) for o in outputs])
            / np.mean([detail(t, factor) for t in truths])
        ),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stage")
    p.add_argument("--data", required=True, help="CIFAR-10 test image folder")
    p.add_argument("--num_images", type=int, default=256)
    p.add_argument("--num_mosaics", type=int, default=64)
    p.add_argument("--num_steps", type=int, default=20)
    p.add_argument("--sampler", default="dpm++2m_sde")
    p.add_argument("--spacing", default="quadratic")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/upscale_quality")
    args = p.parse_args(argv)

    stage = keras_cdm.DiffusionModel.from_preset(args.stage)
    factor = stage.image_size // stage.low_res_size
    settings = keras_cdm.models.SamplerSettings(
        num_steps=args.num_steps, sampler=args.sampler, spacing=args.spacing
    )
    source = keras_cdm.data.from_image_folder(args.data)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(source.size)

    def read(i):
        return source.read(int(i)).astype(np.float32) / 127.5 - 1.0

    def run(name, fn, inputs, labels):
        fn(inputs[:16], labels[:16])  # compiles, untimed
        start = time.perf_counter()
        out = fn(inputs, labels)
        per_image = (time.perf_counter() - start) / len(inputs)
        print(f"{name}: {per_image * 1000:.1f} ms/image", flush=True)
        return out, per_image

    def stage_fn(mode, **kw):
        return lambda x, y: keras_cdm.sampling.upscale(
            stage, x, y, mode=mode, seed=args.seed, settings=settings, **kw
        )

    def bicubic_fn(x, y):
        return [bicubic(i, factor) for i in x]

    def shrink_fn(x, y):
        small = [box_downsample(i, i.shape[0] // stage.low_res_size) for i in x]
        return [
            bicubic(o, x[0].shape[0] * factor // stage.image_size)
            for o in stage_fn("whole")(small, y)
        ]

    results = {"settings": settings.get_config(), "stage": args.stage, "rows": []}
    # Own size.
    idx = order[: args.num_images]
    truths = [read(i) for i in idx]
    labels = [int(source.labels[i]) for i in idx]
    inputs = [box_downsample(t, factor) for t in truths]
    for name, fn in [("bicubic", bicubic_fn), ("stage", stage_fn("whole"))]:
        out, t = run(f"own size {name}", fn, inputs, labels)
        results["rows"].append(
            {
                "case": f"{stage.low_res_size}→{stage.image_size}",
                "method": name,
                "seconds_per_image": t,
                **scores(out, truths, inputs, factor),
            }
        )
    # Larger: mosaics.
    side = 2 * stage.image_size
    truths, labels = [], []
    for m in range(args.num_mosaics):
        tiles = order[args.num_images + 9 * m : args.num_images + 9 * (m + 1)]
        rows = [np.concatenate([read(i) for i in tiles[r * 3 : r * 3 + 3]], 1) for r in range(3)]
        mosaic = np.concatenate(rows, 0)
        o = stage.image_size // 2
        truths.append(mosaic[o : o + side, o : o + side])
        labels.append(int(source.labels[tiles[4]]))  # the centre image's class
    inputs = [box_downsample(t, factor) for t in truths]
    methods = [
        ("bicubic", bicubic_fn),
        ("shrink", shrink_fn),
        ("tiles", stage_fn("tiles", overlap=stage.low_res_size // 2)),
        ("whole", stage_fn("whole")),
    ]
    for name, fn in methods:
        out, t = run(f"larger {name}", fn, inputs, labels)
        results["rows"].append(
            {
                "case": f"{side // factor}→{side}",
                "method": name,
                "seconds_per_image": t,
                **scores(out, truths, inputs, factor),
            }
        )
    base = {r["case"]: r["seconds_per_image"] for r in results["rows"] if r["method"] == "bicubic"}
    lines = [
        "| input → output | method | PSNR (dB) | consistency (dB) | detail | time vs bicubic |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['case']} | {r['method']} | {r['psnr_db']:.2f} | {r['consistency_db']:.2f} | "
            f"{r['detail']:.2f} | {r['seconds_per_image'] / base[r['case']]:.0f}x |"
        )
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(results, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
