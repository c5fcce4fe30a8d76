"""What drawing each step's noise costs a sampling step: host NumPy (before)
against the device (now), at the sizes of real stages.

    KERAS_BACKEND=jax python tools/sampling_noise_cost.py --rounds 3
    KERAS_BACKEND=jax python tools/sampling_noise_cost.py --sizes 256x32 --rounds 2

For each (batch, resolution) it times, interleaved in one process
(median of `--rounds`):
- `host_noise_ms`: what the loop did on the host before, per step and
  stage: `ImageNoise(seed, range(batch)).normal(shape)` plus
  `ops.convert_to_tensor` (NumPy's draw and the copy to the device);
- `device_noise_ms`: `device_normal` alone, compiled, at that size (on a
  CPU the "device" is the same cores, so this is compute, not host time);
- `forward_ms`: one network call of the stage (`base32_tiny` for 32x32, an
  SR stage `*_tiny` for the larger sizes) inside the compiled sampling
  step of deterministic DDIM (a step that draws no noise);
- `step_ms`: the DDPM sampling step as it runs now (noise drawn inside);
- the step/forward ratios: before = (DDIM step + host noise) / DDIM step,
  now = DDPM step / DDIM step.
Prints a Markdown table; `--out` also writes JSON.
"""

import argparse
import json
import os
import statistics
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import keras_cdm  # noqa: E402
from keras_cdm.backend import compile_stateful  # noqa: E402
from keras_cdm.utils.seeds import ImageNoise  # noqa: E402
from keras_cdm.utils.seeds import device_normal  # noqa: E402
from keras_cdm.utils.seeds import image_keys  # noqa: E402

# The sizes: a base stage's batch at 32x32, SR stages at 64 and 256.
DEFAULT_SIZES = ("256x32", "64x64", "64x256")
STAGE_FOR = {32: "base32_tiny", 64: "sr32to64_tiny", 128: "sr64to128_tiny", 256: "sr64to256_tiny"}


def sync(x):
    return np.asarray(ops.convert_to_numpy(x))


def timed(fn, repeats):
    fn()  # warm-up / compile
    t0 = time.perf_counter()
    for _ in range(repeats):
        sync(fn())
    return 1e3 * (time.perf_counter() - t0) / repeats


def stage_step(model, sampler, batch):
    """A `() -> x` that runs one compiled sampling step of `model` at `batch`."""
    settings = keras_cdm.models.SamplerSettings(num_steps=10, sampler=sampler)
    stage = model.stage_sampler(settings)
    size, c = model.image_size, model.channels
    x = ops.convert_to_tensor(np.zeros((batch, size, size, c), "float32"))
    labels = ops.convert_to_tensor(np.zeros((batch,), "int32"))
    conditioning = {}
    if isinstance(model, keras_cdm.SuperResDiffusionModel):
        lo = model.low_res_size
        conditioning = {
            "low_res": ops.convert_to_tensor(np.zeros((batch, lo, lo, c), "float32")),
            "aug_level": ops.convert_to_tensor(np.zeros((batch,), "int32")),
        }
    keys = ops.convert_to_tensor(image_keys(0, range(batch), 2), "int32")
    step = ops.convert_to_tensor(5, "int32")
    first = ops.convert_to_tensor(0.0, "float32")
    state = stage.solver.initial_state(x)
    return lambda: stage._step(x, step, first, labels, conditioning, state, keys)[0]


def measure(batch, size, repeats, network=None):
    preset = STAGE_FOR[size]
    model = keras_cdm.DiffusionModel.from_preset(preset, network_overrides=network)
    shape = (size, size, model.channels)
    keys = ops.convert_to_tensor(image_keys(0, range(batch), 2), "int32")
    counter = ops.convert_to_tensor(5, "int32")
    draw = compile_stateful(lambda k, n: device_normal(k, n, shape), [], [])
    streams = ImageNoise(0, range(batch))
    return preset, {
        "host_noise_ms": lambda: timed(
            lambda: ops.convert_to_tensor(streams.normal(shape)), repeats
        ),
        "device_noise_ms": lambda: timed(lambda: draw(keys, counter), repeats),
        "forward_ms": lambda: timed(stage_step(model, "ddim", batch), repeats),
        "step_ms": lambda: timed(stage_step(model, "ddpm", batch), repeats),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), help="BATCHxRESOLUTION")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="calls timed per round")
    p.add_argument("--out", default=None, help="JSON file for the results")
    p.add_argument(
        "--network", type=json.loads, default=None, help="JSON overrides of every stage's network"
    )
    args = p.parse_args(argv)
    rows = []
    for spec in args.sizes:
        try:
            batch, size = (int(v) for v in spec.split("x"))
        except ValueError:
            p.error(f"argument --sizes: expected BATCHxRESOLUTION like 256x32, received {spec!r}")
        if size not in STAGE_FOR:
            p.error(f"argument --sizes: resolution {size} not one of {sorted(STAGE_FOR)}")
        preset, probes = measure(batch, size, args.repeats, args.network)
        times = {k: [] for k in probes}
        for _ in range(args.rounds):  # interleaved: each round times every probe
            for k, probe in probes.items():
                times[k].append(probe())
        row = {"batch": batch, "size": size, "preset": preset}
        row.update({k: statistics.median(v) for k, v in times.items()})
        row["ratio_before"] = (row["forward_ms"] + row["host_noise_ms"]) / row["forward_ms"]
        row["ratio_now"] = row["step_ms"] / row["forward_ms"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\nbackend={keras.backend.backend()}, median of {args.rounds} interleaved rounds\n")
    print(
        "| batch x size | stage | host noise ms (before) | device noise ms | DDIM step ms "
        "| DDPM step ms (now) | step/forward before | now |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['batch']} x {r['size']}x{r['size']} | {r['preset']} | {r['host_noise_ms']:.1f} "
            f"| {r['device_noise_ms']:.1f} | {r['forward_ms']:.1f} | {r['step_ms']:.1f} "
            f"| {r['ratio_before']:.2f} | {r['ratio_now']:.2f} |"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"backend": keras.backend.backend(), "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
