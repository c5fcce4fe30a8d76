"""Trainable cascade stages (Keras `Model` subclasses)."""

from keras_cdm.models.diffusion_model import DiffusionModel
from keras_cdm.models.loading import load_stage
from keras_cdm.models.super_res_diffusion_model import SuperResDiffusionModel
from keras_cdm.models.training_guard import TrainingGuard

__all__ = ["DiffusionModel", "SuperResDiffusionModel", "TrainingGuard", "load_stage"]
