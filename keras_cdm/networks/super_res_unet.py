import keras
from keras import ops

from keras_cdm.layers.timestep_embedding import TimestepEmbedding
from keras_cdm.networks.unet import UNet
from keras_cdm.utils.validation import check_positive_int

RESIZE_METHODS = ("bilinear", "bicubic", "nearest")


@keras.saving.register_keras_serializable(package="keras_cdm")
class UpsampleConditioning(keras.layers.Layer):
    """Resizes the low-resolution conditioning image to the output size.

    Args:
        size: int. Output height and width.
        interpolation: str. `"bilinear"`, `"bicubic"` or `"nearest"`.
    """

    def __init__(self, size, interpolation="bilinear", **kwargs):
        super().__init__(**kwargs)
        self.size = size
        self.interpolation = interpolation

    def call(self, x):
        return ops.image.resize(
            x,
            (self.size, self.size),
            interpolation=self.interpolation,
            antialias=False,
            data_format="channels_last",
        )

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"size": self.size, "interpolation": self.interpolation})
        return config


@keras.saving.register_keras_serializable(package="keras_cdm")
class SuperResUNet(UNet):
    """The super-resolution U-Net of a cascade stage.

    Same as `keras_cdm.UNet`, with two more inputs: `"low_res"`, the
    conditioning image at `low_res_size`, upsampled inside the model to
    `image_size` and concatenated with `x_t`; and `"aug_level"`, the
    conditioning-augmentation level `s` (0 = clean), embedded like a
    timestep by a second embedding that is added to the first.

    Args:
        image_size: int. Output resolution.
        low_res_size: int. Resolution of the conditioning image; must divide
            `image_size`.
        interpolation: str. How the conditioning is upsampled: `"bilinear"`
            or `"bicubic"` (or `"nearest"`). Defaults to `"bilinear"`.
        **kwargs: the arguments of `keras_cdm.UNet`.

    Example:

    >>> net = keras_cdm.SuperResUNet.from_preset("sr32to64_tiny")
    >>> out = net({"x_t": keras.ops.zeros((1, 64, 64, 3)),
    ...            "low_res": keras.ops.zeros((1, 32, 32, 3)),
    ...            "t": keras.ops.array([3]), "aug_level": keras.ops.array([0]),
    ...            "labels": keras.ops.array([0])})

    References:
        - CDM, arXiv:2106.15282, Section 3 and Algorithm 1.
    """

    def __init__(self, image_size, low_res_size, interpolation="bilinear", **kwargs):
        check_positive_int("low_res_size", low_res_size)
        if isinstance(image_size, int) and (low_res_size > image_size or image_size % low_res_size):
            raise ValueError(
                "The low-resolution size must divide the output size of a "
                f"super-resolution U-Net. Received: low_res_size={low_res_size}, "
                f"image_size={image_size}"
            )
        if interpolation not in RESIZE_METHODS:
            raise ValueError(
                f"`interpolation` must be one of {RESIZE_METHODS}. "
                f"Received: interpolation={interpolation!r}"
            )
        super().__init__(
            image_size=image_size,
            _extra_config={"low_res_size": low_res_size, "interpolation": interpolation},
            **kwargs,
        )

    def _make_inputs(self, config):
        inputs = super()._make_inputs(config)
        lo = config["low_res_size"]
        inputs["low_res"] = keras.Input((lo, lo, config["channels"]), name="low_res")
        inputs["aug_level"] = keras.Input((), dtype="int32", name="aug_level")
        return inputs

    def _stem(self, inputs, config, dtype):
        x, emb = super()._stem(inputs, config, dtype)
        aug_emb = TimestepEmbedding(
            config["base_channels"], 4 * config["base_channels"], dtype=dtype, name="aug_embed"
        )(inputs["aug_level"])
        emb = keras.layers.Add(dtype=dtype, name="add_aug_embed")([emb, aug_emb])
        up = UpsampleConditioning(
            config["image_size"], config["interpolation"], dtype=dtype, name="upsample_low_res"
        )(inputs["low_res"])
        x = keras.layers.Concatenate(dtype=dtype, name="concat_low_res")([x, up])
        return x, emb

    @property
    def low_res_size(self):
        return self._unet_config["low_res_size"]
