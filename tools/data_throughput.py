"""Input-pipeline throughput against what a training step consumes.

    KERAS_BACKEND=jax python tools/data_throughput.py --folder ../shared/data/cifar10/train \\
        --low 16 --high 32 --preset sr16to32_small

Measures an SR stage's batches (crop, resize, flip, box-filter downsample,
batch) in images per second from an image folder (if given) and from
in-memory arrays, for the native pipeline (`StageDataset`, as `fit` reads it
through Keras's worker threads) and, when TensorFlow is installed, the
`tf.data` one, interleaved in one process (`--rounds`), after one warm-up
batch each. With `--preset`, it also times that stage's training step at the
same batch (compiled as the recipes compile) and prints how many times faster
than the step each pipeline delivers.
"""

import argparse
import itertools
import os
import time

import numpy as np  # noqa: E402

import keras_cdm  # noqa: E402


def batches(ds):
    """Batches as `fit` reads them (Keras's adapter with its worker threads)."""
    if isinstance(ds, keras_cdm.data.StageDataset):
        from keras.src.trainers.data_adapters import get_data_adapter

        adapter = get_data_adapter(ds)
        adapter.on_epoch_begin()
        return iter(adapter.get_numpy_iterator())
    return iter(ds)


def rate(ds, batch, count):
    it = batches(ds)
    next(it)
    t0 = time.perf_counter()
    for _ in itertools.islice(it, count):
        pass
    return batch * count / (time.perf_counter() - t0)


def step_rate(preset, low, high, batch, steps):
    """Images per second consumed by the stage's training step."""
    import keras

    model = keras_cdm.DiffusionModel.from_preset(preset)
    jit = keras_cdm.backend.default_jit_compile()
    model.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=jit)
    source = keras_cdm.data.synthetic(num_images=max(batch, 64), resolution=high)
    x, y = keras_cdm.data.super_res_dataset(source, low, high, batch, seed=0)[0]
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # compile
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=steps, verbose=0, shuffle=False)
    return batch * steps / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", default=None, help="an image folder (one sub-folder per class)")
    p.add_argument("--low", type=int, default=16)
    p.add_argument("--high", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=50, help="timed batches per measurement")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    p.add_argument("--workers", type=int, default=None, help="native worker threads")
    p.add_argument("--preset", default=None, help="also time this SR preset's training step")
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args(argv)
    sources = []
    if args.folder:
        if not os.path.isdir(args.folder):
            p.error(f"--folder {args.folder!r}: not a folder")
        src = keras_cdm.data.from_image_folder(args.folder)
        sources.append((f"image folder ({src.size} files)", src))
    src = keras_cdm.data.synthetic(num_images=2000, resolution=args.high)
    sources.append(("arrays (2000 in memory)", src))
    try:
        import tensorflow  # noqa: F401

        pipelines = ("native", "tf")
    except ImportError:
        pipelines = ("native",)
        print("TensorFlow is not installed: the native pipeline only.")
    results = {}
    for _ in range(args.rounds):
        for name, src in sources:
            for pipe in pipelines:
                ds = keras_cdm.data.super_res_dataset(
                    src,
                    args.low,
                    args.high,
                    args.batch,
                    seed=0,
                    pipeline=pipe,
                    workers=args.workers if pipe == "native" else None,
                    allow_upsampling=True,
                )
                results.setdefault((name, pipe), []).append(rate(ds, args.batch, args.batches))
    step = None
    if args.preset:
        step = step_rate(args.preset, args.low, args.high, args.batch, args.steps)
        print(f"training step of {args.preset} at batch {args.batch}: {step:,.0f} images/s")
    for (name, pipe), rates in results.items():
        r = float(np.median(rates))
        extra = f"  ({r / step:,.0f}x the training step)" if step else ""
        print(f"{args.low}->{args.high} from {name}, {pipe:>6}: {r:,.0f} images/s{extra}")


if __name__ == "__main__":
    main()
