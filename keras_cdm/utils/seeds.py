"""Seeds: the one way keras_cdm derives seeds and per-image random streams.

Every image of a sample has its own random stream, keyed by the user's seed,
a purpose (which stage, which kind of noise) and the image's index in the
whole request. An image's noise therefore does not depend on how the request
is batched or sharded, nor on the backend: the same seed and weights give the
same images whatever `batch_size` or device count is used.
"""

import numbers

import numpy as np


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
