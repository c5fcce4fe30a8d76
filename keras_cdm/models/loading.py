"""Loading a saved stage with errors that name the file and what is wrong."""

import json
import os
import zipfile

import keras

from keras_cdm.models.diffusion_model import DiffusionModel


def load_stage(path, compile=True):
    """Loads a `.keras` file holding a keras_cdm stage.

    Unlike `keras.saving.load_model`, a missing file, a truncated or corrupt
    archive and a file that holds some other model each get their own error
    that names the file.

    Args:
        path: str. The `.keras` file.
        compile: bool. Restore the optimizer (to resume training).
            Defaults to `True`.

    Returns:
        A `keras_cdm.DiffusionModel` (or `SuperResDiffusionModel`).

    Example:

    >>> model = keras_cdm.DiffusionModel.from_preset("base16_tiny")
    >>> model.save("base.keras")
    >>> keras_cdm.models.load_stage("base.keras").image_size
    16
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"Expected a path to a .keras file. Received: {path!r}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Stage file not found: {path!r}")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"Could not load a keras_cdm stage from {path!r}: it is not a .keras archive "
            "(truncated, corrupt, or another format)."
        )
    try:
        model = keras.saving.load_model(path, compile=compile)
    except Exception as e:
        raise ValueError(f"Could not load a keras_cdm stage from {path!r}: {e}") from e
    if not isinstance(model, DiffusionModel):
        raise ValueError(
            f"{path!r} holds a {type(model).__name__}, not a keras_cdm DiffusionModel or "
            "SuperResDiffusionModel."
        )
    return model


def resolve_stage(stage):
    """A stage from a model, a `.keras` file, a preset directory or a preset
    name (an untrained architecture): what `CascadeSampler` and the
    recipes accept wherever they take a stage.

    Example:

    >>> keras_cdm.models.resolve_stage("sr16to32_tiny").low_res_size
    16
    """
    if isinstance(stage, (str, os.PathLike)):
        path = os.fspath(stage)
        if os.path.isdir(path) or (isinstance(stage, str) and not path.endswith(".keras")):
            stage = DiffusionModel.from_preset(path)
        else:
            stage = load_stage(path, compile=False)
    if not isinstance(stage, DiffusionModel):
        raise ValueError(
            "Each stage must be a keras_cdm DiffusionModel or SuperResDiffusionModel, a .keras "
            f"file, a preset directory or a preset name. Received: {type(stage).__name__}"
        )
    return stage


def _read_stage_config(path):
    if os.path.isdir(path):
        with open(os.path.join(path, "config.json")) as f:
            return json.load(f)["stage"]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    return None


def recorded_sampler_settings(stage):
    """The `sampler_settings` dict a stage's config records (a `.keras` file
    or a preset directory), read without loading weights; None when it
    records none or the config cannot be read (loading then says why)."""
    if not isinstance(stage, (str, os.PathLike)):
        return None
    try:
        config = _read_stage_config(os.fspath(stage))
        return config["config"].get("sampler_settings") if config else None
    except (OSError, KeyError, TypeError, ValueError):
        return None


def stage_outline(stage):
    """`(is SR, image size, low-res size)` of a stage given as a `.keras` file
    or a preset directory, read from its config alone, without loading
    weights (None for anything else, or a config it cannot read: loading
    the stage then says what is wrong). Used to check a chain of stages
    before loading any."""
    if not isinstance(stage, (str, os.PathLike)):
        return None
    try:
        config = _read_stage_config(os.fspath(stage))
        if config is None:
            return None
        network = config["config"]["network"]["config"]
        sr = config["class_name"] == "SuperResDiffusionModel"
        return sr, int(network["image_size"]), network.get("low_res_size") if sr else None
    except (OSError, KeyError, TypeError, ValueError):
        return None  # loading the stage says what is wrong
