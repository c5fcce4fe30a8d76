import keras
from keras import ops

from keras_cdm.layers.convolution import Conv2D


@keras.saving.register_keras_serializable(package="keras_cdm")
class Upsample(keras.layers.Layer):
    """Nearest-neighbour 2x upsampling, optionally followed by a 3x3 conv.

    Args:
        channels: int. Output channels of the convolution.
        use_conv: bool. Apply a 3x3 convolution after upsampling.
            Defaults to `True`.

    Example:

    >>> keras_cdm.layers.Upsample(8)(keras.ops.zeros((1, 4, 4, 8))).shape
    (1, 8, 8, 8)
    """

    def __init__(self, channels, use_conv=True, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.use_conv = use_conv
        self.conv = (
            Conv2D(channels, 3, padding="same", dtype=self.dtype_policy, name="conv")
            if use_conv
            else None
        )

    def build(self, input_shape):
        if self.conv is not None:
            self.conv.build((input_shape[0], None, None, input_shape[-1]))

    def call(self, x):
        x = ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)
        return self.conv(x) if self.conv is not None else x

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (
            b,
            None if h is None else 2 * h,
            None if w is None else 2 * w,
            self.channels if self.use_conv else c,
        )

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels, "use_conv": self.use_conv})
        return config


@keras.saving.register_keras_serializable(package="keras_cdm")
class Downsample(keras.layers.Layer):
    """2x downsampling by a strided 3x3 convolution or 2x2 average pooling.

    Args:
        channels: int. Output channels of the convolution.
        use_conv: bool. Strided convolution if `True`, average pooling
            otherwise. Defaults to `True`.

    Example:

    >>> keras_cdm.layers.Downsample(8)(keras.ops.zeros((1, 8, 8, 8))).shape
    (1, 4, 4, 8)
    """

    def __init__(self, channels, use_conv=True, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.use_conv = use_conv
        self.conv = (
            Conv2D(
                channels,
                3,
                strides=2,
                padding="same",
                dtype=self.dtype_policy,
                name="conv",
            )
            if use_conv
            else None
        )

    def build(self, input_shape):
        if self.conv is not None:
            self.conv.build((input_shape[0], None, None, input_shape[-1]))

    def call(self, x):
        if self.conv is not None:
            return self.conv(x)
        return ops.average_pool(x, 2, 2, padding="valid")

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (
            b,
            None if h is None else h // 2,
            None if w is None else w // 2,
            self.channels if self.use_conv else c,
        )

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels, "use_conv": self.use_conv})
        return config
