"""keras_cdm (PyTorch backend) and diffusers training steps interleaved in one
process: a throughput ratio that the machine's drift cannot bias.

    pip install diffusers   # benchmark-only dependency
    KERAS_BACKEND=torch python tools/interleaved_vs_diffusers.py --presets base32_tiny base32_small

`tools/benchmark.py` runs each framework in its own process, one after the
other, so on a shared machine a slow minute lands on one side only (whole runs
there move by up to ~30%). Here one keras_cdm step and one diffusers step
alternate, and the ratio of the medians is reported. The diffusers side is the
same `UNet2DModel` configuration and PyTorch loop as in `tools/benchmark.py`.
"""

import argparse
import os
import time

import keras  # noqa: E402
import numpy as np  # noqa: E402
from benchmark import build_stage  # noqa: E402
from benchmark import diffusers_trainer  # noqa: E402
from benchmark import time_training  # noqa: E402


def keras_cdm_step(preset, batch):
    model = build_stage(preset)
    _, x, y = time_training(model, batch, 1)  # builds the train function
    data = (keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y))

    def step():
        float(model.train_function([data])["loss"])

    return step


def diffusers_step(preset, batch):
    train_step = diffusers_trainer(preset, batch)[-1]

    def step():
        float(train_step())

    return step


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--presets", nargs="+", default=["base32_tiny", "sr32to64_tiny", "base32_small"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args(argv)
    if keras.backend.backend() != "torch":
        raise SystemExit("Run with KERAS_BACKEND=torch (diffusers is PyTorch).")
    print(f"batch {args.batch}, {args.steps} interleaved steps each, {os.cpu_count()} CPU cores\n")
    print("| preset | keras_cdm ms/step | diffusers ms/step | train throughput ratio |")
    print("|---|---|---|---|")
    for preset in args.presets:
        ours, theirs = keras_cdm_step(preset, args.batch), diffusers_step(preset, args.batch)
        for _ in range(2):  # warm-up
            ours()
            theirs()
        a, b = [], []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            ours()
            a.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            theirs()
            b.append(time.perf_counter() - t0)
        ma, mb = float(np.median(a)), float(np.median(b))
        print(f"| {preset} | {1e3 * ma:.1f} | {1e3 * mb:.1f} | {mb / ma:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
