"""Cascade stages (Keras `Model` subclasses), their presets and their own
reverse process."""

from keras_cdm.models import presets
from keras_cdm.models.diffusion_model import DiffusionModel
from keras_cdm.models.distillation import ProgressiveDistillation
from keras_cdm.models.loading import load_stage
from keras_cdm.models.loading import resolve_stage
from keras_cdm.models.loading import stage_outline
from keras_cdm.models.reverse_process import SamplerSettings
from keras_cdm.models.reverse_process import StageSampler
from keras_cdm.models.super_res_diffusion_model import SuperResDiffusionModel
from keras_cdm.models.training_guard import TrainingGuard

__all__ = [
    "DiffusionModel",
    "ProgressiveDistillation",
    "SamplerSettings",
    "StageSampler",
    "SuperResDiffusionModel",
    "TrainingGuard",
    "load_stage",
    "resolve_stage",
    "stage_outline",
    "presets",
]
