"""Image conversions and result files."""

from keras_cdm.utils import images

__all__ = ["images"]
