"""The PyTorch direct-call path (`keras_cdm.backend.run_network_directly`):
a network's forward pass with each layer's `call` run directly gives the
outputs and gradients of Keras's own path, takes the RNG in the same order,
is really taken (one `Layer.__call__` per forward: the network's), and is
declined where it would not be exact (mixed precision, other backends,
`KERAS_CDM_DIRECT_CALLS=0`)."""

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import micro_network_config
from conftest import network_inputs
from conftest import to_numpy

from keras_cdm import SuperResUNet
from keras_cdm import UNet
from keras_cdm import backend
from keras_cdm.backend import DIRECT_CALLS_ENV

torch_only = pytest.mark.skipif(BACKEND != "torch", reason="the path exists on PyTorch only")


def _inputs(net):
    return {k: keras.ops.convert_to_tensor(v) for k, v in network_inputs(net).items()}


NETWORKS = {
    "base": lambda: UNet(**micro_network_config(dropout=0.2)),
    "seeded_dropout": lambda: UNet(**micro_network_config(dropout=0.2, seed=3)),
    "unconditional": lambda: UNet(**micro_network_config(num_classes=0)),
    "sr": lambda: SuperResUNet(low_res_size=4, **micro_network_config(dropout=0.2)),
    "no_resblock_updown": lambda: UNet(**micro_network_config(resblock_updown=False)),
}


def _run(net, inputs, direct, training, monkeypatch):
    """Output and gradients of `sum(out ** 2)` on one path, from the same
    variable values (RNG states included)."""
    import torch

    monkeypatch.setenv(DIRECT_CALLS_ENV, "1" if direct else "0")
    torch.manual_seed(0)  # an unseeded Dropout draws from torch's global RNG
    for v in net.trainable_variables:
        v.value.grad = None
    out = net(inputs, training=training)
    torch.sum(out**2).backward()
    grads = [to_numpy(v.value.grad) for v in net.trainable_variables]
    return to_numpy(out.detach()), grads


@torch_only
@pytest.mark.parametrize("family", sorted(NETWORKS))
@pytest.mark.parametrize("training", [False, True])
def test_direct_path_equals_keras_outputs_gradients_and_rng(family, training, monkeypatch):
    net = NETWORKS[family]()
    rng = np.random.default_rng(1)
    for v in net.trainable_variables:  # ADM's zero-initialised layers too
        v.assign(to_numpy(v) + 0.1 * rng.normal(size=v.shape).astype("float32"))
    inputs = _inputs(net)
    start = [to_numpy(v).copy() for v in net.variables]  # seed states included
    keras_out, keras_grads = _run(net, inputs, False, training, monkeypatch)
    after_keras = [to_numpy(v).copy() for v in net.variables]
    for v, value in zip(net.variables, start):
        v.assign(value)
    direct_out, direct_grads = _run(net, inputs, True, training, monkeypatch)
    np.testing.assert_allclose(direct_out, keras_out, rtol=1e-5, atol=1e-6)
    for a, b in zip(direct_grads, keras_grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # The same random draws (dropout) advance the same seed states.
    for a, b in zip(net.variables, after_keras):
        np.testing.assert_array_equal(to_numpy(a), b)


@torch_only
def test_direct_path_is_taken_and_can_be_switched_off(monkeypatch):
    from keras.src.layers.layer import Layer

    net = NETWORKS["sr"]()
    inputs = _inputs(net)
    calls = []
    original = Layer.__call__

    def counting(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Layer, "__call__", counting)
    net(inputs)
    assert calls == ["SuperResUNet"]
    monkeypatch.setenv(DIRECT_CALLS_ENV, "0")
    calls.clear()
    net(inputs)
    assert len(calls) > 20 and "ResidualBlock" in calls and "Dense" in calls


def test_direct_path_declines_where_it_would_not_be_exact(monkeypatch):
    net = UNet(**micro_network_config())
    inputs = _inputs(net)
    taken = backend.run_network_directly(net, inputs, False)
    assert (taken is not None) == (BACKEND == "torch")
    monkeypatch.setenv(DIRECT_CALLS_ENV, "0")
    assert backend.run_network_directly(net, inputs, False) is None
    monkeypatch.delenv(DIRECT_CALLS_ENV)
    mixed = UNet(**micro_network_config(), dtype="mixed_bfloat16")
    assert backend.run_network_directly(mixed, inputs, False) is None
    assert to_numpy(mixed(inputs)).shape == (2, 8, 8, 3)
