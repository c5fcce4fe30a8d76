"""Data parallelism over every local accelerator, with each backend's own
engine. The recipes call `configure_data_parallel()` once, then build and
compile the model inside the scope it returns.

Backend-specific, like `keras_cdm.backend`; it sits beside it at the bottom
of the package and imports only Keras and the backend in use.
"""

import contextlib
import os

import keras


def configure_data_parallel():
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
