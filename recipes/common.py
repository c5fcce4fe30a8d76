"""Shared code of the keras_cdm recipes: flags, data, training loop, checkpoints.

Each `train_*.py` recipe is a stage name plus a call to `main`.
"""

import argparse
import csv
import importlib.util
import inspect
import json
import math
import os
import re
import shlex
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

try:
    import keras_cdm  # noqa: E402  (checks the Keras backend before Keras loads it)
except ImportError as e:
    if type(e).__name__ != "BackendError":
        raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_cdm.backend import any_process  # noqa: E402
from keras_cdm.backend import has_accelerator  # noqa: E402
from keras_cdm.distribute import configure_data_parallel  # noqa: E402
from keras_cdm.models.presets import get_preset  # noqa: E402
from keras_cdm.utils.interrupts import SignalStop  # noqa: E402
from keras_cdm.utils.interrupts import StopOnSignal  # noqa: E402
from keras_cdm.utils.progress import TrainingProgress  # noqa: E402
from keras_cdm.utils.validation import per_stage  # noqa: E402


class RecipeError(Exception):
    """A refusal that the command line prints as one line (exit 2), not a traceback."""


class FlagError(RecipeError, ValueError):
    """Flags that cannot go together, or do not fit the data."""


class ResumeRefused(RecipeError, ValueError):
    """`--resume` cannot continue this run as asked."""


class NoCheckpoint(RecipeError, FileNotFoundError):
    """`--resume` found no checkpoint."""


class Unsupported(RecipeError, NotImplementedError):
    """A setup the recipes cannot run (the message says what to use)."""


class CheckpointExists(RecipeError, FileExistsError):
    """A new run would overwrite a checkpoint."""


class _Validated:
    """An argparse `type` that checks a value and names the flag when it fails."""

    def __init__(self, kind, check, expected):
        self.kind, self.check, self.expected = kind, check, expected
        self.__name__ = expected  # argparse shows it in "invalid <name> value"

    def __call__(self, text):
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.expected}, received {text!r}")
        if not self.check(value):
            raise argparse.ArgumentTypeError(f"expected {self.expected}, received {text!r}")
        return value


POSITIVE_INT = _Validated(int, lambda v: v > 0, "a positive int")
NON_NEGATIVE_INT = _Validated(int, lambda v: v >= 0, "an int >= 0")
POSITIVE_FLOAT = _Validated(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
UNIT_INTERVAL = _Validated(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
NON_NEGATIVE_FLOAT = _Validated(float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0")


def _json_object(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON object, received {text!r} ({e})")
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, received {text!r}")
    return value


_json_object.__name__ = "JSON object"


def parse_args(stage, argv=None):
    p = argparse.ArgumentParser(
        description=f"Train the {stage} stage of a cascade.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--preset",
        default="paper",
        choices=["paper", "small", "tiny"],
        help="paper = the paper's architecture; small/tiny for CPUs",
    )
    p.add_argument(
        "--dataset",
        default="synthetic",
        help="'synthetic', an image folder (one sub-folder per class; a folder of images "
        "alone trains an unconditional stage), or a TFDS name",
    )
    p.add_argument(
        "--unconditional",
        action="store_true",
        help="train without classes (num_classes=0) even on labelled data; inferred for a "
        "folder of images without class sub-folders",
    )
    p.add_argument("--data_dir", default=None, help="TFDS data_dir")
    p.add_argument("--num_synthetic", type=POSITIVE_INT, default=2000, help="synthetic set size")
    p.add_argument("--batch_size", type=POSITIVE_INT, default=None, help="global batch size")
    p.add_argument(
        "--train_steps", type=POSITIVE_INT, default=None, help="step to train to (None: preset's)"
    )
    p.add_argument("--learning_rate", type=POSITIVE_FLOAT, default=1e-4, help="Adam's")
    p.add_argument(
        "--ema_decay", type=UNIT_INTERVAL, default=None, help="EMA decay (None: preset's)"
    )
    p.add_argument(
        "--augmentation",
        default=None,
        choices=["gaussian", "blur", "none"],
        help="SR stages: conditioning augmentation (default: the paper's choice)",
    )
    p.add_argument(
        "--mean_type",
        default=None,
        choices=list(keras_cdm.diffusion.gaussian_diffusion.MEAN_TYPES),
        help="what the network predicts (default: the preset's; small/tiny SR presets: v)",
    )
    p.add_argument(
        "--label_dropout",
        type=UNIT_INTERVAL,
        default=0.0,
        help="share of labels replaced by the null label (for classifier-free guidance)",
    )
    p.add_argument(
        "--network",
        type=_json_object,
        default=None,
        help="JSON overrides of the preset's network, e.g. '{\"base_channels\": 16}'",
    )
    p.add_argument("--output_dir", default=None, help="(None: runs/<stage>_<preset>)")
    p.add_argument(
        "--steps_per_execution",
        type=POSITIVE_INT,
        default=1,
        help="training steps per call of the compiled step: the logs (input guard, stop "
        "signals) reach the host once per N steps instead of every step; --checkpoint_every "
        "and --train_steps must be multiples of N",
    )
    p.add_argument(
        "--checkpoint_every", type=POSITIVE_INT, default=None, help="steps between checkpoints"
    )
    p.add_argument(
        "--log_every",
        type=POSITIVE_INT,
        default=50,
        help="steps between progress lines (step, loss, img/s, ETA) on stdout and in "
        "output_dir/train.log",
    )
    p.add_argument(
        "--sample_every",
        type=NON_NEGATIVE_INT,
        default=0,
        help="checkpoints between sample grids (0: end only)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from output_dir/checkpoint.keras (an error if there is none)",
    )
    p.add_argument(
        "--new_run_record",
        action="store_true",
        help="with --resume: write this command's data flags as output_dir/run.json instead "
        "of checking them against it (for a run.json that is missing or damaged)",
    )
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="data order, noise, init")
    p.add_argument(
        "--mixed_precision",
        default=None,
        choices=[None, "mixed_bfloat16", "mixed_float16"],
        help="Keras dtype policy (None: float32)",
    )
    p.add_argument("--flip", type=int, default=1, choices=[0, 1], help="random horizontal flips")
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard scalars to output_dir/tb (needs the tensorboard package)",
    )
    p.add_argument("--smoke", action="store_true", help="a seconds-long run of the same code path")
    args = p.parse_args(argv)
    if args.network:
        unknown = sorted(set(args.network) - NETWORK_KEYS)
        if unknown:
            p.error(
                f"argument --network: unknown network field(s) {unknown}; "
                f"expected some of {sorted(NETWORK_KEYS)}"
            )
    if args.tensorboard and importlib.util.find_spec("tensorboard") is None:
        p.error("argument --tensorboard: needs the tensorboard package (pip install tensorboard)")
    return args


# What a stage without recorded sampler settings samples with, unless the
# flags say otherwise (`SamplerSettings`' defaults).
SAMPLING_DEFAULTS = {"num_steps": None, "sampler": "ddpm", "spacing": "uniform"}


def add_sampling_flags(p, **defaults):
    """The sampling flags of `sample_cascade.py`, `upscale.py` and
    `tools/sweep_aug_levels.py`: each takes one value for every stage or one
    value per stage. Unset, a stage samples with its own recorded settings
    (a distilled student's `sampler_settings`), else with `defaults` (over
    `SAMPLING_DEFAULTS`), which the help shows; `stage_settings_from_flags`
    resolves them."""
    shown = dict(SAMPLING_DEFAULTS, **defaults)
    unset = "unset: the stage's recorded settings, else "
    p.add_argument(
        "--num_steps",
        type=POSITIVE_INT,
        nargs="+",
        default=None,
        help="respaced steps: one for all stages or one per stage "
        f"({unset}{shown['num_steps'] or 'all T'})",
    )
    p.add_argument(
        "--sampler",
        nargs="+",
        default=None,
        choices=list(keras_cdm.diffusion.solver_names()),
        help="a registered solver (keras_cdm.diffusion.solvers): one for all stages or one "
        f"per stage ({unset}{shown['sampler']})",
    )
    p.add_argument(
        "--guidance_scale",
        type=NON_NEGATIVE_FLOAT,
        nargs="+",
        default=None,
        help="classifier-free guidance, one for all stages or one per stage "
        "(e.g. 3 1: guide the base stage only); >1 needs a stage trained with label dropout "
        f"({unset}1)",
    )
    p.add_argument(
        "--eta",
        type=NON_NEGATIVE_FLOAT,
        nargs="+",
        default=None,
        help=f"DDIM eta, one for all stages or one per stage ({unset}0)",
    )
    p.add_argument(
        "--spacing",
        nargs="+",
        default=None,
        choices=list(keras_cdm.models.reverse_process.SPACINGS),
        help="which timesteps --num_steps visits: uniform, quadratic (dense at low noise) or "
        "trailing (a distilled student's grid), one for all stages or one per stage "
        f"({unset}{shown['spacing']})",
    )
    p.set_defaults(_sampling_defaults=shown)


def stage_settings_from_flags(args, stages):
    """One `SamplerSettings` per loaded stage from `add_sampling_flags`'
    flags: the values given; the rest from the stage's recorded settings,
    else from the recipe's defaults."""
    given = sampling_kwargs(args, len(stages))
    out = []
    for k, stage in enumerate(stages):
        base = stage.sampler_settings or keras_cdm.models.SamplerSettings(**args._sampling_defaults)
        fields = {name: v[k] for name, v in given.items() if v is not None}
        try:
            out.append(keras_cdm.models.SamplerSettings.resolve(base, **fields))
        except ValueError as e:
            raise FlagError(str(e)) from None
    return out


def per_stage_flag(name, values, num_stages):
    """A flag's values (one value, or one per stage) as one per stage; a
    FlagError naming the flag otherwise."""
    try:
        return per_stage(name, values[0] if len(values) == 1 else values, num_stages)
    except ValueError as e:
        raise FlagError(str(e)) from None


def sampling_kwargs(args, num_stages):
    """`CascadeSampler` keyword arguments (one value per stage) from
    `add_sampling_flags`' flags."""
    return {
        name: None
        if getattr(args, name) is None
        else per_stage_flag(f"--{name}", getattr(args, name), num_stages)
        for name in ("num_steps", "sampler", "guidance_scale", "eta", "spacing")
    }


# Fields `--network` may override: the U-Net's arguments (and the SR U-Net's).
NETWORK_KEYS = {
    name
    for cls in (keras_cdm.UNet, keras_cdm.SuperResUNet)
    for name, param in inspect.signature(cls.__init__).parameters.items()
    if name not in ("self", "kwargs", "_extra_config", "dtype")
}


def stage_settings(stage, args):
    """`(preset name, global batch, total steps, checkpoint interval)`: the
    preset's training defaults unless the flags say otherwise."""
    preset = stage if args.preset == "paper" else f"{stage}_{args.preset}"
    if args.smoke:
        preset = f"{stage}_tiny"
    spec = get_preset(preset)
    batch, steps = (4, 4) if args.smoke else (spec.batch_size, spec.train_steps)
    batch = args.batch_size or batch
    steps = args.train_steps or steps
    every = args.checkpoint_every or max(1, min(1000, steps // 2 if args.smoke else 1000))
    return preset, batch, steps, min(every, steps)


def _stage_kwargs(stage, preset, args):
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
        preset, network_overrides=network_overrides, **_stage_kwargs(stage, preset, args)
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
    kwargs = dict(spec.model_kwargs, **_stage_kwargs(stage, preset, args))
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


def open_source(stage, preset, args):
    """The training data; makes the stage unconditional (network
    num_classes=0 in `args.network`) when asked to or when the data has no
    classes, and says so."""
    size = dict(get_preset(preset).network, **(args.network or {}))["image_size"]
    source = keras_cdm.data.resolve_source(
        args.dataset,
        data_dir=args.data_dir,
        resolution=size,
        seed=args.seed,
        num_images=min(args.num_synthetic, 16) if args.smoke else args.num_synthetic,
    )
    unlabelled = source.num_classes == 0
    if args.unconditional or unlabelled or (args.network or {}).get("num_classes") == 0:
        why = (
            "--unconditional"
            if args.unconditional
            else f"--dataset {args.dataset!r} has no class sub-folders"
            if unlabelled
            else "--network num_classes=0"
        )
        if args.label_dropout:
            raise FlagError(
                f"--label_dropout {args.label_dropout}: an unconditional stage ({why}) has no "
                "labels to drop."
            )
        print(f"[keras_cdm] {stage}: unconditional stage ({why})")
        args.network = dict(args.network or {}, num_classes=0)
        if not unlabelled:
            source = source.without_labels()
    elif source.class_names:
        mapping = ", ".join(f"{i}={name}" for i, name in enumerate(source.class_names))
        print(f"[keras_cdm] {args.dataset}: {source.num_classes} classes, label = {mapping}")
    return source


def build_dataset(model, args, batch, shard=None, source=None):
    sr = isinstance(model, keras_cdm.SuperResDiffusionModel)
    size = model.image_size
    if source.num_classes > model.num_classes:
        raise FlagError(
            f"--dataset {args.dataset!r} has {source.num_classes} classes but the stage has "
            f"{model.num_classes}: labels would fall outside [0, {model.num_classes}). Pass "
            f"--network '{{\"num_classes\": {source.num_classes}}}' for a new run."
        )
    if source.skipped:
        print(
            f"[keras_cdm] skipped {len(source.skipped)} unreadable image(s), "
            f"first: {source.skipped[0]}"
        )
    if sr:
        return keras_cdm.data.super_res_dataset(
            source,
            model.low_res_size,
            size,
            batch,
            flip=bool(args.flip),
            seed=args.seed,
            shard=shard,
        )
    return keras_cdm.data.base_dataset(
        source, size, batch, flip=bool(args.flip), seed=args.seed, shard=shard
    )


def current_step(model):
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def save_collectively(model, path):
    """`model.save(path)` in the writing process; with `path=None` (the other
    processes) the same save into a scratch folder that is removed: under
    several JAX processes Keras's saving creates variables, a collective
    that every process must join."""
    if path is not None:
        return model.save(path)
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        model.save(os.path.join(scratch, "scratch.keras"))


class Checkpoint(keras.callbacks.Callback):
    """At the end of each epoch (= `checkpoint_every` steps, fewer when the
    run ends between two, or the step a stop signal ended): saves the whole
    stage (raw + EMA weights, optimizer with its step counter, RNG), logs a
    CSV row, and writes sample grids. Every file is replaced atomically."""

    def __init__(self, output_dir, sample_every, num_classes, write=True):
        super().__init__()
        self.write = write
        self.output_dir = output_dir
        self.sample_every = sample_every
        self.num_classes = num_classes
        self.csv_path = os.path.join(output_dir, "log.csv")
        self.path = os.path.join(output_dir, "checkpoint.keras")
        self.saves = 0
        self.saved_step = None

    def on_epoch_end(self, epoch, logs=None):
        # Every process runs this: reading `self.model` brings JAX's trainer
        # state back into the variables, a collective with several processes.
        step = current_step(self.model)
        self.saved_step = step
        if not self.write:  # one process writes (the others run the same save)
            return save_collectively(self.model, None)
        save_collectively(self.model, self.path + ".tmp.keras")
        os.replace(self.path + ".tmp.keras", self.path)  # atomic: a kill never leaves half a file
        header = None
        if os.path.exists(self.csv_path):
            with open(self.csv_path, newline="") as f:
                header = next(csv.reader(f), None)
        row = {"step": step, "time": f"{time.time():.1f}"}
        row.update({k: f"{float(v):.6g}" for k, v in (logs or {}).items()})
        with open(self.csv_path, "a", newline="") as f:
            # A resumed run keeps the file's columns (a run begun by an
            # older version logged more): a value is never written under
            # another column's name.
            w = csv.DictWriter(
                f,
                header or ["step", "time"] + sorted(logs or {}),
                restval="",
                extrasaction="ignore",
            )
            if header is None:
                w.writeheader()
            w.writerow(row)
        self.saves += 1
        print(f"[keras_cdm] checkpoint at step {step}: {self.path}", flush=True)
        if self.sample_every and self.saves % self.sample_every == 0:
            write_sample_grid(
                self.model,
                os.path.join(self.output_dir, f"samples_{step:08d}.png"),
                self.num_classes,
            )


class StopAtStep(keras.callbacks.Callback):
    """Ends `fit` after global step `last` (inside an epoch if need be), so a
    run stops exactly at `--train_steps` whatever the checkpoint interval."""

    def __init__(self, first, last):
        super().__init__()
        self.step, self.last = first, last

    def on_train_batch_begin(self, batch, logs=None):
        self.begin = batch

    def on_train_batch_end(self, batch, logs=None):
        self.step += batch - self.begin + 1  # several with steps_per_execution
        if self.step >= self.last:
            self.model.stop_training = True


def fit_to_step(model, dataset, done, steps, every, callbacks, stop, spe=1, data_name="the data"):
    """Trains `model` from step `done` to step `steps` in epochs of `every`
    steps (each ends with a checkpoint among `callbacks`), or until `stop`
    received a signal; returns the step reached. The input pipeline is
    deterministic given its seed, so a resumed run skips the batches
    already consumed and continues on exactly the next one."""
    while done < steps:
        # Epochs end on multiples of `every` (checkpoints); a resumed run
        # whose step is between two first finishes that interval.
        first = min(every - done % every, steps - done) if done % every else 0
        data = keras_cdm.backend.per_process_input(model, dataset.skip(done) if done else dataset)
        # A run resumed from a checkpoint written with another
        # --steps_per_execution first steps to a multiple of this one.
        set_steps_per_execution(model, spe if first % spe == 0 else 1)
        if first:
            model.fit(
                data, epochs=1, steps_per_epoch=first, callbacks=callbacks, shuffle=False, verbose=0
            )
        else:
            model.fit(
                data,
                epochs=-(-steps // every),
                initial_epoch=done // every,
                steps_per_epoch=every,
                callbacks=callbacks + [StopAtStep(done, steps)],
                shuffle=False,  # the datasets shuffle themselves, per seed
                verbose=0,
            )
        if current_step(model) == done:
            raise RuntimeError(
                f"Training made no progress at step {done}: the dataset ended early ({data_name})."
            )
        done = current_step(model)
        if stop.received is not None:
            break
    return done


def grid_low_res(labels, num_classes, size):
    """Low-resolution shapes for an SR stage's sample grid, in [-1, 1]: image
    `i` shows class `labels[i]` (the stage is told the class of the image it
    upsamples), for stages of up to ten classes; other stages get the shapes
    in the set's order."""
    shape_classes = min(num_classes, len(keras_cdm.data.CLASS_NAMES))
    images, shape_labels = keras_cdm.data.synthetic_shapes(
        len(labels), size, seed=123, num_classes=shape_classes
    )
    if num_classes <= shape_classes:
        images = images[np.argsort(shape_labels, kind="stable")]
    return images.astype("float32") / 127.5 - 1


def write_sample_grid(model, path, num_classes, per_class=4, num_steps=50):
    """A grid of samples: a row per class (an unconditional stage: rows of
    `per_class` samples, as many rows as `num_classes` asks)."""
    from keras_cdm.utils.images import save_class_grid

    labels = np.repeat(np.arange(num_classes), per_class)
    given = None if model.unconditional else labels
    count = {"num_images": len(labels)} if model.unconditional else {}
    if isinstance(model, keras_cdm.SuperResDiffusionModel):
        lo = grid_low_res(labels, num_classes, model.low_res_size)
        out = model.sample(lo, given, aug_level=0, num_steps=num_steps, seed=0)
        return save_class_grid(path, out, labels, extra_stages=[lo], class_names=model.class_names)
    out = model.sample(given, num_steps=num_steps, seed=0, **count)
    return save_class_grid(path, out, labels, class_names=model.class_names)


def set_steps_per_execution(model, n):
    """Runs `n` training steps per call of the compiled step from the next `fit` on."""
    if model.steps_per_execution != n:
        model.steps_per_execution = n
        model.train_function = None


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


def train(stage, **flags):
    """Trains `stage` from Python with the recipe's flags as keyword
    arguments (`train("base16", preset="small", network={...}, resume=True)`),
    checked exactly as on the command line. Returns the final `.keras` path."""
    argv = []
    for name, value in flags.items():
        if value is None or value is False:
            continue
        argv.append(f"--{name}")
        if value is not True:
            argv.append(json.dumps(value) if isinstance(value, dict) else str(value))
    return main(stage, argv)


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


class StageError(RecipeError, ValueError):
    """Stages that cannot be loaded or sampled as given (missing, wrong order)."""


def cli(fn):
    """Runs a recipe's `main()` from the command line: a refusal
    (`RecipeError`) is printed as one line, `error: ...`, and exits 2."""
    try:
        return fn()
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def main(stage, argv=None):
    """The command line of every `train_*.py` recipe.

    SIGINT (Ctrl-C) or SIGTERM stops the run at the end of the step that is
    running: the checkpoint of that step is written, the command that resumes
    it is printed, and the process exits with 128 + the signal number (130,
    143; `SystemExit` when called from Python). A second signal exits at once
    and leaves the last checkpoint as it was. From the command line, a
    refusal (`RecipeError`) is printed as one line (exit 2).
    """
    if argv is not None:
        return _main(stage, list(argv))
    return cli(lambda: _main(stage, sys.argv[1:]))


def recipe_signal_stop():
    """The recipes' SIGINT/SIGTERM handler: the first signal stops the run
    after the step that is running (checkpoint, resume command); a second
    exits at once, leaving the last checkpoint as it is."""
    return SignalStop(
        (signal.SIGINT, signal.SIGTERM),
        second="exit",
        message="[keras_cdm] {name}: stopping after this step and writing its checkpoint "
        "(send it again to exit at once, leaving the last checkpoint as it is)",
    )


def _main(stage, argv):
    with recipe_signal_stop() as stop:
        return _train(stage, argv, stop)


def _train(stage, argv, stop):
    args = parse_args(stage, argv)
    keras.utils.set_random_seed(args.seed)
    preset, batch, steps, every = stage_settings(stage, args)
    spe = args.steps_per_execution
    if every % spe or steps % spe:
        raise FlagError(
            f"--steps_per_execution {spe} must divide the checkpoint interval ({every} steps) "
            f"and --train_steps ({steps})."
        )
    output_dir = args.output_dir or os.path.join("runs", f"{stage}_{args.preset}")
    os.makedirs(output_dir, exist_ok=True)
    try:
        setup = configure_data_parallel()
    except NotImplementedError as e:
        raise Unsupported(str(e)) from None
    print(
        f"[keras_cdm] {stage}: preset={preset} batch={batch} steps={steps} "
        f"backend={keras_cdm.backend.name()} ({setup.description}) -> {output_dir}"
    )
    source = open_source(stage, preset, args)
    rank, world = setup.rank, setup.world
    with setup.scope:
        # The checkpoint holds raw and EMA weights, optimizer state, the step
        # counter (optimizer.iterations) and the model's RNG state.
        model, start = load_or_build(
            stage, preset, batch, args, output_dir, setup.jit_compile, rank == 0, source.class_names
        )
    if start >= steps:
        raise ResumeRefused(
            f"--resume: the checkpoint in {output_dir!r} is at step {start}, not below "
            f"--train_steps {steps}; pass a larger --train_steps to train further."
        )
    if start:
        print(f"[keras_cdm] resumed at step {start} (from the checkpoint's optimizer)")
    note = paper_preset_note(preset, model.network.count_params(), has_accelerator())
    if note and rank == 0:
        print(note, flush=True)
    shard = None
    if world > 1:
        if batch % world:
            raise FlagError(f"--batch_size {batch} must be divisible by the {world} processes.")
        # PyTorch: the same start on every rank, gradients averaged.
        keras_cdm.backend.share_across_processes(model)
        # Each process reads only its share of every global batch (JAX's
        # DataParallel assembles the global batch from the processes' shares).
        batch, shard = batch // world, (world, rank)
    dataset = build_dataset(model, args, batch, shard, source)
    num_classes = min(model.num_classes, 10) or 4  # unconditional: 4 rows of samples
    # Under DDP every rank holds the same weights; rank 0 alone writes.
    checkpoint = Checkpoint(output_dir, args.sample_every, num_classes, write=rank == 0)
    # With several processes every one stops after the same step (one
    # collective of a flag per step).
    agree = any_process if world > 1 else None
    callbacks = [StopOnSignal(stop, "stop", agree), checkpoint]
    if rank == 0:
        log = os.path.join(output_dir, "train.log")
        callbacks.append(
            TrainingProgress(steps, batch * world, args.log_every, first_step=start, log_path=log)
        )
    if args.tensorboard and rank == 0:
        callbacks.append(
            keras.callbacks.TensorBoard(os.path.join(output_dir, "tb"), update_freq="epoch")
        )
    done = fit_to_step(
        model, dataset, start, steps, every, callbacks, stop, spe, f"--dataset {args.dataset!r}"
    )
    final = os.path.join(output_dir, f"{stage}.keras")
    if stop.received is not None and done < steps:
        if checkpoint.saved_step != done:
            checkpoint.on_epoch_end(0, {})  # the signal came between two fits
        if rank == 0:
            print(
                f"[keras_cdm] stopped by {stop.name} at step {done} of {steps}; checkpoint: "
                f"{checkpoint.path}\n[keras_cdm] resume with: {resume_command(stage, argv, world)}",
                flush=True,
            )
        sys.exit(stop.exit_code)
    if rank > 0:
        save_collectively(model, None)
        return final
    save_collectively(model, final + ".tmp.keras")
    os.replace(final + ".tmp.keras", final)
    if keras_cdm.backend.sampling_needs_every_process(world):
        print(f"[keras_cdm] wrote {final} (no sample grid with several JAX processes)")
        return final
    if stop.received is not None:
        print(f"[keras_cdm] {stop.name} after the last step: wrote {final}, no sample grid")
        sys.exit(stop.exit_code)
    grid = write_sample_grid(
        model,
        os.path.join(output_dir, "samples_final.png"),
        2 if args.smoke else num_classes,
        per_class=1 if args.smoke else 4,
        num_steps=2 if args.smoke else 50,
    )
    print(f"[keras_cdm] wrote {final} and {grid}")
    return final
