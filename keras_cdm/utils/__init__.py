"""Image conversions, result files and seed derivation."""

from keras_cdm.utils import images
from keras_cdm.utils import seeds

__all__ = ["images", "seeds"]
