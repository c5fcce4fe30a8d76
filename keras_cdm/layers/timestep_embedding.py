import math

import keras
from keras import ops


def sinusoidal_embedding(t, dim, max_period=10000.0):
    """ADM's sinusoidal embedding of (possibly fractional) timesteps `t`."""
    half = dim // 2
    freqs = ops.exp(-math.log(max_period) * ops.arange(0, half, dtype="float32") / half)
    args = ops.cast(ops.reshape(t, (-1, 1)), "float32") * freqs[None, :]
    emb = ops.concatenate([ops.cos(args), ops.sin(args)], axis=-1)
    if dim % 2:
        emb = ops.pad(emb, [[0, 0], [0, 1]])
    return emb


@keras.saving.register_keras_serializable(package="keras_cdm")
class TimestepEmbedding(keras.layers.Layer):
    """Sinusoidal embedding of a timestep followed by a two-layer SiLU MLP.

    Args:
        frequency_dim: int. Size of the sinusoidal features.
        embedding_dim: int. Output size (ADM uses 4x the base channels).

    Call arguments:
        timesteps: int or float tensor of shape `(batch,)`.

    Example:

    >>> layer = keras_cdm.layers.TimestepEmbedding(32, 128)
    >>> layer(keras.ops.array([0, 10, 999])).shape
    (3, 128)

    References:
        - ADM (Dhariwal & Nichol, 2021), arXiv:2105.05233.
    """

    def __init__(self, frequency_dim, embedding_dim, **kwargs):
        super().__init__(**kwargs)
        if frequency_dim <= 0 or embedding_dim <= 0:
            raise ValueError(
                "Embedding sizes must be positive. Received: "
                f"frequency_dim={frequency_dim}, embedding_dim={embedding_dim}"
            )
        self.frequency_dim = frequency_dim
        self.embedding_dim = embedding_dim
        self.dense_1 = keras.layers.Dense(
            embedding_dim, activation="silu", dtype=self.dtype_policy, name="dense_1"
        )
        self.dense_2 = keras.layers.Dense(embedding_dim, dtype=self.dtype_policy, name="dense_2")

    def build(self, input_shape):
        self.dense_1.build((None, self.frequency_dim))
        self.dense_2.build((None, self.embedding_dim))

    def call(self, timesteps):
        emb = sinusoidal_embedding(timesteps, self.frequency_dim)
        return self.dense_2(self.dense_1(ops.cast(emb, self.compute_dtype)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.embedding_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "frequency_dim": self.frequency_dim,
                "embedding_dim": self.embedding_dim,
            }
        )
        return config
