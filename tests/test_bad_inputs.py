"""Bad inputs, one case each: the error type and a message that names the
bad value, argument or file. Runs on every backend (the recipes' flag cases
are in tests/recipes/test_recipe_flags.py)."""

import warnings

import keras
import numpy as np
import pytest
from conftest import micro_network_config
from conftest import to_numpy

import keras_cdm
from keras_cdm import CascadeSampler
from keras_cdm import DiffusionModel
from keras_cdm import SuperResDiffusionModel
from keras_cdm import SuperResUNet
from keras_cdm import UNet

DIFFUSION = {"schedule": "cosine", "num_timesteps": 50}


def make_base(**kwargs):
    kwargs.setdefault("seed", 1)
    return DiffusionModel(UNet(**micro_network_config()), diffusion=DIFFUSION, **kwargs)


def make_sr(**kwargs):
    kwargs.setdefault("seed", 2)
    net = SuperResUNet(low_res_size=4, **micro_network_config())
    return SuperResDiffusionModel(net, diffusion=DIFFUSION, **kwargs)


def batch(n=4, size=8):
    rng = np.random.default_rng(0)
    return np.tanh(rng.normal(size=(n, size, size, 3))).astype("float32"), np.arange(n) % 3


def finite_weights(model):
    return all(np.isfinite(to_numpy(w)).all() for w in model.weights)


@pytest.fixture(scope="module")
def base():
    # One model for the whole module: every case must leave it usable, and
    # its compiled step is reused (compiling is most of a case's time on JAX).
    model = make_base()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


# ----------------------------------------------------------------------
# Labels and pixels given to fit as arrays: rejected before any step.
# ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "labels, match",
    [
        ([0, 1, 2, 3], r"Labels must lie in \[0, 3\).*\[0, 3\]"),  # 3 is the null label
        ([0, 1, 2, 12], r"Labels must lie in \[0, 3\).*\[0, 12\]"),
        ([0, -1, 2, 1], r"Labels must lie in \[0, 3\).*\[-1, 2\]"),
        ([0.0, 1.0, 2.0, 1.0], r"integer tensor of class ids.*float"),
    ],
)
def test_fit_rejects_bad_label_arrays(base, labels, match):
    x, _ = batch()
    with pytest.raises(ValueError, match=match):
        base.fit(x, np.asarray(labels), batch_size=4, verbose=0)
    assert finite_weights(base)


def test_fit_rejects_bad_pixels(base):
    x, y = batch()
    nan = x.copy()
    nan[2, 1, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"non-finite values .* first at index 2"):
        base.fit(nan, y, batch_size=4, verbose=0)
    with pytest.raises(ValueError, match=r"Expected images in \[-1, 1\].*x / 127.5 - 1"):
        base.fit((x + 1) * 127.5, y, batch_size=4, verbose=0)
    with pytest.warns(UserWarning, match=r"all >= 0.*2 \* x - 1"):
        base.fit((x + 1) / 2, y, batch_size=4, verbose=0)
    with pytest.raises(ValueError, match=r"float images.*int"):
        base.fit(((x + 1) * 127.5).astype("uint8"), y, batch_size=4, verbose=0)


def test_failed_fit_leaves_model_usable(base):
    """A batch rejected while the step is traced used to leave a JAX model
    without variable values ('NoneType' object is not callable)."""
    x, y = batch()
    with pytest.raises(ValueError, match=r"Expected images of shape \(batch, 8, 8, 3\)"):
        base.fit(np.zeros((4, 4, 4, 3), "float32"), y, batch_size=4, verbose=0)
    ds = keras_cdm.data.base_dataset(
        keras_cdm.data.from_arrays(np.zeros((8, 16, 16, 3), "uint8"), np.arange(8) % 3),
        16,
        4,
    )
    with pytest.raises(ValueError, match=r"Expected images of shape \(batch, 8, 8, 3\)"):
        base.fit(ds, steps_per_epoch=1, verbose=0)
    history = base.fit(x, y, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert base.evaluate(x, y, batch_size=4, verbose=0)[0] > 0
    assert base.sample(np.array([0, 1]), num_steps=2, seed=0).shape == (2, 8, 8, 3)


# ----------------------------------------------------------------------
# The same problems inside a dataset: the step flags them, fit stops.
# ----------------------------------------------------------------------
def _dataset(images, labels):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(2).repeat()


@pytest.mark.parametrize(
    "case, batch_index, match",
    [
        ("label_too_large", 2, r"the batch had labels outside \[0, num_classes\)"),
        ("null_label", 2, r"the batch had labels outside"),
        ("negative_label", 2, r"the batch had labels outside"),
        ("nan_pixel", 2, r"the batch had non-finite pixels"),
        ("uint8_range", 1, r"the batch had non-finite pixels or pixels outside \[-1, 1\]"),
    ],
)
def test_guard_stops_training_at_the_bad_step(base, case, batch_index, match):
    pytest.importorskip("tensorflow")
    x, y = batch()
    y = y.astype("int32")
    if case == "label_too_large":
        y[2] = 7
    elif case == "null_label":
        y[3] = 3
    elif case == "negative_label":
        y[2] = -1
    elif case == "nan_pixel":
        x[3, 0, 0, 0] = np.nan
    else:
        x = (x + 1) * 127.5
    # The message names the global step: the model's steps so far + the batch.
    step = int(to_numpy(base.optimizer.iterations)) + batch_index
    with pytest.raises(ValueError, match=rf"Training stopped at step {step}: {match}"):
        base.fit(_dataset(x, y), steps_per_epoch=4, epochs=1, verbose=0)
    # The flagged step trained on a sanitised copy: the weights stay finite.
    assert finite_weights(base)


def test_guard_names_a_diverged_loss():
    model = make_base()
    model.compile(optimizer=keras.optimizers.SGD(1e30))
    x, y = batch()
    with pytest.raises(FloatingPointError, match=r"non-finite loss.*lower the learning rate"):
        model.fit(x, y, batch_size=2, epochs=5, verbose=0)


def test_sr_guard_checks_the_conditioning():
    pytest.importorskip("tensorflow")
    import tensorflow as tf

    sr = make_sr()
    sr.compile(optimizer="adam")
    x, y = batch()
    lo = x[:, ::2, ::2].copy()
    lo[1, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"low_res hold non-finite values .* index 1"):
        sr.fit({"high_res": x, "low_res": lo}, y, batch_size=2, verbose=0)
    ds = tf.data.Dataset.from_tensor_slices(({"high_res": x, "low_res": lo}, y)).batch(2)
    with pytest.raises(ValueError, match="step 1: the batch had non-finite pixels"):
        sr.fit(ds.repeat(), steps_per_epoch=2, verbose=0)


# ----------------------------------------------------------------------
# Sampling.
# ----------------------------------------------------------------------
def test_sampling_rejects_bad_values(base):
    sr = make_sr()
    base4 = DiffusionModel(
        UNet(**micro_network_config(image_size=4)), diffusion=DIFFUSION, label_dropout=0.1
    )
    with pytest.raises(ValueError, match="at least one label"):
        base.sample(np.array([], "int32"), num_steps=2)
    with pytest.raises(ValueError, match=r"`guidance_scale` must be a finite number >= 0.*-2"):
        base.sample(np.array([0]), num_steps=2, guidance_scale=-2.0)
    with pytest.raises(ValueError, match=r"`seed` must be a non-negative int.*'a'"):
        base.sample(np.array([0]), num_steps=2, seed="a")
    lo = np.zeros((2, 4, 4, 3), "float32")
    lo[0, 1, 1, 1] = np.nan
    with pytest.raises(ValueError, match=r"low_res holds non-finite values .* index 0"):
        sr.sample(lo, np.array([0, 1]), num_steps=2)
    with pytest.raises(ValueError, match=r"`aug_level` must be an int.*2.5"):
        sr.sample(np.zeros((2, 4, 4, 3), "float32"), np.array([0, 1]), aug_level=2.5)
    cascade = CascadeSampler([base4, sr], num_steps=2)
    with pytest.raises(ValueError, match=r"`num_images` must be a positive int.*0"):
        cascade.sample(num_images=0)
    with pytest.raises(ValueError, match="at least one label"):
        cascade.sample(labels=[])
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive int.*-2"):
        cascade.sample(num_images=2, batch_size=-2)
    with pytest.raises(ValueError, match=r"aug_levels\[0\] must be an int level s.*2.5"):
        CascadeSampler([base4, sr], aug_levels=[2.5])
    with pytest.raises(ValueError, match="stage 1.*label_dropout"):
        CascadeSampler([base4, sr], num_steps=2, guidance_scale=3.0).sample(num_images=1)
    # seed=None is a fresh random seed, not an error.
    assert cascade.sample(num_images=1, seed=None).shape == (1, 8, 8, 3)


def test_model_arguments():
    with pytest.raises(ValueError, match=r"`vb_weight` must be a finite number >= 0.*-0.1"):
        make_base(vb_weight=-0.1)


# ----------------------------------------------------------------------
# Documented behaviour the issue found broken.
# ----------------------------------------------------------------------
def test_evaluate_is_reproducible_and_does_not_move_training_rng(base):
    x, y = batch()
    state = to_numpy(base.seed_generator.state.value).copy()
    a = base.evaluate(x, y, batch_size=2, verbose=0)
    b = base.evaluate(x, y, batch_size=2, verbose=0)
    c = base.evaluate(x, y, batch_size=2, verbose=0, seed=5)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert not np.allclose(a[0], c[0])
    np.testing.assert_array_equal(to_numpy(base.seed_generator.state.value), state)
    # The full bound in bits/dim: the same seed, the same figures.
    bpd = base.compute_bpd(x[:2], y[:2], seed=3)
    np.testing.assert_allclose(base.compute_bpd(x[:2], y[:2], seed=3), bpd, rtol=1e-5)
    assert bpd.shape == (2,) and np.isfinite(bpd).all()


def test_ema_moves_once_per_optimizer_step_with_gradient_accumulation():
    model = make_base(ema_decay=0.5, ema_warmup=False)
    model.compile(optimizer=keras.optimizers.Adam(1e-2, gradient_accumulation_steps=2))
    x, y = batch()
    model.fit(x, y, batch_size=1, epochs=1, verbose=0)  # 4 batches = 2 optimizer steps
    assert int(to_numpy(model.train_batches)) == 4
    assert int(to_numpy(model.optimizer.iterations)) == 2
    assert float(to_numpy(model.ema_updates)) == 2.0


def test_summary_names_the_ema_copy_and_evaluation_is_reachable(base):
    lines = []
    base.summary(print_fn=lambda line, *a, **k: lines.append(line))
    text = "\n".join(lines)
    assert f"{base.network.name}_ema" in text
    assert keras_cdm.evaluation.frechet_distance is not None


def test_loaded_stage_compiles_for_this_backend(tmp_path, base):
    x, y = batch()
    base.compile(optimizer="adam", jit_compile=True)
    path = str(tmp_path / "m.keras")
    base.save(path)
    loaded = keras_cdm.models.load_stage(path)
    # jit_compile is re-resolved here ("auto"): never torch.compile on torch.
    fresh = make_base()
    fresh.compile(optimizer="adam")
    assert loaded.jit_compile == fresh.jit_compile
    if keras.backend.backend() == "torch":
        assert loaded.jit_compile is False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isfinite(loaded.fit(x, y, batch_size=4, verbose=0).history["loss"]).all()


def test_corrupt_and_missing_stage_files(tmp_path, base):
    path = tmp_path / "m.keras"
    base.save(str(path))
    cut = tmp_path / "cut.keras"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cut.keras.*not a .keras archive"):
        keras_cdm.models.load_stage(str(cut))
    with pytest.raises(FileNotFoundError, match="nope.keras"):
        keras_cdm.models.load_stage(str(tmp_path / "nope.keras"))


# ----------------------------------------------------------------------
# Data sources.
# ----------------------------------------------------------------------
def test_truncated_jpeg_is_caught_when_the_folder_is_read(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            pixels = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / c / f"{i}.jpg")
    cut = tmp_path / "b" / "1.jpg"
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])  # verify() passes, decoding would fail
    with Image.open(cut) as im:
        im.verify()
    with pytest.raises(ValueError, match=r"Cannot read image .*b/1.jpg.*truncated JPEG"):
        keras_cdm.data.from_image_folder(str(tmp_path))
    source = keras_cdm.data.from_image_folder(str(tmp_path), skip_corrupt=True)
    assert source.size == 5 and source.skipped == [str(cut)]


def test_degenerate_datasets_and_missing_sources(tmp_path):
    source = keras_cdm.data.from_arrays(np.zeros((3, 8, 8, 3), "uint8"), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="holds 3 images .* fewer than one batch of 4"):
        keras_cdm.data.base_dataset(source, 8, 4, repeat=False)
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive int.*-2"):
        keras_cdm.data.base_dataset(source, 8, -2)
    with pytest.raises(ValueError, match=r"no_such_dir.*folder not found"):
        keras_cdm.data.resolve_source(str(tmp_path / "no_such_dir"))
    with pytest.raises(ValueError, match="Labels must lie in"):
        keras_cdm.data.from_arrays(np.zeros((2, 8, 8, 3), "uint8"), np.array([0, 5]), 3)


def test_unknown_tfds_name_says_what_to_do():
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(ValueError, match=r"(?s)TFDS data set 'no_such_set_xyz'.*image folder"):
        keras_cdm.data.from_tfds("no_such_set_xyz", download=False)
