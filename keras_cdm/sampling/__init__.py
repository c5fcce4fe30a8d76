"""Sampling: one stage's compiled reverse process and the cascade."""

from keras_cdm.sampling.cascade_sampler import CascadeSampler
from keras_cdm.sampling.stage_sampler import StageSampler

__all__ = ["CascadeSampler", "StageSampler"]
