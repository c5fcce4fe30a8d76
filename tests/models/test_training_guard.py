"""The input guard with several steps per execution: the logs reach the host
once per execution, the weights are those of one step at a time, and a bad
batch inside an execution is still named by its step."""

import keras
import keras.src.callbacks.callback_list as callback_list
import numpy as np
import pytest
from conftest import BACKEND
from conftest import micro_network_config
from conftest import to_numpy

from keras_cdm import DiffusionModel
from keras_cdm import GaussianDiffusion
from keras_cdm import UNet


def make_model(steps_per_execution):
    keras.utils.set_random_seed(7)
    model = DiffusionModel(
        UNet(**micro_network_config()), diffusion=GaussianDiffusion(num_timesteps=10), seed=3
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), steps_per_execution=steps_per_execution)
    return model


def data(n=16):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (n, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 3, n).astype("int32")
    return x, y


def batches(x, y, size=2):
    """A generator (no up-front array checks: the step's guard must catch it)."""
    while True:
        for i in range(0, len(x), size):
            yield x[i : i + size], y[i : i + size]


@pytest.fixture
def host_reads(monkeypatch):
    """Counts Keras's conversions of device logs to Python numbers."""
    reads = []
    convert = callback_list.python_utils.pythonify_logs

    def counting(logs):
        if logs and any(hasattr(v, "shape") for v in logs.values()):
            reads.append(sorted(logs))
        return convert(logs)

    monkeypatch.setattr(callback_list.python_utils, "pythonify_logs", counting)
    return reads


def test_several_steps_per_execution(host_reads):
    x, y = data()
    # One step per execution, to compare with: on PyTorch, where the
    # multi-step function is keras_cdm's own; elsewhere it is Keras's (and
    # each compilation costs a minute here).
    one = None
    if BACKEND == "torch":
        one = make_model(1)
        one.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0)
        assert len(host_reads) == 8 + 2
        host_reads.clear()
    four = make_model(4)
    history = four.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0)
    # 8 steps: 2 batch ends (+ epoch and train end), against 8 (+ the same 2).
    assert len(host_reads) == 2 + 2
    assert int(to_numpy(four.optimizer.iterations)) == 8
    if one is not None:  # four steps per execution train exactly as one at a time
        for a, b in zip(one.get_weights(), four.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The guard's entries stay out of the logs and the history.
    assert sorted(history.history) == ["loss", "mse", "vb"]

    # A bad batch inside an execution (the third of the second execution,
    # global step 8 + 7) is named by its step; the execution ran to its end
    # on a sanitised copy, and no later one ran.
    y[13] = 5
    with pytest.raises(ValueError, match=r"Training stopped at step 15: the batch had labels"):
        four.fit(batches(x, y), steps_per_epoch=8, epochs=2, verbose=0)
    assert int(to_numpy(four.optimizer.iterations)) == 8 + 8
