import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import micro_network_config

import keras_cdm
from keras_cdm import CascadeSampler
from keras_cdm import DiffusionModel
from keras_cdm import SuperResDiffusionModel
from keras_cdm import SuperResUNet
from keras_cdm import UNet

DIFF = {"schedule": "cosine", "num_timesteps": 50}


def _randomise(model, seed):
    # Untrained nets output zeros (zero-init last layers); give them weights.
    for i, w in enumerate(model.ema_network.weights):
        w.assign(keras.random.normal(w.shape, stddev=0.05, seed=seed + i))


@pytest.fixture(scope="module")
def stages():
    keras.utils.set_random_seed(0)
    base = DiffusionModel(
        UNet(**micro_network_config(image_size=4, channel_mult=(1,), attention_resolutions=())),
        diffusion=DIFF,
    )
    sr1 = SuperResDiffusionModel(
        SuperResUNet(low_res_size=4, **micro_network_config(image_size=8)), diffusion=DIFF
    )
    sr2 = SuperResDiffusionModel(
        SuperResUNet(
            low_res_size=8, **micro_network_config(image_size=16, attention_resolutions=())
        ),
        diffusion=DIFF,
    )
    for k, m in enumerate((base, sr1, sr2)):
        _randomise(m, 100 * k)
    return base, sr1, sr2


@pytest.mark.parametrize("mode", ["truncated", "non_truncated"])
def test_shapes_dtypes_and_seeds(stages, mode):
    base, sr1, sr2 = stages
    two = CascadeSampler([base, sr1], aug_levels=[10], mode=mode, num_steps=[5, 4])
    out = two.sample(labels=[0, 1, 2], seed=1)
    assert out.shape == (3, 8, 8, 3) and out.dtype == np.float32
    assert out.min() >= -1 and out.max() <= 1
    np.testing.assert_array_equal(two.sample(labels=[0, 1, 2], seed=1), out)
    assert not np.allclose(two.sample(labels=[0, 1, 2], seed=2), out)
    three = CascadeSampler(
        [base, sr1, sr2],
        aug_levels=[10, 5],
        mode=mode,
        num_steps=4,
        sampler=["ddpm", "ddim", "ddpm"],
    )
    final, all_stages = three.sample(num_images=2, seed=0, output="uint8", return_all_stages=True)
    assert final.shape == (2, 16, 16, 3) and final.dtype == np.uint8
    assert [a.shape[1] for a in all_stages] == [4, 8, 16]


def test_s_zero_truncated_equals_non_truncated(stages):
    base, sr1, _ = stages
    kwargs = dict(aug_levels=[0], num_steps=[6, 3])
    a = CascadeSampler([base, sr1], mode="truncated", **kwargs).sample(labels=[0, 1], seed=4)
    b = CascadeSampler([base, sr1], mode="non_truncated", **kwargs).sample(labels=[0, 1], seed=4)
    np.testing.assert_array_equal(a, b)


def test_truncated_hands_over_noisy_latent(stages):
    base, _, _ = stages
    z = base.sample(np.array([0, 1]), num_steps=5, stop_at=30, seed=0)
    # z_30 of a 50-step cosine schedule is far noisier than a clean sample.
    assert np.abs(z).max() > 1.0 or z.std() > 0.5


@pytest.mark.parametrize("mode", ["non_truncated", "truncated"])
def test_images_do_not_depend_on_batching(stages, mode):
    base, sr1, _ = stages
    c = CascadeSampler([base, sr1], aug_levels=[5], num_steps=3, mode=mode)
    labels = [0, 1, 2, 0, 1]
    whole = c.sample(labels=labels, seed=3)
    assert whole.shape == (5, 8, 8, 3)
    for batch_size in (1, 2, 3):
        np.testing.assert_allclose(
            c.sample(labels=labels, seed=3, batch_size=batch_size), whole, atol=1e-5
        )
    # Image i depends on its own index only: the first images of a longer
    # request are the images of a shorter one.
    np.testing.assert_allclose(c.sample(labels=labels[:2], seed=3), whole[:2], atol=1e-5)
    # A request sampled in chunks, each with its first image's index.
    rest = c.sample(labels=labels[2:], seed=3, first_index=2)
    np.testing.assert_allclose(rest, whole[2:], atol=1e-5)
    assert not np.allclose(whole[0], whole[3])  # same label, different stream


def test_sweep_reuses_low_res(stages):
    base, sr1, _ = stages
    c = CascadeSampler([base, sr1], num_steps=[4, 3])
    res = c.sweep_aug_levels([0, 10, 40], labels=[0, 1], seed=0)
    assert set(res) == {"low_res", 0, 10, 40}
    assert res[0].shape == (2, 8, 8, 3)
    assert not np.allclose(res[0], res[40])
    direct = sr1.sample(
        res["low_res"], np.array([0, 1]), aug_level=10, num_steps=3, seed=c.stage_seed(0, 1)
    )
    np.testing.assert_array_equal(direct, res[10])


def test_chain_errors(stages):
    base, sr1, sr2 = stages
    with pytest.raises(ValueError, match="do not chain"):
        CascadeSampler([base, sr2])
    other = DiffusionModel(
        UNet(
            **micro_network_config(
                image_size=4, channel_mult=(1,), attention_resolutions=(), num_classes=5
            )
        ),
        diffusion=DIFF,
    )
    with pytest.raises(ValueError, match="classes"):
        CascadeSampler([other, sr1])
    with pytest.raises(ValueError, match="first stage"):
        CascadeSampler([sr1, sr2])
    with pytest.raises(ValueError, match="one per stage"):
        CascadeSampler([base, sr1], num_steps=[1, 2, 3])
    with pytest.raises(ValueError, match="mode"):
        CascadeSampler([base, sr1], mode="half")
    with pytest.raises(ValueError, match="at most|Cannot sample"):
        base.sample(np.array([0]), num_steps=500)
    with pytest.raises(ValueError, match="label_dropout"):
        base.sample(np.array([0]), num_steps=2, guidance_scale=3.0)


def test_guidance_runs_for_label_dropout_stage():
    keras.utils.set_random_seed(1)
    m = DiffusionModel(
        UNet(**micro_network_config(image_size=4, channel_mult=(1,), attention_resolutions=())),
        diffusion=DIFF,
        label_dropout=0.2,
    )
    _randomise(m, 7)
    a = m.sample(np.array([0, 1]), num_steps=3, seed=0, guidance_scale=1.0)
    b = m.sample(np.array([0, 1]), num_steps=3, seed=0, guidance_scale=3.0)
    assert a.shape == b.shape and not np.allclose(a, b)


@pytest.mark.skipif(
    BACKEND == "torch", reason="torch runs eagerly under no_grad: nothing is traced"
)
def test_no_recompilation_between_calls(stages):
    base, _, _ = stages
    base.sample(np.array([0, 1]), num_steps=4, seed=0)
    sampler = base.stage_sampler(keras_cdm.models.SamplerSettings(num_steps=4), stop_at=0)
    assert sampler.trace_count == 1
    base.sample(np.array([2, 0]), num_steps=4, seed=5)
    assert sampler.trace_count == 1


def test_sampler_settings_one_object_everywhere(stages):
    base, sr1, _ = stages
    settings = keras_cdm.models.SamplerSettings(num_steps=3, sampler="ddim")
    a = base.sample(np.array([0, 1]), seed=2, settings=settings)
    b = base.sample(np.array([0, 1]), seed=2, num_steps=3, sampler="ddim")
    np.testing.assert_array_equal(a, b)
    c = CascadeSampler([base, sr1], settings=[settings, settings]).sample(labels=[0, 1], seed=2)
    d = CascadeSampler([base, sr1], num_steps=3, sampler="ddim").sample(labels=[0, 1], seed=2)
    np.testing.assert_array_equal(c, d)
    with pytest.raises(
        ValueError, match=r"Unknown sampler 'euler': the registered ones are .*'dpm\+\+3m_sde'"
    ):
        keras_cdm.models.SamplerSettings(sampler="euler")
    with pytest.raises(ValueError, match=r"`num_steps` must be a positive int.*0"):
        keras_cdm.models.SamplerSettings(num_steps=0)


def test_progress_names_each_stage(stages, capsys):
    base, sr1, _ = stages
    c = CascadeSampler([base, sr1], num_steps=[3, 2], sampler=["ddpm", "ddim"], verbose=True)
    c.sample(labels=[0, 1], seed=0)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("[keras_cdm]")]
    size, sr_size = base.image_size, sr1.image_size
    assert lines == [
        "[keras_cdm] cascade stage 1 of 2",
        f"[keras_cdm] base stage {size}x{size}: 3 ddpm steps for 2 images",
        "[keras_cdm] cascade stage 2 of 2",
        f"[keras_cdm] SR stage {sr_size}x{sr_size}: 2 ddim steps for 2 images",
    ]


def test_stage_order_is_checked_before_any_weights_load(stages, tmp_path):
    base, sr1, sr2 = stages
    for name, stage in (("base", base), ("sr1", sr1), ("sr2", sr2)):
        stage.save_to_preset(str(tmp_path / name))
        stage.save(str(tmp_path / f"{name}.keras"))
        # No weights: had a stage been loaded, this would be the error.
        for weights in (tmp_path / name).glob("*.weights.h5"):
            weights.unlink()
    dirs = [str(tmp_path / n) for n in ("base", "sr1", "sr2")]
    with pytest.raises(ValueError, match="first stage of a cascade must be a base"):
        CascadeSampler([dirs[1], dirs[0]])
    with pytest.raises(ValueError, match=r"stage 0 makes 4x4 images but stage 1 expects 8x8"):
        CascadeSampler([dirs[0], dirs[2]])
    with pytest.raises(ValueError, match="Stage 1 must be a SuperResDiffusionModel"):
        CascadeSampler([str(tmp_path / "base.keras"), dirs[0]])
    # In the right order the missing weights are what is wrong.
    with pytest.raises(Exception, match="weights"):
        CascadeSampler([dirs[0], dirs[1]])
