"""What the host costs per step: the ceiling on steps/s on any accelerator.

    pip install diffusers   # for the diffusers row (benchmark-only dependency)
    python tools/host_overhead.py --steps 100
    python tools/host_overhead.py --steps 64 --frameworks jax tensorflow torch \
        --steps_per_execution 1 8

At batch 1 and 8x8 images the compute of `base16_tiny` is negligible, so the
time of a step is Python, dispatch and framework overhead: what a GPU cannot
speed up. Measured per framework, each in its own subprocess: one training
step (`fit` on the native pipeline, compiled as the recipes compile: JAX
`jit`, TF XLA, torch eager; the mean over `--steps` steps after a warm-up
`fit`, the better of two rounds) and one sampling step (`model.sample` with `--steps` DDPM steps,
after a warm-up call with the same settings, divided by the steps). The
diffusers row is `UNet2DModel` at the same architecture with a plain PyTorch
step (Adam, EMA) and a `DDPMScheduler` sampling loop. Prints a Markdown
table with the resulting ceilings in steps/s; `--output` also writes JSON.

With several `--steps_per_execution` values each keras_cdm training row is
measured at each (one model per value, the values alternating within each
round), with the number of times per step that Keras converted the step's
logs to Python numbers for the callbacks: each conversion is a
device-to-host copy that waits for the step to finish.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PRESET, SIZE = "base16_tiny", 8


def count_log_reads():
    """Counts Keras's conversions of a step's device logs to Python numbers
    for its callbacks (each one a device-to-host copy that waits for the
    step); returns the list the counts go to."""
    import keras.src.callbacks.callback_list as callback_list

    reads = []
    convert = callback_list.python_utils.pythonify_logs

    def counting(logs):
        if logs and any(hasattr(v, "shape") for v in logs.values()):
            reads.append(1)
        return convert(logs)

    callback_list.python_utils.pythonify_logs = counting
    return reads


def measure_keras_cdm(steps, executions=(1,), rounds=2):
    import keras
    import numpy as np

    import keras_cdm

    reads = count_log_reads()
    source = keras_cdm.data.synthetic(num_images=64, resolution=SIZE)
    ds = keras_cdm.data.base_dataset(source, SIZE, 1, seed=0)
    models = {}
    for n in executions:
        model = keras_cdm.DiffusionModel.from_preset(PRESET, network_overrides={"image_size": SIZE})
        jit = keras_cdm.backend.default_jit_compile()  # as the recipes
        model.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=jit, steps_per_execution=n)
        model.fit(ds, steps_per_epoch=5 * n, epochs=1, verbose=0)
        models[n] = model
    # The settings alternate within each round (this machine's speed drifts).
    times = {n: [] for n in executions}
    counted = {n: 0 for n in executions}
    for _ in range(rounds):
        for n, model in models.items():
            del reads[:]
            t0 = time.perf_counter()
            model.fit(ds.skip(5), steps_per_epoch=steps, epochs=1, verbose=0)
            times[n].append((time.perf_counter() - t0) / steps)
            counted[n] = len(reads) - 2  # less the epoch's and the run's end
    model = models[executions[0]]
    labels = np.array([0])
    model.sample(labels, seed=0, num_steps=steps)
    t0 = time.perf_counter()
    model.sample(labels, seed=1, num_steps=steps)
    sample = (time.perf_counter() - t0) / steps
    result = {"train_ms": 1e3 * min(times[executions[0]]), "sample_ms": 1e3 * sample}
    result["steps_per_execution"] = {
        str(n): {"train_ms": 1e3 * min(times[n]), "log_reads_per_step": counted[n] / steps}
        for n in executions
    }
    return result


def measure_diffusers(steps):
    import torch
    from benchmark import diffusers_trainer
    from diffusers import DDPMScheduler

    model, ema, x, y, train_step = diffusers_trainer(PRESET, 1, size=SIZE)
    for _ in range(5):
        float(train_step())
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = train_step()
    float(loss)
    train = (time.perf_counter() - t0) / steps
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(steps)

    def sample():
        z = torch.randn((1, 3, SIZE, SIZE))
        with torch.no_grad():
            for t in scheduler.timesteps:
                eps = ema(z, t, class_labels=y).sample[:, :3]
                z = scheduler.step(eps, t, z).prev_sample
        return z.numpy()

    sample()
    t0 = time.perf_counter()
    sample()
    return {"train_ms": 1e3 * train, "sample_ms": 1e3 * (time.perf_counter() - t0) / steps}


FRAMEWORKS = ("jax", "tensorflow", "torch", "torch_keras_calls", "diffusers")
# torch_keras_calls: the torch backend with its fast path off
# (KERAS_CDM_DIRECT_CALLS=0): every layer through Keras's __call__, Keras's
# own train step and optimizer update.
# The Keras backend (and the module that must be installed) of each row.
BACKEND_OF = {"diffusers": "torch", "torch_keras_calls": "torch"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=FRAMEWORKS)
    p.add_argument(
        "--steps_per_execution",
        type=int,
        nargs="+",
        default=[1],
        help="keras_cdm rows: training steps per compiled call, one or several (each "
        "measured, alternating; the table's training column is the first)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the frameworks in turn this many times; each row is its best round",
    )
    p.add_argument("--output", default=None, help="also write the results as JSON")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error(f"--steps must be >= 1. Received: {args.steps}")
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1. Received: {args.rounds}")
    for n in args.steps_per_execution:
        if n < 1 or args.steps % n:
            p.error(
                f"--steps_per_execution {n}: expected a positive divisor of --steps {args.steps}"
            )
    executions = tuple(args.steps_per_execution)
    if args._child:
        if args._child == "diffusers":
            result = measure_diffusers(args.steps)
        else:
            result = measure_keras_cdm(args.steps, executions)
        print("RESULT " + json.dumps(result))
        return
    rows = {}
    for _ in range(args.rounds):
        for fw in args.frameworks:
            backend = BACKEND_OF.get(fw, fw)
            module = "diffusers" if fw == "diffusers" else backend
            if importlib.util.find_spec(module) is None:
                print(f"{fw}: not installed, skipped")
                continue
            env = dict(os.environ, KERAS_BACKEND=backend)
            env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            if fw == "torch_keras_calls":
                env["KERAS_CDM_DIRECT_CALLS"] = "0"
            proc = subprocess.run(
                [sys.executable, __file__, "--steps", str(args.steps), "--_child", fw]
                + ["--steps_per_execution"]
                + [str(n) for n in executions],
                env=env,
                capture_output=True,
                text=True,
            )
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not line:
                raise RuntimeError(f"{fw} failed:\n{proc.stderr[-3000:]}")
            result = json.loads(line[0][len("RESULT ") :])
            best = rows.get(fw)
            if best is not None:
                result["train_ms"] = min(result["train_ms"], best["train_ms"])
                result["sample_ms"] = min(result["sample_ms"], best["sample_ms"])
            rows[fw] = result
    print(f"\n{PRESET} at batch 1, {SIZE}x{SIZE}, {args.steps} steps each")
    print("| framework | training step (ms) | ceiling (steps/s) | sampling step (ms) | ceiling |")
    print("|---|---|---|---|---|")
    for fw, r in rows.items():
        name = {
            "diffusers": "diffusers (PyTorch)",
            "torch_keras_calls": "keras_cdm, torch, KERAS_CDM_DIRECT_CALLS=0",
        }.get(fw, f"keras_cdm, {fw}")
        print(
            f"| {name} | {r['train_ms']:.1f} | {1e3 / r['train_ms']:.0f} "
            f"| {r['sample_ms']:.1f} | {1e3 / r['sample_ms']:.0f} |"
        )
    if executions != (1,):
        print("\n| framework | steps per execution | training step (ms) | log reads per step |")
        print("|---|---|---|---|")
        for fw, r in rows.items():
            for n, m in r.get("steps_per_execution", {}).items():
                print(
                    f"| keras_cdm, {fw} | {n} | {m['train_ms']:.1f} "
                    f"| {m['log_reads_per_step']:.3g} |"
                )
    if args.output:
        with open(args.output, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
