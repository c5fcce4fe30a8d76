"""Speed of keras_cdm stages on each backend, measured side by side in one run.

    python tools/benchmark.py --presets base32_tiny sr32to64_tiny --batch 16

For each backend (own subprocess) and preset: training images/s (median over
steps after warm-up, compiled where the backend compiles), inference forward
images/s (EMA network, compiled like sampling), sampling time per step and its
ratio to one bare forward pass (the sampling loop's overhead). Prints a
Markdown table with every figure also as a ratio to the first backend listed.
Not yet included: Hugging Face diffusers as the external baseline.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def measure(preset, batch, steps):
    sys.path.insert(0, ROOT)
    import keras
    import numpy as np

    import keras_cdm
    from keras_cdm.backend import compile_stateful

    sr = "low_res_size" in keras_cdm.networks.PRESETS[preset]["network"]
    cls = keras_cdm.SuperResDiffusionModel if sr else keras_cdm.DiffusionModel
    model = cls.from_preset(preset)
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    s = model.image_size
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch * (steps + 2), s, s, 3)).astype("float32")
    y = (np.arange(len(x)) % model.num_classes).astype("int32")
    times = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, b, logs=None):
            self.t = time.perf_counter()

        def on_train_batch_end(self, b, logs=None):
            times.append(time.perf_counter() - self.t)

    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=[Timer()])
    train = batch / _median(times[2:])

    labels = y[:batch]
    inputs = {"x_t": x[:batch], "t": np.full((batch,), 10, "int32"), "labels": labels}
    if sr:
        lo = model.low_res_size
        inputs["low_res"] = x[:batch, :lo, :lo]
        inputs["aug_level"] = np.zeros((batch,), "int32")
    net = model.ema_network
    forward = compile_stateful(lambda inp: net(inp, training=False), net.variables, [])
    inputs = {k: keras.ops.convert_to_tensor(v) for k, v in inputs.items()}
    fwd_times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        keras.ops.convert_to_numpy(forward(inputs))
        fwd_times.append(time.perf_counter() - t0)
    fwd = _median(fwd_times[2:])

    n = steps + 2
    if sr:
        model.sample(x[:batch, :lo, :lo], labels, num_steps=n, seed=1)  # compiles
        t0 = time.perf_counter()
        model.sample(x[:batch, :lo, :lo], labels, num_steps=n, seed=0)
    else:
        model.sample(labels, num_steps=n, seed=1)  # compiles
        t0 = time.perf_counter()
        model.sample(labels, num_steps=n, seed=0)
    per_step = (time.perf_counter() - t0) / n
    return {
        "params": model.network.count_params(),
        "train_img_s": train,
        "forward_img_s": batch / fwd,
        "sample_step_s": per_step,
        "overhead": per_step / fwd,
    }


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--presets", nargs="+", default=["base32_tiny", "sr32to64_tiny"])
    p.add_argument("--backends", nargs="+", default=["jax", "tensorflow", "torch"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--_child", default=None)
    args = p.parse_args(argv)
    if args._child:
        print(
            "RESULT " + json.dumps({pr: measure(pr, args.batch, args.steps) for pr in args.presets})
        )
        return
    results = {}
    for backend in args.backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        cmd = [
            sys.executable,
            __file__,
            "--_child",
            "1",
            "--presets",
            *args.presets,
            "--batch",
            str(args.batch),
            "--steps",
            str(args.steps),
        ]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if not line:
            print(f"{backend} failed:\n{out.stderr[-3000:]}")
            continue
        results[backend] = json.loads(line[0][7:])
    ref = args.backends[0]
    print(
        f"\nbatch {args.batch}, {args.steps} timed steps, {os.cpu_count()} CPU cores; ratios vs {ref}\n"
    )
    print(
        "| preset | backend | params | train img/s | forward img/s | sample s/step | step / forward |"
    )
    print("|---|---|---|---|---|---|---|")
    for pr in args.presets:
        for backend, res in results.items():
            r, base = res[pr], results.get(ref, res)[pr]
            print(
                f"| {pr} | {backend} | {r['params']:,} | {r['train_img_s']:.1f} "
                f"({r['train_img_s'] / base['train_img_s']:.2f}x) | {r['forward_img_s']:.1f} "
                f"({r['forward_img_s'] / base['forward_img_s']:.2f}x) | {r['sample_step_s']:.4f} | "
                f"{r['overhead']:.3f} |"
            )


if __name__ == "__main__":
    main()
