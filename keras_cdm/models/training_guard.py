"""Stops `fit` at the first batch with bad labels, bad pixels or a non-finite loss.

A diffusion stage trains for days; one out-of-range label or one NaN pixel
would otherwise turn the weights into NaN and the run would go on silently.
The training step itself flags such a batch (a few reductions, see
`DiffusionModel.compute_loss`) and feeds the network a sanitised copy, so the
weights stay finite; this callback reads the flag from the logs and stops
training with an error that names the step.
"""

import keras

# Bits of the `bad_input` metric written by `DiffusionModel.compute_loss`.
BAD_LABELS = 1
BAD_IMAGES = 2
NONFINITE_LOSS = 4
GUARD_METRIC = "bad_input"


class InputGuardMetric(keras.metrics.Metric):
    """The largest per-batch flag value seen since the last reset.

    `TrainingGuard` stops training at the first non-zero value, so the
    largest value is that batch's flags.
    """

    def __init__(self, name=GUARD_METRIC, **kwargs):
        super().__init__(name=name, **kwargs)
        self.flags = self.add_variable(shape=(), initializer="zeros", name="flags")

    def update_state(self, flags):
        self.flags.assign(keras.ops.maximum(self.flags.value, keras.ops.cast(flags, "float32")))

    def result(self):
        return keras.ops.copy(self.flags.value)

    def reset_state(self):
        self.flags.assign(0.0)


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
    training diverged) raises `FloatingPointError`.
    """

    def on_train_begin(self, logs=None):
        self.step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        flags = (logs or {}).get(GUARD_METRIC)
        if flags is None or float(flags) == 0.0:
            return
        flags = int(float(flags))
        problems = describe(flags)
        message = f"Training stopped at step {self.step}: the batch had {' and '.join(problems)}. "
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
