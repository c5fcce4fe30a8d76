import keras

from keras_cdm.backend import fused_conv2d


@keras.saving.register_keras_serializable(package="keras_cdm")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` (NHWC) that skips the layout copies of Keras's
    PyTorch convolution where it can.

    Keras's torch backend copies every NHWC input to NCHW and back to
    channels-last memory before each convolution; PyTorch's CPU and cuDNN
    kernels take the NCHW *view* of the NHWC tensor (channels-last memory)
    directly, and add the bias inside the kernel. Stride-1 "same" and "valid"
    convolutions take that path on torch; everything else, and the other
    backends, run the Keras op. Same weights, config and results as
    `keras.layers.Conv2D` (tested).

    Example:

    >>> conv = keras_cdm.layers.Conv2D(32, 3, padding="same")
    >>> y = conv(np.zeros((2, 16, 16, 3), "float32"))
    """

    def call(self, inputs):
        if self.data_format == "channels_last" and self.groups == 1:
            out = fused_conv2d(
                inputs,
                self.kernel,
                self.strides,
                self.padding,
                self.dilation_rate,
                bias=self.bias if self.use_bias else None,
            )
            if out is not None:
                return out if self.activation is None else self.activation(out)
        return super().call(inputs)
