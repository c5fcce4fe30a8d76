"""Speed of keras_cdm stages on each backend and of Hugging Face diffusers,
measured side by side in one run.

    pip install diffusers   # benchmark-only dependency
    python tools/benchmark.py --presets base32_tiny sr32to64_tiny --batch 16

Every (framework, preset) pair runs in its own subprocess, one after the
other, so peak memory (max RSS, or CUDA peak on a GPU) is per pair. Figures:
parameters; forward GFLOPs per image (matmul/conv FLOPs counted by
`torch.utils.flop_counter` on the torch side: keras_cdm's network run under
the torch backend and diffusers' `UNet2DModel`); training images/s (median
step time after warm-up, compiled where the backend compiles: `jax.jit`, TF
XLA; torch eager); inference forward images/s (EMA network); sampling time per
step and its ratio to one bare forward pass (the sampling loop's overhead).

The diffusers baseline is `UNet2DModel` configured to the same architecture:
channels, multipliers, residual blocks per level, attention resolutions and
heads, GroupNorm groups, scale-shift (FiLM) norm, class embedding, resnet
(BigGAN-style) up/down sampling, 6 output channels for a learned variance, and
for SR stages the upsampled low-res image concatenated to the input. It is
trained with a plain PyTorch loop (Adam, epsilon MSE, EMA update). Ratios are
keras_cdm / diffusers; "at equal FLOPs" multiplies them by keras_cdm's FLOPs
over diffusers' (a GFLOP/s ratio: the networks differ by a few percent).
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def build_stage(preset, torch_compile=False, dtype_policy=None, network_overrides=None):
    """A preset's compiled training model (`DiffusionModel` or
    `SuperResDiffusionModel`), under `dtype_policy` (e.g. "mixed_bfloat16"),
    with `network_overrides` to its network."""
    import keras

    import keras_cdm

    if dtype_policy:
        keras.config.set_dtype_policy(dtype_policy)
    model = keras_cdm.DiffusionModel.from_preset(preset, network_overrides=network_overrides)
    if torch_compile:
        import torch._dynamo

        # Dynamo's automatic dynamic shapes fail in Inductor on this model
        # ("cannot determine truth value of Relational"); static shapes run.
        torch._dynamo.config.automatic_dynamic_shapes = False
    model.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=torch_compile or "auto")
    return model


def time_training(model, batch, steps):
    """Seconds of each of `steps` `fit` steps on random images (the first
    includes compilation); returns `(times, images, labels)`."""
    import keras
    import numpy as np

    s = model.image_size
    x = np.random.default_rng(0).uniform(-1, 1, (batch * steps, s, s, 3)).astype("float32")
    y = (np.arange(len(x)) % model.num_classes).astype("int32")
    times = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, b, logs=None):
            self.t = time.perf_counter()

        def on_train_batch_end(self, b, logs=None):
            times.append(time.perf_counter() - self.t)

    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=[Timer()])
    return times, x, y


def time_forward(model, x, y, batch, reps):
    """Seconds of each of `reps` compiled EMA-network forward passes."""
    import keras
    import numpy as np

    from keras_cdm.backend import compile_stateful

    inputs = {"x_t": x[:batch], "t": np.full((batch,), 10, "int32"), "labels": y[:batch]}
    if hasattr(model, "low_res_size"):
        lo = model.low_res_size
        inputs["low_res"] = x[:batch, :lo, :lo]
        inputs["aug_level"] = np.zeros((batch,), "int32")
    net = model.ema_network
    forward = compile_stateful(lambda inp: net(inp, training=False), net.variables, [])
    inputs = {k: keras.ops.convert_to_tensor(v) for k, v in inputs.items()}
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        keras.ops.convert_to_numpy(forward(inputs))
        times.append(time.perf_counter() - t0)
    return times


def measure(preset, batch, steps, torch_compile=False, dtype_policy=None, network_overrides=None):
    model = build_stage(preset, torch_compile, dtype_policy, network_overrides)
    times, x, y = time_training(model, batch, steps + 2)
    train = batch / _median(times[2:])
    fwd = _median(time_forward(model, x, y, batch, steps + 2)[2:])

    labels = y[:batch]
    n = steps + 2
    if hasattr(model, "low_res_size"):
        lo = model.low_res_size
        model.sample(x[:batch, :lo, :lo], labels, num_steps=n, seed=1)  # compiles
        t0 = time.perf_counter()
        model.sample(x[:batch, :lo, :lo], labels, num_steps=n, seed=0)
    else:
        model.sample(labels, num_steps=n, seed=1)  # compiles
        t0 = time.perf_counter()
        model.sample(labels, num_steps=n, seed=0)
    per_step = (time.perf_counter() - t0) / n
    return {
        "params": model.network.count_params(),
        "gflops": keras_cdm_flops(preset, network_overrides),
        "train_img_s": train,
        "forward_img_s": batch / fwd,
        "sample_step_s": per_step,
        "overhead": per_step / fwd,
        "peak_mb": _peak_memory_mb(),
    }


def _peak_memory_mb():
    """Peak device memory (CUDA under torch, the GPU's peak under JAX), else
    the process's max RSS."""
    backend = os.environ.get("KERAS_BACKEND")
    if backend == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            return stats["peak_bytes_in_use"] / 2**20
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2**20
    except ImportError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def diffusers_config(preset, network_overrides=None):
    """`UNet2DModel` keyword arguments matching a keras_cdm preset's network
    (with `network_overrides`)."""
    from keras_cdm.models.presets import get_preset

    preset = get_preset(preset)
    net = dict(preset.network, **(network_overrides or {}))
    size, base, mult = net["image_size"], net["base_channels"], net["channel_mult"]
    attn = set(net["attention_resolutions"])
    if net.get("head_channels"):
        head_dim = net["head_channels"]
    else:
        # One head count for every level: diffusers takes a head *dimension*.
        widths = {base * m for i, m in enumerate(mult) if size // 2**i in attn}
        head_dim = (min(widths) if widths else base) // net.get("num_heads", 1)
    down = ["AttnDownBlock2D" if size // 2**i in attn else "DownBlock2D" for i in range(len(mult))]
    up = [b.replace("Down", "Up") for b in reversed(down)]
    learn_sigma = preset.diffusion["var_type"] == "learned_range"
    return {
        "sample_size": size,
        "in_channels": 6 if preset.is_super_res else 3,
        "out_channels": 6 if learn_sigma else 3,
        "block_out_channels": tuple(base * m for m in mult),
        "layers_per_block": net["num_res_blocks"],
        "down_block_types": tuple(down),
        "up_block_types": tuple(up),
        "attention_head_dim": head_dim,
        "norm_num_groups": net.get("norm_groups", 32),
        "resnet_time_scale_shift": "scale_shift",
        "num_class_embeds": net["num_classes"],
        "downsample_type": "resnet",
        "upsample_type": "resnet",
        "dropout": net.get("dropout", 0.0),
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    }


def _torch_flops(fn):
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def diffusers_trainer(preset, batch, device="cpu", size=None, bf16=False, network_overrides=None):
    """diffusers' `UNet2DModel` for a preset (at `size` if given), its EMA
    copy, a random batch `(x, y)` and a plain PyTorch training step (Adam,
    epsilon MSE, EMA; under bf16 autocast if `bf16`)."""
    import torch
    from diffusers import UNet2DModel

    cfg = diffusers_config(preset, network_overrides)
    if size:
        cfg["sample_size"] = size
    model = UNet2DModel(**cfg).to(device)
    ema = UNet2DModel(**cfg).to(device).eval()
    ema.load_state_dict(model.state_dict())
    s = cfg["sample_size"]
    g = torch.Generator(device).manual_seed(0)
    x = torch.rand((batch, cfg["in_channels"], s, s), generator=g, device=device) * 2 - 1
    y = torch.arange(batch, device=device) % cfg["num_class_embeds"]
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    alphas = torch.cos(torch.linspace(0, 1.5, 1000, device=device)).clamp(0.01, 1) ** 2

    def train_step():
        t = torch.randint(0, 1000, (batch,), device=device)
        noise = torch.randn((batch, 3, s, s), device=device)
        a = alphas[t].view(-1, 1, 1, 1)
        x0 = x[:, :3]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        inp = torch.cat([xt, x[:, 3:]], 1)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            out = model(inp, t, class_labels=y).sample
        loss = torch.mean((out[:, :3].float() - noise) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - 0.9999)
        return loss.detach()

    return model, ema, x, y, train_step


def measure_diffusers(preset, batch, steps, bf16=False, network_overrides=None):
    import contextlib

    import numpy as np
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, ema, x, y, train_step = diffusers_trainer(
        preset, batch, device, bf16=bf16, network_overrides=network_overrides
    )
    autocast = (
        torch.autocast(device_type=device, dtype=torch.bfloat16)
        if bf16
        else contextlib.nullcontext()
    )
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        float(train_step())
        times.append(time.perf_counter() - t0)
    t = torch.full((batch,), 10, device=device)
    fwd_times = []
    with torch.no_grad(), autocast:
        for _ in range(steps + 2):
            t0 = time.perf_counter()
            ema(x, t, class_labels=y).sample.cpu()
            fwd_times.append(time.perf_counter() - t0)
        flops = _torch_flops(lambda: ema(x[:1], t[:1], class_labels=y[:1]))
    return {
        "params": int(sum(p.numel() for p in model.parameters())),
        "gflops": flops / 1e9,
        "train_img_s": batch / _median(times[2:]),
        "forward_img_s": batch / _median(fwd_times[2:]),
        "peak_mb": _peak_memory_mb(),
        "_check": float(np.isfinite(float(train_step()))),
    }


def keras_cdm_flops(preset, network_overrides=None):
    """Forward FLOPs per image of a preset's network, counted under torch
    (None under another backend, which may run without torch installed)."""
    import keras

    if keras.backend.backend() != "torch":
        return None
    import numpy as np
    import torch

    import keras_cdm

    net = keras_cdm.DiffusionModel.from_preset(preset, network_overrides=network_overrides).network
    sr = isinstance(net, keras_cdm.SuperResUNet)
    s = net.get_config()["image_size"]
    inputs = {"x_t": np.zeros((1, s, s, 3), "float32"), "t": np.array([10]), "labels": [0]}
    if sr:
        lo = net.get_config()["low_res_size"]
        inputs["low_res"] = np.zeros((1, lo, lo, 3), "float32")
        inputs["aug_level"] = np.array([0])
    inputs = {k: keras.ops.convert_to_tensor(np.asarray(v)) for k, v in inputs.items()}
    with torch.no_grad():
        return _torch_flops(lambda: net(inputs, training=False)) / 1e9


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--presets", nargs="+", default=["base32_tiny", "sr32to64_tiny"])
    p.add_argument("--backends", nargs="+", default=["jax", "tensorflow", "torch"])
    p.add_argument("--no_diffusers", action="store_true", help="skip the diffusers baseline")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--output", default=None, help="also write the results as JSON")
    p.add_argument(
        "--torch_compile",
        action="store_true",
        help="torch backend: train with jit_compile=True (Keras wraps the step in torch.compile)",
    )
    p.add_argument("--_child", default=None)
    args = p.parse_args(argv)
    if args._child:
        if args._child == "diffusers":
            result = measure_diffusers(args.presets[0], args.batch, args.steps)
        else:
            result = measure(args.presets[0], args.batch, args.steps, args.torch_compile)
        print("RESULT " + json.dumps(result))
        return
    frameworks = list(args.backends) + ([] if args.no_diffusers else ["diffusers"])
    results = {}
    for pr in args.presets:
        for fw in frameworks:
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
            env["KERAS_BACKEND"] = "torch" if fw == "diffusers" else fw
            cmd = [sys.executable, __file__, "--_child", fw, "--presets", pr]
            cmd += ["--batch", str(args.batch), "--steps", str(args.steps)]
            if args.torch_compile and fw == "torch":
                cmd.append("--torch_compile")
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            if not line:
                print(f"{fw} / {pr} failed:\n{out.stderr[-3000:]}")
                continue
            results[(pr, fw)] = json.loads(line[0][7:])
            print(f"{pr} {fw}: {results[(pr, fw)]}", flush=True)
    if args.output:
        with open(args.output, "w") as f:
            json.dump({f"{k[0]}/{k[1]}": v for k, v in results.items()}, f, indent=2)
    print(
        f"\nbatch {args.batch}, {args.steps} timed steps, {os.cpu_count()} CPU cores; "
        "(ratio) = keras_cdm / diffusers in this run\n"
    )
    print(
        "| preset | framework | params | GFLOPs/img | train img/s | forward img/s "
        "| train / forward at equal FLOPs | sample s/step | step / forward | peak MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")

    def ratio(r, ref, key):
        return f" ({r[key] / ref[key]:.2f}x)" if ref and r is not ref else ""

    def per_flop(r, ref):
        # Throughput ratio scaled by the FLOPs ratio: GFLOP/s of keras_cdm over
        # GFLOP/s of diffusers (the networks differ by a few percent in FLOPs).
        if not ref or r is ref:
            return "-"
        flops = torch_flops.get(r["_preset"]) or r.get("gflops")
        if not flops:
            return "-"
        scale = flops / ref["gflops"]
        return (
            f"{r['train_img_s'] / ref['train_img_s'] * scale:.2f}x / "
            f"{r['forward_img_s'] / ref['forward_img_s'] * scale:.2f}x"
        )

    torch_flops = {}
    for (pr, fw), r in results.items():
        r["_preset"] = pr
        if fw != "diffusers" and r.get("gflops"):
            torch_flops[pr] = r["gflops"]
    for pr in args.presets:
        ref = results.get((pr, "diffusers"))
        for fw in frameworks:
            r = results.get((pr, fw))
            if r is None:
                continue
            gflops = f"{r['gflops']:.3f}" if r.get("gflops") else "(torch row)"
            step = f"{r['sample_step_s']:.4f}" if "sample_step_s" in r else "-"
            overhead = f"{r['overhead']:.3f}" if "overhead" in r else "-"
            print(
                f"| {pr} | {fw} | {r['params']:,} | {gflops} | {r['train_img_s']:.1f}"
                f"{ratio(r, ref, 'train_img_s')} | {r['forward_img_s']:.1f}"
                f"{ratio(r, ref, 'forward_img_s')} | {per_flop(r, ref)} | {step} | {overhead} "
                f"| {r['peak_mb']:.0f} |"
            )


if __name__ == "__main__":
    main()
