"""Data parallelism over every local accelerator, with each backend's own
engine. The recipes call `configure_data_parallel()` once, then build and
compile the model inside the scope it returns.

Backend-specific, like `keras_cdm.backend`; it sits beside it at the bottom
of the package and imports only Keras, the backend in use and
`keras_cdm.backend`.
"""

import atexit
import contextlib
import dataclasses
import os
import sys

import keras

from keras_cdm.backend import default_jit_compile
from keras_cdm.backend import keep_python_signal_handlers
from keras_cdm.backend import process_group
from keras_cdm.backend import start_tf_workers
from keras_cdm.backend import tf_workers


@dataclasses.dataclass(frozen=True)
class DataParallelSetup:
    """What `configure_data_parallel` set up.

    Attributes:
        description: str. One line for the logs (engine, devices, processes).
        scope: a context manager: build and compile the model inside it.
        rank: int. This process's index among `world` training processes.
        world: int. Processes training together (1 without several).
        jit_compile: the `compile(jit_compile=...)` that fits: `False` under
            a `tf.distribute` strategy and on PyTorch, `"auto"` otherwise
            (`keras_cdm.backend.default_jit_compile`).
    """

    description: str
    scope: object
    rank: int = 0
    world: int = 1
    jit_compile: object = "auto"


def configure_data_parallel():
    """Data parallelism over every local accelerator, per backend's own engine.

    Returns a `DataParallelSetup`: build and compile the model inside its
    `scope`, with its `jit_compile`.
    JAX: `keras.distribution.DataParallel` over all devices (multi-host after
    `keras.distribution.initialize()`, which reads the usual JAX coordinator
    environment). TensorFlow: `TPUStrategy` on a TPU, with `TF_CONFIG` set
    `MultiWorkerMirroredStrategy` over the workers it names (one device
    each), else `MirroredStrategy` over several GPUs.
    PyTorch: under `torchrun` (`WORLD_SIZE` > 1) one process per device in a
    `torch.distributed` group (NCCL on GPUs, gloo on CPUs), gradients averaged
    by `keras_cdm.backend.setup_torch_ddp`; otherwise one device.
    """
    backend = keras.backend.backend()
    initialize_processes()
    if backend == "jax":
        import jax

        if len(jax.devices()) > 1:
            processes = jax.process_count()
            # Several processes: each feeds its own share of the global batch
            # (the recipes shard their `StageDataset`), so Keras must not
            # shard again.
            keras.distribution.set_distribution(
                keras.distribution.DataParallel(auto_shard_dataset=processes == 1)
            )
            where = f", {processes} processes" if processes > 1 else ""
            return _setup(f"jax DataParallel over {len(jax.devices())} devices{where}")
    if backend == "torch" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        return _setup(f"torch DDP rank {dist.get_rank()} of {dist.get_world_size()}")
    if backend == "tensorflow":
        import tensorflow as tf

        strategy = None
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            strategy = tf.distribute.TPUStrategy(resolver)
        except (ValueError, tf.errors.NotFoundError):
            if tf_workers() is not None:
                strategy = tf_workers()
            elif len(tf.config.list_logical_devices("GPU")) > 1:
                strategy = tf.distribute.MirroredStrategy()
        if strategy is tf_workers() and strategy is not None:
            rank, world = process_group()
            if strategy.num_replicas_in_sync != world:
                # Each worker's share is fed to its one replica unchanged
                # (`keras_cdm.backend.per_process_input`).
                raise NotImplementedError(
                    f"TF_CONFIG names {world} workers, but they hold "
                    f"{strategy.num_replicas_in_sync} devices: several TensorFlow workers "
                    "train with one device each. Start one worker per device (limit each "
                    "with CUDA_VISIBLE_DEVICES)."
                )
            return _setup(
                f"tf MultiWorkerMirroredStrategy: worker {rank} of {world}", strategy.scope()
            )
        if strategy is not None:
            return _setup(
                f"tf {type(strategy).__name__} over {strategy.num_replicas_in_sync} replicas",
                strategy.scope(),
            )
    return _setup(f"{backend} on one device")


def _setup(description, strategy_scope=None):
    rank, world = process_group()
    return DataParallelSetup(
        description=description,
        scope=strategy_scope or contextlib.nullcontext(),
        rank=rank,
        world=world,
        jit_compile=default_jit_compile(under_strategy=strategy_scope is not None),
    )


_joined = []  # JAX: this process joined its coordinator


def initialize_processes():
    """Joins the processes this one was started with, if any: under JAX,
    `jax.distributed` from `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`
    and `JAX_PROCESS_ID`; under PyTorch, a `torch.distributed` group under
    `torchrun` (`WORLD_SIZE` > 1; NCCL on GPUs, gloo on CPUs). Returns
    `keras_cdm.backend.process_group()`: `(rank, number of processes)`.
    A `torch.distributed` group it starts is destroyed when Python exits
    normally. Calling it again does nothing."""

    backend = keras.backend.backend()
    if backend == "jax" and os.environ.get("JAX_COORDINATOR_ADDRESS") and not _joined:
        # (Asking JAX how many processes there are would start its backend,
        # after which it can no longer join others.)
        with keep_python_signal_handlers():
            _initialize_jax_processes()
        _joined.append(True)
    if backend == "tensorflow":
        start_tf_workers()
    if backend == "torch" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            atexit.register(_leave_torch_group)
    return process_group()


def _leave_torch_group():
    """Destroys this process's `torch.distributed` group while Python is
    still whole. Left to interpreter shutdown, gloo's worker threads can be
    torn down unjoined: the process then aborts ("terminate called without
    an active exception", SIGABRT) after its work is done, and torchrun
    reports the run as failed. After an uncaught exception the group is
    left alone: destroying it could wait on a collective the other
    processes never reach."""
    import torch.distributed as dist

    if dist.is_initialized() and getattr(sys, "last_value", None) is None:
        dist.destroy_process_group()


def _initialize_jax_processes():
    """`keras.distribution.initialize` from `JAX_COORDINATOR_ADDRESS`,
    `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` (JAX reads only the first of
    them itself), with gloo collectives when the devices are CPUs."""
    import jax

    values = {}
    for name in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        text = os.environ.get(name)
        if text is None or not text.strip().isdigit():
            raise ValueError(
                f"JAX_COORDINATOR_ADDRESS is set, so this is one process of several: {name} "
                f"must be set too, to an int >= 0. Received: {name}={text!r}"
            )
        values[name] = int(text)
    num, pid = values["JAX_NUM_PROCESSES"], values["JAX_PROCESS_ID"]
    if not 0 <= pid < num:
        raise ValueError(
            f"JAX_PROCESS_ID must lie in [0, JAX_NUM_PROCESSES={num}). Received: {pid}"
        )
    # CPU devices in several processes need a collectives implementation to
    # talk to each other (it does not touch an accelerator's collectives).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    keras.distribution.initialize(os.environ["JAX_COORDINATOR_ADDRESS"], num, pid)
