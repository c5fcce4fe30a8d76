"""Conditioning augmentation of the low-resolution input of an SR stage.

Per-example Gaussian blur and anti-aliased (box-filter) downsampling written
with `keras.ops` only, so they run inside compiled training steps on every
backend (TF XLA has no anti-aliased resize, hence average pooling).

References:
    - CDM, arXiv:2106.15282, Section 3.2.
"""

from keras import ops


def area_downsample(images, factor):
    """Box-filter downsampling by an integer `factor` (average pooling)."""
    if factor == 1:
        return images
    return ops.average_pool(images, factor, factor, padding="valid")


def gaussian_kernel_1d(sigma, kernel_size):
    """Normalised 1D Gaussian weights for a batch of `sigma`s: `(batch, k)`."""
    radius = (kernel_size - 1) / 2.0
    x = ops.arange(kernel_size, dtype="float32") - radius
    sigma = ops.reshape(ops.cast(sigma, "float32"), (-1, 1))
    w = ops.exp(-0.5 * ops.square(x[None, :] / sigma))
    return w / ops.sum(w, axis=1, keepdims=True)


def per_example_gaussian_blur(images, sigma, kernel_size=3):
    """Separable Gaussian blur of each image with its own `sigma`.

    Borders are reflected. Implemented as a sum of shifted copies weighted per
    example, so the batch size may be dynamic.
    """
    weights = gaussian_kernel_1d(sigma, kernel_size)
    radius = kernel_size // 2
    out = images
    for axis in (1, 2):
        pad = [[0, 0], [0, 0], [0, 0], [0, 0]]
        pad[axis] = [radius, radius]
        padded = ops.pad(out, pad, mode="reflect")
        size = out.shape[axis]
        acc = 0.0
        for i in range(kernel_size):
            if axis == 1:
                shifted = padded[:, i : i + size]
            else:
                shifted = padded[:, :, i : i + size]
            acc = acc + ops.reshape(weights[:, i], (-1, 1, 1, 1)) * shifted
        out = acc
    return out
