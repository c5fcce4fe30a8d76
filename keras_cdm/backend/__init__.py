"""The only backend-specific code of keras_cdm, each piece small and chosen
by measurement (docs/SPEED.md):

- `compile_stateful`: a stateful function compiled once per input shape
  (`jax.jit` through a `keras.StatelessScope`, `tf.function(jit_compile=True)`,
  eager PyTorch under `torch.no_grad()`), writing back the state variables
  (e.g. a `SeedGenerator` state) that it updates.
- `random_normal` / `random_uniform`: Keras's draws, with Philox on TensorFlow.
- `replica_context`, `torch_process_group`, `setup_torch_ddp`: which replica
  a training step runs on, and PyTorch DDP gradient averaging.
- `local_devices`, `spread_over_devices`, `gather_processes`: a sampling
  batch split over this process's devices, a request over processes.
- `multi_step_function`: `steps_per_execution` on PyTorch.
- `no_gradient`: a frozen network's forward pass without autograd (PyTorch).
- PyTorch fast paths: `fused_group_norm`, `fused_conv2d`,
  `fused_moving_average`, `run_network_directly` (a network run as plain
  PyTorch calls: `torch_network.py`); and `prefers_channel_stats_group_norm`
  (JAX).
"""

import contextlib
import os
import threading

import keras
import numpy as np


def compile_stateful(fn, read_variables, state_variables):
    """`fn(*args)` compiled once per input shape; the variables in
    `state_variables` that `fn` updates are written back after each call.
    `read_variables` are the variables `fn` only reads (passed as inputs to
    `jax.jit`)."""
    backend = keras.backend.backend()
    if backend == "jax":
        return _compile_jax(fn, read_variables, state_variables)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True, reduce_retracing=False)
    if backend == "torch":
        import torch

        def run(*args):
            with torch.no_grad():
                return fn(*args)

        return run
    raise ValueError(f"Unsupported Keras backend: {backend!r}")


def no_gradient():
    """A context in which the computation records nothing for gradients:
    `torch.no_grad()` on PyTorch (a frozen teacher's forward pass then
    costs no autograd graph); elsewhere nothing (`ops.stop_gradient` on
    the result is enough for JAX and TensorFlow)."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()
    import contextlib

    return contextlib.nullcontext()


def _compile_jax(fn, read_variables, state_variables):
    import jax

    read_variables = list(read_variables)
    state_variables = list(state_variables)

    def pure(read_values, state_values, *args):
        mapping = list(zip(read_variables, read_values)) + list(zip(state_variables, state_values))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            out = fn(*args)
        new_state = []
        for var, old in zip(state_variables, state_values):
            value = scope.get_current_value(var)
            new_state.append(old if value is None else value)
        return out, new_state

    jitted = jax.jit(pure)

    def run(*args):
        out, new_state = jitted(
            [_local_value(v.value) for v in read_variables],
            [v.value for v in state_variables],
            *args,
        )
        for var, value in zip(state_variables, new_state):
            var.assign(value)
        return out

    return run


def _local_value(value):
    """A replicated variable of several JAX processes (a global array) as
    this process's own copy, so a compiled call of this process alone
    (sampling) can read it."""
    if getattr(value, "is_fully_addressable", True):
        return value
    return value.addressable_data(0)


def has_accelerator():
    """Whether the backend sees a GPU or TPU (not only CPUs)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return any(d.platform != "cpu" for d in jax.devices())
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
    import torch

    return torch.cuda.is_available()


def local_devices():
    """How many devices of this process a sampling batch is spread over:
    JAX's local devices (GPUs, TPU cores, or CPU devices made with
    `--xla_force_host_platform_device_count`); 1 on TensorFlow and PyTorch
    (one process per device there: see `gather_processes`)."""
    if keras.backend.backend() == "jax":
        import jax

        return len(jax.local_devices())
    return 1


def spread_over_devices(arrays):
    """Places each array (batch first, the batch a multiple of
    `local_devices()`) split along the batch over this process's devices,
    so a compiled step runs on all of them (JAX); returns them unchanged
    with one device."""
    if local_devices() == 1:
        return [keras.ops.convert_to_tensor(a) for a in arrays]
    import jax
    import numpy as np  # the mesh's device array
    from jax.sharding import Mesh
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec

    mesh = Mesh(np.array(jax.local_devices()), ("batch",))
    sharding = NamedSharding(mesh, PartitionSpec("batch"))
    return [jax.device_put(a, sharding) for a in arrays]


def gather_processes(local, total):
    """Every process's `local` array (its share of a request, in rank order,
    batch first) concatenated, in every process of `process_group()`: a
    collective that each process must call. `total` is the request's size
    (the shares may differ by one)."""
    import numpy as np

    rank, world = process_group()
    if world == 1:
        return local
    size = -(-total // world)
    padded = np.zeros((size,) + local.shape[1:], local.dtype)
    padded[: len(local)] = local
    if keras.backend.backend() == "jax":
        from jax.experimental import multihost_utils

        shares = np.asarray(multihost_utils.process_allgather(padded))
    elif keras.backend.backend() == "tensorflow":
        shares = tf_gather_workers(padded).reshape((world,) + padded.shape)
    else:
        import torch
        import torch.distributed as dist

        tensor = torch.from_numpy(padded)
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor)
        shares = np.stack([p.cpu().numpy() for p in parts])
    sizes = [len(s) for s in np.array_split(np.arange(total), world)]
    return np.concatenate([shares[r, : sizes[r]] for r in range(world)], axis=0)


def random_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    """`keras.random.normal`, drawn with the Philox generator on TensorFlow.

    Keras's TensorFlow backend calls `tf.random.stateless_normal` with
    `alg="auto_select"`, which XLA:CPU runs about 16x slower than Philox
    (23 ms vs 1.4 ms for a 16x32x32x3 draw inside a `jit_compile` function
    on 2 cores): that was a third of a base32_tiny sampling step. Same
    distribution and seeding semantics (`seed` is a `SeedGenerator`, advanced
    once per call); the stream differs from `keras.random.normal` on TF only.
    """
    if keras.backend.backend() != "tensorflow" or not isinstance(seed, keras.random.SeedGenerator):
        return keras.random.normal(shape, mean=mean, stddev=stddev, dtype=dtype, seed=seed)
    import tensorflow as tf

    dtype = dtype or keras.config.floatx()
    return tf.random.stateless_normal(
        shape, _tf_seed(seed), mean=mean, stddev=stddev, dtype=dtype, alg="philox"
    )


def random_uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
    """`keras.random.uniform` with the Philox generator on TensorFlow (see
    `random_normal`)."""
    if keras.backend.backend() != "tensorflow" or not isinstance(seed, keras.random.SeedGenerator):
        return keras.random.uniform(shape, minval=minval, maxval=maxval, dtype=dtype, seed=seed)
    import tensorflow as tf

    dtype = dtype or keras.config.floatx()
    return tf.random.stateless_uniform(
        shape,
        _tf_seed(seed),
        minval=tf.cast(minval, dtype),
        maxval=tf.cast(maxval, dtype),
        dtype=dtype,
        alg="philox",
    )


def _tf_seed(seed_generator):
    import tensorflow as tf

    seed = seed_generator.next()
    if seed.dtype != tf.int32:  # XLA's stateless ops take int32 seeds, as in Keras
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
    return seed


def replica_context():
    """`(replica index, number of replicas)` of the running training step.

    TensorFlow `tf.distribute` runs one copy of the step per replica, each
    reading the same (mirrored) seed state; PyTorch DDP runs one process per
    replica, each holding the same seed state. In both cases every replica
    draws the numbers of the whole global batch and keeps its own slice (see
    `DiffusionModel._draw`), so N replicas draw what one device would draw
    for the global batch. JAX `keras.distribution` is one global program: `(0, 1)`.
    """
    backend = keras.backend.backend()
    if backend == "torch":
        return torch_process_group()
    if backend != "tensorflow":
        return 0, 1
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return 0, 1
    return ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync


def fused_group_norm(x, groups, gamma, beta, epsilon):
    """GroupNorm of an NHWC tensor with the backend's fused kernel, or `None`.

    Only PyTorch has one: its `group_norm` runs on the NCHW view of the NHWC
    tensor (channels-last memory, no copy). JAX uses per-channel statistics
    instead (`prefers_channel_stats_group_norm`), TF Keras's generic moments.
    """
    if keras.backend.backend() != "torch":
        return None
    import torch.nn.functional as F

    if x.dtype != gamma.value.dtype:
        return None
    y = F.group_norm(x.permute(0, 3, 1, 2), groups, gamma.value, beta.value, epsilon)
    return y.permute(0, 2, 3, 1)


def prefers_channel_stats_group_norm():
    """Whether GroupNorm runs faster from per-channel statistics (JAX).

    XLA:CPU under JAX reduces Keras's `(batch, h, w, groups, channels/groups)`
    view 4-8x slower than per-channel sums over `(h, w)` followed by a tiny
    per-group combine (`keras_cdm.layers.GroupNorm32`); under TensorFlow's XLA
    both take the same time, and PyTorch has its fused kernel.
    """
    return keras.backend.backend() == "jax"


def fused_conv2d(x, kernel, strides, padding, dilation_rate, bias=None):
    """Stride-1 NHWC convolution (plus bias) without layout copies on PyTorch,
    else `None`.

    `x.permute(0, 3, 1, 2)` is an NCHW view with channels-last memory, which
    PyTorch's convolution kernels consume and produce as is; permuting the
    output back gives a contiguous NHWC tensor. The bias is added inside the
    convolution kernel (no separate broadcast add and its backward pass).
    """
    if keras.backend.backend() != "torch" or len(x.shape) != 4:
        return None
    if tuple(strides) != (1, 1) or tuple(dilation_rate) != (1, 1):
        return None
    kh, kw = kernel.shape[0], kernel.shape[1]
    if padding == "same":
        if kh % 2 == 0 or kw % 2 == 0:
            return None
        pad = (kh // 2, kw // 2)
    elif padding == "valid":
        pad = (0, 0)
    else:
        return None
    import torch.nn.functional as F

    w = kernel.value if hasattr(kernel, "value") else kernel
    b = bias.value if hasattr(bias, "value") else bias
    if x.dtype != w.dtype or (b is not None and b.dtype != w.dtype):
        return None
    y = F.conv2d(x.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1), b, padding=pad)
    return y.permute(0, 2, 3, 1)


def fused_moving_average(targets, sources, decay):
    """`t = decay * t + (1 - decay) * s` for every (target, source) variable
    pair in one multi-tensor kernel on PyTorch; returns `False` elsewhere.

    Keras's generic path issues several ops per variable, each with Python
    overhead that XLA compiles away but eager PyTorch pays every step (13 ms
    per step for the 145 weights of base32_tiny on a CPU). `decay` is a scalar
    tensor, so no value leaves the device.
    """
    if keras.backend.backend() != "torch":
        return False
    import torch

    targets = [v._value for v in targets]
    sources = [v._value for v in sources]
    if any(t.dtype != s.dtype or not t.is_floating_point() for t, s in zip(targets, sources)):
        return False
    with torch.no_grad():
        # t + (1 - decay) * (s - t), one pass over each pair.
        torch._foreach_lerp_(targets, sources, 1.0 - decay.to(targets[0].dtype))
    return True


def torch_process_group():
    """`(rank, world size)` of the initialised `torch.distributed` group, else `(0, 1)`."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def process_group():
    """`(rank, number of processes)` training together: a `torch.distributed`
    group under PyTorch, `jax.distributed` processes under JAX, the workers
    of `start_tf_workers` under TensorFlow; `(0, 1)` otherwise."""
    backend = keras.backend.backend()
    if backend == "torch":
        return torch_process_group()
    if backend == "jax":
        import jax

        return jax.process_index(), jax.process_count()
    if tf_workers() is not None:
        return _tf_worker_rank(tf_workers())
    return 0, 1


def any_process(flag):
    """Whether `flag` is true in any process of `process_group()` (a
    collective: every process must call it, at the same point)."""
    if keras.backend.backend() == "jax":
        import numpy as np
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.array([1 if flag else 0], "int32"))
        return bool(np.max(flags))
    if keras.backend.backend() == "tensorflow":
        return tf_any_worker(flag)
    return torch_any_rank(flag)


_TF_COLLECTIVES = {}


def _tf_worker_collective(kind):
    """A compiled collective over the workers of `start_tf_workers`, on one
    value per worker: `"sum"` (reduced) or `"gather"` (concatenated on the
    first axis in rank order). Every worker must call it."""
    import tensorflow as tf

    if kind not in _TF_COLLECTIVES:
        strategy = tf_workers()

        def combine(value):
            per_worker = strategy.run(tf.identity, args=(value,))
            if kind == "sum":
                return strategy.reduce("SUM", per_worker, axis=None)
            return strategy.gather(per_worker, axis=0)

        _TF_COLLECTIVES[kind] = tf.function(combine, reduce_retracing=True)
    return _TF_COLLECTIVES[kind]


def tf_gather_workers(array):
    """Every worker's `array` (same shape everywhere) concatenated on the
    first axis in rank order, on every worker of `start_tf_workers` (a
    collective: every worker must call it)."""
    import numpy as np
    import tensorflow as tf

    return np.asarray(_tf_worker_collective("gather")(tf.constant(array)))


def tf_any_worker(flag):
    """Whether `flag` is true on any worker of `start_tf_workers` (a
    collective: every worker must call it)."""
    import tensorflow as tf

    return int(_tf_worker_collective("sum")(tf.constant(1 if flag else 0, tf.int32))) > 0


def torch_any_rank(flag):
    """Whether `flag` is true in any process of the `torch.distributed`
    group (an all-reduce of one int: every process must call it)."""
    import torch
    import torch.distributed as dist

    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def setup_torch_ddp(model):
    """Makes `model.fit` data-parallel across a `torch.distributed` process group.

    Keras's PyTorch trainer computes gradients with `loss.backward()` and
    applies them with the optimizer, outside any `DistributedDataParallel`
    wrapper (wrapping the Keras model in DDP does not synchronise anything).
    This function (1) broadcasts every variable of `model` from rank 0, so all
    replicas start identical, and (2) registers a hook on each trainable
    parameter that averages its gradient over the group as soon as
    `backward()` has accumulated it, before the optimizer reads it. Every
    replica then applies the same update and the weights (and the EMA copy)
    stay identical. Each process must feed its own shard of the global batch
    (`base_dataset(..., shard=(world, rank))`); the noise and timesteps of each
    shard are drawn distinct per replica by the model (`replica_context`).

    Call it after the model is built (and after loading a checkpoint), in
    every process, once `torch.distributed.init_process_group` has run.
    Returns the world size.
    """
    import torch
    import torch.distributed as dist

    if keras.backend.backend() != "torch":
        raise ValueError(
            f"setup_torch_ddp needs the torch backend. Received: {keras.backend.backend()}"
        )
    rank, world = torch_process_group()
    if world == 1:
        return 1
    with torch.no_grad():
        for var in model.variables:
            value = var._value
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                dist.broadcast(value.data, src=0)
    if getattr(model, "_ddp_hooks", None):
        return world

    def average(param):
        if param.grad is not None:
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
            param.grad.div_(world)

    hooks = []
    for var in model.trainable_variables:
        hooks.append(var._value.register_post_accumulate_grad_hook(average))
    object.__setattr__(model, "_ddp_hooks", hooks)
    return world


class keep_variables_on_failure:
    """Context manager that leaves `model` usable when `fit`/`evaluate` fails.

    Keras's JAX trainer detaches every variable's value while it runs
    (`_purge_model_variables`) and reattaches them only from a state that
    exists once a step has finished; when the very first step fails (a batch
    rejected while tracing), the values stay detached and every later call
    raises `TypeError: 'NoneType' object is not callable`. This restores the
    values the variables held before the call, and after a failure later in
    the loop (an exception or a `KeyboardInterrupt` raised by a callback) it
    writes the trainer's state of the last finished step back into the
    variables. Other backends need nothing.
    """

    def __init__(self, model):
        self.model = model
        self.saved = None

    def __enter__(self):
        if keras.backend.backend() == "jax":
            self.saved = [(v, v._value) for v in self._variables()]
            self.state_on_entry = getattr(self.model, "_jax_state", None)
        return self

    def _variables(self):
        variables = list(self.model.variables)
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            variables += list(optimizer.variables)
        variables += [v for m in self.model.metrics for v in m.variables]
        return variables

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and keras.backend.backend() == "jax":
            # A failure (or KeyboardInterrupt) after a finished step: the
            # trainer holds that step's state; put it back into the
            # variables (the values saved on entry were donated to it).
            sync = getattr(self.model, "jax_state_sync", None)
            state = getattr(self.model, "_jax_state", None)
            if sync is not None and state and state is not self.state_on_entry:
                sync()
        if exc_type is not None and self.saved:
            for var, value in self.saved:
                if var._value is None and value is not None:
                    var._value = value
        return False


# ----------------------------------------------------------------------
# TensorFlow workers (TF_CONFIG, MultiWorkerMirroredStrategy)
# ----------------------------------------------------------------------
_TF_WORKERS = []  # the strategy that joined this process to its workers


def start_tf_workers():
    """Under TensorFlow with `TF_CONFIG` set: the
    `tf.distribute.MultiWorkerMirroredStrategy` that joins this process to
    the other workers (created once; it waits for all of them). `None`
    otherwise."""
    if keras.backend.backend() != "tensorflow" or not os.environ.get("TF_CONFIG"):
        return None
    if not _TF_WORKERS:
        import tensorflow as tf

        with keep_python_signal_handlers():
            _TF_WORKERS.append(tf.distribute.MultiWorkerMirroredStrategy())
    return _TF_WORKERS[0]


@contextlib.contextmanager
def keep_python_signal_handlers():
    """Installs the Python SIGINT/SIGTERM handlers in place on entry again
    on exit. Joining other processes (`jax.distributed`, TensorFlow's
    workers) starts the runtime's preemption notifier, which takes SIGTERM
    over below Python: a recipe's handler would never run and a scheduler's
    SIGTERM would be ignored."""
    import signal

    main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            if main and handler is not None:
                signal.signal(signum, handler)


def tf_workers():
    """The strategy `start_tf_workers` created, or `None`."""
    return _TF_WORKERS[0] if _TF_WORKERS else None


def _tf_worker_rank(strategy):
    """`(rank, workers)` of this TensorFlow worker: the chief (if the
    cluster has one) first, then the workers in index order, as
    `MultiWorkerMirroredStrategy` numbers its replicas."""
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec()
    chiefs = len(spec.job_tasks("chief")) if "chief" in spec.jobs else 0
    workers = len(spec.job_tasks("worker")) if "worker" in spec.jobs else 0
    rank = resolver.task_id + (chiefs if resolver.task_type == "worker" else 0)
    return rank, chiefs + workers


def first_local_batch(strategy, epoch_iterator):
    """The first batch of a TensorFlow `fit`'s epoch iterator as this
    worker's first replica holds it, under several workers; `None` otherwise.

    Keras 3.15's TensorFlow trainer builds the model from the first batch
    reduced with `strategy.reduce` over its nested structure, which
    `MultiWorkerMirroredStrategy` cannot do (it fails with "Attempt to
    convert a value (PerReplica...)"); building only needs the shapes, which
    any replica's share has.
    """
    if strategy is None or strategy is not tf_workers():
        return None
    import tensorflow as tf

    for _, _, iterator in epoch_iterator:
        return keras.tree.map_structure(
            lambda v: (
                strategy.experimental_local_results(v)[0]
                if isinstance(v, tf.distribute.DistributedValues)
                else v
            ),
            next(iterator),
        )
    return None


def step_replicas(across_processes=True):
    """How many replicas run the step being traced or run, each on its own
    share of the batch, and can all-reduce inside it (`replicas_mean`,
    `replicas_gather`): TensorFlow's `tf.distribute` replicas; with
    `across_processes`, PyTorch DDP's ranks (each runs the step itself).
    1 elsewhere (JAX runs one global program)."""
    ctx = _tf_replica_ctx()
    if ctx is not None:
        return ctx.num_replicas_in_sync
    if across_processes and keras.backend.backend() == "torch":
        return torch_process_group()[1]
    return 1


def replicas_mean(value):
    """Inside a step run on several replicas (`step_replicas`): the mean of
    `value` over them (an all-reduce); elsewhere `value`."""
    ctx = _tf_replica_ctx()
    if ctx is not None:
        return ctx.all_reduce("MEAN", value)
    if keras.backend.backend() == "torch" and torch_process_group()[1] > 1:
        import torch.distributed as dist

        total = keras.ops.convert_to_tensor(value, "float32").detach().clone()
        dist.all_reduce(total)
        return total / dist.get_world_size()
    return value


def replicas_gather(value):
    """Inside a step run on several replicas (`step_replicas`): every
    replica's `value` stacked on a new first axis (an all-gather), in
    replica order; elsewhere `value[None]`."""
    ctx = _tf_replica_ctx()
    if ctx is not None:
        return ctx.all_gather(keras.ops.expand_dims(value, 0), axis=0)
    if keras.backend.backend() == "torch" and torch_process_group()[1] > 1:
        import torch
        import torch.distributed as dist

        value = keras.ops.convert_to_tensor(value).detach().clone()
        parts = [torch.empty_like(value) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, value)
        return torch.stack(parts)
    return keras.ops.expand_dims(value, 0)


def replica_logs_for_keras(logs):
    """The logs a step returns, shaped for Keras's reduction over replicas:
    under several TensorFlow workers Keras 3.15 reduces each with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on a scalar, so
    each (already equal on every replica) becomes shape `(1,)` and comes
    back a scalar."""
    strategy = tf_workers()
    if strategy is None or _tf_replica_ctx() is None:
        return logs
    return {k: keras.ops.reshape(v, (1,)) for k, v in logs.items()}


def _tf_replica_ctx():
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return None
    return ctx


def per_process_input(model, data):
    """What `fit` should get for `data`, this process's share of every global
    batch: `data` itself, except under several TensorFlow workers, where
    Keras would shard and re-batch the input again (`tf.distribute`'s
    auto-sharding): there a distributed dataset that hands this worker's
    replica its share unchanged. Accepts a `tf.data.Dataset` or a dataset
    with `element_spec` and `__getitem__` (`keras_cdm.data.StageDataset`)."""
    strategy = tf_workers()
    if strategy is None or getattr(model, "distribute_strategy", None) is not strategy:
        return data
    import tensorflow as tf

    if not isinstance(data, tf.data.Dataset):
        data = _indexed_batches_as_tf_data(data)
    return strategy.distribute_datasets_from_function(lambda context: data)


def _indexed_batches_as_tf_data(batches):
    """Batch 0, 1, 2, ... of `batches` (`__getitem__`, `element_spec`) as a
    `tf.data.Dataset`, prepared on `batches.workers` threads as Keras's
    `PyDataset` adapter would (in order)."""
    import tensorflow as tf

    def tensor_spec(spec):  # spec: objects with shape and dtype, in tuples or dicts
        if isinstance(spec, dict):
            return {k: tensor_spec(v) for k, v in spec.items()}
        if hasattr(spec, "shape") and hasattr(spec, "dtype"):
            return tf.TensorSpec(spec.shape, tf.as_dtype(spec.dtype))
        return tuple(tensor_spec(v) for v in spec)

    signature = tensor_spec(batches.element_spec)
    flat = keras.tree.flatten(signature)

    def load(index):
        return tuple(keras.tree.flatten(batches[int(index)]))

    def fetch(index):
        parts = tf.numpy_function(load, [index], [s.dtype for s in flat])
        for part, spec in zip(parts, flat):
            part.set_shape(spec.shape)
        return keras.tree.pack_sequence_as(signature, parts)

    workers = max(1, int(getattr(batches, "workers", 1) or 1))
    data = tf.data.Dataset.counter().map(fetch, num_parallel_calls=workers, deterministic=True)
    return data.prefetch(2)


def multi_step_function(model, kind):
    """Keras's PyTorch trainer refuses `steps_per_execution > 1`; returns a
    `train_function` (`kind="train"`) or `test_function` (`"test"`) that runs
    the batches of one execution one after another and returns the logs of
    the last, as the JAX and TensorFlow trainers do. Other backends: `None`
    (Keras's own functions support it)."""
    if keras.backend.backend() != "torch" or model.steps_per_execution == 1:
        return None
    if kind == "train":
        step = model.train_step
    else:
        import torch

        def step(data):
            with torch.no_grad():
                return model.test_step(data)

    if model._should_torch_compile():
        import torch

        step = torch.compile(step)

    def run(data):
        logs = None
        for batch in data:
            logs = step(batch)
        return logs

    return run


# ----------------------------------------------------------------------
# Networks as plain PyTorch (keras_cdm.backend.torch_network)
# ----------------------------------------------------------------------
# Keras's per-layer `__call__` and each `keras.ops` call cost Python on
# eager PyTorch, a few hundred times per forward: the host-bound share of a
# small stage's step (docs/SPEED.md). JAX and TensorFlow trace the forward
# once per shape, where it costs nothing.
DIRECT_CALLS_ENV = "KERAS_CDM_DIRECT_CALLS"


def direct_calls_enabled():
    """Whether networks run as plain PyTorch on the PyTorch backend (on
    unless `KERAS_CDM_DIRECT_CALLS=0`: then every layer runs through
    Keras's `__call__`)."""
    return os.environ.get(DIRECT_CALLS_ENV, "1") != "0"


def run_network_directly(network, inputs, training, standardized=False):
    """A functional network's forward pass as plain PyTorch calls on its own
    variables (`torch_network.Program`: the same computation, casts and
    random draws as Keras's path), or None where that path does not apply:
    another backend, symbolic inputs, a stateless scope, a graph shape the
    program does not cover, or `KERAS_CDM_DIRECT_CALLS=0`.

    `inputs` is what the network's `call` receives, or with
    `standardized=False` what a caller would pass to `network(...)`: a dict
    of tensors (each cast to its `keras.Input`'s dtype here, as Keras does).
    """
    if keras.backend.backend() != "torch" or not direct_calls_enabled():
        return None
    from keras_cdm.backend import torch_network

    program = torch_network.Program.of(network)
    if program is None:
        return None
    if standardized:
        flat = network._standardize_inputs(inputs)
    else:
        if not isinstance(inputs, dict) or len(inputs) != len(program.input_keys):
            return None
        flat = [inputs.get(k) for k in program.input_keys]
        if not all(map(is_torch_tensor, flat)):
            return None
        for i, (x, ref) in enumerate(zip(flat, network.inputs)):
            if len(x.shape) != len(ref.shape):
                return None
            if x.dtype != torch_network.torch_dtype(ref.dtype):
                flat[i] = x.to(torch_network.torch_dtype(ref.dtype))
    if not torch_network.runnable(flat):
        return None
    return program(flat, training)


def lookup_table(owner, table, t, like):
    """`table[t]` for a NumPy table held by `owner` (e.g. a diffusion's
    schedule), in `like`'s dtype, shaped `(batch, 1, ..., 1)` to broadcast
    against `like`: on PyTorch plain indexing of a tensor cached on `owner`
    (Keras's conversion, take, cast and reshape cost ~0.3 ms of host time
    per lookup there, 16 lookups per training step); None elsewhere."""
    if keras.backend.backend() != "torch" or not (is_torch_tensor(t) and is_torch_tensor(like)):
        return None
    import torch

    cache = owner.__dict__.setdefault("_keras_cdm_torch_tables", {})
    key = (id(table), t.device)
    values = cache.get(key, (None, None))[1]
    if values is None:
        values = torch.as_tensor(np.asarray(table, np.float32), device=t.device)
        # Only the owner's own tables (a temporary's id can be reused).
        if any(v is table for v in vars(owner).values()):
            cache[key] = (table, values)
    out = values[t.long()].to(like.dtype)
    return out.reshape((-1,) + (1,) * (like.dim() - 1))


def train_step(model, data):
    """A training step of a keras_cdm model (its `call` returns a raw batch
    unchanged, its work is in `compute_loss`): on PyTorch the leaner step of
    `torch_trainer.py`; None elsewhere, or with `KERAS_CDM_DIRECT_CALLS=0`
    (then Keras's own)."""
    if keras.backend.backend() != "torch" or not direct_calls_enabled():
        return None
    from keras_cdm.backend import torch_trainer

    return torch_trainer.train_step(model, data)


def model_losses(model):
    """`model.losses`; on PyTorch from lists made once per `fit`, not a walk
    of every layer and weight per step (`torch_trainer.losses`)."""
    if keras.backend.backend() != "torch" or not direct_calls_enabled():
        return model.losses
    from keras.src.backend.common.stateless_scope import in_stateless_scope

    from keras_cdm.backend import torch_trainer

    return model.losses if in_stateless_scope() else torch_trainer.losses(model)


def start_of_fit(model):
    """What a new `fit` resets: the lists `train_step` and `model_losses`
    keep on PyTorch (the trainable weights may have changed)."""
    if keras.backend.backend() == "torch":
        from keras_cdm.backend import torch_trainer

        torch_trainer.forget(model)


def call_network(network, inputs, training=None):
    """`network(inputs, training=training)`: on PyTorch as plain PyTorch
    calls without the network's own Keras `__call__` where that applies
    (`run_network_directly`), else through it."""
    out = run_network_directly(network, inputs, training)
    return network(inputs, training=training) if out is None else out


def is_torch_tensor(x):
    import torch

    return isinstance(x, torch.Tensor)


# ----------------------------------------------------------------------
# What the recipes ask of the backend (they never branch on it themselves)
# ----------------------------------------------------------------------
def name():
    """The Keras backend in use: `"jax"`, `"tensorflow"` or `"torch"`."""
    return keras.backend.backend()


def default_jit_compile(under_strategy=False):
    """The recipes' `jit_compile`: off on PyTorch (`torch.compile` takes
    minutes on a CPU for no gain here) and under a `tf.distribute` strategy
    (XLA cannot place its mirrored seed state); Keras's `"auto"` otherwise."""
    if keras.backend.backend() == "torch" or under_strategy:
        return False
    return "auto"


def share_across_processes(model):
    """Makes `model.fit` data-parallel across the processes where the
    backend needs it: PyTorch (`setup_torch_ddp`). JAX's `DataParallel`
    does it in its distribution; a no-op there."""
    if keras.backend.backend() == "torch":
        setup_torch_ddp(model)


def sampling_needs_every_process(world):
    """Whether sampling from one process of `world` would wait for the
    others (JAX: a sharded model's computations are collective)."""
    return world > 1 and keras.backend.backend() == "jax"


JAX_PROCESS_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def launch_prefix(world):
    """The start of a shell command that relaunches this run with its
    `world` processes: `KERAS_BACKEND=... python` for one; `torchrun` with
    the same layout on PyTorch; this process's `JAX_*` variables on JAX,
    its `TF_CONFIG` on TensorFlow."""
    import os

    command = [f"KERAS_BACKEND={keras.backend.backend()}", "python"]
    if world > 1 and keras.backend.backend() == "torch":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        command[1:] = ["torchrun", f"--nnodes={world // local}", f"--nproc_per_node={local}"]
        if world > local:
            # Several nodes: this node's rank; the rendezvous address when
            # torchrun's static rendezvous made it the master's (else a
            # placeholder to fill in).
            command.append(f"--node_rank={os.environ.get('GROUP_RANK', 'I')}")
            endpoint = "HOST:PORT"
            if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
                endpoint = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
            command.append(f"--rdzv_endpoint={endpoint}")
    elif world > 1 and keras.backend.backend() == "tensorflow":
        command[:0] = ["TF_CONFIG=" + os.environ["TF_CONFIG"]]
    elif world > 1:
        command[:0] = [f"{n}={os.environ[n]}" for n in JAX_PROCESS_VARIABLES]
    return command


def portable_compile_config(config):
    """A saved compile config without what tied it to the backend that
    saved it. It carries the `jit_compile` its backend resolved (True under
    JAX), which under PyTorch means `torch.compile`, which fails on these
    models: dropped, so the loading backend's default applies. Keras also
    records the backend's own optimizer class (e.g. the PyTorch Adam, which
    runs torch kernels): replaced by the public class, which builds the
    right one for the loading backend."""
    config = dict(config)
    config.pop("jit_compile", None)
    optimizer = config.get("optimizer")
    if isinstance(optimizer, dict) and str(optimizer.get("module", "")).startswith(
        "keras.src.backend."
    ):
        config["optimizer"] = dict(optimizer, module="keras.optimizers")
    return config
