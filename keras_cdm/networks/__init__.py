"""The denoising networks of the cascade stages and their presets."""

from keras_cdm.networks.presets import PRESETS
from keras_cdm.networks.presets import get_preset
from keras_cdm.networks.super_res_unet import SuperResUNet
from keras_cdm.networks.unet import UNet

__all__ = ["PRESETS", "SuperResUNet", "UNet", "get_preset"]
