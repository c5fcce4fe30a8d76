"""Building blocks of the keras_cdm U-Nets."""

from keras_cdm.layers.attention_block import AttentionBlock
from keras_cdm.layers.convolution import Conv2D
from keras_cdm.layers.normalization import GroupNorm32
from keras_cdm.layers.resample import Downsample
from keras_cdm.layers.resample import Upsample
from keras_cdm.layers.residual_block import ResidualBlock
from keras_cdm.layers.timestep_embedding import TimestepEmbedding
from keras_cdm.layers.timestep_embedding import sinusoidal_embedding

__all__ = [
    "AttentionBlock",
    "Conv2D",
    "GroupNorm32",
    "Downsample",
    "ResidualBlock",
    "TimestepEmbedding",
    "Upsample",
    "sinusoidal_embedding",
]
