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
