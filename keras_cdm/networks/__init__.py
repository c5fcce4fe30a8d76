"""The denoising networks of the cascade stages and their named architectures."""

from keras_cdm.networks.architectures import ARCHITECTURES
from keras_cdm.networks.super_res_unet import SuperResUNet
from keras_cdm.networks.unet import UNet

__all__ = ["ARCHITECTURES", "SuperResUNet", "UNet"]


def __getattr__(name):
    if name in ("PRESETS", "get_preset"):
        raise AttributeError(
            f"keras_cdm.networks.{name} was removed: stage presets (network, diffusion, "
            "augmentation, training defaults) are keras_cdm.presets (get_preset, "
            "list_presets); the network configs alone are keras_cdm.networks.ARCHITECTURES."
        )
    raise AttributeError(f"module 'keras_cdm.networks' has no attribute {name!r}")
