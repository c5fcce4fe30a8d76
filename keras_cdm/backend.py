"""The only backend-specific code of keras_cdm: compiling a stateful function.

`compile_stateful(fn, read_variables, state_variables)` returns a callable
that runs `fn(*args)` compiled once per input shape — `jax.jit` through a
`keras.StatelessScope`, `tf.function(jit_compile=True)`, or eager PyTorch
under `torch.no_grad()` — and writes back the variables in `state_variables`
(e.g. a `SeedGenerator` state) that `fn` updates.
"""

import keras


def compile_stateful(fn, read_variables, state_variables):
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
            [v.value for v in read_variables],
            [v.value for v in state_variables],
            *args,
        )
        for var, value in zip(state_variables, new_state):
            var.assign(value)
        return out

    return run


def replica_context():
    """`(replica index, number of replicas)` of the running training step.

    Only TensorFlow `tf.distribute` runs one copy of the step per replica, each
    reading the same (mirrored) seed state; JAX `keras.distribution` is one
    global program and PyTorch DDP seeds each process itself, so they are
    `(0, 1)`.
    """
    if keras.backend.backend() != "tensorflow":
        return 0, 1
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return 0, 1
    return ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync
