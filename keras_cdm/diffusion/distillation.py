"""The math of progressive distillation (Salimans & Ho, ICLR 2022,
arXiv:2202.00512, Algorithm 2), on the discrete schedules of
`keras_cdm.GaussianDiffusion`.

A student of `n` steps visits the trailing grid of `n` levels
(`keras_cdm.diffusion.respacing.trailing_timesteps`); its teacher visits
the grid of `2n`, which holds the student's at its even entries. From
`z_t` at a student level the teacher takes two deterministic DDIM steps
to `z_t''`, the student's next level; the student's x-prediction should
be the `x~` for which one DDIM step from `z_t` lands on `z_t''` as well:

    z_t'' = alpha'' x~ + sigma'' (z_t - alpha x~) / sigma
    =>  x~ = (z_t'' - (sigma'' / sigma) z_t) / (alpha'' - (sigma'' / sigma) alpha)

with `alpha = sqrt(abar_t)`, `sigma = sqrt(1 - abar_t)` (`''`: the next
level; at the last step `alpha'' = 1`, `sigma'' = 0` and `x~ = z_t''`).
The student regresses onto `x~` with the "truncated SNR" weight
`max(SNR(t), 1)` on the x-space error, `SNR = alpha^2 / sigma^2`, which is
the larger of the x- and the epsilon-space errors.
"""

from keras import ops


def two_step_target(z_t, z_next, abar_t, abar_next):
    """`x~`, the x-prediction whose one DDIM step (eta = 0) from `z_t` at
    `abar_t` lands on `z_next` at `abar_next` (module docstring).

    Args:
        z_t: tensor `(batch, ...)`. The noisy input at the student's level.
        z_next: tensor like `z_t`. Where the teacher's two steps landed.
        abar_t: tensor `(batch,)`. ᾱ at the student's level.
        abar_next: tensor `(batch,)`. ᾱ at its next level (1: clean).

    Example:

    >>> z, z2 = keras.ops.ones((1, 2)), keras.ops.zeros((1, 2))
    >>> x = keras_cdm.diffusion.distillation.two_step_target(
    ...     z, z2, keras.ops.array([0.5]), keras.ops.array([1.0]))
    >>> keras.ops.convert_to_numpy(x).tolist()  # the last step: x~ = z''
    [[0.0, 0.0]]
    """
    shape = (-1,) + (1,) * (len(z_t.shape) - 1)
    a_t = ops.reshape(ops.sqrt(abar_t), shape)
    s_t = ops.reshape(ops.sqrt(1.0 - abar_t), shape)
    a_n = ops.reshape(ops.sqrt(abar_next), shape)
    s_n = ops.reshape(ops.sqrt(ops.maximum(1.0 - abar_next, 0.0)), shape)
    ratio = s_n / s_t
    return (z_next - ratio * z_t) / (a_n - ratio * a_t)


def truncated_snr_weight(abar_t):
    """`max(SNR(t), 1)`, `SNR = ᾱ / (1 - ᾱ)`: the paper's weight of the
    x-space error (`(batch,)` like `abar_t`)."""
    return ops.maximum(abar_t / (1.0 - abar_t), 1.0)
