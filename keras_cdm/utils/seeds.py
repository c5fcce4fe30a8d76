"""Seeds: the one way keras_cdm derives seeds and per-image random streams.

Every image of a sample has its own random stream, keyed by the user's seed,
a purpose (which stage, which kind of noise) and the image's index in the
whole request. An image's noise therefore does not depend on how the request
is batched or sharded, nor on the backend: the same seed and weights give the
same images whatever `batch_size` or device count is used.
"""

import numbers

import numpy as np
from keras import ops


def check_seed(seed, name="seed"):
    """Returns `seed` as a Python int, or a fresh random seed for `None`.

    Raises:
        ValueError: `seed` is not a non-negative int (or `None`).
    """
    if seed is None:
        return int(np.random.SeedSequence().entropy % (2**63))
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"`{name}` must be a non-negative int or None. Received: {name}={seed!r}")
    return int(seed)


def derive_seed(seed, *keys):
    """A 31-bit seed derived from `seed` and any number of int `keys`.

    Distinct keys give independent seeds (NumPy's `SeedSequence` hashing);
    use it wherever a seed must be split (per stage, per purpose).
    """
    keys = [int(k) for k in keys]
    return int(np.random.SeedSequence([check_seed(seed), *keys]).generate_state(1)[0] >> 1)


class ImageNoise:
    """Per-image Gaussian streams: image `i` of a request draws from
    `SeedSequence([seed, stream, i])`, whatever batch it lands in.

    Args:
        seed: int. The request's seed.
        indices: ints. The images' indices in the whole request.
        stream: int. Which purpose the noise serves (e.g. `0`: reverse
            process, `1`: conditioning augmentation).

    Example:

    >>> noise = keras_cdm.utils.seeds.ImageNoise(0, range(4))
    >>> noise.normal((8, 8, 3)).shape
    (4, 8, 8, 3)
    """

    def __init__(self, seed, indices, stream=0):
        seed = check_seed(seed)
        self.generators = [
            np.random.Generator(
                np.random.PCG64(np.random.SeedSequence([seed, int(stream), int(i)]))
            )
            for i in indices
        ]

    def normal(self, shape):
        """One standard normal draw of `shape` per image, float32 `(n, *shape)`."""
        return np.stack([g.standard_normal(shape, dtype=np.float32) for g in self.generators])


# lowbias32 (C. Wellons' hash prospector): a bijective 32-bit mixer with low
# bias. Its multipliers as the int32 values of the same bits: int32 products
# wrap modulo 2**32 on every backend, so the bits equal uint32 arithmetic.
_MIX_1 = 0x7FEB352D
_MIX_2 = 0x846CA68B - 2**32
_GOLDEN = 0x9E3779B9 - 2**32


# The arithmetic is written with the tensors' own operators (`^`, `&`, `*`,
# `+`: the same kernels as `keras.ops` on every backend, without Keras's
# per-op dispatch, ~50 calls per draw on eager PyTorch); TensorFlow's
# tensors have no `>>`, so the shift stays a Keras op.
def _srl(x, bits):
    """Logical right shift of int32 bits (`>>` on int32 is arithmetic)."""
    return ops.right_shift(x, bits) & ((1 << (32 - bits)) - 1)


def _mix(x):
    x = x ^ _srl(x, 16)
    x = x * _MIX_1
    x = x ^ _srl(x, 15)
    x = x * _MIX_2
    return x ^ _srl(x, 16)


def image_keys(seed, indices, stream=0):
    """Per-image keys of `device_normal`: int32 `(n, 2)`, image `i`'s from
    `SeedSequence([seed, stream, i])` (as `ImageNoise`), so they depend on
    the seed, the stream and the image's index in the whole request only."""
    seed = check_seed(seed)
    keys = [np.random.SeedSequence([seed, int(stream), int(i)]).generate_state(2) for i in indices]
    return np.asarray(keys, dtype=np.uint32).reshape(-1, 2).view(np.int32)


def device_normal(keys, counter, shape):
    """Standard normal noise drawn where the computation runs (in a compiled
    step, on the accelerator): image `n`'s draw for `counter` (e.g. the
    sampling step) is a pure function of `keys[n]`, `counter` and the
    element's position, in `keras.ops` integer arithmetic (a counter-based
    generator: two lowbias32 rounds keyed by the image, then Box-Muller), so
    it does not depend on the batch an image is in, nor on the device count.

    Args:
        keys: int32 tensor `(batch, 2)` from `image_keys`.
        counter: int32 scalar tensor. Which draw of the stream (the step).
        shape: tuple of ints. One image's shape.

    Returns:
        float32 tensor `(batch, *shape)`.

    Example:

    >>> keys = keras_cdm.utils.seeds.image_keys(0, range(4))
    >>> noise = keras_cdm.utils.seeds.device_normal(keys, 0, (8, 8, 3))
    >>> tuple(noise.shape)
    (4, 8, 8, 3)
    """
    size = int(np.prod(shape))
    pairs = (size + 1) // 2
    keys = ops.convert_to_tensor(keys, "int32")
    k0, k1 = keys[:, :1], keys[:, 1:]
    counter = ops.cast(ops.convert_to_tensor(counter), "int32")
    # One 32-bit state per image and draw, then two hashes per pair of outputs.
    state = _mix(k0 ^ _mix(k1 + counter * _GOLDEN))
    position = ops.expand_dims(ops.arange(2 * pairs, dtype="int32"), 0)
    bits = _mix(_mix(position + state) ^ k1)
    # 24 high bits -> a uniform in (0, 1), exactly representable in float32.
    uniform = (ops.cast(_srl(bits, 8), "float32") + 0.5) * (1.0 / 2**24)
    u1, u2 = uniform[:, :pairs], uniform[:, pairs:]
    radius = ops.sqrt(-2.0 * ops.log(u1))
    angle = (2.0 * np.pi) * u2
    normal = ops.concatenate([radius * ops.cos(angle), radius * ops.sin(angle)], axis=1)
    return ops.reshape(normal[:, :size], (-1,) + tuple(shape))
