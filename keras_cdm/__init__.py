"""keras_cdm: Cascaded Diffusion Models for Keras 3 (JAX, TensorFlow, PyTorch)."""

# First: checks the Keras backend before any import loads Keras.
from keras_cdm import _backend_check  # noqa: F401
from keras_cdm import data
from keras_cdm import distribute
from keras_cdm import evaluation
from keras_cdm import layers
from keras_cdm import models
from keras_cdm import utils
from keras_cdm.diffusion import GaussianDiffusion
from keras_cdm.diffusion import get_beta_schedule
from keras_cdm.diffusion import space_timesteps
from keras_cdm.models import DiffusionModel
from keras_cdm.models import SuperResDiffusionModel
from keras_cdm.models import presets
from keras_cdm.networks import SuperResUNet
from keras_cdm.networks import UNet
from keras_cdm.sampling import CascadeSampler

__version__ = "0.1.0"

__all__ = [
    "CascadeSampler",
    "DiffusionModel",
    "GaussianDiffusion",
    "SuperResDiffusionModel",
    "SuperResUNet",
    "UNet",
    "data",
    "distribute",
    "evaluation",
    "get_beta_schedule",
    "layers",
    "models",
    "presets",
    "utils",
    "space_timesteps",
]
