"""Stage datasets: ready batches for `model.fit` on every backend.

Two pipelines make the same batches. The native one (`StageDataset`, a
`keras.utils.PyDataset`; the default) needs no TensorFlow and serves arrays,
image folders and the synthetic set. The `tf.data` one serves TFDS sources
(and any source with `pipeline="tf"`) and needs TensorFlow.
"""

import itertools

import numpy as np

from keras_cdm.data.stage_dataset import StageDataset

CROPS = ("center", "random")
PIPELINES = ("auto", "native", "tf")


def _check_resolution(source, resolution, allow_upsampling):
    if not isinstance(resolution, int) or resolution <= 0:
        raise ValueError(f"`resolution` must be a positive int. Received: {resolution!r}")
    if source.min_side is not None and resolution > source.min_side and not allow_upsampling:
        raise ValueError(
            f"The requested resolution {resolution} is larger than the smallest source "
            f"image side ({source.min_side}). Pass allow_upsampling=True to upsample."
        )


def preprocess_image(image, resolution, crop="center", flip=False, seed=None):
    """Square crop, anti-aliased resize (box filter for integer factors), optional
    flip; float32 in [-1, 1]."""
    import tensorflow as tf

    shape = tf.shape(image)
    side = tf.minimum(shape[0], shape[1])
    if crop == "random":
        image = tf.image.random_crop(image, tf.stack([side, side, 3]), seed=seed)
    else:
        top = (shape[0] - side) // 2
        left = (shape[1] - side) // 2
        image = image[top : top + side, left : left + side]
    image = tf.cast(image, tf.float32)

    def resize():
        # An integer downsampling factor uses the box filter (area average),
        # exactly how `super_res_dataset` makes an SR stage's conditioning, so
        # a base stage learns the very images the next stage is conditioned on.
        # Other factors (and upsampling) use anti-aliased bilinear resizing.
        def area():
            return tf.image.resize(image, (resolution, resolution), method="area")

        def bilinear():
            return tf.image.resize(
                image, (resolution, resolution), method="bilinear", antialias=True
            )

        exact = tf.logical_and(side > resolution, tf.equal(side % resolution, 0))
        out = tf.cond(exact, area, bilinear)
        return tf.ensure_shape(out, (resolution, resolution, 3))

    static_side = image.shape[0] if image.shape[0] == image.shape[1] else None
    if static_side is not None:
        image = image if static_side == resolution else resize()
    else:
        # Crop-or-pad is the identity when the side already matches.
        image = tf.cond(
            tf.equal(side, resolution),
            lambda: tf.image.resize_with_crop_or_pad(image, resolution, resolution),
            resize,
        )
    if flip:
        image = tf.image.random_flip_left_right(image, seed=seed)
    image = tf.clip_by_value(image, 0.0, 255.0)  # resize round-off only
    return image / 127.5 - 1.0


def area_downsample_tf(images, factor):
    """Box-filter downsampling of a float NHWC or HWC tensor by `factor`."""
    import tensorflow as tf

    if factor == 1:
        return images
    if images.shape.rank == 3:
        return tf.nn.avg_pool2d(images[None], factor, factor, "VALID")[0]
    return tf.nn.avg_pool2d(images, factor, factor, "VALID")


def _sharded(source, shard, batch_size, drop_remainder, repeat):
    ds = source.dataset
    num = 1
    if shard is not None:
        num, index = shard
        ds = ds.shard(num, index)
    # Without repeat and with drop_remainder such a source yields no batch at all.
    if (
        drop_remainder
        and not repeat
        and source.size is not None
        and source.size // num < batch_size
    ):
        raise ValueError(
            f"The source holds {source.size} images ({source.size // num} per shard), fewer "
            f"than one batch of {batch_size} (drop_remainder=True, repeat=False): no batch "
            "would come out. Use a smaller batch_size, more images or repeat=True."
        )
    return ds


def _stage_dataset(
    source,
    resolution,
    batch_size,
    low_res=None,
    shuffle=True,
    repeat=True,
    flip=True,
    crop="center",
    allow_upsampling=False,
    drop_remainder=True,
    shard=None,
    seed=None,
    pipeline="auto",
    workers=None,
    shuffle_buffer=None,
):
    """The pipeline of every stage: checks, then the native or tf.data
    pipeline (`low_res` set: an SR stage's batches)."""
    _check_resolution(source, resolution, allow_upsampling)
    if crop not in CROPS:
        raise ValueError(f"`crop` must be one of {CROPS}. Received: crop={crop!r}")
    if pipeline not in PIPELINES:
        raise ValueError(f"`pipeline` must be one of {PIPELINES}. Received: pipeline={pipeline!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(
            f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}"
        )
    if shard is not None:
        num, index = shard
        if not 0 <= index < num:
            raise ValueError(f"`shard` must be (num_shards, index < num_shards). Received: {shard}")
    if pipeline == "auto":
        pipeline = "native" if source.random_access else "tf"
    options = dict(
        low_res=low_res,
        shuffle=shuffle,
        repeat=repeat,
        flip=flip,
        crop=crop,
        drop_remainder=drop_remainder,
        shard=shard,
        seed=seed,
    )
    if pipeline == "native":
        if shuffle_buffer is not None:
            raise ValueError(
                "`shuffle_buffer` applies to pipeline='tf' only: the native pipeline "
                "shuffles the whole source each epoch."
            )
        return StageDataset(source, resolution, batch_size, workers=workers, **options)
    if workers is not None:
        raise ValueError("`workers` applies to the native pipeline only (tf.data autotunes).")
    buffer = 10_000 if shuffle_buffer is None else shuffle_buffer
    return _tf_stage_dataset(source, resolution, batch_size, shuffle_buffer=buffer, **options)


def _tf_stage_dataset(source, resolution, batch_size, *, shuffle_buffer, **options):
    """The tf.data pipeline: shard, preprocess, shuffle, repeat, batch."""
    from keras_cdm.data.sources import _tensorflow

    low_res, crop, flip, seed = (options[k] for k in ("low_res", "crop", "flip", "seed"))
    shuffle, repeat, shard = options["shuffle"], options["repeat"], options["shard"]
    drop_remainder = options["drop_remainder"]

    tf = _tensorflow("The tf.data pipeline")
    factor = None if low_res is None else resolution // low_res

    def prep(image, label):
        image = preprocess_image(image, resolution, crop, flip, seed)
        label = tf.cast(label, tf.int32)
        if factor is None:
            return image, label
        return {"high_res": image, "low_res": area_downsample_tf(image, factor)}, label

    ds = _sharded(source, shard, batch_size, drop_remainder, repeat).map(
        prep, num_parallel_calls=tf.data.AUTOTUNE
    )
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


def base_dataset(source, resolution, batch_size, **options):
    """Batches `(images, labels)` for a base stage at `resolution`.

    Args:
        source: `keras_cdm.data.ImageSource` (see `from_arrays`,
            `from_image_folder`, `from_tfds`, `synthetic`).
        resolution: int. Output height and width.
        batch_size: int. Global batch size.
        **options: `shuffle`, `repeat` (bools, default `True`); `flip`
            (random horizontal flips, default `True`); `crop` (`"center"`
            or `"random"` square crop); `allow_upsampling` (a resolution
            above the source's, default `False`); `drop_remainder` (fixed
            batch shapes for compiled steps, default `True`); `shard`
            (`(num_shards, index)`: this replica's part of each global
            batch); `seed` (of shuffling, crops and flips; `None`: a fresh
            one); `pipeline` (`"auto"`: native unless the source is a TFDS
            stream, `"native"` or `"tf"`); `workers` (native: threads
            preparing batches ahead, default `min(2, cpus)`);
            `shuffle_buffer` (tf.data only, default 10,000; the native
            pipeline shuffles the whole source).

    Returns:
        A `keras_cdm.data.StageDataset` (native) or a `tf.data.Dataset`.

    Example:

    >>> source = keras_cdm.data.synthetic(num_images=100, resolution=32)
    >>> ds = keras_cdm.data.base_dataset(source, resolution=16, batch_size=8)
    >>> model = keras_cdm.DiffusionModel.from_preset("base16_tiny")
    >>> model.compile(optimizer="adam")
    >>> history = model.fit(ds, steps_per_epoch=2, verbose=0)
    """
    return _stage_dataset(source, resolution, batch_size, **options)


def super_res_dataset(source, low_res, high_res, batch_size, **options):
    """Batches `({"high_res", "low_res"}, labels)` for an SR stage.

    The low-resolution image is the box-filter (area) downsample of the same
    (cropped, flipped) high-resolution image. `**options` as `base_dataset`.

    Example:

    >>> source = keras_cdm.data.synthetic(num_images=100, resolution=32)
    >>> ds = keras_cdm.data.super_res_dataset(source, 16, 32, batch_size=8)
    >>> x, labels = next(iter(ds))
    >>> tuple(x["low_res"].shape), tuple(x["high_res"].shape)
    ((8, 16, 16, 3), (8, 32, 32, 3))
    """
    if not isinstance(low_res, int) or low_res <= 0 or high_res % low_res:
        raise ValueError(
            f"`low_res` must divide `high_res`. Received: low_res={low_res}, high_res={high_res}"
        )
    return _stage_dataset(source, high_res, batch_size, low_res=low_res, **options)


def save_batch_grid(dataset, path, num_batches=1, max_images=16):
    """Writes a PNG of a few batches; SR batches show low and high res side by side."""
    from keras_cdm.utils.images import make_grid
    from keras_cdm.utils.images import save_png

    rows = []
    for x, _ in itertools.islice(iter(dataset), num_batches):
        if isinstance(x, dict):
            hi, lo = np.asarray(x["high_res"]), np.asarray(x["low_res"])
            for i in range(min(len(hi), max_images)):
                rows.append([lo[i], hi[i]])
        else:
            x = np.asarray(x)
            rows.append(list(x[:max_images]))
    return save_png(path, make_grid(rows))
