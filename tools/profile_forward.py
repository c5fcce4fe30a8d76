"""Per-op profile of one U-Net forward pass under the PyTorch backend.

    KERAS_BACKEND=torch python tools/profile_forward.py --preset base32_tiny --batch 16

Prints the mean forward time over a few calls, `torch.profiler`'s table of
the most expensive ops (layout copies show up as `aten::copy_`), and the
fixed Python cost of one Keras layer call on this machine (a `Dense` layer on
a 1x4 input against `torch.nn.Linear`), which the ~100 layer calls of a U-Net
forward pay in eager PyTorch; and the EMA update of one training step.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_cdm  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="base32_tiny")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args(argv)
    if keras.backend.backend() != "torch":
        raise SystemExit("Run with KERAS_BACKEND=torch (this profiles the torch backend).")
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile

    net = keras_cdm.DiffusionModel.from_preset(args.preset).network
    sr = isinstance(net, keras_cdm.SuperResUNet)
    cfg, b = net.get_config(), args.batch
    s = cfg["image_size"]
    inputs = {
        "x_t": np.zeros((b, s, s, 3), "float32"),
        "t": np.full((b,), 10),
        "labels": np.zeros((b,), "int32"),
    }
    if sr:
        lo = cfg["low_res_size"]
        inputs["low_res"] = np.zeros((b, lo, lo, 3), "float32")
        inputs["aug_level"] = np.zeros((b,), "int32")
    inputs = {k: keras.ops.convert_to_tensor(v) for k, v in inputs.items()}
    with torch.no_grad():
        for _ in range(3):
            net(inputs, training=False)
        t0 = time.perf_counter()
        for _ in range(args.reps):
            net(inputs, training=False)
        print(f"forward: {(time.perf_counter() - t0) / args.reps:.3f} s at batch {b}")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            net(inputs, training=False)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    print(f"Keras layer calls in one forward: {_count_layer_calls(net, inputs)}")
    tiny = keras.ops.convert_to_tensor(np.zeros((1, 4), "float32"))
    dense, linear = keras.layers.Dense(4), torch.nn.Linear(4, 4)
    with torch.no_grad():
        for name, layer in (("keras.layers.Dense", dense), ("torch.nn.Linear", linear)):
            for _ in range(100):
                layer(tiny)
            t0 = time.perf_counter()
            for _ in range(2000):
                layer(tiny)
            print(f"{name} call on a 1x4 input: {(time.perf_counter() - t0) / 2000 * 1e6:.1f} us")
    _time_ema(args.preset)


def _time_ema(preset):
    """The EMA update of a training step: keras_cdm's (one multi-tensor lerp on
    torch) against the same update written as Keras ops per weight."""
    import torch

    model = keras_cdm.DiffusionModel.from_preset(preset)
    pairs = list(zip(model.ema_network.weights, model.network.weights))

    def per_weight_keras_ops():
        decay = keras.ops.convert_to_tensor(0.999, "float32")
        for ema_var, var in pairs:
            value = keras.ops.stop_gradient(keras.ops.cast(var.value, ema_var.dtype))
            ema_var.assign(decay * ema_var.value + (1.0 - decay) * value)

    with torch.no_grad():
        for name, fn in (
            ("keras_cdm", model._update_ema),
            ("Keras ops per weight", per_weight_keras_ops),
        ):
            for _ in range(3):
                fn()
            t0 = time.perf_counter()
            for _ in range(20):
                fn()
            ms = (time.perf_counter() - t0) / 20 * 1e3
            print(f"EMA update of {len(pairs)} weights, {name}: {ms:.2f} ms")


def _count_layer_calls(net, inputs):
    import torch

    count = [0]

    def hook(*_):
        count[0] += 1

    layers = net._flatten_layers(include_self=True, recursive=True)
    handles = [layer.register_forward_pre_hook(hook) for layer in layers]
    with torch.no_grad():
        net(inputs, training=False)
    for h in handles:
        h.remove()
    return count[0]


if __name__ == "__main__":
    main()
