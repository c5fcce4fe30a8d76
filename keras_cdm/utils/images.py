"""Image conversions and writing results: PNG grids and `.npz` archives."""

import os

import numpy as np


def to_uint8(images):
    """Maps float images in [-1, 1] to uint8 in [0, 255] (rounding)."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def from_uint8(images):
    """Maps uint8 images to float32 in [-1, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"Expected uint8 images. Received: dtype={images.dtype}")
    return images.astype(np.float32) / 127.5 - 1.0


def make_grid(rows, pad=2, upscale_to=None, row_labels=None):
    """Tiles a list of rows (each a list/array of HWC images) into one image.

    Images of different sizes are upscaled (nearest) to the largest size, or
    to `upscale_to`, so a low- and a high-resolution stage can sit side by side.
    `row_labels` (a str per row) are written in a margin on the left.
    """
    rows = [[np.asarray(im) for im in row] for row in rows]
    if not rows or not any(len(r) for r in rows):
        raise ValueError("make_grid needs at least one image.")
    images = [im for row in rows for im in row]
    size = upscale_to or max(im.shape[0] for im in images)
    channels = images[0].shape[-1]
    ncols = max(len(r) for r in rows)
    grid = np.full(
        (len(rows) * (size + pad) + pad, ncols * (size + pad) + pad, channels),
        255,
        dtype=np.uint8,
    )
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            if im.dtype != np.uint8:
                im = to_uint8(im)
            if im.shape[0] != size:
                factor = size // im.shape[0]
                im = np.repeat(np.repeat(im, factor, axis=0), factor, axis=1)
            y, x = pad + r * (size + pad), pad + c * (size + pad)
            grid[y : y + size, x : x + size] = im
    if row_labels is not None:
        if len(row_labels) != len(rows):
            raise ValueError(
                f"Expected one row label per row ({len(rows)}). Received: {len(row_labels)}"
            )
        grid = _label_rows(grid, [str(t) for t in row_labels], size, pad)
    return grid


def _label_rows(grid, labels, size, pad):
    """`grid` with a white margin on the left holding each row's label."""
    from PIL import Image
    from PIL import ImageDraw
    from PIL import ImageFont

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    boxes = [measure.textbbox((0, 0), t, font=font) for t in labels]
    width = max(b[2] - b[0] for b in boxes) + 2 * pad + 2
    canvas = Image.new(
        "RGB" if grid.shape[-1] == 3 else "L", (grid.shape[1] + width, grid.shape[0]), "white"
    )
    canvas.paste(Image.fromarray(grid if grid.shape[-1] == 3 else grid[..., 0]), (width, 0))
    draw = ImageDraw.Draw(canvas)
    for r, (text, box) in enumerate(zip(labels, boxes)):
        y = pad + r * (size + pad) + (size - (box[3] - box[1])) // 2 - box[1]
        draw.text((pad, y), text, fill="black", font=font)
    out = np.asarray(canvas)
    return out if out.ndim == 3 else out[..., None]


def _atomic_path(path):
    """A temporary name beside `path` with the same extension (the writers
    infer the format from it); `os.replace` then swaps it in."""
    root, ext = os.path.splitext(path)
    return f"{root}.tmp{ext}"


def save_png(path, image):
    """Writes a uint8 image as PNG, atomically (a kill leaves the old file)."""
    from PIL import Image

    image = np.asarray(image)
    if image.shape[-1] == 1:
        image = image[..., 0]
    tmp = _atomic_path(path)
    Image.fromarray(image).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def save_class_grid(path, images, labels, max_per_class=8, extra_stages=None, class_names=None):
    """Writes a PNG grid with one row per class present in `labels`, each
    row headed by its class name when `class_names` are given.

    Args:
        path: output `.png` path.
        images: float in [-1, 1] or uint8, `(n, h, w, c)`.
        labels: int `(n,)`.
        max_per_class: int. Columns per class.
        extra_stages: optional list of lower-resolution arrays aligned with
            `images` (e.g. every stage's output); each sample is then shown as
            its stages side by side.
        class_names: optional list of str, one per class id.
    """
    labels = np.asarray(labels)
    rows = []
    classes = np.unique(labels)
    for c in classes:
        idx = np.nonzero(labels == c)[0][:max_per_class]
        row = []
        for i in idx:
            for stage in extra_stages or []:
                row.append(stage[i])
            row.append(images[i])
        rows.append(row)
    names = [class_names[c] for c in classes] if class_names else None
    return save_png(path, make_grid(rows, row_labels=names))


def save_npz(path, images, labels):
    """Writes uint8 images and int labels to `.npz` (keys `images`, `labels`),
    atomically."""
    tmp = _atomic_path(path if path.endswith(".npz") else path + ".npz")
    np.savez(
        tmp,
        images=to_uint8(images) if np.asarray(images).dtype != np.uint8 else images,
        labels=np.asarray(labels, dtype=np.int64),
    )
    os.replace(tmp, path)
    return path
