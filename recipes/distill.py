"""Progressive distillation of a trained stage, round after round.

    KERAS_BACKEND=jax python recipes/distill.py weights/cifar10/base16 \\
        --dataset ../shared/data/cifar10/train --teacher_steps 32 --final_steps 4 \\
        --steps_per_round 1000 --output_dir runs/distill_base16

Round `k` trains a student of `teacher_steps / 2**k` DDIM steps to match two
steps of the round before's (`keras_cdm.models.ProgressiveDistillation`),
down to `--final_steps`. Each round's student is written as a preset
directory, `output_dir/student_<steps>`, that records its step count and
solver, so `sample_cascade.py` and `CascadeSampler` sample it right without
flags. A round checkpoints every `--checkpoint_every` steps
(`output_dir/round_<steps>/checkpoint.keras`); SIGINT or SIGTERM stops at a
step, writes its checkpoint and prints the command that resumes (`--resume`
continues the round that was running and skips finished ones).
"""

import argparse
import json
import os
import shlex
import sys
import time

import common
import keras

import keras_cdm
from keras_cdm.utils.interrupts import StopOnSignal
from keras_cdm.utils.progress import TrainingProgress

# Flags a resumed run must repeat as they were (the rest may change).
RECORDED = (
    "teacher",
    "dataset",
    "teacher_steps",
    "final_steps",
    "steps_per_round",
    "batch_size",
    "learning_rate",
    "guidance_scale",
    "mean_type",
    "seed",
    "flip",
    "num_synthetic",
)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Distil a trained stage into students of fewer sampling steps.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("teacher", help="the stage to distil: a preset directory or a .keras file")
    p.add_argument(
        "--dataset",
        default="synthetic",
        help="the teacher's training data: an image folder, 'synthetic' or a TFDS name",
    )
    p.add_argument("--data_dir", default=None, help="TFDS data_dir")
    p.add_argument(
        "--num_synthetic", type=common.POSITIVE_INT, default=2000, help="synthetic set size"
    )
    p.add_argument(
        "--teacher_steps",
        type=common.POSITIVE_INT,
        default=32,
        help="DDIM steps of the teacher in the first round (trailing grid)",
    )
    p.add_argument(
        "--final_steps",
        type=common.POSITIVE_INT,
        default=4,
        help="the last round's student steps; teacher_steps / final_steps must be a power of 2",
    )
    p.add_argument("--steps_per_round", type=common.POSITIVE_INT, default=1000)
    p.add_argument("--batch_size", type=common.POSITIVE_INT, default=64)
    p.add_argument(
        "--learning_rate",
        type=common.POSITIVE_FLOAT,
        default=2e-4,
        help="Adam's, decayed linearly to 0 over each round (as Salimans & Ho)",
    )
    p.add_argument(
        "--guidance_scale",
        type=common.NON_NEGATIVE_FLOAT,
        default=1.0,
        help="the first teacher's classifier-free guidance, distilled into the students "
        "(1: none; needs a teacher trained with label dropout)",
    )
    p.add_argument(
        "--mean_type",
        default="v",
        choices=list(keras_cdm.models.distillation.MEAN_TYPES),
        help="what the students predict (v: the paper's choice)",
    )
    p.add_argument("--checkpoint_every", type=common.POSITIVE_INT, default=100)
    p.add_argument("--log_every", type=common.POSITIVE_INT, default=50)
    p.add_argument("--seed", type=common.NON_NEGATIVE_INT, default=0)
    p.add_argument("--flip", type=int, default=1, choices=[0, 1], help="random horizontal flips")
    p.add_argument("--output_dir", default=None, help="(None: runs/distill_<teacher name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output_dir")
    p.add_argument("--smoke", action="store_true", help="a seconds-long run of the same path")
    args = p.parse_args(argv)
    ratio = args.teacher_steps // args.final_steps
    if args.teacher_steps % args.final_steps or ratio < 2 or ratio & (ratio - 1):
        p.error(
            f"--teacher_steps {args.teacher_steps} must be --final_steps {args.final_steps} "
            "times a power of 2 (2, 4, 8, ...): each round halves the steps"
        )
    if args.smoke:
        args.steps_per_round, args.batch_size, args.num_synthetic = 2, 4, 16
        args.checkpoint_every = 1
    return args


def rounds(args):
    """The students' step counts, round by round."""
    steps, out = args.teacher_steps // 2, []
    while steps >= args.final_steps:
        out.append(steps)
        steps //= 2
    return out


def record(args):
    return {k: getattr(args, k) for k in RECORDED}


def check_record(args, path):
    if not os.path.exists(path):
        raise common.ResumeRefused(f"--resume: no run record at {path!r}; start a new run.")
    with open(path) as f:
        saved = json.load(f)["flags"]
    for key, value in record(args).items():
        if saved.get(key) != value:
            raise common.ResumeRefused(
                f"--resume: --{key} {value!r} differs from the run's {saved.get(key)!r} "
                f"({path}); pass the run's value."
            )


def open_data(args, stage, batch):
    source = keras_cdm.data.resolve_source(
        args.dataset,
        data_dir=args.data_dir,
        resolution=stage.image_size,
        seed=args.seed,
        num_images=args.num_synthetic,
    )
    if stage.unconditional:
        source = source.without_labels() if source.num_classes else source
    elif source.num_classes == 0:
        raise common.FlagError(
            f"--dataset {args.dataset!r} has no classes; the teacher is class-conditional "
            f"({stage.num_classes} classes)."
        )
    elif source.num_classes > stage.num_classes:
        raise common.FlagError(
            f"--dataset {args.dataset!r} has {source.num_classes} classes, the teacher "
            f"{stage.num_classes}."
        )
    if isinstance(stage, keras_cdm.SuperResDiffusionModel):
        return keras_cdm.data.super_res_dataset(
            source, stage.low_res_size, stage.image_size, batch, flip=bool(args.flip),
            seed=args.seed,
        )  # fmt: skip
    return keras_cdm.data.base_dataset(
        source, stage.image_size, batch, flip=bool(args.flip), seed=args.seed
    )


def check_teacher_steps(args):
    """A distilled teacher (recorded trailing-grid steps) is only right on
    its own grid: --teacher_steps must be its step count."""
    recorded = keras_cdm.models.distillation.distilled_steps(
        keras_cdm.models.loading.recorded_sampler_settings(args.teacher)
    )
    if recorded is not None and recorded != args.teacher_steps:
        raise common.StageError(
            f"--teacher_steps {args.teacher_steps}: the teacher {args.teacher!r} is a "
            f"distilled stage of {recorded} steps (its recorded sampler settings), right "
            f"only on that grid; pass --teacher_steps {recorded}."
        )


def load_teacher(path):
    try:
        return keras_cdm.models.resolve_stage(path)
    except (FileNotFoundError, ValueError) as e:
        raise common.StageError(str(e)) from None


def new_round(teacher, steps, args):
    schedule = keras.optimizers.schedules.PolynomialDecay(
        args.learning_rate, args.steps_per_round, end_learning_rate=0.0, power=1.0
    )
    model = keras_cdm.models.ProgressiveDistillation(
        teacher, steps, guidance_scale=args.guidance_scale, mean_type=args.mean_type
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        jit_compile=keras_cdm.backend.default_jit_compile(),
    )
    return model


def finish_round(model, steps, teacher_name, args, argv, seconds, out):
    """Writes the round's student as a preset directory with its record."""
    directory = os.path.join(args.output_dir, f"student_{steps}")
    scratch = directory + ".tmp"
    model.student.save_to_preset(scratch, weights="ema")
    info = {
        "description": f"progressive distillation: {steps} DDIM steps (trailing grid) from "
        f"{2 * steps} of {teacher_name}",
        "command": shlex.join(keras_cdm.backend.launch_prefix(1) + ["recipes/distill.py"] + argv),
        "teacher": teacher_name,
        "student_steps": steps,
        "teacher_steps": 2 * steps,
        "guidance_scale": model.guidance_scale,
        "mean_type": model.mean_type,
        "train_steps": args.steps_per_round,
        "batch_size": args.batch_size,
        "seconds_last_process": round(seconds, 1),
        "sampler_settings": model.student.sampler_settings.get_config(),
    }
    common.write_json(os.path.join(scratch, "distillation.json"), info)
    os.replace(scratch, directory)  # a new round: nothing there (checked by the caller)
    out.append(directory)
    print(f"[keras_cdm] round done: {directory} ({steps} step{'s' * (steps > 1)})", flush=True)
    return directory


def main(argv=None):
    if argv is not None:
        return _main(list(argv))
    return common.cli(lambda: _main(sys.argv[1:]))


def _main(argv):
    with common.recipe_signal_stop() as stop:
        return _distill(argv, stop)


def _distill(argv, stop):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    name = os.path.basename(os.path.normpath(args.teacher)).removesuffix(".keras")
    args.output_dir = args.output_dir or os.path.join("runs", f"distill_{name}")
    os.makedirs(args.output_dir, exist_ok=True)
    record_path = os.path.join(args.output_dir, "run.json")
    if args.resume:
        check_record(args, record_path)
    elif os.path.exists(record_path):
        raise common.CheckpointExists(
            f"{args.output_dir!r} already holds a distillation run: pass --resume to continue "
            "it, or another --output_dir for a new one (nothing is overwritten)."
        )
    else:
        check_teacher_steps(args)
        common.write_json(record_path, {"flags": record(args), "argv": argv})
    teacher_path, teacher_name, written = args.teacher, name, []
    for steps in rounds(args):
        round_dir = os.path.join(args.output_dir, f"round_{steps}")
        student_dir = os.path.join(args.output_dir, f"student_{steps}")
        if os.path.exists(os.path.join(student_dir, "config.json")):
            print(f"[keras_cdm] round {steps}: done before ({student_dir})")
            teacher_path, teacher_name = student_dir, f"student_{steps}"
            written.append(student_dir)
            continue
        os.makedirs(round_dir, exist_ok=True)
        ckpt = os.path.join(round_dir, "checkpoint.keras")
        started = time.time()
        if os.path.exists(ckpt):
            model = keras.saving.load_model(ckpt)
            start = common.current_step(model)
            print(f"[keras_cdm] round {steps}: resumed at step {start} ({ckpt})")
        else:
            teacher = load_teacher(teacher_path)
            model = new_round(teacher, steps, args)
            start = 0
        print(
            f"[keras_cdm] round {steps}: a student of {steps} steps from {teacher_name} "
            f"({2 * steps} steps), {args.steps_per_round} steps of batch {args.batch_size} "
            f"on {keras_cdm.backend.name()} -> {round_dir}",
            flush=True,
        )
        dataset = open_data(args, model.student, args.batch_size)
        checkpoint = common.Checkpoint(round_dir, 0, 0)
        callbacks = [
            StopOnSignal(stop, "stop"),
            checkpoint,
            TrainingProgress(
                args.steps_per_round,
                args.batch_size,
                args.log_every,
                first_step=start,
                log_path=os.path.join(round_dir, "train.log"),
            ),
        ]
        done = common.fit_to_step(
            model,
            dataset,
            start,
            args.steps_per_round,
            min(args.checkpoint_every, args.steps_per_round),
            callbacks,
            stop,
            data_name=f"--dataset {args.dataset!r}",
        )
        resume = shlex.join(
            keras_cdm.backend.launch_prefix(1)
            + [os.path.relpath(__file__)]
            + argv
            + ([] if "--resume" in argv else ["--resume"])
        )
        if stop.received is not None and done < args.steps_per_round:
            if checkpoint.saved_step != done:
                checkpoint.on_epoch_end(0, {})
            print(
                f"[keras_cdm] stopped by {stop.name} at step {done} of round {steps}; "
                f"checkpoint: {checkpoint.path}\n[keras_cdm] resume with: {resume}",
                flush=True,
            )
            sys.exit(stop.exit_code)
        finish_round(model, steps, teacher_name, args, argv, time.time() - started, written)
        teacher_path, teacher_name = student_dir, f"student_{steps}"
        if stop.received is not None and steps != args.final_steps:
            print(
                f"[keras_cdm] stopped by {stop.name} after round {steps}\n"
                f"[keras_cdm] resume with: {resume}",
                flush=True,
            )
            sys.exit(stop.exit_code)
    return written


if __name__ == "__main__":
    main()
