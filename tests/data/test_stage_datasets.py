import numpy as np
import pytest
from PIL import Image

from keras_cdm import data


def _check_sr_batch(ds, lo, hi, num_classes):
    x, y = next(iter(ds))
    h, low = np.asarray(x["high_res"]), np.asarray(x["low_res"])
    assert h.shape[1:] == (hi, hi, 3) and low.shape[1:] == (lo, lo, 3)
    assert h.dtype == np.float32 and low.dtype == np.float32
    assert h.min() >= -1 and h.max() <= 1
    y = np.asarray(y)
    assert y.min() >= 0 and y.max() < num_classes
    f = hi // lo
    ref = h.reshape(len(h), lo, f, lo, f, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(low, ref, atol=1e-5)


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_synthetic_set(resolution):
    images, labels = data.synthetic_shapes(20, resolution, seed=3)
    assert images.shape == (20, resolution, resolution, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.arange(20) % 10)
    again, _ = data.synthetic_shapes(20, resolution, seed=3)
    np.testing.assert_array_equal(images, again)
    src = data.synthetic(20, resolution, seed=3)
    ds = data.base_dataset(src, resolution, batch_size=4, shuffle=False, flip=False)
    x, y = next(iter(ds))
    x = np.asarray(x)
    assert x.shape == (4, resolution, resolution, 3) and x.min() >= -1 and x.max() <= 1
    np.testing.assert_allclose(x, images[:4] / 127.5 - 1, atol=1e-6)
    if resolution >= 32:
        _check_sr_batch(
            data.super_res_dataset(src, resolution // 4, resolution, 4),
            resolution // 4,
            resolution,
            10,
        )


def test_synthetic_classes_differ_and_bad_resolution():
    images, labels = data.synthetic_shapes(10, 16, seed=0)
    assert len({im.tobytes() for im in images}) == 10
    with pytest.raises(ValueError, match="8 to 256"):
        data.synthetic_shapes(2, 4)


def test_arrays_source_and_errors():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 40, 48, 3), dtype=np.uint8)
    labels = np.arange(12) % 4
    src = data.from_arrays(images, labels)
    assert src.num_classes == 4 and src.min_side == 40
    _check_sr_batch(data.super_res_dataset(src, 8, 32, 6, crop="random"), 8, 32, 4)
    with pytest.raises(ValueError, match="differ in length"):
        data.from_arrays(images, labels[:5])
    with pytest.raises(ValueError, match="uint8"):
        data.from_arrays(images.astype("float32"), labels)
    with pytest.raises(ValueError, match="allow_upsampling"):
        data.base_dataset(src, 64, 4)
    ds = data.base_dataset(src, 64, 4, allow_upsampling=True)
    assert np.asarray(next(iter(ds))[0]).shape == (4, 64, 64, 3)
    with pytest.raises(ValueError, match="must divide"):
        data.super_res_dataset(src, 12, 32, 4)


def _write_folder(root, corrupt=True):
    rng = np.random.default_rng(0)
    for c, name in enumerate(["cats", "dogs"]):
        d = root / name
        d.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(d / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (36, 36), dtype=np.uint8)).save(root / "cats" / "gray.png")
    Image.fromarray(rng.integers(0, 256, (36, 36, 4), dtype=np.uint8)).save(
        root / "dogs" / "rgba.png"
    )
    if corrupt:
        (root / "dogs" / "broken.jpg").write_bytes(b"not an image at all")


def test_image_folder(tmp_path):
    _write_folder(tmp_path)
    with pytest.raises(ValueError, match="broken.jpg"):
        data.from_image_folder(str(tmp_path))
    src = data.from_image_folder(str(tmp_path), skip_corrupt=True)
    assert len(src.skipped) == 1 and src.size == 8 and src.class_names == ["cats", "dogs"]
    _check_sr_batch(data.super_res_dataset(src, 8, 32, 8, shuffle=False), 8, 32, 2)
    grid = data.save_batch_grid(data.super_res_dataset(src, 8, 32, 4), str(tmp_path / "grid.png"))
    assert Image.open(grid).size[0] > 0


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        data.from_image_folder(str(tmp_path / "missing"))
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(ValueError, match="No class sub-folders"):
        data.from_image_folder(str(tmp_path / "empty_root"))
    (tmp_path / "r" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no images"):
        data.from_image_folder(str(tmp_path / "r"))


def test_tfds_source_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=8):
        src = data.from_tfds("cifar10", split="train", download=False)
        assert src.num_classes == 10
        _check_sr_batch(data.super_res_dataset(src, 16, 32, 4), 16, 32, 10)


def test_base_stage_matches_super_res_conditioning():
    # A base stage trained at 16 must see exactly the 16x16 images a 16->32
    # stage is conditioned on (box filter), not a differently filtered resize.
    images, labels = data.synthetic_shapes(8, 32, seed=3)
    source = data.from_arrays(images, labels)
    kw = dict(shuffle=False, repeat=False, flip=False)
    base = next(iter(data.base_dataset(source, 16, 8, **kw)))[0]
    sr = next(iter(data.super_res_dataset(source, 16, 32, 8, **kw)))[0]
    np.testing.assert_allclose(np.asarray(base), np.asarray(sr["low_res"]), atol=1e-5)
    boxed = images.astype("float64").reshape(8, 16, 2, 16, 2, 3).mean(axis=(2, 4)) / 127.5 - 1
    np.testing.assert_allclose(np.asarray(base), boxed, atol=1e-5)
    # A non-integer factor still resizes (anti-aliased bilinear) to the size asked.
    odd = next(iter(data.base_dataset(source, 12, 8, **kw)))[0]
    assert odd.shape == (8, 12, 12, 3)
