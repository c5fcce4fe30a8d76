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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
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
    import numpy as np
    from benchmark import build_stage
    from benchmark import time_forward
    from benchmark import time_training

    model = build_stage(preset)
    times, x, y = time_training(model, batch, steps + 3)
    fwd = time_forward(model, x, y, batch, steps + 2)
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
