"""The leaner PyTorch training step (`keras_cdm.backend.torch_trainer`):
`fit` with it ends at Keras's own step's weights, EMA, optimizer slots,
seed states and logs (base and SR stages, label dropout, learned variances,
a regularizer's loss), plain Adam runs its own update and any other
optimizer Keras's, and it is off with `KERAS_CDM_DIRECT_CALLS=0`."""

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import micro_network_config
from conftest import to_numpy

from keras_cdm import DiffusionModel
from keras_cdm import SuperResDiffusionModel
from keras_cdm import SuperResUNet
from keras_cdm import UNet
from keras_cdm.backend import DIRECT_CALLS_ENV

pytestmark = pytest.mark.skipif(BACKEND != "torch", reason="the step exists on PyTorch only")

DIFFUSION = {"num_timesteps": 50, "var_type": "learned_range"}


def _model(kind, regularized):
    keras.utils.set_random_seed(0)
    config = micro_network_config(learn_sigma=True, dropout=0.1, seed=5)
    if kind == "sr":
        net = SuperResUNet(low_res_size=4, **config)
        model = SuperResDiffusionModel(net, diffusion=DIFFUSION, seed=2, label_dropout=0.2)
    else:
        model = DiffusionModel(UNet(**config), diffusion=DIFFUSION, seed=1, label_dropout=0.2)
    if regularized:
        model.network.get_layer("conv_in").kernel.regularizer = keras.regularizers.L2(0.1)
    return model


def _fit(kind, optimizer, fast, monkeypatch, regularized=False):
    monkeypatch.setenv(DIRECT_CALLS_ENV, "1" if fast else "0")
    model = _model(kind, regularized)
    model.compile(optimizer=optimizer())
    rng = np.random.default_rng(0)
    images = np.tanh(rng.normal(size=(8, 8, 8, 3))).astype("float32")
    labels = (np.arange(8) % 3).astype("int32")
    history = model.fit(images, labels, batch_size=4, epochs=3, verbose=0, shuffle=False)
    state = [to_numpy(v) for v in model.variables + model.optimizer.variables]
    return history.history, state


OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(1e-2),
    "adam_schedule": lambda: keras.optimizers.Adam(
        keras.optimizers.schedules.ExponentialDecay(1e-2, 2, 0.5), beta_1=0.8
    ),
    "adam_clipnorm": lambda: keras.optimizers.Adam(1e-2, clipnorm=0.1),
    "adamw": lambda: keras.optimizers.AdamW(1e-2),
    "sgd": lambda: keras.optimizers.SGD(1e-2, momentum=0.9),
}


@pytest.mark.parametrize(
    "kind, optimizer, regularized",
    [
        ("base", "adam", False),
        ("base", "adam", True),
        ("sr", "adam", False),
        ("base", "adam_schedule", False),
        ("base", "adam_clipnorm", False),
        ("base", "adamw", False),
        ("base", "sgd", False),
    ],
)
def test_lean_step_ends_where_keras_step_ends(kind, optimizer, regularized, monkeypatch):
    keras_logs, keras_state = _fit(kind, OPTIMIZERS[optimizer], False, monkeypatch, regularized)
    fast_logs, fast_state = _fit(kind, OPTIMIZERS[optimizer], True, monkeypatch, regularized)
    assert fast_logs.keys() == keras_logs.keys()
    for name in keras_logs:
        np.testing.assert_allclose(fast_logs[name], keras_logs[name], rtol=1e-4, err_msg=name)
    assert len(fast_state) == len(keras_state)
    for a, b in zip(fast_state, keras_state):
        # weights, EMA, Adam slots, iterations, seed states
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(b).max()))


def test_regularizer_loss_is_added(monkeypatch):
    """The loss `fit` logs includes the regularizer's term on both paths."""
    plain, _ = _fit("base", OPTIMIZERS["sgd"], True, monkeypatch)
    regularized, _ = _fit("base", OPTIMIZERS["sgd"], True, monkeypatch, regularized=True)
    assert regularized["loss"][0] > plain["loss"][0] + 1e-3


def test_plain_adam_takes_the_fused_update_and_others_do_not(monkeypatch):
    from keras_cdm.backend import torch_trainer

    taken = []
    original = torch_trainer._apply_adam

    def counting(*args):
        done = original(*args)
        taken.append(done)
        return done

    monkeypatch.setattr(torch_trainer, "_apply_adam", counting)
    _fit("base", OPTIMIZERS["adam"], True, monkeypatch)
    assert taken and all(taken[1:])  # the first step builds the optimizer (Keras's)
    taken.clear()
    _fit("base", OPTIMIZERS["adam_clipnorm"], True, monkeypatch)
    assert taken and not any(taken)
