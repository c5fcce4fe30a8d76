"""Turn a training checkpoint into a released preset directory: the EMA
weights alone (float16 by default), the stage config, and `training.json`
saying which run wrote it (the recipe's flags, the step, the wall time).

    KERAS_BACKEND=jax python tools/release_weights.py \\
        runs/cifar_base16/checkpoint.keras weights/cifar10/base16 --dtype float16

A distilled student (a `student_<n>` directory written by
`recipes/distill.py`) is released the same way: its `distillation.json`
becomes `training.json`, with its round's time per step from
`round_<n>/log.csv` and the run's flags.

    KERAS_BACKEND=jax python tools/release_weights.py \
        runs/distill_base16/student_4 weights/cifar10/base16_student4

`DiffusionModel.from_preset("weights/cifar10/base16")` and
`CascadeSampler([...dirs...])` load the result on any backend. The training
run continues from its checkpoint (`--resume`), not from the release.
"""

import argparse
import csv
import json
import os
import re
import shlex

import keras  # noqa: E402

import keras_cdm  # noqa: E402


def run_summary(run_dir):
    """What the training run in `run_dir` recorded: its flags (`run.json`),
    the last logged step, and from `log.csv` the median seconds per step
    between checkpoints (robust to the pause of a kill and resume) times the
    steps: the training time of an uninterrupted run on that machine."""
    summary = {}
    record = os.path.join(run_dir, "run.json")
    if os.path.isfile(record):
        with open(record) as f:
            summary["run"] = json.load(f)
    log = os.path.join(run_dir, "log.csv")
    if os.path.isfile(log):
        with open(log) as f:
            rows = [(float(r["step"]), float(r["time"])) for r in csv.DictReader(f)]
        if rows:
            summary["logged_steps"] = int(rows[-1][0])
        rates = sorted(
            (t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(rows, rows[1:]) if s1 > s0
        )
        if rates:
            per_step = rates[len(rates) // 2]
            summary["seconds_per_step"] = round(per_step, 3)
            summary["train_time_s"] = round(per_step * rows[-1][0])
    return summary


def command_at_step(command, step):
    """The training command with `--train_steps` set to the step the release
    was taken at: no schedule depends on the target (constant learning rate,
    EMA warm-up by updates), so a run stopped at `step` of a longer target
    holds exactly the weights of a run to `step`."""
    if not command or step is None:
        return command
    found = re.search(r"--train_steps[ =](\d+)", command)
    if found is None:
        return f"{command} --train_steps {step}"
    if int(found.group(1)) != step:
        print(
            f"[keras_cdm] the command said --train_steps {found.group(1)}; the checkpoint is "
            f"at step {step}: training.json records --train_steps {step}, which reproduces it"
        )
    return command[: found.start()] + f"--train_steps {step}" + command[found.end() :]


def release_student(student_dir, output_dir, dtype, description=""):
    """A distilled student directory as a release: float weights in
    `dtype`, and `training.json` from its `distillation.json` (the command
    without `--resume`: a resumed round ends where an uninterrupted one
    does), its round's log and the run's flags."""
    with open(os.path.join(student_dir, "distillation.json")) as f:
        info = json.load(f)
    model = keras_cdm.DiffusionModel.from_preset(student_dir)
    model.save_to_preset(output_dir, weights="ema", dtype=dtype)
    parent = os.path.dirname(os.path.abspath(student_dir))
    steps = info["student_steps"]
    summary = run_summary(os.path.join(parent, f"round_{steps}"))
    if os.path.isfile(os.path.join(parent, "run.json")):
        with open(os.path.join(parent, "run.json")) as f:
            summary["run"] = json.load(f)["flags"]
    info["command"] = shlex.join(w for w in shlex.split(info["command"]) if w != "--resume")
    info.pop("seconds_last_process", None)
    info["description"] = description or info["description"]
    info.update(
        student=student_dir,
        parameters=int(model.network.count_params()),
        weights_dtype=dtype,
        **summary,
    )
    info["data"] = info.get("run", {}).get("dataset")
    with open(os.path.join(output_dir, "training.json"), "w") as f:
        json.dump(info, f, indent=2)
    return model, info


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "checkpoint",
        help="a .keras stage (e.g. a recipe's checkpoint.keras), or a distilled student's "
        "directory (recipes/distill.py's student_<n>)",
    )
    p.add_argument("output_dir", help="the preset directory to write")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    p.add_argument("--description", default="", help="one line for training.json")
    p.add_argument("--command", default="", help="the training command, for training.json")
    args = p.parse_args(argv)
    if os.path.isfile(os.path.join(args.checkpoint, "distillation.json")):
        if args.command:
            p.error("--command: a student's command is the one its distillation.json records")
        release_student(args.checkpoint, args.output_dir, args.dtype, args.description)
        print(f"[keras_cdm] student {args.checkpoint} -> {args.output_dir}")
        return args.output_dir
    model = keras_cdm.models.load_stage(args.checkpoint)
    model.save_to_preset(args.output_dir, weights="ema", dtype=args.dtype)
    summary = run_summary(os.path.dirname(os.path.abspath(args.checkpoint)))
    optimizer = getattr(model, "optimizer", None)
    step = (
        int(keras.ops.convert_to_numpy(optimizer.iterations))
        if optimizer is not None
        else summary.get("logged_steps")
    )
    info = {
        "description": args.description,
        "command": command_at_step(args.command, step),
        "steps": step,
        "checkpoint": args.checkpoint,
        "ema_updates": int(float(model.ema_updates.numpy())),
        "parameters": int(model.network.count_params()),
        "weights_dtype": args.dtype,
        **summary,
    }
    with open(os.path.join(args.output_dir, "training.json"), "w") as f:
        json.dump(info, f, indent=2)
    size = sum(
        os.path.getsize(os.path.join(args.output_dir, n)) for n in os.listdir(args.output_dir)
    )
    print(
        f"[keras_cdm] {args.checkpoint} ({info['ema_updates']} EMA updates, "
        f"{info['parameters']:,} parameters) -> {args.output_dir} ({size / 2**20:.2f} MiB)"
    )
    return args.output_dir


if __name__ == "__main__":
    main()
