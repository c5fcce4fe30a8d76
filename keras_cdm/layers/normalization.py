import math

import keras


def group_norm(channels, groups, name=None):
    """GroupNorm kept in float32 under mixed precision (as ADM's GroupNorm32).

    Uses `groups` groups, or the largest divisor of `channels` below it, so the
    tiny presets with few channels still normalise.
    """
    groups = math.gcd(channels, groups)
    return keras.layers.GroupNormalization(groups=groups, epsilon=1e-5, dtype="float32", name=name)
