"""Class labels of a stage: ids or class names, checked against its classes."""

import numpy as np
from keras import ops

from keras_cdm.utils.validation import check_positive_int


def describe_classes(num_classes, class_names):
    """`"0..9 (0=cat, 1=dog, ...)"`: the class ids, with names if known."""
    text = f"0..{num_classes - 1}"
    if class_names:
        text += " (" + ", ".join(f"{i}={n}" for i, n in enumerate(class_names)) + ")"
    return text


def check_class_names(class_names, num_classes):
    """`class_names` as a tuple after checking it names each of `num_classes`
    classes once (None stays None)."""
    if class_names is None:
        return None
    names = tuple(class_names)
    if (
        len(names) != num_classes
        or not all(isinstance(n, str) and n for n in names)
        or len(set(names)) != len(names)
    ):
        raise ValueError(
            f"`class_names` must be {num_classes} distinct non-empty strings, one per class "
            f"of the network. Received: class_names={names!r}"
        )
    return names


def check_labels(labels, num_classes, class_names=None):
    """Labels as int32 after checking they are valid class ids."""
    labels = np.asarray(ops.convert_to_numpy(labels))
    if labels.size == 0:
        raise ValueError("Expected at least one label. Received: an empty label array")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            "Labels must be a 1D array of integer class ids. Received: "
            f"shape={labels.shape}, dtype={labels.dtype}"
        )
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"Labels must lie in [0, {num_classes}): this stage's classes are "
            f"{describe_classes(num_classes, class_names)}. "
            f"Received: labels in [{labels.min()}, {labels.max()}]"
        )
    return labels.astype("int32")


def class_ids(labels, num_classes, class_names=None):
    """Class ids from ids or class names, checked."""
    if isinstance(labels, (list, tuple)) and any(isinstance(v, str) for v in labels):
        names = class_names or ()
        unknown = [v for v in labels if isinstance(v, str) and v not in names]
        if unknown:
            known = f"its classes are {describe_classes(num_classes, class_names)}"
            raise ValueError(f"Unknown class name {unknown[0]!r}: {known}.")
        labels = [names.index(v) if isinstance(v, str) else v for v in labels]
    return check_labels(labels, num_classes, class_names)


def resolve(labels, num_images, num_classes, class_names=None):
    """The int32 labels a sampling request runs on: `labels`, checked, for
    a class-conditional stage (`num_classes > 0`); zeros for `num_images`
    images of an unconditional one (whose network does not read them)."""
    if num_classes:
        if labels is None:
            raise ValueError(
                f"This stage is class-conditional ({num_classes} classes): pass "
                "`labels`, one class id per image."
                + (f" Received: num_images={num_images}" if num_images is not None else "")
            )
        return class_ids(labels, num_classes, class_names)
    if labels is not None:
        raise ValueError(
            "This stage is unconditional (num_classes=0): pass `num_images=n` instead "
            f"of labels. Received: {len(np.asarray(labels))} labels"
        )
    num_images = check_positive_int("num_images", num_images)
    return np.zeros((num_images,), "int32")
