"""A stage's training batches: the formats `fit` and `evaluate` take, the
checks on them before anything compiles, and the in-step guard that flags
a bad batch and hands the network a sanitised copy.

Batch formats (a base stage; an SR stage also takes `low_res`):
`(images, labels)`, `images` alone (unconditional stages),
`{"images": ..., "labels": ...}` (or `"high_res"`), `((images, low_res), labels)`.
Images are float, `(batch, size, size, channels)`, in [-1, 1]; labels 1D
integer class ids.
"""

import warnings

import keras
import numpy as np
from keras import ops

from keras_cdm.models import training_guard

# Pixels may exceed [-1, 1] by resampling round-off, never by more.
PIXEL_TOLERANCE = 1e-3


def check_images(images, name, size, channels):
    """Static checks of an image tensor: shape and float dtype."""
    shape = tuple(images.shape)
    expected = (size, size, channels)
    if len(shape) != 4 or shape[1:] != expected:
        raise ValueError(
            f"Expected {name} of shape (batch, {size}, {size}, {channels}) "
            f"for this stage. Received: {name}.shape={shape}"
        )
    if "float" not in str(images.dtype):
        raise ValueError(f"Expected float {name} scaled to [-1, 1]. Received: dtype={images.dtype}")


def unpack(stage, x, y):
    """`(images, labels, extra)` of a batch for a base stage, checking
    static shapes; an unconditional stage's labels are zeros."""
    if isinstance(x, dict):
        images = x.get("images", x.get("high_res"))
        labels = x.get("labels", y)
        extra = x
    elif isinstance(x, (tuple, list)):
        images, extra = x[0], {"low_res": x[1]} if len(x) > 1 else {}
        labels = y
    else:
        images, labels, extra = x, y, {}
    if images is None:
        raise ValueError(
            "A batch must hold the images: `(images, labels)` or a dict "
            f"with 'images'. Received keys: {sorted(x) if isinstance(x, dict) else type(x)}"
        )
    check_images(images, "images", stage.image_size, stage.channels)
    if stage.unconditional:
        if labels is not None:
            raise ValueError(
                "This stage is unconditional (num_classes=0) but the batch holds labels: "
                "pass images only (e.g. `source.without_labels()`)."
            )
        zeros = ops.zeros(ops.shape(images)[:1], dtype="int32")
        return ops.cast(images, "float32"), zeros, extra
    if labels is None:
        raise ValueError("A batch must hold class labels: `(images, labels)`.")
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 2 and labels.shape[-1] == 1:
        labels = ops.squeeze(labels, -1)
    if len(labels.shape) != 1 or "int" not in str(labels.dtype):
        raise ValueError(
            "Labels must be a 1D integer tensor of class ids. Received: "
            f"shape={tuple(labels.shape)}, dtype={labels.dtype}"
        )
    return ops.cast(images, "float32"), ops.cast(labels, "int32"), extra


def guard(stage, images, labels, extra):
    """Flags a batch's bad labels and pixels and returns a sanitised copy.

    Returns `(flags, images, labels, extra)`: `flags` is a float scalar of
    `training_guard` bits; the copy replaces bad labels by the null label
    and bad pixels by 0, so a flagged step cannot turn the weights into
    NaN (training stops right after it, see `TrainingGuard`). The stage's
    `_conditioning_images(extra)` names the extra images checked too.
    """
    if stage.unconditional:  # the labels are the zeros `unpack` made
        flags = ops.zeros((), "float32")
    else:
        bad_labels = ops.logical_or(labels < 0, labels >= stage.num_classes)
        flags = training_guard.BAD_LABELS * ops.cast(ops.any(bad_labels), "float32")
        labels = ops.where(bad_labels, stage.num_classes, labels)

    def clean(x):
        ok = ops.logical_and(ops.isfinite(x), ops.abs(x) <= 1.0 + PIXEL_TOLERANCE)
        return ops.where(ok, x, 0.0), ops.cast(ops.logical_not(ops.all(ok)), "float32")

    images, bad = clean(images)
    extra = dict(extra)
    for key in stage._conditioning_images(extra):
        extra[key], bad_cond = clean(extra[key])
        bad = ops.maximum(bad, bad_cond)
    flags = flags + training_guard.BAD_IMAGES * bad
    return flags, images, labels, extra


def check_arrays(stage, x, y):
    """Checks array inputs of `fit`/`evaluate` before anything is compiled:
    the format and shapes (on the first two examples, through the stage's
    `_unpack_batch`), the labels, finite pixels in [-1, 1]."""
    if isinstance(x, dict):
        arrays = dict(x)
        images = arrays.get("images", arrays.get("high_res"))
        labels = arrays.get("labels", y)
    elif isinstance(x, (tuple, list)):
        images, labels = (x[0] if x else None), y
        arrays = {"images": images, "low_res": x[1] if len(x) > 1 else None}
    else:
        images, labels, arrays = x, y, {"images": x}
    if images is None or not hasattr(images, "shape"):
        return  # unpacking names what is missing
    if labels is None and not stage.unconditional:
        return
    n = min(len(images), 2)
    first = (
        {k: v[:n] for k, v in arrays.items() if v is not None}
        if isinstance(x, dict)
        else (tuple(v[:n] for v in x) if isinstance(x, (tuple, list)) else images[:n])
    )
    stage._unpack_batch(first, None if labels is None else labels[:n])
    if labels is not None:
        stage.check_labels(np.asarray(labels).reshape(len(labels), -1)[:, 0])
    for name, value in arrays.items():
        if value is None or name == "labels":
            continue
        value = np.asarray(value)
        if not np.isfinite(value).all():
            bad = np.argwhere(~np.isfinite(value).reshape(len(value), -1).all(axis=1))[:, 0]
            raise ValueError(
                f"{name} hold non-finite values (NaN or Inf) in {len(bad)} examples, "
                f"the first at index {int(bad[0])}."
            )
        lo, hi = float(value.min()), float(value.max())
        if lo < -1.0 - PIXEL_TOLERANCE or hi > 1.0 + PIXEL_TOLERANCE:
            hint = " (uint8-range pixels: use x / 127.5 - 1)" if hi > 2.0 else ""
            raise ValueError(
                f"Expected {name} in [-1, 1]. Received: values in [{lo:.4g}, {hi:.4g}]{hint}"
            )
        if lo >= 0.0 and hi > 0.0:
            warnings.warn(
                f"{name} lie in [{lo:.3g}, {hi:.3g}], all >= 0: keras_cdm expects images "
                "in [-1, 1]; images in [0, 1] should be mapped with 2 * x - 1.",
                stacklevel=4,
            )


def check_dataset_spec(stage, dataset):
    """Checks a dataset's element spec (shapes, dtypes) up front: a
    `tf.data.Dataset` or any dataset with an `element_spec` of objects
    with `shape` and `dtype` (`keras_cdm.data.StageDataset`)."""
    spec = getattr(dataset, "element_spec", None)

    def is_spec(s):
        return hasattr(s, "shape") and hasattr(s, "dtype")

    def dummy(s):
        # A `tf.distribute` dataset's spec holds one spec per local replica
        # (`PerReplicaSpec`); each has the element's shape and dtype.
        s = s if is_spec(s) else getattr(s, "_value_specs", (s,))[0]
        shape = tuple(1 if d is None else d for d in s.shape)
        return np.zeros(shape, dtype=getattr(s.dtype, "as_numpy_dtype", s.dtype))

    if is_spec(spec) or hasattr(spec, "_value_specs"):
        x, y = dummy(spec), None  # images alone (an unconditional stage's batches)
    elif not isinstance(spec, (tuple, dict)):
        return
    elif isinstance(spec, tuple):
        x = spec[0]
        x = {k: dummy(v) for k, v in x.items()} if isinstance(x, dict) else dummy(x)
        y = dummy(spec[1]) if len(spec) > 1 and spec[1] is not None else None
    else:
        x, y = {k: dummy(v) for k, v in spec.items()}, None
    stage._unpack_batch(x, y)


def check_inputs(stage, x, y):
    """The checks `fit`/`evaluate` run before compiling: a dataset's spec or
    the arrays themselves (a `PyDataset` is checked batch by batch in the
    step)."""
    if hasattr(x, "element_spec"):
        check_dataset_spec(stage, x)
    elif x is not None and not isinstance(x, keras.utils.PyDataset):
        check_arrays(stage, x, y)
