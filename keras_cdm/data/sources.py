"""Where images come from: arrays, image folders, TFDS and the synthetic set.

Arrays, folders and the synthetic set are read by index (no TensorFlow
needed): the native pipeline (`keras_cdm.data.StageDataset`) serves them on
every backend. A TFDS source is a `tf.data` stream and needs TensorFlow.
"""

import os

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


class ImageSource:
    """A set of `(uint8 RGB image, label)` pairs and what the pipeline needs.

    Attributes:
        num_classes: int.
        min_side: int or None. Smallest image side (None if unknown).
        size: int or None. Number of examples (None if unknown).
        class_names: list of str or None.
        skipped: list of unreadable files that were skipped.
        images: uint8 array `(n, h, w, 3)` held in memory, or None.
        paths: list of image files, or None.
        labels: int64 array `(n,)`, or None for an unlabelled source (an
            unconditional stage's data; `num_classes` is then 0).
        random_access: bool. Examples can be read by index (`read(i)`).
        dataset: the source as a `tf.data.Dataset` of `(uint8 (h, w, 3),
            int64 ())` (built on first use; needs TensorFlow).

    Example:

    >>> source = keras_cdm.data.from_arrays(np.zeros((4, 8, 8, 3), "uint8"), [0, 1, 0, 1])
    >>> source.size, source.num_classes, source.read(1).shape
    (4, 2, (8, 8, 3))
    """

    def __init__(
        self,
        num_classes,
        min_side=None,
        size=None,
        class_names=None,
        skipped=None,
        images=None,
        paths=None,
        labels=None,
        tf_dataset=None,
    ):
        self.num_classes = num_classes
        self.min_side = min_side
        self.size = size
        self.class_names = class_names
        self.skipped = skipped or []
        self.images = images
        self.paths = paths
        self.labels = labels
        self._tf_dataset = tf_dataset

    @property
    def random_access(self):
        return self.images is not None or self.paths is not None

    def without_labels(self):
        """The same images as an unlabelled source (for an unconditional stage)."""
        if not self.random_access:
            raise ValueError("A TFDS stream cannot drop its labels here; use an image folder.")
        return ImageSource(
            0, self.min_side, self.size, None, self.skipped, images=self.images, paths=self.paths
        )

    def read(self, index):
        """The uint8 `(h, w, 3)` image at `index`."""
        if self.images is not None:
            return self.images[index]
        if self.paths is not None:
            return read_rgb(self.paths[index])
        raise TypeError("This source is a tf.data stream; it cannot be read by index.")

    @property
    def dataset(self):
        if self._tf_dataset is None:
            self._tf_dataset = self._make_tf_dataset()
        return self._tf_dataset

    def _make_tf_dataset(self):
        tf = _tensorflow("pipeline='tf'")
        if self.labels is None:
            raise ValueError(
                "pipeline='tf' serves labelled sources; an unlabelled one goes through the "
                "native pipeline (pipeline='auto' or 'native')."
            )
        labels = np.asarray(self.labels, np.int64)
        if self.images is not None:
            return tf.data.Dataset.from_tensor_slices((self.images, labels))

        def load(path, label):
            image = tf.numpy_function(lambda p: read_rgb(p.decode()), [path], tf.uint8)
            image.set_shape((None, None, 3))
            return image, label

        ds = tf.data.Dataset.from_tensor_slices((self.paths, labels))
        return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)


def _tensorflow(what):
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(
            f"{what} needs TensorFlow, which is not installed here ({e}). Install it with "
            "`pip install keras-cdm[tensorflow]`, or use the native pipeline (the default "
            "for arrays, image folders and the synthetic set)."
        ) from e
    return tf


def from_arrays(images, labels=None, num_classes=None, class_names=None):
    """Source from uint8 images `(n, h, w, c)` (c = 1, 3 or 4) and int labels
    (`labels=None`: an unlabelled source, for an unconditional stage), with
    optional `class_names` (one per class)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"Expected uint8 images. Received: dtype={images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(
            "Expected images of shape (n, h, w, c) with c in (1, 3, 4). "
            f"Received: shape={images.shape}"
        )
    if len(images) == 0:
        raise ValueError("The array source is empty.")
    images = np.ascontiguousarray(_to_rgb_array(images))
    if labels is None:
        if num_classes:
            raise ValueError(
                f"An unlabelled source has no classes. Received: num_classes={num_classes}"
            )
        return ImageSource(0, min(images.shape[1:3]), len(images), images=images)
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"Expected a 1D integer label array. Received: shape={labels.shape}, dtype={labels.dtype}"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"Images and labels differ in length: {len(images)} images, {len(labels)} labels."
        )
    if labels.min() < 0:
        raise ValueError(f"Labels must be >= 0. Received: min label {labels.min()}")
    num_classes = num_classes or int(labels.max()) + 1
    if labels.max() >= num_classes:
        raise ValueError(
            f"Labels must lie in [0, {num_classes}). Received: max label {labels.max()}"
        )
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(
            f"Expected one class name per class ({num_classes}). Received: {len(class_names)} names"
        )
    return ImageSource(
        num_classes,
        min(images.shape[1:3]),
        len(images),
        class_names=None if class_names is None else list(class_names),
        images=images,
        labels=labels.astype(np.int64),
    )


def _to_rgb_array(images):
    if images.shape[-1] == 1:
        return np.repeat(images, 3, axis=-1)
    if images.shape[-1] == 4:
        return images[..., :3]
    return images


def synthetic(num_images=2000, resolution=64, seed=0, num_classes=10):
    """Source from the embedded synthetic shapes (see `synthetic_shapes`)."""
    from keras_cdm.data.shapes import CLASS_NAMES
    from keras_cdm.data.shapes import synthetic_shapes

    images, labels = synthetic_shapes(num_images, resolution, seed, num_classes)
    return from_arrays(images, labels, num_classes, CLASS_NAMES[:num_classes])


def read_rgb(path):
    """The image file at `path` as uint8 RGB pixels, shape `(H, W, 3)`; a
    file that does not decode raises `ValueError` naming it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # the message must name the file, wherever it surfaces
        raise ValueError(f"Cannot decode image {path!r}: {e}") from e


def _truncated_jpeg(path):
    """A JPEG must end with the end-of-image marker; `Image.verify()` does not
    look that far, and a cut file then fails only when decoded."""
    if not path.lower().endswith((".jpg", ".jpeg")):
        return False
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() < 2:
            return True
        f.seek(-2, os.SEEK_END)
        tail = f.read(2)
    return tail != b"\xff\xd9"


def from_image_folder(directory, skip_corrupt=False):
    """Source from a folder with one sub-folder per class, or (images
    directly in it, no sub-folders) an unlabelled source for an
    unconditional stage.

    Any format Pillow reads; grayscale, palette and RGBA images are converted
    to RGB. Class ids follow the sorted sub-folder names. A folder that holds
    both class sub-folders and images is refused as ambiguous.

    Args:
        directory: str. The root folder.
        skip_corrupt: bool. Skip unreadable files (listed in `skipped`)
            instead of raising. Defaults to `False`.

    Every file is opened and checked once when the source is made (header,
    PNG checksums, the end marker of JPEGs); a file that still fails to
    decode during training raises an error naming it.
    """
    from PIL import Image

    if not os.path.isdir(directory):
        raise ValueError(f"Image folder not found: {directory!r}")
    entries = os.listdir(directory)
    class_names = sorted(d for d in entries if os.path.isdir(os.path.join(directory, d)))
    loose = sorted(f for f in entries if f.lower().endswith(IMAGE_EXTENSIONS))
    if class_names and loose:
        raise ValueError(
            f"{directory!r} holds both class sub-folders ({class_names[0]!r}, ...) and images "
            f"({loose[0]!r}, ...): put every image in a class folder, or use a folder of "
            "images alone for an unconditional stage."
        )
    if not class_names and not loose:
        raise ValueError(
            f"No class sub-folders and no images in {directory!r}: expected one folder per "
            "class, or the images themselves (unconditional)."
        )
    unlabelled = not class_names
    groups = [(0, directory, loose)] if unlabelled else []
    for label, name in enumerate(class_names):
        folder = os.path.join(directory, name)
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise ValueError(f"Class folder {folder!r} holds no images.")
        groups.append((label, folder, files))
    paths, labels, skipped = [], [], []
    min_side = None
    for label, folder, files in groups:
        for f in files:
            path = os.path.join(folder, f)
            try:
                with Image.open(path) as im:
                    im.verify()
                    side = min(im.size)
                if _truncated_jpeg(path):
                    raise ValueError("truncated JPEG (no end-of-image marker)")
            except Exception as e:
                if not skip_corrupt:
                    raise ValueError(
                        f"Cannot read image {path!r} ({e}). Pass skip_corrupt=True to skip it."
                    ) from e
                skipped.append(path)
                continue
            min_side = side if min_side is None else min(min_side, side)
            paths.append(path)
            labels.append(label)
    if not paths:
        raise ValueError(f"No readable images in {directory!r}.")
    if unlabelled:
        return ImageSource(0, min_side, len(paths), None, skipped, paths=paths)
    return ImageSource(
        len(class_names),
        min_side,
        len(paths),
        class_names,
        skipped,
        paths=paths,
        labels=np.asarray(labels, np.int64),
    )


def from_tfds(name, split="train", data_dir=None, download=True):
    """Source from a TFDS image-classification set with `image` and `label`.

    Examples: `"cifar10"`, `"imagenet_resized/32x32"`, `"imagenet_resized/64x64"`,
    `"imagenet2012"` (manual download into `data_dir`).
    """
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            f"from_tfds({name!r}) needs TensorFlow and tensorflow-datasets, which are not "
            f"installed here ({e}). Install them with `pip install keras-cdm[tensorflow]`, "
            "or pass an image folder (one sub-folder per class) instead."
        ) from e
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        if download:
            builder.download_and_prepare()
    except Exception as e:
        raise ValueError(
            f"TFDS data set {name!r} could not be loaded or prepared in "
            f"data_dir={data_dir or '~/tensorflow_datasets'!r} ({type(e).__name__}: {e}). "
            f"Prepare it where there is network access (`tfds build {name}`) and pass that "
            "data_dir, or pass an image folder instead (one sub-folder per class)."
        ) from e

    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise ValueError(
            f"TFDS set {name!r} needs 'image' and 'label' features. "
            f"Received features: {sorted(features.keys())}"
        )
    num_classes = features["label"].num_classes
    shape = features["image"].shape
    min_side = min(shape[:2]) if shape[0] and shape[1] else None
    try:
        ds = builder.as_dataset(split=split, shuffle_files=True)
    except Exception as e:
        raise ValueError(
            f"TFDS data set {name!r} (split {split!r}) is not prepared in "
            f"{builder.data_dir!r} ({type(e).__name__}: {e}). Run `tfds build {name}` "
            "where there is network access, or pass an image folder."
        ) from e

    def to_pair(example):
        image = example["image"]
        if image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        elif image.shape[-1] == 4:
            image = image[..., :3]
        return tf.cast(image, tf.uint8), tf.cast(example["label"], tf.int64)

    ds = ds.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE)
    size = builder.info.splits[split].num_examples if split in builder.info.splits else None
    return ImageSource(num_classes, min_side, size, tf_dataset=ds)


def resolve_source(spec, data_dir=None, split="train", resolution=64, seed=0, num_images=2000):
    """A source from a recipe's `--dataset`: `synthetic`, a folder or a TFDS name."""
    if spec == "synthetic":
        return synthetic(num_images=num_images, resolution=resolution, seed=seed)
    head = spec.split("/")[0]
    looks_like_path = spec.startswith((".", "/", "~")) or (head != spec and os.path.isdir(head))
    if looks_like_path and not os.path.isdir(spec):
        raise ValueError(
            f"--dataset {spec!r}: folder not found (expected 'synthetic', an image folder "
            "with one sub-folder per class, or a TFDS name such as 'cifar10')."
        )
    if os.path.isdir(spec):
        folder = os.path.join(spec, split) if os.path.isdir(os.path.join(spec, split)) else spec
        return from_image_folder(folder, skip_corrupt=True)
    return from_tfds(spec, split=split, data_dir=data_dir)
