"""Loading a saved stage with errors that name the file and what is wrong."""

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
