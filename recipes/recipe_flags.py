"""The recipes' command line: flag types, the training flags, the sampling
flags of every sampling CLI, and the one-line refusals (`RecipeError`)."""

import argparse
import dataclasses
import importlib.util
import inspect
import json
import math
import sys

import keras_cdm
from keras_cdm.models.presets import get_preset
from keras_cdm.utils.validation import per_stage


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


# The training flags of every `train_*.py` recipe, one per field of
# `TrainingOptions` (its defaults are the flags' defaults): the value's type
# or choices and what it means.
TRAINING_FLAGS = {
    "preset": dict(
        choices=["paper", "small", "tiny"],
        help="paper = the paper's architecture; small/tiny for CPUs",
    ),
    "dataset": dict(
        type=str,
        help="'synthetic', an image folder (one sub-folder per class; a folder of images "
        "alone trains an unconditional stage), or a TFDS name",
    ),
    "unconditional": dict(
        help="train without classes (num_classes=0) even on labelled data; inferred for a "
        "folder of images without class sub-folders"
    ),
    "data_dir": dict(type=str, help="TFDS data_dir"),
    "num_synthetic": dict(type=POSITIVE_INT, help="synthetic set size"),
    "batch_size": dict(type=POSITIVE_INT, help="global batch size (None: the preset's)"),
    "train_steps": dict(type=POSITIVE_INT, help="step to train to (None: preset's)"),
    "learning_rate": dict(type=POSITIVE_FLOAT, help="Adam's"),
    "ema_decay": dict(type=UNIT_INTERVAL, help="EMA decay (None: preset's)"),
    "augmentation": dict(
        choices=["gaussian", "blur", "none"],
        help="SR stages: conditioning augmentation (None: the paper's choice)",
    ),
    "mean_type": dict(
        choices=list(keras_cdm.diffusion.gaussian_diffusion.MEAN_TYPES),
        help="what the network predicts (None: the preset's; small/tiny SR presets: v)",
    ),
    "label_dropout": dict(
        type=UNIT_INTERVAL,
        help="share of labels replaced by the null label (for classifier-free guidance)",
    ),
    "network": dict(
        type=None,  # a JSON object on the command line, a dict from Python
        help="JSON overrides of the preset's network, e.g. '{\"base_channels\": 16}'",
    ),
    "output_dir": dict(type=str, help="(None: runs/<stage>_<preset>)"),
    "steps_per_execution": dict(
        type=POSITIVE_INT,
        help="training steps per call of the compiled step: the logs (input guard, stop "
        "signals) reach the host once per N steps instead of every step; --checkpoint_every "
        "and --train_steps must be multiples of N",
    ),
    "checkpoint_every": dict(type=POSITIVE_INT, help="steps between checkpoints"),
    "log_every": dict(
        type=POSITIVE_INT,
        help="steps between progress lines (step, loss, img/s, ETA) on stdout and in "
        "output_dir/train.log",
    ),
    "sample_every": dict(
        type=NON_NEGATIVE_INT, help="checkpoints between sample grids (0: end only)"
    ),
    "resume": dict(help="continue from output_dir/checkpoint.keras (an error if there is none)"),
    "new_run_record": dict(
        help="with --resume: write this command's data flags as output_dir/run.json instead "
        "of checking them against it (for a run.json that is missing or damaged)"
    ),
    "seed": dict(type=NON_NEGATIVE_INT, help="data order, noise, init"),
    "mixed_precision": dict(
        choices=[None, "mixed_bfloat16", "mixed_float16"],
        help="Keras dtype policy (None: float32)",
    ),
    "flip": dict(choices=[0, 1], help="random horizontal flips"),
    "tensorboard": dict(
        help="also write TensorBoard scalars to output_dir/tb (needs the tensorboard package)"
    ),
    "smoke": dict(help="a seconds-long run of the same code path"),
}


@dataclasses.dataclass
class TrainingOptions:
    """What a training run is asked for: the flags of the `train_*.py`
    recipes as typed fields, checked when made (a `FlagError` naming the
    flag). The command line parses into one (`parse_args`); from Python,
    `train(stage, preset="small", network={...})` makes one from keyword
    arguments. `TRAINING_FLAGS` says what each field means."""

    preset: str = "paper"
    dataset: str = "synthetic"
    unconditional: bool = False
    data_dir: str | None = None
    num_synthetic: int = 2000
    batch_size: int | None = None
    train_steps: int | None = None
    learning_rate: float = 1e-4
    ema_decay: float | None = None
    augmentation: str | None = None
    mean_type: str | None = None
    label_dropout: float = 0.0
    network: dict | None = None
    output_dir: str | None = None
    steps_per_execution: int = 1
    checkpoint_every: int | None = None
    log_every: int = 50
    sample_every: int = 0
    resume: bool = False
    new_run_record: bool = False
    seed: int = 0
    mixed_precision: str | None = None
    flip: int = 1
    tensorboard: bool = False
    smoke: bool = False

    def __post_init__(self):
        for field in dataclasses.fields(self):
            _check_option(field, getattr(self, field.name))
        if self.network:
            unknown = sorted(set(self.network) - NETWORK_KEYS)
            if unknown:
                raise FlagError(
                    f"--network: unknown network field(s) {unknown}; "
                    f"expected some of {sorted(NETWORK_KEYS)}"
                )
        if self.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise FlagError("--tensorboard needs the tensorboard package (pip install tensorboard)")

    def to_argv(self):
        """The command-line flags that give these options (defaults left out)."""
        argv = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value == field.default:
                continue
            if field.type is bool:
                argv.append(f"--{field.name}")
            else:
                argv += [
                    f"--{field.name}",
                    json.dumps(value) if isinstance(value, dict) else str(value),
                ]
        return argv


def _check_option(field, value):
    """Refuses a `TrainingOptions` value of the wrong type or range, naming its flag."""
    spec = TRAINING_FLAGS[field.name]
    flag = f"--{field.name}"
    if value is None and field.default is None:
        return
    if field.type is bool:
        ok, expected = isinstance(value, bool), "True or False"
    elif "choices" in spec:
        ok, expected = value in spec["choices"], f"one of {spec['choices']}"
    elif field.name == "network":
        ok, expected = isinstance(value, dict), "a dict (a JSON object on the command line)"
    elif isinstance(spec["type"], _Validated):
        kind = spec["type"].kind
        typed = isinstance(value, kind) or (kind is float and isinstance(value, int))
        ok = typed and not isinstance(value, bool) and spec["type"].check(value)
        expected = spec["type"].expected
    else:
        ok, expected = isinstance(value, str), "a string"
    if not ok:
        raise FlagError(f"{flag}: expected {expected}, received {value!r}")


def parse_args(stage, argv=None):
    """The recipe's command line as `TrainingOptions` (argparse's usage and
    exit 2 for a value of the wrong type)."""
    p = argparse.ArgumentParser(
        description=f"Train the {stage} stage of a cascade.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for field in dataclasses.fields(TrainingOptions):
        spec = dict(TRAINING_FLAGS[field.name])
        if field.type is bool:
            p.add_argument(f"--{field.name}", action="store_true", **spec)
            continue
        if field.name == "network":
            spec["type"] = _json_object
        elif "choices" in spec and all(isinstance(c, int) for c in spec["choices"]):
            spec["type"] = int
        p.add_argument(f"--{field.name}", default=field.default, **spec)
    try:
        return TrainingOptions(**vars(p.parse_args(argv)))
    except FlagError as e:
        p.error(str(e))


# What a stage without recorded sampler settings samples with, unless the
# flags say otherwise (`SamplerSettings`' defaults).
# The command-line flag of each `SamplerSettings` field: its type or
# choices and what it means (each takes one value for every stage or one per
# stage). The fields in NOT_SAMPLING_FLAGS keep their defaults.
SAMPLING_FLAGS = {
    "num_steps": dict(type=POSITIVE_INT, help="respaced steps"),
    "sampler": dict(
        choices=lambda: list(keras_cdm.diffusion.solver_names()),
        help="a registered solver (keras_cdm.diffusion.solvers)",
    ),
    "eta": dict(type=NON_NEGATIVE_FLOAT, help="DDIM eta"),
    "guidance_scale": dict(
        type=NON_NEGATIVE_FLOAT,
        help="classifier-free guidance (e.g. 3 1: guide the base stage only); >1 needs a "
        "stage trained with label dropout",
    ),
    "spacing": dict(
        choices=lambda: list(keras_cdm.models.reverse_process.SPACINGS),
        help="which timesteps --num_steps visits: uniform, quadratic (dense at low noise) "
        "or trailing (a distilled student's grid)",
    ),
}
NOT_SAMPLING_FLAGS = ("clip_denoised", "use_ema")


def add_sampling_flags(p, **defaults):
    """The sampling flags of `sample_cascade.py`, `upscale.py` and
    `tools/sweep_aug_levels.py`, one per `SamplerSettings` field in
    `SAMPLING_FLAGS`: each takes one value for every stage or one value per
    stage. Unset, a stage samples with its own recorded settings (a
    distilled student's `sampler_settings`), else with `defaults` (over
    `SamplerSettings`' own), which the help shows; `stage_settings_from_flags`
    resolves them."""
    shown = dataclasses.asdict(keras_cdm.models.SamplerSettings(**defaults))
    for field in dataclasses.fields(keras_cdm.models.SamplerSettings):
        if field.name in NOT_SAMPLING_FLAGS:
            continue
        spec = dict(SAMPLING_FLAGS[field.name])
        if "choices" in spec:
            spec["choices"] = spec["choices"]()
        default = shown[field.name]
        if field.name == "num_steps" and default is None:
            default = "all T"
        spec["help"] += (
            " — one for all stages or one per stage (unset: the stage's recorded settings, "
            f"else {default})"
        )
        p.add_argument(f"--{field.name}", nargs="+", default=None, **spec)
    p.set_defaults(_sampling_defaults=defaults)


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
        for name in SAMPLING_FLAGS
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
