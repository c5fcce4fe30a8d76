import keras
import numpy as np
import pytest
from conftest import micro_network_config
from conftest import network_inputs
from conftest import to_numpy

from keras_cdm import SuperResUNet
from keras_cdm import UNet
from keras_cdm.networks.architectures import ARCHITECTURES

_inputs = network_inputs


TINY = sorted(n for n in ARCHITECTURES if n.endswith("_tiny"))


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("learn_sigma", [False, True])
def test_tiny_preset_output_shapes(name, learn_sigma):
    cls = {"UNet": UNet, "SuperResUNet": SuperResUNet}[ARCHITECTURES[name]["class_name"]]
    net = cls.from_preset(name, learn_sigma=learn_sigma)
    out = net(_inputs(net))
    size = net.image_size
    assert tuple(out.shape) == (2, size, size, 6 if learn_sigma else 3)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"


def test_super_res_rejects_non_dividing_low_res():
    with pytest.raises(ValueError, match="must divide the output size"):
        SuperResUNet(image_size=16, low_res_size=6, **_small())
    net = SuperResUNet(low_res_size=4, **micro_network_config())
    bad = _inputs(net)
    bad["low_res"] = np.zeros((2, 3, 3, 3), "float32")
    with pytest.raises(Exception):
        net(bad)


def _small():
    c = micro_network_config()
    c.pop("image_size")
    return c


def test_unet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="divisible"):
        UNet(**micro_network_config(image_size=6, channel_mult=(1, 2, 2)))
    with pytest.raises(
        ValueError, match=r"`num_classes` must be an int >= 0 .*Received: num_classes=-2"
    ):
        UNet(**micro_network_config(num_classes=-2))
    with pytest.raises(ValueError, match=r"Received: num_classes=2.5"):
        UNet(**micro_network_config(num_classes=2.5))
    with pytest.raises(ValueError, match="Unknown preset"):
        UNet.from_preset("base1024")
    with pytest.raises(ValueError, match="not a UNet preset"):
        UNet.from_preset("sr32to64_tiny")


@pytest.mark.parametrize("cls", [UNet, SuperResUNet])
def test_save_load_round_trip(tmp_path, cls):
    kwargs = micro_network_config(dropout=0.1)
    if cls is SuperResUNet:
        kwargs["low_res_size"] = 4
        kwargs["interpolation"] = "bicubic"
    net = cls(**kwargs)
    # Non-zero output layers so the comparison means something.
    for w in net.weights:
        w.assign(keras.random.normal(w.shape, stddev=0.05, seed=1))
    inputs = _inputs(net)
    expected = to_numpy(net(inputs))
    path = str(tmp_path / "net.keras")
    net.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_numpy(loaded(inputs)), expected, atol=1e-6)
    clone = cls.from_config(net.get_config())
    assert clone.get_config() == net.get_config()
    assert clone.count_params() == net.count_params()


def test_zero_initialised_output_and_deterministic_init():
    keras.utils.set_random_seed(7)
    a = UNet(**micro_network_config())
    keras.utils.set_random_seed(7)
    b = UNet(**micro_network_config())
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(to_numpy(wa), to_numpy(wb))
    np.testing.assert_array_equal(to_numpy(a(_inputs(a))), 0.0)


def test_attention_and_resblock_variants():
    net = UNet(**micro_network_config(head_channels=4, resblock_updown=False))
    assert tuple(net(_inputs(net)).shape) == (2, 8, 8, 3)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_close_to_float32(policy):
    config = micro_network_config()
    keras.utils.set_random_seed(3)
    ref = UNet(**config)
    for w in ref.weights:
        w.assign(keras.random.normal(w.shape, stddev=0.1, seed=2))
    mixed = UNet(**config, dtype=policy)
    for wm, wr in zip(mixed.weights, ref.weights):
        wm.assign(wr)
    inputs = _inputs(ref)
    out32 = to_numpy(ref(inputs))
    out_mixed = to_numpy(mixed(inputs))
    assert np.isfinite(out_mixed).all()
    assert out_mixed.dtype == np.float32
    norms = [
        layer
        for layer in mixed._flatten_layers()
        if isinstance(layer, keras.layers.GroupNormalization)
    ]
    assert norms and all(n.compute_dtype == "float32" for n in norms)
    rel = np.abs(out_mixed - out32).max() / (np.abs(out32).max() + 1e-8)
    assert rel < 0.1
