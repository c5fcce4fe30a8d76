"""Choosing a subset of a diffusion's timesteps (Improved DDPM's respacing)."""

import numpy as np


def space_timesteps(num_timesteps, section_counts):
    """Returns the sorted timesteps kept from a `num_timesteps` diffusion.

    Args:
        num_timesteps: int. Steps of the original diffusion.
        section_counts: int, list of ints or str. An int `n` keeps `n` evenly
            spaced steps including the first and the last. A list splits the
            steps into equal sections and keeps `section_counts[i]` evenly
            spaced steps in section `i` (Improved DDPM's `space_timesteps`).
            `"ddimN"` keeps `range(0, T, stride)` with `N` entries, as DDIM.

    Returns:
        A sorted int64 NumPy array of distinct timesteps.

    Example:

    >>> keras_cdm.space_timesteps(4000, 5)
    array([   0, 1000, 2000, 2999, 3999])
    """
    if isinstance(section_counts, str):
        if not section_counts.startswith("ddim"):
            raise ValueError(
                "A string `section_counts` must look like 'ddimN'. "
                f"Received: section_counts={section_counts!r}"
            )
        desired = int(section_counts[len("ddim") :])
        _check_count(desired, num_timesteps)
        for stride in range(1, num_timesteps + 1):
            if len(range(0, num_timesteps, stride)) == desired:
                return np.arange(0, num_timesteps, stride, dtype=np.int64)
        raise ValueError(
            f"Cannot take exactly {desired} steps with an integer stride from "
            f"{num_timesteps}. Received: section_counts={section_counts!r}"
        )
    if isinstance(section_counts, (int, np.integer)):
        section_counts = [int(section_counts)]
    section_counts = list(section_counts)
    if not section_counts:
        raise ValueError("`section_counts` must not be empty.")
    size_per = num_timesteps // len(section_counts)
    extra = num_timesteps % len(section_counts)
    start = 0
    kept = []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        _check_count(count, size)
        if count == 1:
            taken = [0]
        else:
            stride = (size - 1) / (count - 1)
            taken = [int(round(stride * j)) for j in range(count)]
        kept.extend(start + k for k in taken)
        start += size
    return np.array(sorted(set(kept)), dtype=np.int64)


def _check_count(count, available):
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count <= 0:
        raise ValueError(f"Step counts must be positive integers. Received: count={count!r}")
    if count > available:
        raise ValueError(
            f"Cannot keep {count} steps out of {available}: a respacing keeps "
            f"at most as many steps as exist. Received: count={count}"
        )


def quadratic_timesteps(start, end, count):
    """`count` distinct timesteps from `start` to `end`, quadratically spaced:
    dense at low noise, sparse at high noise (DDIM's "quad" spacing, Song et
    al. 2021, over the whole range).

    Step `i` of `count` sits at `start + (end - start) (i / (count - 1))^2`,
    rounded; where rounding would merge neighbours the steps are kept
    distinct by taking the next free one.

    Example:

    >>> keras_cdm.diffusion.respacing.quadratic_timesteps(0, 999, 6)
    array([  0,  40, 160, 360, 639, 999])
    """
    _check_count(count, end - start + 1)
    if count == 1:
        return np.array([end], dtype=np.int64)
    u = np.linspace(0.0, 1.0, count)
    steps = np.round(start + (end - start) * u**2).astype(np.int64)
    for i in range(1, count):  # distinct, increasing
        steps[i] = max(steps[i], steps[i - 1] + 1)
    return np.minimum(steps, end - (count - 1 - np.arange(count)))


def trailing_timesteps(num_timesteps, count):
    """`count` evenly spaced timesteps that end at the last one: step `k` of
    `count` (k = 1..count) is `round(k T / count) - 1` (diffusers'
    "trailing" spacing).

    The grid of `2n` steps holds the grid of `n` (its even entries), which
    is what progressive distillation needs: a student of `n` steps learns
    two teacher steps in one (`keras_cdm.models.ProgressiveDistillation`).
    Its last step from the least noisy entry goes to the clean image.

    Example:

    >>> keras_cdm.diffusion.respacing.trailing_timesteps(1000, 4)
    array([249, 499, 749, 999])
    >>> keras_cdm.diffusion.respacing.trailing_timesteps(1000, 8)[1::2]
    array([249, 499, 749, 999])
    """
    _check_count(count, num_timesteps)
    k = np.arange(1, count + 1, dtype=np.int64)
    # round(k T / count) with ties up, in integers: the same for (k, count)
    # and (2k, 2 count), so the grids nest exactly.
    return (2 * k * num_timesteps + count) // (2 * count) - 1
