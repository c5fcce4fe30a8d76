import keras
from keras import ops

from keras_cdm.layers.convolution import Conv2D


class _Resample(keras.layers.Layer):
    """2x resampling with an optional 3x3 convolution: what `Upsample` and
    `Downsample` share (arguments, build, output shape, config)."""

    conv_strides = 1

    def __init__(self, channels, use_conv=True, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.use_conv = use_conv
        self.conv = (
            Conv2D(
                channels,
                3,
                strides=self.conv_strides,
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

    def _resize(self, side):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (
            b,
            None if h is None else self._resize(h),
            None if w is None else self._resize(w),
            self.channels if self.use_conv else c,
        )

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels, "use_conv": self.use_conv})
        return config


@keras.saving.register_keras_serializable(package="keras_cdm")
class Upsample(_Resample):
    """Nearest-neighbour 2x upsampling, optionally followed by a 3x3 conv.

    Args:
        channels: int. Output channels of the convolution.
        use_conv: bool. Apply a 3x3 convolution after upsampling.
            Defaults to `True`.

    Example:

    >>> keras_cdm.layers.Upsample(8)(keras.ops.zeros((1, 4, 4, 8))).shape
    (1, 8, 8, 8)
    """

    def _resize(self, side):
        return 2 * side

    def call(self, x):
        x = ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)
        return self.conv(x) if self.conv is not None else x


@keras.saving.register_keras_serializable(package="keras_cdm")
class Downsample(_Resample):
    """2x downsampling by a strided 3x3 convolution or 2x2 average pooling.

    Args:
        channels: int. Output channels of the convolution.
        use_conv: bool. Strided convolution if `True`, average pooling
            otherwise. Defaults to `True`.

    Example:

    >>> keras_cdm.layers.Downsample(8)(keras.ops.zeros((1, 8, 8, 8))).shape
    (1, 4, 4, 8)
    """

    conv_strides = 2

    def _resize(self, side):
        return side // 2

    def call(self, x):
        if self.conv is not None:
            return self.conv(x)
        return ops.average_pool(x, 2, 2, padding="valid")
