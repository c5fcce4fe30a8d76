"""Beta schedules as float64 NumPy tables.

A schedule, once published under a name, never changes: a trained stage stores
only the name and the number of steps, and must find the same table again.

References:
    - DDPM, arXiv:2006.11239 (linear schedule).
    - Improved DDPM, arXiv:2102.09672 (cosine schedule, Eq. 17).
"""

import math

import numpy as np


def _check_num_timesteps(num_timesteps):
    if (
        isinstance(num_timesteps, bool)
        or not isinstance(num_timesteps, (int, np.integer))
        or num_timesteps <= 0
    ):
        raise ValueError(
            f"`num_timesteps` must be a positive integer. Received: num_timesteps={num_timesteps!r}"
        )


def linear_beta_schedule(num_timesteps):
    """DDPM's linear schedule, scaled to keep 1000-step DDPM's endpoints.

    With 1000 steps this is `linspace(1e-4, 0.02, 1000)`; with `T` steps the
    endpoints are multiplied by `1000 / T`, so that the total noise added is
    about the same for any `T` (as in Improved DDPM's `get_named_beta_schedule`).
    """
    _check_num_timesteps(num_timesteps)
    scale = 1000.0 / num_timesteps
    return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)


def cosine_alpha_bar(t):
    """ᾱ(t) of the cosine schedule for continuous `t` in [0, 1]."""
    return np.cos((np.asarray(t, np.float64) + 0.008) / 1.008 * math.pi / 2) ** 2


def cosine_beta_schedule(num_timesteps, max_beta=0.999):
    """Improved DDPM's cosine schedule with offset 0.008, betas clipped at 0.999."""
    _check_num_timesteps(num_timesteps)
    i = np.arange(num_timesteps, dtype=np.float64)
    t1 = i / num_timesteps
    t2 = (i + 1) / num_timesteps
    betas = 1.0 - cosine_alpha_bar(t2) / cosine_alpha_bar(t1)
    return np.minimum(betas, max_beta)


SCHEDULES = {
    "linear": linear_beta_schedule,
    "cosine": cosine_beta_schedule,
}


def get_beta_schedule(name, num_timesteps):
    """Returns the named beta schedule as a float64 array of `num_timesteps`.

    Args:
        name: str. One of `"linear"` or `"cosine"`.
        num_timesteps: int. Number of diffusion steps `T`.

    Example:

    >>> betas = keras_cdm.get_beta_schedule("cosine", 4000)
    >>> betas.shape
    (4000,)
    """
    if name not in SCHEDULES:
        raise ValueError(
            f"Unknown beta schedule. Expected one of {sorted(SCHEDULES)}. Received: name={name!r}"
        )
    return SCHEDULES[name](num_timesteps)
