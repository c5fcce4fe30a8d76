"""Checks the Keras backend before Keras is imported: a name Keras does not
know, or one that is not installed, fails with a sentence that names the
valid backends and the extra to install (Keras itself says "Unable to
import backend : pytorch", or fails deep inside with ModuleNotFoundError when
`~/.keras/keras.json` names a backend this environment lacks).

Imports neither Keras nor any other part of keras_cdm; importing it runs
the check (`keras_cdm/__init__.py` imports it first)."""

import importlib.util
import json
import os
import sys

BACKENDS = ("jax", "tensorflow", "torch")


class BackendError(ImportError):
    """The configured Keras backend cannot run keras_cdm here."""


def configured_backend():
    """`(name, where it was set)`: `KERAS_BACKEND`, else Keras's config file
    (`$KERAS_HOME/keras.json`, by default `~/.keras/keras.json`), else
    Keras's default, TensorFlow."""
    name = os.environ.get("KERAS_BACKEND")
    if name is not None:
        return name, "KERAS_BACKEND"
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    path = os.path.join(home, "keras.json")
    try:
        with open(path) as f:
            name = json.load(f).get("backend")
    except (OSError, ValueError, AttributeError):
        name = None
    if name is not None:
        return name, f"{path} (no KERAS_BACKEND set)"
    return "tensorflow", "Keras's default (no KERAS_BACKEND, no keras.json)"


def check_backend():
    """Raises `BackendError` if the backend Keras is about to load cannot run
    keras_cdm here. Does nothing once Keras is imported (it has chosen)."""
    if "keras" in sys.modules:
        return
    name, source = configured_backend()
    installed = [b for b in BACKENDS if importlib.util.find_spec(b) is not None]
    choice = f"KERAS_BACKEND={installed[0]}" if installed else "KERAS_BACKEND=jax"
    if name not in BACKENDS:
        raise BackendError(
            f"{source} asks for the Keras backend {name!r}; keras_cdm runs on "
            f"{', '.join(BACKENDS)} (installed here: {', '.join(installed) or 'none'}). "
            f"Set {choice}."
        )
    if name not in installed:
        others = f"; or set KERAS_BACKEND={installed[0]}" if installed else ""
        raise BackendError(
            f"{source} asks for the Keras backend {name!r}, which is not installed here "
            f"(installed: {', '.join(installed) or 'none'}). Install it with "
            f'pip install -e ".[{name}]"{others}.'
        )


check_backend()
