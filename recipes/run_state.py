"""A training run's state on disk: the stage built from a preset or
resumed from `checkpoint.keras`, the run record (`run.json`) it is checked
against, and the command that resumes it."""

import json
import os
import re
import shlex

import keras
from recipe_flags import CheckpointExists
from recipe_flags import NoCheckpoint
from recipe_flags import ResumeRefused

import keras_cdm
from keras_cdm.models.presets import get_preset


def _model_kwargs(stage, preset, args):
    """Model arguments over the preset's own (augmentation, EMA decay)."""
    kwargs = {"seed": args.seed, "label_dropout": args.label_dropout}
    if args.ema_decay is not None:
        kwargs["ema_decay"] = args.ema_decay
    if args.augmentation and get_preset(preset).is_super_res:
        kwargs["augmentation"] = args.augmentation
    if args.mean_type:
        kwargs["diffusion"] = {"mean_type": args.mean_type}
    return kwargs


def build_model(stage, preset, args, class_names=None):
    network_overrides = dict(args.network or {})
    if args.mixed_precision:
        network_overrides["dtype"] = args.mixed_precision
    model = keras_cdm.DiffusionModel.from_preset(
        preset, network_overrides=network_overrides, **_model_kwargs(stage, preset, args)
    )
    if class_names and len(class_names) == model.num_classes:
        model.class_names = tuple(class_names)  # saved with the stage
    elif class_names and model.num_classes:
        print(
            f"[keras_cdm] note: the data's {len(class_names)} class names are not saved with "
            f"the stage, which has {model.num_classes} classes"
        )
    return model


def check_resumed_model(model, stage, preset, args, output_dir):
    """Fails unless the checkpoint's stage is the one this command trains."""
    spec = get_preset(preset)
    expected_cls = spec.model_class
    network = dict(spec.network, **(args.network or {}))
    found = model.network.get_config()
    problems = []
    if type(model).__name__ != expected_cls:
        problems.append(f"it is a {type(model).__name__}, {stage} is a {expected_cls}")
    for key, value in network.items():
        if key in found and _plain(found[key]) != _plain(value):
            problems.append(f"network {key}={_plain(found[key])}, expected {_plain(value)}")
    kwargs = dict(spec.model_kwargs, **_model_kwargs(stage, preset, args))
    diffusion = dict(spec.diffusion, **kwargs.pop("diffusion", {}))
    found_diffusion = model.diffusion.get_config()
    for key, value in diffusion.items():
        if key in found_diffusion and found_diffusion[key] != value:
            flag = f" (--mean_type {found_diffusion[key]})" if key == "mean_type" else ""
            problems.append(f"diffusion {key}={found_diffusion[key]!r}{flag}, expected {value!r}")
    for key, value in kwargs.items():
        if key != "seed" and getattr(model, key, value) != value:
            problems.append(f"{key}={getattr(model, key)!r}, expected {value!r}")
    if problems:
        raise ResumeRefused(
            f"The checkpoint in {output_dir!r} is not the stage this command trains "
            f"({stage}, preset {preset}): {'; '.join(problems)}. Resume with the flags "
            "that wrote it, or pass another --output_dir."
        )


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


# What a resumed run must share with the run that wrote the checkpoint: the
# stage and the data stream (the pipeline is skipped ahead batch by batch).
RUN_KEYS = ("stage", "preset", "batch_size", "seed", "dataset", "num_synthetic", "flip")


def run_record(stage, preset, batch, args, class_names=None):
    """What `run.json` records (`RUN_KEYS` are checked on `--resume`; the
    class names of the data say which label is which class)."""
    return {
        "stage": stage,
        "preset": preset,
        "batch_size": batch,
        "seed": args.seed,
        "dataset": args.dataset,
        "num_synthetic": args.num_synthetic,
        "flip": args.flip,
        "network": args.network,
        "class_names": list(class_names) if class_names else None,
        "keras_cdm": keras_cdm.__version__,
    }


def write_json(path, value):
    """Writes JSON atomically: a kill leaves the old file or the new one."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2)
    os.replace(tmp, path)


def read_run_record(path):
    """The saved run record, or a `ResumeRefused` that names the file and
    says what to do when it is missing or damaged."""
    way_out = (
        "restore it, or pass --new_run_record to resume with this command's flags "
        "written as the new record (unchecked)"
    )
    if not os.path.exists(path):
        raise ResumeRefused(
            f"--resume: {path!r} is missing; it records the data stream (dataset, seed, batch "
            f"size) the checkpoint was trained on, so the resume cannot be checked: {way_out}."
        )
    try:
        with open(path) as f:
            saved = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResumeRefused(f"--resume: {path!r} is not valid JSON ({e}): {way_out}.") from None
    if not isinstance(saved, dict):
        raise ResumeRefused(
            f"--resume: {path!r} holds a {type(saved).__name__}, not a run record: {way_out}."
        )
    return saved


def check_run_record(record, saved, output_dir):
    flags = {"stage": "the recipe"}
    for key in RUN_KEYS:
        if key in saved and saved[key] != record[key]:
            flag = flags.get(key, f"--{key}")
            raise ResumeRefused(
                f"--resume: the run in {output_dir!r} was started with {key}="
                f"{saved[key]!r} and this command gives {record[key]!r} ({flag}); a resumed "
                "run must keep its stage and data stream. Pass the same value, or another "
                "--output_dir for a new run."
            )


def current_step(model):
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def paper_preset_note(preset, parameters, accelerator):
    """A line for a paper preset trained without a GPU or TPU (None when
    there is nothing to say)."""
    if not accelerator and not preset.endswith(("_small", "_tiny")):
        return (
            f"[keras_cdm] note: {preset} is the paper's network ({parameters:,} parameters) and "
            "this machine has no GPU or TPU: a step can take minutes. --preset small or tiny "
            "are sized for CPUs; the time per step is measured after the first steps."
        )
    return None


def load_or_build(
    stage, preset, batch, args, output_dir, jit_compile, write=True, class_names=None
):
    """The model to train and the step it is at (0 for a new run); only the
    process that writes (`write`) writes the run record."""
    ckpt = os.path.join(output_dir, "checkpoint.keras")
    record_path = os.path.join(output_dir, "run.json")
    record = run_record(stage, preset, batch, args, class_names)
    if args.resume:
        if not os.path.exists(ckpt):
            raise NoCheckpoint(
                f"--resume: no checkpoint at {ckpt!r}. Drop --resume to start a new run."
            )
        if not args.new_run_record:
            check_run_record(record, read_run_record(record_path), output_dir)
        model = keras_cdm.models.load_stage(ckpt)
        check_resumed_model(model, stage, preset, args, output_dir)
        if args.new_run_record and write:  # only once the checkpoint is this stage
            print(
                f"[keras_cdm] --new_run_record: {record_path} now records this command's data "
                "flags; they were not checked against the run that wrote the checkpoint"
            )
            write_json(record_path, record)
        if jit_compile is False:
            model.jit_compile = False
        return model, current_step(model)
    if args.new_run_record:
        raise ResumeRefused("--new_run_record goes with --resume (a new run writes its record).")
    if os.path.exists(ckpt):
        raise CheckpointExists(
            f"{output_dir!r} already holds a checkpoint: pass --resume to continue that run, "
            "or another --output_dir for a new one (nothing is overwritten)."
        )
    model = build_model(stage, preset, args, class_names)
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        jit_compile=jit_compile,
    )
    if write:
        write_json(record_path, record)
    return model, 0


def resume_command(stage, argv, world=1):
    """The shell command that resumes the run `argv` started (several
    processes: the same launch, as many processes)."""
    recipe = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"train_{stage}.py")
    argv = list(argv) + ([] if "--resume" in argv else ["--resume"])
    command = keras_cdm.backend.launch_prefix(world)
    # NAME=value words set the environment: only the value may be quoted.
    words = [
        f"{w.split('=', 1)[0]}={shlex.quote(w.split('=', 1)[1])}"
        if re.match(r"[A-Z_][A-Z0-9_]*=", w)
        else shlex.quote(w)
        for w in command
    ]
    return " ".join(words + [shlex.quote(w) for w in [os.path.relpath(recipe)] + argv])
