"""Training progress at a steady rate: step, loss, images per second and ETA."""

import sys
import time

import keras

from keras_cdm.utils.validation import check_positive_int


def _duration(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


class TrainingProgress(keras.callbacks.Callback):
    """Prints a line every `every` training steps: the global step of the
    target, the loss (Keras's mean since the epoch began), images per second
    and the time left at the rate since the last line.

    Keras's own `verbose=1` bar redraws one terminal line (unreadable in a log
    file) and `verbose=2` prints once per epoch; this prints plain lines that
    read the same in a terminal, a log file or a scheduler's output.

    Args:
        total_steps: int. The step training ends at.
        batch_size: int. Images per step (the global batch).
        every: int. Steps between two lines. Defaults to 50.
        first_step: int. The step training starts from (a resumed run).
            Defaults to 0.
        log_path: str or None. A file the lines are appended to besides the
            terminal (the recipes use `output_dir/train.log`). Defaults to
            `None`.
        stream: a text file or None. Where the lines are printed (`None`:
            `sys.stdout` at the time). Defaults to `None`.
        estimate_after: int or None. Once this many steps have run after
            the first one (which compiles), print the measured time per step
            and the time the run will take, long before the first regular
            line on a slow machine. `None`: no estimate. Defaults to `2`.

    Example:

    >>> model = keras_cdm.DiffusionModel.from_preset("base16_tiny")
    >>> model.compile(optimizer="adam")
    >>> data = keras_cdm.data.base_dataset(keras_cdm.data.synthetic(64), 16, 4)
    >>> progress = keras_cdm.utils.progress.TrainingProgress(4, batch_size=4, every=2)
    >>> history = model.fit(data, steps_per_epoch=4, callbacks=[progress], verbose=0)
    """

    def __init__(
        self,
        total_steps,
        batch_size,
        every=50,
        first_step=0,
        log_path=None,
        stream=None,
        estimate_after=2,
    ):
        super().__init__()
        if estimate_after is not None:
            check_positive_int("estimate_after", estimate_after)
        self.estimate_after = estimate_after
        self.compiled = None  # (step, time) when the first step has run
        self.total_steps = check_positive_int("total_steps", total_steps)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.every = check_positive_int("every", every)
        self.step = first_step
        self.log_path = log_path
        self.stream = stream
        self.lines = []

    def on_train_begin(self, logs=None):
        self.mark = (self.step, time.perf_counter())

    def on_train_batch_begin(self, batch, logs=None):
        self.begin = batch

    def on_train_batch_end(self, batch, logs=None):
        before = self.step
        self.step += batch - self.begin + 1  # several with steps_per_execution
        self._estimate()
        if self.step // self.every == before // self.every and self.step < self.total_steps:
            return
        step0, t0 = self.mark
        now = time.perf_counter()
        rate = (self.step - step0) / max(now - t0, 1e-9)  # steps per second
        self.mark = (self.step, now)
        left = (self.total_steps - self.step) / rate if rate > 0 else float("inf")
        parts = [f"step {self.step}/{self.total_steps}"]
        for key in ("loss", "mse", "vb"):
            if logs and key in logs:
                parts.append(f"{key} {float(logs[key]):.4g}")
        parts.append(f"{rate * self.batch_size:.3g} img/s")
        parts.append(f"ETA {_duration(left)}" if left != float("inf") else "ETA ?")
        self._write("[keras_cdm] " + "  ".join(parts))

    def _estimate(self):
        """The measured time per step and the run's length, printed once."""
        if self.estimate_after is None:
            return
        now = time.perf_counter()
        if self.compiled is None:
            self.compiled = (self.step, now)
            return
        done = self.step - self.compiled[0]
        if done < self.estimate_after or self.step >= self.total_steps:
            return
        per_step = (now - self.compiled[1]) / done
        steps = self.total_steps - self.step
        self.estimate_after = None
        self._write(
            f"[keras_cdm] measured {per_step:.3g} s/step (after the first, which compiles): "
            f"the {steps} step{'s' if steps != 1 else ''} left take about "
            f"{_duration(per_step * steps)}"
        )

    def _write(self, line):
        self.lines.append(line)
        print(line, file=self.stream or sys.stdout, flush=True)
        if self.log_path is not None:
            with open(self.log_path, "a") as f:
                print(line, file=f)
