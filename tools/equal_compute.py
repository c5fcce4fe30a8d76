"""How many training steps of a candidate stage cost the same as a reference
set of training runs, measured side by side in one process.

    KERAS_BACKEND=jax python tools/equal_compute.py \\
        --reference base16_small:'{"base_channels":32}':64:4000 \\
                    sr16to32_small:'{"base_channels":16,"num_res_blocks":1}':64:3000 \\
        --candidate base32_small:'{"base_channels":32}':64 \\
                    base32_small:'{"base_channels":32,"channel_mult":[1,2,2,2]}':64

Each stage is `PRESET:NETWORK_JSON:BATCH[:STEPS]` (references carry the steps
they trained for). Every stage's training step is compiled, then the stages
take turns, `--steps` steps each, for `--rounds` rounds, so a slow spell of a
shared machine falls on all of them; the median step time of each gives the
ratios. A candidate's equal-compute step count is the references' summed
cost (steps × median step time) over its own median step time, printed with
its parameter count. The absolute times are this machine's, for scale only;
the ratios are the result. Steps run through `train_on_batch` (no data
pipeline), whose fixed Python cost per call (~10 ms on PyTorch) every stage
pays alike: negligible against the second-long steps it is meant for.
"""

import argparse
import json
import os
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_stage(text, with_steps):
    parts = text.split(":")
    # The network JSON may itself hold colons: PRESET first, BATCH[:STEPS] last.
    n_tail = 2 if with_steps else 1
    if len(parts) < 2 + n_tail:
        form = "PRESET:NETWORK_JSON:BATCH" + (":STEPS" if with_steps else "")
        raise SystemExit(f"error: stage {text!r} is not {form}")
    preset, tail = parts[0], parts[-n_tail:]
    network = ":".join(parts[1:-n_tail])
    try:
        overrides = json.loads(network) if network else {}
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: stage {text!r}: network {network!r} is not JSON ({e})")
    try:
        numbers = [int(v) for v in tail]
    except ValueError:
        raise SystemExit(f"error: stage {text!r}: batch/steps {tail!r} must be integers")
    stage = {"text": text, "preset": preset, "network": overrides, "batch": numbers[0]}
    if with_steps:
        stage["steps"] = numbers[1]
    return stage


def build(stage):
    import keras
    import numpy as np

    import keras_cdm

    model = keras_cdm.DiffusionModel.from_preset(
        stage["preset"], network_overrides=stage["network"]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    rng = np.random.default_rng(0)
    s = model.image_size
    x = rng.uniform(-1, 1, (stage["batch"], s, s, model.channels)).astype("float32")
    y = (
        (np.arange(stage["batch"]) % model.num_classes).astype("int32")
        if model.num_classes
        else None
    )
    model.train_on_batch(x, y)  # compiles
    return model, x, y


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--reference", nargs="+", required=True, help="PRESET:NETWORK_JSON:BATCH:STEPS ..."
    )
    p.add_argument("--candidate", nargs="+", required=True, help="PRESET:NETWORK_JSON:BATCH ...")
    p.add_argument("--steps", type=int, default=3, help="steps per stage per turn")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--output", default=None, help="also write the results as JSON")
    args = p.parse_args(argv)
    refs = [parse_stage(s, True) for s in args.reference]
    cands = [parse_stage(s, False) for s in args.candidate]
    stages = refs + cands
    built = [build(s) for s in stages]
    times = [[] for _ in stages]
    for _ in range(args.rounds):
        for i, (model, x, y) in enumerate(built):
            for _ in range(args.steps):
                t0 = time.perf_counter()
                model.train_on_batch(x, y)
                times[i].append(time.perf_counter() - t0)
    for stage, ts, (model, _, _) in zip(stages, times, built):
        ts = sorted(ts)
        stage["median_step_s"] = ts[len(ts) // 2]
        stage["parameters"] = int(model.network.count_params())
    budget = sum(r["steps"] * r["median_step_s"] for r in refs)
    print(
        f"backend {os.environ.get('KERAS_BACKEND')}; {args.rounds} rounds x {args.steps} steps per stage"
    )
    for r in refs:
        print(
            f"reference {r['text']}: {r['parameters']:,} params, {r['median_step_s']:.3f} s/step, "
            f"{r['steps']} steps = {r['steps'] * r['median_step_s']:.0f} s"
        )
    ref0 = refs[0]["median_step_s"]
    for c in cands:
        c["equal_compute_steps"] = int(budget / c["median_step_s"])
        c["step_cost_vs_first_reference"] = c["median_step_s"] / ref0
        print(
            f"candidate {c['text']}: {c['parameters']:,} params, {c['median_step_s']:.3f} s/step "
            f"({c['step_cost_vs_first_reference']:.2f}x the first reference's step) -> "
            f"{c['equal_compute_steps']} steps at equal compute"
        )
    if args.output:
        with open(args.output, "w") as f:
            json.dump(
                {
                    "references": refs,
                    "candidates": cands,
                    "rounds": args.rounds,
                    "steps": args.steps,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
