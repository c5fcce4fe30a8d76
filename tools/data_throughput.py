"""Input-pipeline throughput for an SR stage, in images per second.

    python tools/data_throughput.py --folder ../shared/data/cifar10/train --low 32 --high 64

Measures the 32→64 super-resolution pipeline (crop, anti-aliased resize, flip,
area downsample, batch) from an image folder (if given and present) and from
the synthetic set, after one warm-up batch. Compare with a training step's
consumption (`tools/benchmark.py`): the data must be much faster.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras_cdm  # noqa: E402


def rate(source, low, high, batch, batches):
    ds = keras_cdm.data.super_res_dataset(source, low, high, batch, allow_upsampling=True)
    it = iter(ds)
    next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batch * batches / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--folder", default=None)
    p.add_argument("--low", type=int, default=32)
    p.add_argument("--high", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=50)
    args = p.parse_args(argv)
    rows = []
    if args.folder and os.path.isdir(args.folder):
        src = keras_cdm.data.from_image_folder(args.folder)
        rows.append(
            (
                f"image folder ({src.size} files)",
                rate(src, args.low, args.high, args.batch, args.batches),
            )
        )
    src = keras_cdm.data.synthetic(num_images=2000, resolution=args.high)
    rows.append(
        ("synthetic (2000 pre-rendered)", rate(src, args.low, args.high, args.batch, args.batches))
    )
    for name, r in rows:
        print(f"{args.low}->{args.high} from {name}: {r:,.0f} images/s")


if __name__ == "__main__":
    main()
