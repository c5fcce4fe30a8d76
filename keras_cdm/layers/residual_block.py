import keras
from keras import ops

from keras_cdm.layers.convolution import Conv2D
from keras_cdm.layers.normalization import group_norm


@keras.saving.register_keras_serializable(package="keras_cdm")
class ResidualBlock(keras.layers.Layer):
    """ADM residual block with embedding conditioning.

    GroupNorm → SiLU → (up/down-sample) → conv3x3, then the timestep/label
    embedding enters either as scale and shift of the second GroupNorm
    ("FiLM", `use_scale_shift_norm=True`) or as an added bias; then SiLU →
    dropout → a zero-initialised conv3x3, added to the (resampled, projected)
    input.

    Args:
        out_channels: int. Output channels.
        dropout: float. Dropout rate before the last convolution.
            Defaults to `0.0`.
        use_scale_shift_norm: bool. FiLM conditioning. Defaults to `True`.
        resample: str or None. `"up"` or `"down"` for BigGAN-style resampling
            inside the block. Defaults to `None`.
        norm_groups: int. GroupNorm groups. Defaults to `32`.
        seed: int or None. Seed of the dropout.

    Call arguments:
        inputs: list `[x, emb]`, NHWC features and a `(batch, dim)` embedding.
        training: bool. Enables dropout.

    Example:

    >>> block = keras_cdm.layers.ResidualBlock(16, resample="down")
    >>> x, emb = keras.ops.zeros((2, 8, 8, 8)), keras.ops.zeros((2, 32))
    >>> block([x, emb]).shape
    (2, 4, 4, 16)

    References:
        - ADM, arXiv:2105.05233; BigGAN, arXiv:1809.11096.
    """

    def __init__(
        self,
        out_channels,
        dropout=0.0,
        use_scale_shift_norm=True,
        resample=None,
        norm_groups=32,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if resample not in (None, "up", "down"):
            raise ValueError(
                f"`resample` must be None, 'up' or 'down'. Received: resample={resample!r}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout}")
        self.out_channels = out_channels
        self.dropout = dropout
        self.use_scale_shift_norm = use_scale_shift_norm
        self.resample = resample
        self.norm_groups = norm_groups
        self.seed = seed
        policy = self.dtype_policy
        self.conv_1 = Conv2D(out_channels, 3, padding="same", dtype=policy, name="conv_1")
        self.emb_proj = keras.layers.Dense(
            2 * out_channels if use_scale_shift_norm else out_channels,
            dtype=policy,
            name="emb_proj",
        )
        self.norm_2 = group_norm(out_channels, norm_groups, name="norm_2")
        self.drop = keras.layers.Dropout(dropout, seed=seed, dtype=policy)
        # Zero-initialised so every block starts as the identity (ADM).
        self.conv_2 = Conv2D(
            out_channels,
            3,
            padding="same",
            kernel_initializer="zeros",
            dtype=policy,
            name="conv_2",
        )

    def build(self, input_shape):
        x_shape, emb_shape = input_shape
        in_channels = x_shape[-1]
        self.norm_1 = group_norm(in_channels, self.norm_groups, name="norm_1")
        self.norm_1.build(x_shape)
        self.conv_1.build((None, None, None, in_channels))
        self.emb_proj.build(emb_shape)
        self.norm_2.build((None, None, None, self.out_channels))
        self.conv_2.build((None, None, None, self.out_channels))
        if in_channels != self.out_channels:
            self.skip = Conv2D(self.out_channels, 1, dtype=self.dtype_policy, name="skip")
            self.skip.build((None, None, None, in_channels))
        else:
            self.skip = None

    def _resample(self, x):
        if self.resample == "up":
            return ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)
        if self.resample == "down":
            return ops.average_pool(x, 2, 2, padding="valid")
        return x

    def call(self, inputs, training=None):
        x, emb = inputs
        h = ops.cast(self.norm_1(x), self.compute_dtype)
        h = ops.silu(h)
        h = self._resample(h)
        x = self._resample(x)
        h = self.conv_1(h)
        emb_out = self.emb_proj(ops.silu(emb))[:, None, None, :]
        if self.use_scale_shift_norm:
            scale, shift = ops.split(ops.cast(emb_out, "float32"), 2, axis=-1)
            h = self.norm_2(h) * (1.0 + scale) + shift
            h = ops.cast(h, self.compute_dtype)
        else:
            h = ops.cast(self.norm_2(h + emb_out), self.compute_dtype)
        h = self.conv_2(self.drop(ops.silu(h), training=training))
        skip = x if self.skip is None else self.skip(x)
        return skip + h

    def compute_output_shape(self, input_shape):
        b, height, width, _ = input_shape[0]
        factor = {"up": 2.0, "down": 0.5, None: 1.0}[self.resample]
        scale = lambda n: None if n is None else int(n * factor)  # noqa: E731
        return (b, scale(height), scale(width), self.out_channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "out_channels": self.out_channels,
                "dropout": self.dropout,
                "use_scale_shift_norm": self.use_scale_shift_norm,
                "resample": self.resample,
                "norm_groups": self.norm_groups,
                "seed": self.seed,
            }
        )
        return config
