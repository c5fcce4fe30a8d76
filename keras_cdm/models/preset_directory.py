"""Preset directories (KerasHub's convention): a stage as a config JSON and
a weights file, loadable on any backend without running code from the files.

    stage_dir/
        config.json        # keras_cdm and Keras versions, the stage's config
        model.weights.h5   # weights="all": raw and EMA network weights, EMA
                           # counters, RNG state (float32)
        ema.weights.h5     # weights="ema" (a release): the EMA network's
                           # weights only, in float32 or float16

No optimizer state: a preset directory is for sampling and fine-tuning (a
`.keras` checkpoint resumes a run). A release loads its EMA weights into both
the EMA and the raw network (fine-tuning starts from them).
"""

import json
import os

import h5py
import keras
import numpy as np
from keras import ops

from keras_cdm.models.diffusion_model import stage_class

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
EMA_WEIGHTS_FILE = "ema.weights.h5"
EMA_FORMAT = "keras_cdm.ema_weights.v1"
WEIGHTS_CHOICES = {"all": WEIGHTS_FILE, "ema": EMA_WEIGHTS_FILE}
EMA_DTYPES = ("float32", "float16")


def save_to_preset(model, directory, weights="all", dtype="float32"):
    """Writes `model` to `directory` (created if needed; each file is
    replaced atomically). Returns the directory.

    `weights="all"` keeps the whole training state (float32);
    `weights="ema"` writes the EMA network's weights alone, in `dtype`
    (`"float32"` or `"float16"`: half the size; a weight beyond float16's
    range is an error, not an `inf`)."""
    from keras_cdm import __version__

    if weights not in WEIGHTS_CHOICES:
        raise ValueError(
            f"`weights` must be one of {sorted(WEIGHTS_CHOICES)} ('all': raw and EMA weights "
            f"and training counters; 'ema': the EMA weights alone). Received: weights={weights!r}"
        )
    if dtype not in EMA_DTYPES:
        raise ValueError(f"`dtype` must be one of {list(EMA_DTYPES)}. Received: dtype={dtype!r}")
    if weights == "all" and dtype != "float32":
        raise ValueError(
            f"dtype={dtype!r} needs weights='ema': weights='all' keeps the training state "
            "in float32."
        )
    os.makedirs(directory, exist_ok=True)
    config = {
        "keras_cdm_version": __version__,
        "keras_version": keras.__version__,
        "weights": WEIGHTS_CHOICES[weights],
        "weights_hold": (
            "raw and EMA network weights, EMA counters and RNG state"
            if weights == "all"
            else f"EMA network weights only ({dtype}); loaded into the EMA and raw networks"
        ),
        "stage": keras.saving.serialize_keras_object(model),
    }
    path = os.path.join(directory, WEIGHTS_CHOICES[weights])
    if weights == "all":
        model.save_weights(path + ".tmp.weights.h5")
        os.replace(path + ".tmp.weights.h5", path)
    else:
        _write_ema_weights(model, path, dtype)
    # The other weights file of an earlier save would no longer match.
    for name in WEIGHTS_CHOICES.values():
        stale = os.path.join(directory, name)
        if name != WEIGHTS_CHOICES[weights] and os.path.exists(stale):
            os.remove(stale)
    path = os.path.join(directory, CONFIG_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(config, f, indent=2)
    os.replace(path + ".tmp", path)
    return directory


def from_preset(cls, name, network_overrides, safe_mode, kwargs):
    """`cls.from_preset(name, ...)`: a preset directory loaded as saved, or
    the stage of a named preset (its own class, which must be `cls` or a
    subclass), with `network_overrides` and model `kwargs` over the
    preset's."""
    from keras_cdm.models.presets import get_preset

    if is_preset_directory(name):
        if network_overrides or kwargs:
            raise ValueError(
                f"A preset directory ({name!r}) is loaded as saved. Received changes: "
                f"{sorted(kwargs) + (['network_overrides'] if network_overrides else [])}"
            )
        return load_from_preset(name, cls, safe_mode=safe_mode)
    if isinstance(name, str) and os.path.isdir(name):
        raise ValueError(
            f"{name!r} is a folder but not a preset directory: it has no "
            f"{CONFIG_FILE} (write one with model.save_to_preset)."
        )
    preset = get_preset(name)
    if "network" in kwargs:
        raise TypeError(
            "from_preset builds the preset's network; pass changes to it as "
            "`network_overrides={...}`. Received: network="
            f"{type(kwargs['network']).__name__}"
        )
    target = stage_class(preset.model_class)
    if not issubclass(target, cls):
        raise ValueError(
            f"Preset {name!r} builds a {preset.model_class}, not a {cls.__name__}. "
            f"Expected one of {sorted(cls.presets())}."
        )
    network = target.network_class.from_preset(preset.architecture, **(network_overrides or {}))
    diffusion = dict(preset.diffusion, **(kwargs.pop("diffusion", None) or {}))
    return target(network, diffusion=diffusion, **dict(preset.model_kwargs, **kwargs))


def is_preset_directory(path):
    return isinstance(path, (str, os.PathLike)) and os.path.isfile(
        os.path.join(os.fspath(path), CONFIG_FILE)
    )


def load_from_preset(directory, cls, safe_mode=True):
    """The stage saved in `directory`, checked to be a `cls`.

    `safe_mode=True` (the default) refuses configs that would run code when
    loaded (Keras `safe_mode`, e.g. lambda layers); only keras_cdm stage
    classes are built.
    """
    directory = os.fspath(directory)
    path = os.path.join(directory, CONFIG_FILE)
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"Could not read the preset config {path!r}: {e}") from e
    stage = config.get("stage") if isinstance(config, dict) else None
    registered = stage.get("registered_name") if isinstance(stage, dict) else None
    try:
        stage_class(registered)
    except ValueError:
        raise ValueError(
            f"{path!r} does not describe a keras_cdm stage (expected a 'stage' entry of a "
            f"registered DiffusionModel class, e.g. 'keras_cdm>DiffusionModel'). "
            f"Received: {registered!r}"
        ) from None
    weights = os.path.join(directory, config.get("weights", WEIGHTS_FILE))
    if not os.path.isfile(weights):
        raise FileNotFoundError(
            f"The preset directory {directory!r} has no weights file {weights!r}"
        )
    try:
        model = keras.saving.deserialize_keras_object(stage, safe_mode=safe_mode)
    except Exception as e:
        raise ValueError(f"Could not build the stage described in {path!r}: {e}") from e
    if not isinstance(model, cls):
        raise ValueError(f"{directory!r} holds a {type(model).__name__}, not a {cls.__name__}.")
    try:
        if os.path.basename(weights) == EMA_WEIGHTS_FILE:
            _read_ema_weights(model, weights)
        else:
            model.load_weights(weights)
    except Exception as e:
        raise ValueError(f"Could not load the weights {weights!r}: {e}") from e
    return model


def _write_ema_weights(model, path, dtype):
    """The EMA network's variables, in creation order (the order the model
    pairs them with the raw network's), each with its path for reading."""
    tmp = path + ".tmp"
    # libver="latest": a one-chunk dataset needs no chunk B-tree (HDF5 >= 1.10).
    with h5py.File(tmp, "w", libver="latest") as f:
        f.attrs["format"] = EMA_FORMAT
        f.attrs["dtype"] = dtype
        f.attrs["count"] = len(model.ema_network.weights)
        for i, var in enumerate(model.ema_network.weights):
            value = ops.convert_to_numpy(var.value)
            with np.errstate(over="ignore"):
                cast = value.astype(dtype)
            if not np.all(np.isfinite(cast)):
                raise ValueError(
                    f"Weight {var.path!r} does not fit in {dtype} (max |value| "
                    f"{np.abs(value).max():.3g}); save it with dtype='float32'."
                )
            # Lossless: byte shuffle + gzip stores float16 weights ~14% smaller.
            packed = {
                "shuffle": True,
                "compression": "gzip",
                "compression_opts": 9,
                "chunks": cast.shape,
            }
            f.create_dataset(f"{i:05d}", data=cast, **(packed if cast.size >= 64 else {}))
            f[f"{i:05d}"].attrs["path"] = var.path
    os.replace(tmp, path)


def _read_ema_weights(model, path):
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != EMA_FORMAT:
            raise ValueError(f"not a keras_cdm EMA weights file (format {EMA_FORMAT!r})")
        variables = model.ema_network.weights
        if int(f.attrs["count"]) != len(variables) or len(f) != len(variables):
            raise ValueError(f"it holds {len(f)} weights, the stage's network has {len(variables)}")
        values = [f[f"{i:05d}"][()] for i in range(len(variables))]
    for i, (var, value) in enumerate(zip(variables, values)):
        if tuple(value.shape) != tuple(var.shape):
            raise ValueError(
                f"weight {i} has shape {value.shape}, the stage's {var.path!r} has {var.shape}"
            )
    for network in (model.ema_network, model.network):
        for var, value in zip(network.weights, values):
            var.assign(value.astype(var.dtype))
