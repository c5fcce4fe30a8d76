"""Preset directories (KerasHub's convention): a stage as a config JSON and
a weights file, loadable on any backend without running code from the files.

    stage_dir/
        config.json        # keras_cdm and Keras versions, the stage's config
        model.weights.h5   # raw and EMA network weights, EMA counters, RNG state

No optimizer state: a preset directory is for sampling and fine-tuning (a
`.keras` checkpoint resumes a run).
"""

import json
import os

import keras

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
STAGE_CLASSES = ("keras_cdm>DiffusionModel", "keras_cdm>SuperResDiffusionModel")


def save_to_preset(model, directory):
    """Writes `model` to `directory` (created if needed; the two files are
    replaced atomically). Returns the directory."""
    from keras_cdm import __version__

    os.makedirs(directory, exist_ok=True)
    config = {
        "keras_cdm_version": __version__,
        "keras_version": keras.__version__,
        "weights": WEIGHTS_FILE,
        "weights_hold": "raw and EMA network weights, EMA counters and RNG state",
        "stage": keras.saving.serialize_keras_object(model),
    }
    weights = os.path.join(directory, WEIGHTS_FILE)
    model.save_weights(weights + ".tmp.weights.h5")
    os.replace(weights + ".tmp.weights.h5", weights)
    path = os.path.join(directory, CONFIG_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(config, f, indent=2)
    os.replace(path + ".tmp", path)
    return directory


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
    if registered not in STAGE_CLASSES:
        raise ValueError(
            f"{path!r} does not describe a keras_cdm stage (expected a 'stage' entry of "
            f"class {list(STAGE_CLASSES)}). Received: {registered!r}"
        )
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
        model.load_weights(weights)
    except Exception as e:
        raise ValueError(f"Could not load the weights {weights!r}: {e}") from e
    return model
