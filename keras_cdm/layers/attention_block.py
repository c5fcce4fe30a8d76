import math

import keras
from keras import ops

from keras_cdm.layers.normalization import group_norm


@keras.saving.register_keras_serializable(package="keras_cdm")
class AttentionBlock(keras.layers.Layer):
    """Multi-head self-attention over the spatial positions, with a residual.

    GroupNorm → 1x1 qkv projection → softmax attention per head (logits and
    softmax in float32) → zero-initialised 1x1 output projection.

    Args:
        num_heads: int. Number of heads; ignored when `head_channels` is set.
            Defaults to `1`.
        head_channels: int or None. Channels per head (ADM's
            `num_head_channels`); the number of heads is then
            `channels // head_channels`. Defaults to `None`.
        norm_groups: int. GroupNorm groups. Defaults to `32`.

    Example:

    >>> block = keras_cdm.layers.AttentionBlock(num_heads=2)
    >>> block(keras.ops.zeros((2, 4, 4, 16))).shape
    (2, 4, 4, 16)

    References:
        - ADM, arXiv:2105.05233.
    """

    def __init__(self, num_heads=1, head_channels=None, norm_groups=32, **kwargs):
        super().__init__(**kwargs)
        if head_channels is None and num_heads < 1:
            raise ValueError(f"`num_heads` must be >= 1. Received: num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_channels = head_channels
        self.norm_groups = norm_groups

    def build(self, input_shape):
        channels = input_shape[-1]
        if self.head_channels is not None:
            if channels % self.head_channels:
                raise ValueError(
                    f"{channels} channels do not split into heads of "
                    f"{self.head_channels}. Received: head_channels={self.head_channels}"
                )
            self.heads = channels // self.head_channels
        else:
            if channels % self.num_heads:
                raise ValueError(
                    f"{channels} channels do not split into {self.num_heads} "
                    f"heads. Received: num_heads={self.num_heads}"
                )
            self.heads = self.num_heads
        self.norm = group_norm(channels, self.norm_groups, name="norm")
        self.norm.build(input_shape)
        self.qkv = keras.layers.Dense(3 * channels, dtype=self.dtype_policy, name="qkv")
        self.qkv.build((None, channels))
        self.proj = keras.layers.Dense(
            channels, kernel_initializer="zeros", dtype=self.dtype_policy, name="proj"
        )
        self.proj.build((None, channels))

    def call(self, x):
        b = ops.shape(x)[0]
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        n = h * w
        d = c // self.heads
        y = ops.cast(self.norm(x), self.compute_dtype)
        qkv = self.qkv(ops.reshape(y, (b, n, c)))
        qkv = ops.reshape(qkv, (b, n, 3, self.heads, d))
        # (batch, tokens, heads, head_dim), in float32 so that the logits and
        # softmax are; the backend's fused attention where it has one
        # (PyTorch scaled_dot_product_attention, jax.nn.dot_product_attention).
        q, k, v = (ops.cast(qkv[:, :, i], "float32") for i in range(3))
        out = ops.dot_product_attention(q, k, v, scale=1.0 / math.sqrt(d))
        out = ops.reshape(ops.cast(out, self.compute_dtype), (b, n, c))
        return x + ops.reshape(self.proj(out), (b, h, w, c))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "head_channels": self.head_channels,
                "norm_groups": self.norm_groups,
            }
        )
        return config
