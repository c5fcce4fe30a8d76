"""Sampling a cascade (Algorithm 2). One stage's reverse process belongs to
the stage: `keras_cdm.models.StageSampler` (re-exported here)."""

from keras_cdm.models.reverse_process import StageSampler
from keras_cdm.sampling.cascade_sampler import CascadeSampler
from keras_cdm.sampling.upscaling import upscale

__all__ = ["CascadeSampler", "StageSampler", "upscale"]
