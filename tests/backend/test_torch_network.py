"""The PyTorch fast path of keras_cdm's networks
(`keras_cdm.backend.torch_network`, reached through
`run_network_directly` / `call_network`): every preset family's forward
pass as plain PyTorch gives Keras's outputs and gradients and takes the RNG
in the same order (float32: to float rounding; mixed bfloat16: as close to
Keras's as Keras's own path is to float32), is really taken (no Keras layer
call inside), and is off with `KERAS_CDM_DIRECT_CALLS=0` and on other
backends."""

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
from keras_cdm.models.reverse_process import guided_output

torch_only = pytest.mark.skipif(BACKEND != "torch", reason="the path exists on PyTorch only")


def _inputs(net):
    return {k: keras.ops.convert_to_tensor(v) for k, v in network_inputs(net).items()}


# Dropout seeded (as the presets' `seed`): Keras then draws its masks from
# the layer's seed state, which the fast path must advance identically.
NETWORKS = {
    "base": lambda **kw: UNet(**micro_network_config(dropout=0.2, seed=3), **kw),
    "unconditional": lambda **kw: UNet(**micro_network_config(num_classes=0), **kw),
    "sr": lambda **kw: SuperResUNet(
        low_res_size=4, **micro_network_config(dropout=0.2, seed=4), **kw
    ),
    "no_resblock_updown": lambda **kw: UNet(**micro_network_config(resblock_updown=False), **kw),
    # One channel per GroupNorm group (32 groups capped at 8 and 16
    # channels): the per-channel-statistics GroupNorm on a CPU.
    "one_channel_groups": lambda **kw: UNet(**micro_network_config(norm_groups=32), **kw),
    "learn_sigma_additive_emb": lambda **kw: UNet(
        **micro_network_config(learn_sigma=True, use_scale_shift_norm=False, head_channels=4),
        **kw,
    ),
}


def _perturb(net, seed=1):
    """Moves every weight off its initial value (ADM's zero-initialised
    layers would otherwise hide half the network)."""
    rng = np.random.default_rng(seed)
    for v in net.trainable_variables:
        v.assign(to_numpy(v) + 0.1 * rng.normal(size=v.shape).astype("float32"))


def _run(net, inputs, fast, training, monkeypatch, call=None):
    """Output and gradients of `sum(out ** 2)` on one path, from the same
    variable values (RNG states included)."""
    import torch

    monkeypatch.setenv(DIRECT_CALLS_ENV, "1" if fast else "0")
    torch.manual_seed(0)  # an unseeded Dropout draws from torch's global RNG
    for v in net.trainable_variables:
        v.value.grad = None
    out = (call or (lambda: net(inputs, training=training)))()
    torch.sum(out.float() ** 2).backward()
    grads = [to_numpy(v.value.grad) for v in net.trainable_variables]
    return to_numpy(out.detach().float()), grads


@torch_only
@pytest.mark.parametrize("family", sorted(NETWORKS))
@pytest.mark.parametrize("training", [False, True])
def test_fast_path_equals_keras_outputs_gradients_and_rng(family, training, monkeypatch):
    net = NETWORKS[family]()
    _perturb(net)
    inputs = _inputs(net)
    start = [to_numpy(v).copy() for v in net.variables]  # seed states included
    keras_out, keras_grads = _run(net, inputs, False, training, monkeypatch)
    after_keras = [to_numpy(v).copy() for v in net.variables]
    for v, value in zip(net.variables, start):
        v.assign(value)
    fast_out, fast_grads = _run(net, inputs, True, training, monkeypatch)
    np.testing.assert_allclose(fast_out, keras_out, rtol=1e-5, atol=1e-5)
    # float32 summation order, relative to the gradients' scale (a bias
    # before a one-channel GroupNorm group has a zero gradient: float noise)
    scale = max(np.abs(b).max() for b in keras_grads)
    for a, b in zip(fast_grads, keras_grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)
    # The same random draws (dropout) advance the same seed states.
    for a, b in zip(net.variables, after_keras):
        np.testing.assert_array_equal(to_numpy(a), b)


@torch_only
@pytest.mark.parametrize("family", ["base", "sr"])
def test_fast_path_under_mixed_bfloat16_is_keras_to_bfloat16_rounding(family, monkeypatch):
    """Keras's autocast (inputs and weights to each layer's compute dtype,
    GroupNorm and the attention logits in float32) is kept: the fast path's
    bfloat16 result is as far from Keras's bfloat16 result as that one is
    from the float32 network, not more (a missed or extra cast shows as a
    larger difference)."""
    nets = {d: NETWORKS[family](dtype=d) for d in ("float32", "mixed_bfloat16")}
    _perturb(nets["float32"])
    for a, b in zip(
        nets["mixed_bfloat16"].trainable_variables, nets["float32"].trainable_variables
    ):
        a.assign(to_numpy(b))
    inputs = _inputs(nets["float32"])
    ref_out, ref_grads = _run(nets["float32"], inputs, True, False, monkeypatch)
    mixed = nets["mixed_bfloat16"]
    keras_out, keras_grads = _run(mixed, inputs, False, False, monkeypatch)
    fast_out, fast_grads = _run(mixed, inputs, True, False, monkeypatch)
    keras_error = np.abs(keras_out - ref_out).max()
    assert 0 < keras_error < 0.05 * np.abs(ref_out).max()  # bfloat16 really ran
    assert np.abs(fast_out - keras_out).max() <= 2 * keras_error
    flat = lambda grads: np.concatenate([g.ravel() for g in grads])  # noqa: E731
    fast, kept, ref = flat(fast_grads), flat(keras_grads), flat(ref_grads)
    norm = np.linalg.norm
    # (measured: 1.07x and 1.07x on both families)
    assert norm(fast - kept) <= 2 * norm(kept - ref)
    assert norm(fast - ref) <= 1.5 * norm(kept - ref)


@torch_only
@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_fast_path_equals_keras_under_guidance(guidance_scale, monkeypatch):
    net = NETWORKS["base"]()
    _perturb(net)
    inputs = _inputs(net)
    call = lambda: guided_output(net, inputs, guidance_scale)  # noqa: E731
    keras_out, keras_grads = _run(net, inputs, False, False, monkeypatch, call)
    fast_out, fast_grads = _run(net, inputs, True, False, monkeypatch, call)
    np.testing.assert_allclose(fast_out, keras_out, rtol=1e-5, atol=1e-5)
    for a, b in zip(fast_grads, keras_grads):
        # float32 summation order: relative to the tensor's scale
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())


@torch_only
def test_fast_path_is_taken_and_can_be_switched_off(monkeypatch):
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
    assert calls == ["SuperResUNet"]  # no layer inside goes through Keras
    calls.clear()
    backend.call_network(net, inputs)
    assert calls == []
    monkeypatch.setenv(DIRECT_CALLS_ENV, "0")
    backend.call_network(net, inputs)
    assert len(calls) > 20 and "ResidualBlock" in calls and "Dense" in calls


def test_fast_path_runs_on_pytorch_only_and_can_be_declined(monkeypatch):
    net = UNet(**micro_network_config())
    inputs = _inputs(net)
    taken = backend.run_network_directly(net, inputs, False)
    assert (taken is not None) == (BACKEND == "torch")
    monkeypatch.setenv(DIRECT_CALLS_ENV, "0")
    assert backend.run_network_directly(net, inputs, False) is None
    monkeypatch.delenv(DIRECT_CALLS_ENV)
    # Inputs of the wrong rank go to Keras's path (which names them).
    bad = dict(inputs, t=keras.ops.reshape(inputs["t"], (2, 1, 1)))
    assert backend.run_network_directly(net, bad, False) is None
    with pytest.raises(ValueError, match="t"):
        backend.call_network(net, bad)


@torch_only
def test_inputs_are_cast_to_the_input_dtypes_as_keras_does(monkeypatch):
    """An int64 `t` or `labels` (NumPy's default) gives the int32 result."""
    net = NETWORKS["base"]()
    inputs = _inputs(net)
    wide = {k: (keras.ops.cast(v, "int64") if k != "x_t" else v) for k, v in inputs.items()}
    np.testing.assert_allclose(
        to_numpy(backend.call_network(net, wide)), to_numpy(net(inputs)), rtol=1e-6
    )


@torch_only
def test_lora_enabled_after_the_first_call_takes_keras_path(monkeypatch):
    """A layer altered after the program was made (LoRA here) is not read
    as a plain layer: outputs still equal Keras's own path."""
    net = NETWORKS["base"]()
    _perturb(net)
    inputs = _inputs(net)
    net(inputs)  # the program is made
    dense = net.get_layer("time_embed").dense_2
    dense.enable_lora(2)
    dense.lora_kernel_b.assign(np.ones(dense.lora_kernel_b.shape, "float32"))
    fast = to_numpy(backend.call_network(net, inputs))
    monkeypatch.setenv(DIRECT_CALLS_ENV, "0")
    np.testing.assert_allclose(fast, to_numpy(net(inputs)), rtol=1e-5, atol=1e-5)
