"""Image conversions, result files, seed derivation and signal handling."""

from keras_cdm.utils import images
from keras_cdm.utils import interrupts
from keras_cdm.utils import seeds

__all__ = ["images", "interrupts", "seeds"]
