"""Stage datasets from arrays, image folders, TFDS and the synthetic set."""

from keras_cdm.data.pipeline import base_dataset
from keras_cdm.data.pipeline import save_batch_grid
from keras_cdm.data.pipeline import super_res_dataset
from keras_cdm.data.shapes import CLASS_NAMES
from keras_cdm.data.shapes import synthetic_shapes
from keras_cdm.data.sources import ImageSource
from keras_cdm.data.sources import from_arrays
from keras_cdm.data.sources import from_image_folder
from keras_cdm.data.sources import from_tfds
from keras_cdm.data.sources import read_rgb
from keras_cdm.data.sources import resolve_source
from keras_cdm.data.sources import synthetic
from keras_cdm.data.stage_dataset import StageDataset

__all__ = [
    "CLASS_NAMES",
    "ImageSource",
    "StageDataset",
    "base_dataset",
    "from_arrays",
    "from_image_folder",
    "from_tfds",
    "read_rgb",
    "resolve_source",
    "save_batch_grid",
    "super_res_dataset",
    "synthetic",
    "synthetic_shapes",
]
