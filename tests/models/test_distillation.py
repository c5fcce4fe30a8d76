"""ProgressiveDistillation: the target is the teacher's two steps, a round
lowers the student's error, students save, load and sample with their
recorded settings."""

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import micro_network_config
from conftest import to_numpy

import keras_cdm
from keras_cdm import DiffusionModel
from keras_cdm import SuperResDiffusionModel
from keras_cdm import SuperResUNet
from keras_cdm import UNet
from keras_cdm.models import ProgressiveDistillation
from keras_cdm.models import SamplerSettings

DIFFUSION = {"schedule": "cosine", "num_timesteps": 64}


def with_some_output(stage, seed=0):
    """A fresh ADM network outputs zeros (its last convolutions start at
    zero); give its EMA weights, which a teacher samples with, some."""
    rng = np.random.default_rng(seed)
    for v in stage.ema_network.weights:
        v.assign(to_numpy(v) + 0.05 * rng.normal(size=v.shape).astype("float32"))
    return stage


def teacher(**kwargs):
    net = UNet(**micro_network_config())
    kwargs.setdefault("seed", 1)
    return with_some_output(DiffusionModel(net, diffusion=DIFFUSION, **kwargs))


def data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    images = np.tanh(rng.normal(size=(n, 8, 8, 3))).astype("float32")
    return images, (np.arange(n) % 3).astype("int32")


def test_one_step_student_targets_the_teacher_two_step_sample():
    """With one student step the target is where the teacher's two DDIM
    steps from x_T end: its own 2-step trailing sample."""
    t = teacher(label_dropout=0.1)
    labels = np.array([0, 1, 2], "int32")
    z = np.random.default_rng(3).normal(size=(3, 8, 8, 3)).astype("float32")
    for scale in (2.0,) if BACKEND != "torch" else (1.0, 2.0):  # guidance distilled too
        r = ProgressiveDistillation(t, 1, guidance_scale=scale)
        got = r.targets(
            {"labels": keras.ops.convert_to_tensor(labels)},
            keras.ops.convert_to_tensor(z),
            keras.ops.zeros((3,), "int32"),
        )
        sample = t.sample(
            labels,
            seed=0,
            noise=z,
            settings=SamplerSettings(
                num_steps=2, sampler="ddim", spacing="trailing", guidance_scale=scale
            ),
        )
        np.testing.assert_allclose(to_numpy(got), sample, atol=1e-4)


def test_a_round_lowers_the_error_and_the_student_samples_as_recorded(tmp_path):
    t = teacher()
    images, labels = data()
    r = ProgressiveDistillation(t, 4)
    r.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = r.evaluate(images, labels, batch_size=8, verbose=0, return_dict=True)["loss"]
    r.fit(images, labels, batch_size=8, epochs=12, verbose=0)
    after = r.evaluate(images, labels, batch_size=8, verbose=0, return_dict=True)["loss"]
    assert after < 0.8 * before, (before, after)  # torch: 0.58 -> 0.35
    # The teacher is untouched; the student's EMA moved once per step.
    for a, b in zip(r.teacher.ema_network.weights, t.ema_network.weights):
        assert a is b
    assert int(to_numpy(r.student.ema_updates)) == 24
    # The round saves and loads (to resume it) with its optimizer.
    r.save(tmp_path / "round.keras")
    loaded = keras.saving.load_model(tmp_path / "round.keras")
    assert int(to_numpy(loaded.optimizer.iterations)) == 24
    assert len(loaded.trainable_variables) == len(r.student.network.trainable_variables)
    if BACKEND == "torch":  # (elsewhere a third compilation: the weights are checked below)
        again = loaded.evaluate(images, labels, batch_size=8, verbose=0, return_dict=True)
        np.testing.assert_allclose(again["loss"], after, rtol=1e-4)
    for a, b in zip(loaded.student.network.weights, r.student.network.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    # The student is a stage that samples with its recorded settings.
    directory = r.student.save_to_preset(str(tmp_path / "student"), weights="ema")
    student = DiffusionModel.from_preset(directory)
    assert student.sampler_settings == SamplerSettings(
        num_steps=4, sampler="ddim", spacing="trailing"
    )
    assert student.diffusion.mean_type == "v"
    assert student.stage_sampler().num_steps == 4
    cascade = keras_cdm.CascadeSampler([directory])
    assert cascade.settings[0] == student.sampler_settings
    assert keras_cdm.CascadeSampler([directory], num_steps=2).settings[0].num_steps == 2
    out = student.sample([0, 1], seed=0)
    assert out.shape == (2, 8, 8, 3) and np.isfinite(out).all()


@pytest.mark.skipif(BACKEND != "torch", reason="backend-agnostic logic, run on the fast backend")
def test_sr_unconditional_guided_and_refused():
    images, labels = data(8)
    # An SR stage: its conditioning passes to teacher and student alike.
    net = SuperResUNet(low_res_size=4, **micro_network_config())
    sr = with_some_output(SuperResDiffusionModel(net, diffusion=DIFFUSION, seed=2))
    r = ProgressiveDistillation(sr, 2)
    r.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = r.fit(images, labels, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert isinstance(r.student, SuperResDiffusionModel)
    assert r.student.augmentation == sr.augmentation
    # Unconditional: batches of images alone.
    net = UNet(**micro_network_config(num_classes=0))
    u = with_some_output(DiffusionModel(net, diffusion=DIFFUSION))
    r = ProgressiveDistillation(u, 2)
    r.compile(optimizer=keras.optimizers.Adam(1e-3))
    assert np.isfinite(r.fit(images, batch_size=4, epochs=1, verbose=0).history["loss"]).all()
    # Guidance distilled: the student has no null label left to guide with.
    guided = ProgressiveDistillation(teacher(label_dropout=0.1), 2, guidance_scale=3.0)
    assert guided.student.label_dropout == 0.0
    with pytest.raises(ValueError, match="label_dropout"):
        guided.student.sample([0], seed=0, guidance_scale=2.0)
    # Bad input is refused with the stage's own checks.
    guided.compile(optimizer=keras.optimizers.Adam(1e-3))
    with pytest.raises(ValueError, match=r"Expected images in \[-1, 1\]"):
        guided.fit(images * 200, labels, batch_size=4, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="label dropout"):
        ProgressiveDistillation(teacher(), 2, guidance_scale=2.0)
    with pytest.raises(ValueError, match="needs a teacher of 128"):
        ProgressiveDistillation(teacher(), 64)
    with pytest.raises(ValueError, match="mean_type"):
        ProgressiveDistillation(teacher(), 2, mean_type="score")
    # A distilled teacher is right only on its own grid: 4 steps -> student of 2.
    distilled = ProgressiveDistillation(teacher(), 4).student
    assert ProgressiveDistillation(distilled, 2).student.sampler_settings.num_steps == 2
    with pytest.raises(ValueError, match="records 4 trailing steps.*student_steps=4"):
        ProgressiveDistillation(distilled, 4)
    with pytest.raises(ValueError, match="trailing spacing"):
        SamplerSettings(spacing="trailing")  # fine alone
        keras_cdm.models.reverse_process.truncated_timesteps(64, 4, 10, "trailing")
