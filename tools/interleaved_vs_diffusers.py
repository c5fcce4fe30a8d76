"""keras_cdm (PyTorch backend) and diffusers training steps interleaved in one
process: a throughput ratio that the machine's drift cannot bias.

    pip install diffusers   # benchmark-only dependency
    KERAS_BACKEND=torch python tools/interleaved_vs_diffusers.py --presets base32_tiny base32_small

`tools/benchmark.py` runs each framework in its own process, one after the
other, so on a shared machine a slow minute lands on one side only (whole runs
there move by up to ~30%). Here one keras_cdm step and one diffusers step
alternate, and the ratio of the medians is reported. The diffusers side is the
same `UNet2DModel` configuration and PyTorch loop as in `tools/benchmark.py`.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from benchmark import diffusers_config  # noqa: E402

import keras_cdm  # noqa: E402


def keras_cdm_step(preset, batch):
    sr = "low_res_size" in keras_cdm.networks.PRESETS[preset]["network"]
    cls = keras_cdm.SuperResDiffusionModel if sr else keras_cdm.DiffusionModel
    model = cls.from_preset(preset)
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    s = model.image_size
    x = np.random.default_rng(0).uniform(-1, 1, (batch, s, s, 3)).astype("float32")
    y = (np.arange(batch) % model.num_classes).astype("int32")
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # builds the train function
    data = (keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y))

    def step():
        float(model.train_function([data])["loss"])

    return step


def diffusers_step(preset, batch):
    import torch
    from diffusers import UNet2DModel

    cfg = diffusers_config(preset)
    model = UNet2DModel(**cfg)
    ema = UNet2DModel(**cfg).eval()
    s = cfg["sample_size"]
    x = torch.rand((batch, cfg["in_channels"], s, s)) * 2 - 1
    y = torch.arange(batch) % cfg["num_class_embeds"]
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    alphas = torch.cos(torch.linspace(0, 1.5, 1000)).clamp(0.01, 1) ** 2

    def step():
        t = torch.randint(0, 1000, (batch,))
        noise = torch.randn((batch, 3, s, s))
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x[:, :3] + (1 - a).sqrt() * noise
        out = model(torch.cat([xt, x[:, 3:]], 1), t, class_labels=y).sample
        loss = torch.mean((out[:, :3] - noise) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1e-4)
        float(loss.detach())

    return step


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--presets", nargs="+", default=["base32_tiny", "sr32to64_tiny", "base32_small"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args(argv)
    if keras.backend.backend() != "torch":
        raise SystemExit("Run with KERAS_BACKEND=torch (diffusers is PyTorch).")
    print(f"batch {args.batch}, {args.steps} interleaved steps each, {os.cpu_count()} CPU cores\n")
    print("| preset | keras_cdm ms/step | diffusers ms/step | train throughput ratio |")
    print("|---|---|---|---|")
    for preset in args.presets:
        ours, theirs = keras_cdm_step(preset, args.batch), diffusers_step(preset, args.batch)
        for _ in range(2):  # warm-up
            ours()
            theirs()
        a, b = [], []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            ours()
            a.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            theirs()
            b.append(time.perf_counter() - t0)
        ma, mb = float(np.median(a)), float(np.median(b))
        print(f"| {preset} | {1e3 * ma:.1f} | {1e3 * mb:.1f} | {mb / ma:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
