"""An embedded, class-conditional synthetic image set: no download needed.

Ten classes of coloured shapes (circle, square, triangle, plus, ring, diamond,
ellipse, X, half-disk, two dots), each filled with fine stripes at a
class-specific angle and set on a smoothly shaded, finely textured background.
The shapes are recognisable at 8x8; the stripes and texture are detail that
only a super-resolution stage can restore. Images are rendered analytically at
any resolution (2x supersampled, then box-filtered), so the same seed gives the
same scene at every resolution.
"""

import colorsys

import numpy as np

CLASS_NAMES = (
    "circle",
    "square",
    "triangle",
    "plus",
    "ring",
    "diamond",
    "ellipse",
    "x",
    "half_disk",
    "two_dots",
)
NUM_CLASSES = len(CLASS_NAMES)


def _shape_mask(cls, x, y, r):
    ax, ay = np.abs(x), np.abs(y)
    rad = np.sqrt(x**2 + y**2)
    if cls == 0:
        return rad < r
    if cls == 1:
        return np.maximum(ax, ay) < 0.8 * r
    if cls == 2:
        return (y < 0.7 * r) & (y > -0.9 * r + 1.9 * ax)
    if cls == 3:
        return ((ax < r / 3) & (ay < r)) | ((ay < r / 3) & (ax < r))
    if cls == 4:
        return (rad < r) & (rad > 0.55 * r)
    if cls == 5:
        return ax + ay < r
    if cls == 6:
        return (x / r) ** 2 + (y / (0.5 * r)) ** 2 < 1
    if cls == 7:
        u, v = (x + y) / np.sqrt(2), (x - y) / np.sqrt(2)
        return ((np.abs(u) < r / 4) & (np.abs(v) < r)) | ((np.abs(v) < r / 4) & (np.abs(u) < r))
    if cls == 8:
        return (rad < r) & (y > 0)
    return (np.sqrt((x - 0.5 * r) ** 2 + y**2) < 0.45 * r) | (
        np.sqrt((x + 0.5 * r) ** 2 + y**2) < 0.45 * r
    )


def _hsv(h, s, v):
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float64)


def render_image(label, resolution, rng_state):
    """Renders one image of class `label` from a parameter draw `rng_state`."""
    p = rng_state
    n = 2 * resolution
    coords = (np.arange(n) + 0.5) / n * 2 - 1
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    # Background: shaded gradient plus a fine cosine texture.
    bg0 = _hsv(p["bg_hue"], 0.25, 0.55)
    bg1 = _hsv(p["bg_hue"] + 0.1, 0.35, 0.85)
    g = 0.5 + 0.5 * (np.cos(p["bg_angle"]) * xx + np.sin(p["bg_angle"]) * yy)
    img = bg0[None, None] * (1 - g[..., None]) + bg1[None, None] * g[..., None]
    texture = np.cos(p["tex_freq"] * np.pi * (xx + 0.7 * yy) + p["tex_phase"]) * np.cos(
        p["tex_freq"] * np.pi * (yy - 0.6 * xx)
    )
    img = img + 0.06 * texture[..., None]
    # Shape: rotated, scaled, filled with fine stripes in two tones.
    c, s = np.cos(p["angle"]), np.sin(p["angle"])
    x = c * (xx - p["cx"]) + s * (yy - p["cy"])
    y = -s * (xx - p["cx"]) + c * (yy - p["cy"])
    mask = _shape_mask(label, x, y, p["radius"])
    hue = label / NUM_CLASSES + p["hue_jitter"]
    light, dark = _hsv(hue, 0.85, 0.95), _hsv(hue, 0.9, 0.45)
    stripe_angle = np.pi * label / NUM_CLASSES
    stripes = np.cos(
        p["stripe_freq"] * np.pi * (np.cos(stripe_angle) * xx + np.sin(stripe_angle) * yy)
    )
    fill = np.where(stripes[..., None] > 0, light[None, None], dark[None, None])
    img = np.where(mask[..., None], fill, img)
    img = np.clip(img, 0.0, 1.0)
    # 2x supersampling → box filter: anti-aliased edges at every resolution.
    img = img.reshape(resolution, 2, resolution, 2, 3).mean(axis=(1, 3))
    return np.round(img * 255).astype(np.uint8)


def _draw_params(rng):
    return {
        "bg_hue": rng.uniform(),
        "bg_angle": rng.uniform(0, 2 * np.pi),
        "tex_freq": rng.uniform(10, 16),
        "tex_phase": rng.uniform(0, 2 * np.pi),
        "angle": rng.uniform(-0.4, 0.4),
        "cx": rng.uniform(-0.15, 0.15),
        "cy": rng.uniform(-0.15, 0.15),
        "radius": rng.uniform(0.5, 0.75),
        "hue_jitter": rng.uniform(-0.03, 0.03),
        "stripe_freq": rng.uniform(7, 10),
    }


def synthetic_shapes(num_images, resolution=32, seed=0, num_classes=NUM_CLASSES):
    """Renders `num_images` labelled images of the synthetic set.

    Args:
        num_images: int. Number of images; labels cycle over the classes.
        resolution: int in [8, 256]. Height and width.
        seed: int. The same seed gives the same scenes at every resolution.
        num_classes: int in [1, 10]. Classes to use.

    Returns:
        `(images, labels)`: uint8 `(n, r, r, 3)` and int64 `(n,)`.

    Example:

    >>> images, labels = keras_cdm.data.synthetic_shapes(20, resolution=16)
    """
    if not isinstance(resolution, int) or not 8 <= resolution <= 256:
        raise ValueError(
            f"The synthetic set renders at 8 to 256 pixels. Received: resolution={resolution!r}"
        )
    if not 1 <= num_classes <= NUM_CLASSES:
        raise ValueError(
            f"`num_classes` must be in [1, {NUM_CLASSES}]. Received: num_classes={num_classes}"
        )
    if num_images < 0:
        raise ValueError(f"`num_images` must be >= 0. Received: {num_images}")
    rng = np.random.default_rng(seed)
    labels = np.arange(num_images) % num_classes
    images = np.empty((num_images, resolution, resolution, 3), np.uint8)
    for i, label in enumerate(labels):
        images[i] = render_image(int(label), resolution, _draw_params(rng))
    return images, labels.astype(np.int64)
