"""Diffusion math: schedules, the Gaussian process, respacing, likelihoods."""

from keras_cdm.diffusion.gaussian_diffusion import GaussianDiffusion
from keras_cdm.diffusion.respacing import space_timesteps
from keras_cdm.diffusion.schedules import get_beta_schedule

__all__ = ["GaussianDiffusion", "get_beta_schedule", "space_timesteps"]
