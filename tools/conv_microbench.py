"""Where the U-Net time goes per backend: one 3x3 convolution, one GroupNorm
and one attention layer, each timed alone (compiled where the backend
compiles), side by side in one run.

    python tools/conv_microbench.py --batch 16 --size 32 --channels 16 32 64

Also times one (batch, size, size, 3) Gaussian noise draw with
`keras.random.normal` and with `keras_cdm.backend.random_normal`.

Each backend runs in its own subprocess. Prints microseconds per call and
GFLOP/s for the convolution, so a backend whose convolutions are slow (XLA's
CPU convolutions go through Eigen, PyTorch's through oneDNN) shows up
directly, separate from framework overhead.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _time(fn, x, reps):
    import keras

    keras.ops.convert_to_numpy(fn(x))  # warm-up / compile
    keras.ops.convert_to_numpy(fn(x))
    t0 = time.perf_counter()
    for _ in range(reps):
        out = fn(x)
    keras.ops.convert_to_numpy(out)
    return (time.perf_counter() - t0) / reps


def measure(batch, size, channels, reps):
    sys.path.insert(0, ROOT)
    import keras
    import numpy as np

    from keras_cdm.backend import compile_stateful
    from keras_cdm.backend import random_normal
    from keras_cdm.layers import AttentionBlock
    from keras_cdm.layers.convolution import Conv2D
    from keras_cdm.layers.normalization import GroupNorm32

    out = {}
    for c in channels:
        x = keras.ops.convert_to_tensor(
            np.random.default_rng(0).normal(size=(batch, size, size, c)).astype("float32")
        )
        layers = {
            "conv3x3": Conv2D(c, 3, padding="same"),
            "groupnorm": GroupNorm32(groups=8),
            "attention": AttentionBlock(num_heads=1),
        }
        for name, layer in layers.items():
            layer.build(tuple(x.shape))
            fn = compile_stateful(lambda v, layer=layer: layer(v), layer.variables, [])
            if keras.backend.backend() == "torch":
                import torch

                with torch.no_grad():
                    sec = _time(fn, x, reps)
            else:
                sec = _time(fn, x, reps)
            out[f"{name}/{c}"] = sec * 1e6
        flops = 2 * batch * size * size * c * c * 9
        out[f"conv3x3_gflops/{c}"] = flops / (out[f"conv3x3/{c}"] * 1e-6) / 1e9
    # One (batch, size, size, 3) noise draw: Keras's own, and keras_cdm's
    # (Philox on TensorFlow), compiled with the seed state written back.
    x = keras.ops.zeros((batch, size, size, 3))
    for name, draw in (
        ("keras.random.normal", keras.random.normal),
        ("random_normal", random_normal),
    ):
        seed = keras.random.SeedGenerator(0)
        fn = compile_stateful(
            lambda v, draw=draw, seed=seed: v + draw(keras.ops.shape(v), seed=seed),
            [],
            [seed.state],
        )
        out[f"noise {name}/3"] = _time(fn, x, reps) * 1e6
    return out


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--backends", nargs="+", default=["jax", "tensorflow", "torch"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--_child", action="store_true")
    args = p.parse_args(argv)
    if args._child:
        result = measure(args.batch, args.size, args.channels, args.reps)
        print("RESULT " + json.dumps(result))
        return
    results = {}
    for backend in args.backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        cmd = [sys.executable, __file__, "--_child", "--batch", str(args.batch)]
        cmd += ["--size", str(args.size), "--reps", str(args.reps), "--channels"]
        cmd += [str(c) for c in args.channels]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if not line:
            print(f"{backend} failed:\n{proc.stderr[-3000:]}")
            continue
        results[backend] = json.loads(line[0][7:])
    print(
        f"\nbatch {args.batch}, {args.size}x{args.size}, {os.cpu_count()} CPU cores; us per call\n"
    )
    print("| layer | channels | " + " | ".join(results) + " |")
    print("|---|---|" + "---|" * len(results))
    layers = ("conv3x3", "conv3x3_gflops", "groupnorm", "attention")
    rows = [(name, c) for name in layers for c in args.channels]
    rows += [("noise keras.random.normal", 3), ("noise random_normal", 3)]
    for name, c in rows:
        cells = [f"{results[b][f'{name}/{c}']:.1f}" for b in results]
        print(f"| {name} | {c} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
