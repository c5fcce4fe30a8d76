"""Stops `fit` at the first batch with bad labels, bad pixels or a non-finite loss.

A diffusion stage trains for days; one out-of-range label or one NaN pixel
would otherwise turn the weights into NaN and the run would go on silently.
The training step itself flags such a batch (a few reductions, see
`DiffusionModel.compute_loss`), records the first flagged step and feeds the
network a sanitised copy, so the weights stay finite; this callback reads the
flag from the logs and stops training with an error that names the step.

Reading the logs is a device-to-host copy: Keras converts them for callbacks
once per execution, i.e. every step by default. With
`compile(steps_per_execution=N)` the flag is read once per N steps and the
error still names the flagged step (the first one, if several were).

`GuardedFit` is what every keras_cdm model trained with `fit` shares (a
stage, a distillation round): the input checks before anything compiles,
this guard, Ctrl-C at a step boundary, `evaluate` per seed.
"""

import keras
import numpy as np
from keras import ops

from keras_cdm.backend import first_local_batch
from keras_cdm.backend import keep_variables_on_failure
from keras_cdm.backend import multi_step_function
from keras_cdm.backend import portable_compile_config
from keras_cdm.backend import replica_logs_for_keras
from keras_cdm.backend import replicas_gather
from keras_cdm.backend import replicas_mean
from keras_cdm.backend import start_of_fit
from keras_cdm.backend import step_replicas
from keras_cdm.backend import train_step as backend_train_step
from keras_cdm.utils import interrupts
from keras_cdm.utils.seeds import check_seed

# Bits of the `bad_input` metric written by `DiffusionModel.compute_loss`.
BAD_LABELS = 1
BAD_IMAGES = 2
NONFINITE_LOSS = 4
GUARD_METRIC = "bad_input"
GUARD_BATCH = "bad_input_batch"


class InputGuardMetric(keras.metrics.Metric):
    """The flags of the first flagged batch since the last reset (an epoch),
    and which batch of the epoch it was (1 for the first).

    Its result is a dict, `{"bad_input": flags, "bad_input_batch": n}`
    (both 0 while no batch was flagged), which `TrainingGuard` reads and
    removes from the logs.
    """

    def __init__(self, name=GUARD_METRIC, **kwargs):
        super().__init__(name=name, **kwargs)
        self.flags = self.add_variable(shape=(), initializer="zeros", name="flags")
        self.seen = self.add_variable(shape=(), initializer="zeros", dtype="int32", name="seen")
        self.batch = self.add_variable(shape=(), initializer="zeros", dtype="int32", name="batch")

    def update_state(self, flags):
        ops = keras.ops
        flags = ops.cast(flags, "float32")
        seen = self.seen.value + 1
        first = ops.logical_and(ops.equal(self.flags.value, 0.0), flags > 0.0)
        self.seen.assign(seen)
        self.batch.assign(ops.where(first, seen, self.batch.value))
        self.flags.assign(ops.where(first, flags, self.flags.value))

    def result(self):
        return {
            GUARD_METRIC: keras.ops.copy(self.flags.value),
            GUARD_BATCH: keras.ops.copy(self.batch.value),
        }

    def reset_state(self):
        self.flags.assign(0.0)
        self.seen.assign(0)
        self.batch.assign(0)


def describe(flags):
    """The problems named by a flag value, as a list of phrases."""
    flags = int(flags)
    problems = []
    if flags & BAD_LABELS:
        problems.append("labels outside [0, num_classes)")
    if flags & BAD_IMAGES:
        problems.append("non-finite pixels or pixels outside [-1, 1]")
    if flags & NONFINITE_LOSS:
        problems.append("a non-finite loss")
    return problems


class TrainingGuard(keras.callbacks.Callback):
    """Raises at the end of the first training batch that the step flagged.

    `DiffusionModel.fit` adds it in front of the user's callbacks, so a
    checkpoint callback never saves after a flagged batch. Bad labels and
    bad pixels raise `ValueError`; a non-finite loss with clean inputs (the
    training diverged) raises `FloatingPointError`. The message names the
    flagged step (the optimizer's step count after it), also when the model
    runs several steps per execution. The guard's entries are removed from
    the logs that later callbacks and the history see.
    """

    def on_train_begin(self, logs=None):
        self.step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = self.step

    def on_train_batch_begin(self, batch, logs=None):
        self.begin = batch

    def on_train_batch_end(self, batch, logs=None):
        # `batch` is the last batch of the execution (several steps with
        # `steps_per_execution`); the metric says which one was flagged.
        self.step += batch - self.begin + 1
        logs = logs if logs is not None else {}
        flags = logs.pop(GUARD_METRIC, None)
        index = logs.pop(GUARD_BATCH, None)
        if flags is None or float(flags) == 0.0:
            return
        step = self.epoch_start + int(index)
        flags = int(float(flags))
        problems = describe(flags)
        message = f"Training stopped at step {step}: the batch had {' and '.join(problems)}. "
        if flags & (BAD_LABELS | BAD_IMAGES):
            raise ValueError(
                message + "The step saw a sanitised copy, so the weights stay finite, and "
                "no checkpoint was written after it. Check the data: labels must be ints "
                "in [0, num_classes) and images float in [-1, 1] (uint8: x / 127.5 - 1)."
            )
        raise FloatingPointError(
            message + "The inputs were clean, so training diverged: lower the learning "
            "rate and resume from the last checkpoint (none was written after this step)."
        )

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.pop(GUARD_METRIC, None)
            logs.pop(GUARD_BATCH, None)

    def on_test_batch_end(self, batch, logs=None):
        self.on_epoch_end(0, logs)

    def on_test_end(self, logs=None):
        self.on_epoch_end(0, logs)


class GuardedFit:
    """What every keras_cdm model that trains with `fit` shares (a mixin in
    front of `keras.Model`): `fit` checks its inputs before anything is
    compiled (the model's `_check_inputs(x, y)`), runs `TrainingGuard`,
    turns Ctrl-C into `KeyboardInterrupt` at a step boundary and leaves the
    model usable after a failure; `evaluate` draws from `seed` (the model's
    `seed_generator`); `steps_per_execution` works on every backend; a
    loaded model compiles as suits the backend it is loaded in.
    """

    def _check_inputs(self, x, y):
        pass

    def fit(self, x=None, y=None, *args, callbacks=None, **kwargs):
        """`keras.Model.fit`, with the input checks (`_check_inputs`) and `TrainingGuard`.

        Ctrl-C (SIGINT) raises `KeyboardInterrupt` at the end of the batch
        that is running, with the weights, EMA and optimizer of the last
        finished step in the model (on every backend), so a caller can save
        them.

        A `keras_cdm.data.StageDataset` shuffles itself (deterministically,
        per seed), so Keras's own batch shuffling is off for it by default.
        """
        # Ctrl-C raises KeyboardInterrupt at the next batch boundary: raised
        # mid-step it can be lost (keras_cdm.utils.interrupts), and so can one
        # raised while the inputs are checked (they may touch device arrays),
        # so the handler is in place first. A caller's own SIGINT handler (the
        # recipes') is left in place.
        with interrupts.SignalStop(only_default=True) as stop:
            self._check_inputs(x, y)
            if stop.received is not None:
                raise KeyboardInterrupt
            if isinstance(x, keras.utils.PyDataset) and hasattr(x, "element_spec") and not args:
                kwargs.setdefault("shuffle", False)
            callbacks = list(callbacks or [])
            if not any(isinstance(c, TrainingGuard) for c in callbacks):
                callbacks.insert(0, TrainingGuard())
            if stop.active:
                callbacks.insert(0, interrupts.StopOnSignal(stop, "raise"))
            start_of_fit(self)
            with keep_variables_on_failure(self):
                history = super().fit(x, y, *args, callbacks=callbacks, **kwargs)
            if stop.received is not None:  # after the last batch: still not lost
                raise KeyboardInterrupt
        return history

    def train_step(self, *args, **kwargs):
        # PyTorch: Keras's step without its per-step walks of every layer
        # (`call` returns the batch; the work is in `compute_loss`).
        logs = backend_train_step(self, *args) if len(args) == 1 and not kwargs else None
        if logs is None:
            logs = super().train_step(*args, **kwargs)
        return self._logs_of_all_replicas(logs)

    def test_step(self, *args, **kwargs):
        # (Not across PyTorch processes: `evaluate` on one rank must not wait.)
        logs = super().test_step(*args, **kwargs)
        return self._logs_of_all_replicas(logs, across_processes=False)

    def _logs_of_all_replicas(self, logs, across_processes=True):
        """With several replicas (`tf.distribute`, PyTorch DDP's processes),
        each replica's logs become the whole global batch's: the mean of each
        loss term, and the input guard's first flagged batch with the union
        of the problems flagged on any replica. So every process logs the
        global loss, and every process stops at a batch flagged on any one
        (one that stopped alone would leave the others waiting); a mean of
        flag bits would name the wrong problem. One replica (or JAX's global
        program): unchanged."""
        if step_replicas(across_processes) == 1:
            return logs
        logs = dict(logs)
        flags, index = logs.pop(GUARD_METRIC, None), logs.pop(GUARD_BATCH, None)
        logs = {name: replicas_mean(value) for name, value in logs.items()}
        if flags is not None:
            flags = ops.cast(replicas_gather(flags), "int32")
            union = 0
            for bit in (BAD_LABELS, BAD_IMAGES, NONFINITE_LOSS):
                union += bit * ops.cast(ops.any(ops.bitwise_and(flags, bit) > 0), "int32")
            index = replicas_gather(ops.cast(index, "int32"))
            first = ops.min(ops.where(index > 0, index, ops.max(index) + 1))
            logs[GUARD_METRIC] = ops.cast(union, "float32")
            logs[GUARD_BATCH] = ops.where(union > 0, first, 0)
        return replica_logs_for_keras(logs)

    def _get_metrics_result_or_logs(self, logs):
        # Keras builds an epoch's logs from this process's own metrics; with
        # several PyTorch processes the last step's logs, already over all
        # of them (`_logs_of_all_replicas`), are the ones to report.
        if step_replicas() > 1 and isinstance(logs, dict) and logs:
            return logs
        return super()._get_metrics_result_or_logs(logs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras's TensorFlow trainer only: under several workers it cannot
        # reduce the first batch itself (`keras_cdm.backend.first_local_batch`).
        if iterator is not None and data_batch is None:
            data_batch = first_local_batch(self.distribute_strategy, iterator)
            if data_batch is not None:
                iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _multi_step_or_keras(self, kind, force, keras_make):
        # `steps_per_execution` on PyTorch too (Keras refuses it there).
        name = f"{kind}_function"
        if getattr(self, name) is None or force:
            setattr(self, name, multi_step_function(self, kind))
        if getattr(self, name) is None:
            return keras_make(force=True)
        return getattr(self, name)

    def make_train_function(self, force=False):
        return self._multi_step_or_keras("train", force, super().make_train_function)

    def make_test_function(self, force=False):
        return self._multi_step_or_keras("test", force, super().make_test_function)

    def evaluate(self, x=None, y=None, *args, seed=0, **kwargs):
        """`keras.Model.evaluate` of the training objective, reproducible per `seed`.

        Reports the training loss and its terms (see the class docstring)
        with `t` and noise drawn from `seed`; the model's training RNG state
        is restored afterwards, so evaluating does not change later training.
        """
        self._check_inputs(x, y)
        training_state = ops.copy(self.seed_generator.state.value)
        self.seed_generator.state.assign(
            np.array([check_seed(seed) % (2**31 - 1), 0], dtype=self.seed_generator.state.dtype)
        )
        try:
            with keep_variables_on_failure(self):
                return super().evaluate(x, y, *args, **kwargs)
        finally:
            self.seed_generator.state.assign(training_state)

    def compile_from_config(self, config):
        super().compile_from_config(portable_compile_config(config))
