"""JAX on CPU: a preset's training step and forward pass under several XLA_FLAGS.

    python tools/xla_flags_sweep.py --preset base32_tiny --batch 16

Each setting runs in its own process (XLA reads `XLA_FLAGS` at start-up),
one after the other on the same machine; prints the median training step
(`fit`, after warm-up) and the median compiled forward pass in milliseconds.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_FLAGS = [
    "",
    "--xla_cpu_use_onednn=true",
    "--xla_cpu_experimental_onednn_custom_call=true",
    "--xla_cpu_use_xnnpack=true",
    "--xla_cpu_use_thunk_runtime=false",
    "--xla_cpu_enable_fast_math=true",
    "--xla_cpu_multi_thread_eigen=false",
]


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
    x = np.random.default_rng(0).uniform(-1, 1, (batch * (steps + 3), s, s, 3)).astype("float32")
    y = (np.arange(len(x)) % model.num_classes).astype("int32")
    times = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, b, logs=None):
            self.t = time.perf_counter()

        def on_train_batch_end(self, b, logs=None):
            times.append(time.perf_counter() - self.t)

    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=[Timer()])
    inputs = {"x_t": x[:batch], "t": np.full((batch,), 10, "int32"), "labels": y[:batch]}
    if sr:
        lo = model.low_res_size
        inputs["low_res"] = x[:batch, :lo, :lo]
        inputs["aug_level"] = np.zeros((batch,), "int32")
    net = model.ema_network
    forward = compile_stateful(lambda inp: net(inp, training=False), net.variables, [])
    inputs = {k: keras.ops.convert_to_tensor(v) for k, v in inputs.items()}
    fwd = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        keras.ops.convert_to_numpy(forward(inputs))
        fwd.append(time.perf_counter() - t0)
    return {
        "first_step_s": times[0],
        "train_step_ms": 1e3 * float(np.median(times[3:])),
        "forward_ms": 1e3 * float(np.median(fwd[2:])),
    }


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="base32_tiny")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--flags", nargs="+", default=DEFAULT_FLAGS)
    p.add_argument("--_child", action="store_true")
    args = p.parse_args(argv)
    if args._child:
        print("RESULT " + json.dumps(measure(args.preset, args.batch, args.steps)))
        return
    print(f"{args.preset}, batch {args.batch}, JAX, {os.cpu_count()} CPU cores\n")
    print("| XLA_FLAGS | first step (compile) s | train step ms | forward ms |")
    print("|---|---|---|---|")
    for flags in args.flags:
        env = dict(os.environ, KERAS_BACKEND="jax", XLA_FLAGS=flags)
        cmd = [sys.executable, __file__, "--_child", "--preset", args.preset]
        cmd += ["--batch", str(args.batch), "--steps", str(args.steps)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if not line:
            print(f"| `{flags or '(none)'}` | failed: {out.stderr.strip().splitlines()[-1:]} | | |")
            continue
        r = json.loads(line[0][7:])
        print(
            f"| `{flags or '(none)'}` | {r['first_step_s']:.1f} | {r['train_step_ms']:.1f} "
            f"| {r['forward_ms']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
