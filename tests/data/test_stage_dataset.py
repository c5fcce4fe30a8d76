"""The native pipeline's guarantees: order given a seed, skip-ahead, sharding,
epochs, and the same pixels as the tf.data pipeline."""

import itertools

import numpy as np
import pytest
from keras.src.trainers.data_adapters import get_data_adapter

from keras_cdm import data


def _source(n=10, side=32, classes=5):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, side, side + 8, 3), dtype=np.uint8)
    return data.from_arrays(images, np.arange(n) % classes, classes)


def _batches(ds, k):
    return [ds[i] for i in range(k)]


def _equal(a, b):
    (xa, ya), (xb, yb) = a, b
    if isinstance(xa, dict):
        return all(np.array_equal(xa[k], xb[k]) for k in xa) and np.array_equal(ya, yb)
    return np.array_equal(xa, xb) and np.array_equal(ya, yb)


def test_order_is_a_function_of_the_seed():
    src = _source()
    a = data.base_dataset(src, 16, 4, seed=7)
    b = data.base_dataset(src, 16, 4, seed=7)
    c = data.base_dataset(src, 16, 4, seed=8)
    assert isinstance(a, data.StageDataset) and a.num_batches is None
    assert all(_equal(x, y) for x, y in zip(_batches(a, 6), _batches(b, 6)))
    assert not all(_equal(x, y) for x, y in zip(_batches(a, 6), _batches(c, 6)))
    # Keras's worker threads (as in fit) deliver exactly the indexed batches, in order.
    adapter = get_data_adapter(data.base_dataset(src, 16, 4, seed=7, workers=2))
    adapter.on_epoch_begin()
    fed = list(itertools.islice(adapter.get_numpy_iterator(), 6))
    adapter.on_epoch_end()
    assert all(_equal(x, y) for x, y in zip(fed, _batches(a, 6)))


def test_every_epoch_is_a_permutation_and_skip_is_exact():
    src = _source(n=12)
    ds = data.base_dataset(src, 16, 4, seed=1, flip=False)
    idx = [ds.batch_indices(i) for i in range(9)]  # 3 epochs of 3 batches
    epochs = [np.sort(np.concatenate(idx[3 * e : 3 * e + 3])) for e in range(3)]
    for e in epochs:
        np.testing.assert_array_equal(e, np.arange(12))
    assert not np.array_equal(np.concatenate(idx[:3]), np.concatenate(idx[3:6]))  # reshuffled
    # Skip-ahead lands on exactly the batch the uninterrupted stream gives,
    # also across an epoch boundary (10 images, batches of 4).
    odd = data.super_res_dataset(_source(n=10), 8, 32, 4, seed=3)
    for n in (1, 2, 5):
        assert _equal(odd.skip(n)[0], odd[n]) and _equal(odd.skip(n).skip(1)[1], odd[n + 2])
    labels = np.concatenate([odd[i][1] for i in range(5)])  # 20 positions over 2 epochs
    assert sorted(labels[:10]) == sorted(np.arange(10) % 5)


def test_shards_split_each_global_batch():
    src = _source(n=10)
    whole = data.super_res_dataset(src, 8, 32, 6, seed=5, crop="random")
    parts = [
        data.super_res_dataset(src, 8, 32, 3, seed=5, crop="random", shard=(2, r)) for r in range(2)
    ]
    for i in range(4):
        x, y = whole[i]
        (x0, y0), (x1, y1) = parts[0][i], parts[1][i]
        np.testing.assert_array_equal(np.concatenate([y0, y1]), y)
        for key in ("high_res", "low_res"):
            np.testing.assert_array_equal(np.concatenate([x0[key], x1[key]]), x[key])
    with pytest.raises(ValueError, match="drop_remainder=True"):
        data.base_dataset(src, 16, 2, repeat=False, drop_remainder=False, shard=(2, 0))
    with pytest.raises(ValueError, match=r"shard.*Received: \(2, 2\)"):
        data.base_dataset(src, 16, 2, shard=(2, 2))


def test_finite_dataset_epochs():
    src = _source(n=10)
    ds = data.base_dataset(src, 16, 4, repeat=False, seed=2)
    assert ds.num_batches == 2 and len(ds) == 2
    with pytest.raises(IndexError, match="Batch 2 of a dataset of 2"):
        ds[2]
    first = ds.batch_indices(0)
    ds.on_epoch_end()
    assert not np.array_equal(ds.batch_indices(0), first)
    tail = data.base_dataset(src, 16, 4, repeat=False, drop_remainder=False, shuffle=False)
    assert tail.num_batches == 3 and len(tail[2][1]) == 2
    with pytest.raises(ValueError, match="endless"):
        ds.skip(1)
    with pytest.raises(ValueError, match="shuffle_buffer.*pipeline='tf'"):
        data.base_dataset(src, 16, 4, shuffle_buffer=100)
    with pytest.raises(ValueError, match="`pipeline` must be one of"):
        data.base_dataset(src, 16, 4, pipeline="grain")


def test_random_crops_and_flips_vary_and_stay_in_range():
    src = _source(n=4, side=32)
    ds = data.base_dataset(src, 32, 4, crop="random", flip=True, seed=0, shuffle=False)
    seen = {np.asarray(ds[i][0][0]).tobytes() for i in range(0, 12, 3)}  # image 0, 4 epochs
    assert len(seen) > 1
    x = ds[0][0]
    assert x.shape == (4, 32, 32, 3) and x.dtype == np.float32
    assert x.min() >= -1 and x.max() <= 1


@pytest.mark.parametrize("resolution", [16, 24])
def test_native_and_tf_pipelines_make_the_same_pixels(resolution):
    pytest.importorskip("tensorflow", reason="the tf.data pipeline needs TensorFlow")
    src = _source(n=8)
    kw = dict(shuffle=False, flip=False, repeat=False)
    native = data.base_dataset(src, resolution, 8, pipeline="native", **kw)[0][0]
    tfd = np.asarray(next(iter(data.base_dataset(src, resolution, 8, pipeline="tf", **kw)))[0])
    if resolution == 16:  # 32 / 16: the box filter in both, exactly
        np.testing.assert_allclose(native, tfd, atol=1e-5)
    else:  # anti-aliased bilinear: Pillow's and TensorFlow's kernels differ slightly
        assert np.abs(native - tfd).mean() < 0.02


def test_image_folder_reads_by_index(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(
                tmp_path / c / f"{i}.png"
            )
    src = data.from_image_folder(str(tmp_path))
    assert src.random_access and src.read(4).shape == (20, 30, 3)
    ds = data.base_dataset(src, 16, 3, allow_upsampling=True, shuffle=False, flip=False)
    x, y = ds[0]
    np.testing.assert_array_equal(y, [0, 0, 0])
    crop = src.read(0)[:, 5:25].astype("float32")
    assert x.shape == (3, 16, 16, 3)
    assert abs(float(x[0].mean()) - (crop.mean() / 127.5 - 1)) < 0.02
