"""The native input pipeline: a `keras.utils.PyDataset` of stage batches.

No TensorFlow needed: NumPy for crops, flips and box filters, Pillow for
decoding and non-integer resizes, and Keras's own worker threads for
prefetching. Every batch is a pure function of `(seed, batch index)`, which
gives what training runs rely on:

- a deterministic order given the seed (the same on every backend);
- skip-ahead in O(1) (`dataset.skip(n)` starts at batch `n`, which is how a
  resumed run continues on exactly the next batch);
- sharding by global batch: replica `index` of `num_shards` gets its slice
  of each global batch of `batch_size * num_shards` images, so the stream of
  global batches does not depend on the number of replicas.
"""

import collections
import functools
import os

import keras
import numpy as np

ArraySpec = collections.namedtuple("ArraySpec", ["shape", "dtype"])

# Stream ids inside one seed: the epoch permutations and the per-batch
# augmentation draws come from distinct PCG64 streams.
_PERMUTATION, _AUGMENTATION = 0, 1


@functools.lru_cache(maxsize=8)
def _epoch_permutation(n, seed, epoch):
    """One epoch's order, computed once per epoch (not once per batch); the
    worker threads only read it."""
    order = np.random.default_rng([seed, _PERMUTATION, epoch]).permutation(n)
    order.flags.writeable = False
    return order


def square_crop_offsets(height, width):
    """The side of the largest square and the offsets of its centred crop."""
    side = min(height, width)
    return side, (height - side) // 2, (width - side) // 2


def box_downsample(images, factor):
    """Box-filter (area) downsampling of float `(..., h, w, c)` by `factor`."""
    if factor == 1:
        return images
    *lead, h, w, c = images.shape
    shaped = images.reshape(*lead, h // factor, factor, w // factor, factor, c)
    return shaped.mean(axis=(-4, -2), dtype=np.float32)


def resize_square(image, resolution):
    """Float32 `(resolution, resolution, 3)` from a square uint8 image.

    An integer downsampling factor uses the box filter (area average), the
    filter of an SR stage's conditioning, so a base stage learns the very
    images the next stage is conditioned on; other factors (and upsampling)
    use Pillow's anti-aliased bilinear filter.
    """
    side = image.shape[0]
    if side == resolution:
        return image.astype(np.float32)
    if side > resolution and side % resolution == 0:
        return box_downsample(image.astype(np.float32), side // resolution)
    from PIL import Image

    resized = Image.fromarray(image).resize((resolution, resolution), Image.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


class StageDataset(keras.utils.PyDataset):
    """Batches for one stage, computed on Keras's worker threads.

    Made by `keras_cdm.data.base_dataset` and `super_res_dataset`; pass it to
    `model.fit` on any backend. Base batches are `(images, labels)`, SR
    batches `({"high_res", "low_res"}, labels)`; images float32 in [-1, 1],
    labels int32. An unlabelled source (unconditional stage) gives the images
    (or the SR dict) alone.

    Args:
        source: `keras_cdm.data.ImageSource` with random access (arrays,
            image folder, synthetic set).
        resolution: int. Output side (the high resolution of an SR stage).
        batch_size: int. Images per batch (per replica when sharded).
        low_res: int or None. An SR stage's low resolution (must divide
            `resolution`); `None` for a base stage.
        shuffle: bool. A fresh permutation of the whole source each epoch.
        repeat: bool. An endless stream of batches (`num_batches` is None).
        flip: bool. Random horizontal flips.
        crop: `"center"` or `"random"` square crop.
        drop_remainder: bool. Drop a last partial batch (repeat=False).
        shard: `(num_shards, index)` or None.
        seed: int or None (a fresh seed). Seeds shuffling, crops and flips.
        workers: int. Worker threads preparing batches ahead (Keras
            `PyDataset` workers; default `min(2, cpus)`).
        max_queue_size: int. Batches prepared ahead.

    Example:

    >>> source = keras_cdm.data.synthetic(num_images=40, resolution=16)
    >>> ds = keras_cdm.data.StageDataset(source, 16, batch_size=8, seed=0)
    >>> images, labels = ds[0]
    >>> images.shape, labels.dtype.name
    ((8, 16, 16, 3), 'int32')
    >>> np.array_equal(ds.skip(3)[0][0], ds[3][0])
    True
    """

    def __init__(
        self,
        source,
        resolution,
        batch_size,
        low_res=None,
        shuffle=True,
        repeat=True,
        flip=True,
        crop="center",
        drop_remainder=True,
        shard=None,
        seed=None,
        workers=None,
        max_queue_size=8,
        start=0,
    ):
        from keras_cdm.utils.seeds import check_seed

        if workers is None:
            workers = min(2, os.cpu_count() or 1)
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max_queue_size)
        if not source.random_access:
            raise ValueError(
                "The native pipeline reads images by index; this source has only a "
                "tf.data stream (TFDS). Pass pipeline='tf'."
            )
        self.source = source
        self.resolution = resolution
        self.batch_size = batch_size
        self.low_res = low_res
        self.shuffle = bool(shuffle)
        self.repeat = bool(repeat)
        self.flip = bool(flip)
        self.crop = crop
        self.drop_remainder = bool(drop_remainder)
        self.num_shards, self.shard_index = shard if shard is not None else (1, 0)
        self.seed = check_seed(seed)  # None: a fresh seed, fixed for this dataset
        self.start = int(start)
        self.epoch = 0  # of a finite dataset; an endless one counts epochs by position
        self.global_batch = batch_size * self.num_shards
        n = source.size
        if shard is not None and not self.repeat and not self.drop_remainder:
            raise ValueError(
                "A sharded dataset without repeat needs drop_remainder=True, so that every "
                "replica sees the same number of batches."
            )
        if self.drop_remainder and not self.repeat and n < self.global_batch:
            raise ValueError(
                f"The source holds {n} images ({n // self.num_shards} per shard), fewer "
                f"than one batch of {batch_size} (drop_remainder=True, repeat=False): no batch "
                "would come out. Use a smaller batch_size, more images or repeat=True."
            )
        self.labels = None if source.labels is None else np.asarray(source.labels).astype(np.int32)

    # ------------------------------------------------------------------
    @property
    def num_batches(self):
        if self.repeat:
            return None
        n = self.source.size
        full = n // self.global_batch
        return full if self.drop_remainder else -(-n // self.global_batch)

    def __len__(self):
        if self.repeat:
            raise TypeError("An endless (repeat=True) StageDataset has no length.")
        return self.num_batches

    @property
    def element_spec(self):
        """Shapes (batch dimension None) and NumPy dtypes of a batch."""
        image = ArraySpec((None, self.resolution, self.resolution, 3), np.dtype("float32"))
        if self.low_res is not None:
            low = ArraySpec((None, self.low_res, self.low_res, 3), np.dtype("float32"))
            image = {"high_res": image, "low_res": low}
        if self.labels is None:
            return image
        return image, ArraySpec((None,), np.dtype("int32"))

    def skip(self, num_batches):
        """The same stream starting `num_batches` batches later (O(1))."""
        if not self.repeat:
            raise ValueError("skip() needs an endless dataset (repeat=True).")
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.start = self.start + int(num_batches)
        return clone

    def on_epoch_end(self):
        self.epoch += 1

    # ------------------------------------------------------------------
    def _permutation(self, epoch):
        n = self.source.size
        if not self.shuffle:
            return np.arange(n)
        return _epoch_permutation(n, self.seed, epoch)

    def batch_indices(self, index):
        """Source indices of this replica's part of batch `index`."""
        n = self.source.size
        b = self.batch_size
        if self.repeat:
            first = (self.start + index) * self.global_batch + self.shard_index * b
            positions = np.arange(first, first + b)
            epochs = positions // n
            out = np.empty(b, dtype=np.int64)
            for e in np.unique(epochs):
                mask = epochs == e
                out[mask] = self._permutation(int(e))[positions[mask] % n]
            return out
        if index >= self.num_batches:
            raise IndexError(f"Batch {index} of a dataset of {self.num_batches} batches.")
        first = (self.start + index) * self.global_batch + self.shard_index * b
        return self._permutation(self.epoch)[first : min(first + b, n)]

    def __getitem__(self, index):
        idx = self.batch_indices(index)
        # Augmentation draws of the whole global batch, so a replica's part
        # does not depend on the number of replicas.
        epoch_key = 0 if self.repeat else self.epoch
        rng = np.random.default_rng([self.seed, _AUGMENTATION, epoch_key, self.start + index])
        draws = rng.random((self.global_batch, 3))
        mine = draws[self.shard_index * self.batch_size :][: len(idx)]
        images = self._images(idx, mine) / np.float32(127.5) - np.float32(1.0)
        if self.low_res is not None:
            low = box_downsample(images, self.resolution // self.low_res)
            images = {"high_res": images, "low_res": low}
        if self.labels is None:
            return images
        return images, self.labels[idx]

    def _images(self, idx, draws):
        """Float32 pixels in [0, 255], cropped, resized and flipped."""
        res = self.resolution
        array = self.source.images
        if array is not None and self.crop == "center":
            # Vectorised: all images share one size and one crop.
            side, top, left = square_crop_offsets(*array.shape[1:3])
            batch = array[idx, top : top + side, left : left + side]
            if side == res:
                out = batch.astype(np.float32)
            elif side > res and side % res == 0:
                out = box_downsample(batch.astype(np.float32), side // res)
            else:
                out = np.stack([resize_square(im, res) for im in batch])
        else:
            out = np.empty((len(idx), res, res, 3), np.float32)
            for k, i in enumerate(idx):
                image = array[i] if array is not None else self.source.read(int(i))
                out[k] = resize_square(self._crop(image, draws[k]), res)
        if self.flip:
            flipped = draws[:, 2] < 0.5
            out[flipped] = out[flipped, :, ::-1]
        return out

    def _crop(self, image, draw):
        h, w = image.shape[:2]
        side, top, left = square_crop_offsets(h, w)
        if self.crop == "random":
            top = int(draw[0] * (h - side + 1))
            left = int(draw[1] * (w - side + 1))
        return image[top : top + side, left : left + side]
