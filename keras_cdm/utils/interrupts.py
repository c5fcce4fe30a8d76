"""Stopping training at a step boundary on Ctrl-C (SIGINT) or SIGTERM.

Python turns SIGINT into a `KeyboardInterrupt` raised wherever the main
thread happens to be. Under JAX that is most often inside Keras's per-batch
conversion of the logs to NumPy (`np.array` of a JAX array), where jaxlib's
buffer-protocol wait runs the handler and NumPy then *clears* the error while
it falls back to another conversion: the interrupt is lost and `fit` goes on
(measured: 2 of 5 signals lost on a tiny stage). A handler that only records
the signal cannot be lost that way; the step boundary then acts on it from
plain Python.

`SignalStop` is that handler. `fit` uses it to raise `KeyboardInterrupt` at
the next batch end (as Keras does, weights usable); the recipes use it to
stop, write a checkpoint and exit with 128 + the signal number. A second
signal acts at once: `fit` raises, a recipe exits without writing.
"""

import os
import signal
import sys
import threading

import keras


class SignalStop:
    """Records the first of `signals` instead of acting on it mid-step.

    A context manager: on entry it installs its handler for each signal
    (main thread only; elsewhere, or for a signal whose handler is not the
    default one when `only_default` is set, it leaves the handler alone),
    and restores the previous handlers on exit.

    Args:
        signals: signal numbers. Defaults to `(signal.SIGINT,)`.
        second: str. What a second signal does: `"raise"` (a
            `KeyboardInterrupt` at once) or `"exit"` (`os._exit(128 +
            signum)` at once: no file is touched). Defaults to `"raise"`.
        only_default: bool. Install a handler only where the current one is
            Python's default (`signal.default_int_handler` for SIGINT,
            `SIG_DFL` otherwise), so a caller's own handler wins. Defaults
            to `False`.
        message: str or None. Printed to stderr on the first signal, with
            `{name}` replaced by the signal's name.

    Example:

    >>> with keras_cdm.utils.interrupts.SignalStop() as stop:
    ...     stop.received is None
    True
    """

    def __init__(self, signals=(signal.SIGINT,), second="raise", only_default=False, message=None):
        if second not in ("raise", "exit"):
            raise ValueError(f"`second` must be 'raise' or 'exit'. Received: second={second!r}")
        self.signals = tuple(signals)
        self.second = second
        self.only_default = only_default
        self.message = message
        self.received = None
        self.installed = {}

    @property
    def name(self):
        """The received signal's name (`"SIGINT"`), or None."""
        return None if self.received is None else signal.Signals(self.received).name

    @property
    def exit_code(self):
        """The shell's code for a run ended by the received signal (130 for
        SIGINT, 143 for SIGTERM)."""
        return None if self.received is None else 128 + int(self.received)

    def _handler(self, signum, frame):
        if self.received is not None:
            if self.second == "exit":
                sys.stderr.write(
                    f"\n[keras_cdm] second {signal.Signals(signum).name}: exiting at once "
                    "(the last checkpoint is left as it was)\n"
                )
                sys.stderr.flush()
                sys.stdout.flush()
                os._exit(128 + int(signum))
            raise KeyboardInterrupt
        self.received = signum
        if self.message:
            sys.stderr.write("\n" + self.message.format(name=self.name) + "\n")
            sys.stderr.flush()

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in self.signals:
            current = signal.getsignal(signum)
            default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            if self.only_default and current is not default:
                continue
            self.installed[signum] = current
            signal.signal(signum, self._handler)
        return self

    def __exit__(self, exc_type, exc, tb):
        for signum, previous in self.installed.items():
            signal.signal(signum, previous)
        self.installed = {}
        return False

    @property
    def active(self):
        """Whether the handler is installed for at least one signal."""
        return bool(self.installed)


class StopOnSignal(keras.callbacks.Callback):
    """Acts on a `SignalStop`'s signal at the end of a training batch.

    Args:
        stop: `SignalStop`. The handler that records the signal.
        action: str. `"raise"`: raise `KeyboardInterrupt` (what `fit` does);
            `"stop"`: set `model.stop_training`, so `fit` ends the epoch
            (the recipes' checkpoint callback then saves that step).
        agree: callable or None. With several processes training together,
            `agree(received)` is called at every batch end in every process
            and returns whether any process received a signal, so all of
            them stop after the same step (one that stopped alone would
            leave the others waiting in the next step's collective).
            Defaults to `None` (one process).
    """

    def __init__(self, stop, action="raise", agree=None):
        super().__init__()
        if action not in ("raise", "stop"):
            raise ValueError(f"`action` must be 'raise' or 'stop'. Received: action={action!r}")
        self.stop = stop
        self.action = action
        self.agree = agree

    def _check(self):
        received = self.stop.received is not None
        if self.agree is not None:
            received = self.agree(received)
        if not received:
            return
        if self.action == "raise":
            raise KeyboardInterrupt
        self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        self._check()

    def on_train_batch_begin(self, batch, logs=None):
        if self.action == "raise" and self.agree is None:
            self._check()
