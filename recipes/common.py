"""Shared code of the keras_cdm recipes: flags, data, training loop, checkpoints.

Each `train_*.py` recipe is a stage name plus a call to `main`.
"""

import argparse
import csv
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_cdm  # noqa: E402
from keras_cdm.backend import setup_torch_ddp  # noqa: E402
from keras_cdm.backend import torch_process_group  # noqa: E402
from keras_cdm.networks.presets import get_preset  # noqa: E402


def parse_args(stage, argv=None):
    p = argparse.ArgumentParser(description=f"Train the {stage} stage of a cascade.")
    p.add_argument(
        "--preset",
        default="paper",
        choices=["paper", "small", "tiny"],
        help="paper = the paper's architecture; small/tiny for CPUs",
    )
    p.add_argument(
        "--dataset",
        default="synthetic",
        help="'synthetic', an image folder (one sub-folder per class), or a TFDS name",
    )
    p.add_argument("--data_dir", default=None, help="TFDS data_dir")
    p.add_argument("--num_synthetic", type=int, default=2000, help="synthetic set size")
    p.add_argument("--batch_size", type=int, default=None, help="global batch size")
    p.add_argument("--train_steps", type=int, default=None)
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--ema_decay", type=float, default=None)
    p.add_argument(
        "--augmentation",
        default=None,
        choices=["gaussian", "blur", "none"],
        help="SR stages: conditioning augmentation (default: the paper's choice)",
    )
    p.add_argument("--label_dropout", type=float, default=0.0)
    p.add_argument(
        "--network",
        default=None,
        help="JSON overrides of the preset's network, e.g. '{\"base_channels\": 16}'",
    )
    p.add_argument("--output_dir", default=None)
    p.add_argument("--checkpoint_every", type=int, default=None, help="steps between checkpoints")
    p.add_argument(
        "--sample_every", type=int, default=0, help="checkpoints between sample grids (0: end only)"
    )
    p.add_argument("--resume", action="store_true", help="continue from output_dir/checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--mixed_precision", default=None, choices=[None, "mixed_bfloat16", "mixed_float16"]
    )
    p.add_argument("--flip", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="a seconds-long run of the same code path")
    return p.parse_args(argv)


# Paper batch sizes and steps (Appendix B); small/tiny scale them down.
PAPER_SCHEDULE = {
    "base32": (2048, 700_000),
    "sr32to64": (2048, 400_000),
    "sr64to128": (1024, 500_000),
    "sr64to256": (1024, 500_000),
    "base16": (2048, 700_000),
    "sr16to64": (2048, 400_000),
    "sr16to32": (2048, 400_000),
}


def stage_settings(stage, args):
    preset = stage if args.preset == "paper" else f"{stage}_{args.preset}"
    batch, steps = PAPER_SCHEDULE[stage]
    if args.preset != "paper":
        batch, steps = 32, 20_000
    if args.smoke:
        preset, batch, steps = f"{stage}_tiny", 4, 4
    batch = args.batch_size or batch
    steps = args.train_steps or steps
    every = args.checkpoint_every or max(1, min(1000, steps // 2 if args.smoke else 1000))
    # `fit` runs whole epochs of `every` steps: use a divisor of `steps` so that
    # training stops exactly at `steps`.
    every = min(every, steps)
    while steps % every:
        every -= 1
    return preset, batch, steps, every


def configure_devices():
    """Data parallelism over every local accelerator, per backend's own engine.

    Returns `(description, scope)`: build and compile the model inside `scope`.
    JAX: `keras.distribution.DataParallel` over all devices (multi-host after
    `keras.distribution.initialize()`, which reads the usual JAX coordinator
    environment). TensorFlow: `TPUStrategy` on a TPU, `MultiWorkerMirroredStrategy`
    when `TF_CONFIG` is set, `MirroredStrategy` over several GPUs.
    PyTorch: under `torchrun` (`WORLD_SIZE` > 1) one process per device in a
    `torch.distributed` group (NCCL on GPUs, gloo on CPUs), gradients averaged
    by `keras_cdm.backend.setup_torch_ddp`; otherwise one device.
    """
    import contextlib

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        if os.environ.get("JAX_COORDINATOR_ADDRESS"):
            keras.distribution.initialize()
        if len(jax.devices()) > 1:
            keras.distribution.set_distribution(keras.distribution.DataParallel())
            return f"jax DataParallel over {len(jax.devices())} devices", contextlib.nullcontext()
    if backend == "torch" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return (
            f"torch DDP rank {dist.get_rank()} of {dist.get_world_size()}",
            contextlib.nullcontext(),
        )
    if backend == "tensorflow":
        import tensorflow as tf

        strategy = None
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            strategy = tf.distribute.TPUStrategy(resolver)
        except (ValueError, tf.errors.NotFoundError):
            if os.environ.get("TF_CONFIG"):
                strategy = tf.distribute.MultiWorkerMirroredStrategy()
            elif len(tf.config.list_logical_devices("GPU")) > 1:
                strategy = tf.distribute.MirroredStrategy()
        if strategy is not None:
            return (
                f"tf {type(strategy).__name__} over {strategy.num_replicas_in_sync} replicas",
                strategy.scope(),
            )
    return f"{backend} on one device", contextlib.nullcontext()


def build_model(stage, preset, args):
    kwargs = {"seed": args.seed, "label_dropout": args.label_dropout}
    if args.ema_decay is not None:
        kwargs["ema_decay"] = args.ema_decay
    elif args.smoke or args.preset == "tiny":
        kwargs["ema_decay"] = 0.999
    network_overrides = json.loads(args.network) if args.network else {}
    if not isinstance(network_overrides, dict):
        raise ValueError(f"--network must be a JSON object. Received: {args.network!r}")
    if args.mixed_precision:
        network_overrides["dtype"] = args.mixed_precision
    if "low_res_size" in get_preset(preset)["network"]:
        if args.augmentation:
            kwargs["augmentation"] = args.augmentation
        elif "128" in stage or "256" in stage:
            kwargs["augmentation"] = "blur"  # the paper's choice at 128 and 256
        return keras_cdm.SuperResDiffusionModel.from_preset(
            preset, network_overrides=network_overrides, **kwargs
        )
    return keras_cdm.DiffusionModel.from_preset(
        preset, network_overrides=network_overrides, **kwargs
    )


def build_dataset(model, args, batch, shard=None):
    sr = isinstance(model, keras_cdm.SuperResDiffusionModel)
    size = model.image_size
    source = keras_cdm.data.resolve_source(
        args.dataset,
        data_dir=args.data_dir,
        resolution=size,
        seed=args.seed,
        num_images=min(args.num_synthetic, 16) if args.smoke else args.num_synthetic,
    )
    if source.num_classes > model.num_classes:
        raise ValueError(
            f"The data has {source.num_classes} classes but the stage has {model.num_classes}."
        )
    if sr:
        return keras_cdm.data.super_res_dataset(
            source,
            model.low_res_size,
            size,
            batch,
            flip=bool(args.flip),
            seed=args.seed,
            shard=shard,
        )
    return keras_cdm.data.base_dataset(
        source, size, batch, flip=bool(args.flip), seed=args.seed, shard=shard
    )


class Checkpoint(keras.callbacks.Callback):
    """Saves the whole stage (raw + EMA weights, optimizer, step, RNG) each epoch
    (= `checkpoint_every` steps), logs a CSV row, and writes sample grids."""

    def __init__(self, output_dir, sample_every, num_classes):
        super().__init__()
        self.output_dir = output_dir
        self.sample_every = sample_every
        self.num_classes = num_classes
        self.csv_path = os.path.join(output_dir, "log.csv")

    def on_epoch_end(self, epoch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        ckpt = os.path.join(self.output_dir, "checkpoint.keras")
        self.model.save(ckpt + ".tmp.keras")
        os.replace(ckpt + ".tmp.keras", ckpt)  # atomic: a kill never leaves half a file
        with open(os.path.join(self.output_dir, "checkpoint.json"), "w") as f:
            json.dump({"step": step, "epoch": epoch + 1}, f)
        new = not os.path.exists(self.csv_path)
        with open(self.csv_path, "a", newline="") as f:
            w = csv.writer(f)
            keys = sorted(logs or {})
            if new:
                w.writerow(["step", "time"] + keys)
            w.writerow([step, f"{time.time():.1f}"] + [f"{float(logs[k]):.6g}" for k in keys])
        if self.sample_every and (epoch + 1) % self.sample_every == 0:
            write_sample_grid(
                self.model,
                os.path.join(self.output_dir, f"samples_{step:08d}.png"),
                self.num_classes,
            )


def write_sample_grid(model, path, num_classes, per_class=4, num_steps=50):
    from keras_cdm.utils.images import save_class_grid

    labels = np.repeat(np.arange(num_classes), per_class)
    if isinstance(model, keras_cdm.SuperResDiffusionModel):
        images, _ = keras_cdm.data.synthetic_shapes(len(labels), model.low_res_size, seed=123)
        lo = images.astype("float32") / 127.5 - 1
        out = model.sample(lo, labels, aug_level=0, num_steps=num_steps, seed=0)
        return save_class_grid(path, out, labels, extra_stages=[lo])
    out = model.sample(labels, num_steps=num_steps, seed=0)
    return save_class_grid(path, out, labels)


def main(stage, argv=None):
    args = parse_args(stage, argv)
    keras.utils.set_random_seed(args.seed)
    preset, batch, steps, every = stage_settings(stage, args)
    output_dir = args.output_dir or os.path.join("runs", f"{stage}_{args.preset}")
    os.makedirs(output_dir, exist_ok=True)
    devices, scope = configure_devices()
    print(
        f"[keras_cdm] {stage}: preset={preset} batch={batch} steps={steps} "
        f"backend={keras.backend.backend()} ({devices}) -> {output_dir}"
    )
    ckpt = os.path.join(output_dir, "checkpoint.keras")
    initial_epoch = 0
    with scope:
        if args.resume and os.path.exists(ckpt):
            # The checkpoint holds raw and EMA weights, optimizer state, step
            # counter (optimizer.iterations) and the model's RNG state.
            model = keras.saving.load_model(ckpt)
            with open(os.path.join(output_dir, "checkpoint.json")) as f:
                initial_epoch = json.load(f)["epoch"]
            print(f"[keras_cdm] resumed at step {initial_epoch * every}")
        else:
            model = build_model(stage, preset, args)
            # torch.compile takes minutes on CPU for no gain; XLA cannot place
            # the mirrored seed state of tf.distribute strategies.
            jit = "auto"
            if keras.backend.backend() == "torch" or "Strategy" in devices:
                jit = False
            model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), jit_compile=jit)
    rank, world = torch_process_group() if keras.backend.backend() == "torch" else (0, 1)
    shard = None
    if world > 1:
        if batch % world:
            raise ValueError(f"--batch_size {batch} must be divisible by the {world} processes.")
        setup_torch_ddp(model)  # same start on every rank, gradients averaged
        batch, shard = batch // world, (world, rank)
    dataset = build_dataset(model, args, batch, shard)
    if initial_epoch:
        # The input pipeline is deterministic given the seed: skipping the
        # batches already consumed resumes on exactly the next batch.
        dataset = dataset.skip(initial_epoch * every)
    epochs = -(-steps // every)
    num_classes = min(model.num_classes, 10)
    # Under DDP every rank holds the same weights; rank 0 alone writes.
    callbacks = [Checkpoint(output_dir, args.sample_every, num_classes)] if rank == 0 else []
    if keras.backend.backend() == "tensorflow":
        callbacks.append(
            keras.callbacks.TensorBoard(os.path.join(output_dir, "tb"), update_freq="epoch")
        )
    model.fit(
        dataset,
        epochs=epochs,
        steps_per_epoch=every,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        verbose=2 if rank == 0 else 0,
    )
    final = os.path.join(output_dir, f"{stage}.keras")
    if rank > 0:
        return final
    model.save(final)
    grid = write_sample_grid(
        model,
        os.path.join(output_dir, "samples_final.png"),
        2 if args.smoke else num_classes,
        per_class=1 if args.smoke else 4,
        num_steps=2 if args.smoke else 50,
    )
    print(f"[keras_cdm] wrote {final} and {grid}")
    return final
