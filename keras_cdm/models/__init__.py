"""Trainable cascade stages (Keras `Model` subclasses)."""

from keras_cdm.models.diffusion_model import DiffusionModel
from keras_cdm.models.super_res_diffusion_model import SuperResDiffusionModel

__all__ = ["DiffusionModel", "SuperResDiffusionModel"]
