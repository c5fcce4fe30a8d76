"""Image conversions, result files, seed derivation, signal handling and
training progress lines."""

from keras_cdm.utils import images
from keras_cdm.utils import interrupts
from keras_cdm.utils import progress
from keras_cdm.utils import seeds

__all__ = ["images", "interrupts", "progress", "seeds"]
