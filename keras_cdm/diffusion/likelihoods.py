"""Gaussian KL divergence and the discretised Gaussian likelihood of 8-bit data.

References:
    - DDPM, arXiv:2006.11239, Section 3.3 (discrete decoder).
    - Improved DDPM, arXiv:2102.09672 (L_vb, hybrid loss).
"""

import math

from keras import ops


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + ops.exp(logvar1 - logvar2)
        + ops.square(mean1 - mean2) * ops.exp(-logvar2)
    )


def approx_standard_normal_cdf(x):
    """The tanh approximation of the standard normal CDF used by DDPM."""
    return 0.5 * (1.0 + ops.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * ops.power(x, 3))))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """Log-likelihood of `x` (8-bit data scaled to [-1, 1]) under a Gaussian
    integrated over each of the 256 bins, with open-ended outer bins.

    Args:
        x: tensor. Data in [-1, 1] on the grid of 256 levels.
        means: tensor. Gaussian means, broadcastable to `x`.
        log_scales: tensor. Gaussian log standard deviations.

    Returns:
        Elementwise log-probabilities in nats, the shape of `x`.
    """
    centered = x - means
    inv_stdv = ops.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = ops.log(ops.maximum(cdf_plus, 1e-12))
    log_one_minus_cdf_min = ops.log(ops.maximum(1.0 - cdf_min, 1e-12))
    cdf_delta = cdf_plus - cdf_min
    return ops.where(
        x < -0.999,
        log_cdf_plus,
        ops.where(
            x > 0.999,
            log_one_minus_cdf_min,
            ops.log(ops.maximum(cdf_delta, 1e-12)),
        ),
    )
