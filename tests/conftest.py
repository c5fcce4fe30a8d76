import contextlib
import importlib.util
import os
import signal
import socket
import subprocess

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# XLA's CPU code generation at its lowest optimisation for the suite's tiny
# networks (set before JAX starts; the processes the tests launch inherit
# it): compiling dominates, and tests/networks with the guard's tests took
# 48 s instead of 73 s on JAX, with the same results within the tests'
# tolerances. A user's own XLA_FLAGS win.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A JAX- or PyTorch-only install (`.[jax]`, `.[torch]`) has no TensorFlow:
# tests that spawn other backends use the installed ones.
INSTALLED_BACKENDS = tuple(
    b for b in ("jax", "tensorflow", "torch") if importlib.util.find_spec(b) is not None
)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


def micro_network_config(**overrides):
    """A U-Net small enough to compile in seconds on every backend."""
    config = {
        "image_size": 8,
        "base_channels": 8,
        "channel_mult": (1, 2),
        "num_res_blocks": 1,
        "attention_resolutions": (4,),
        "num_heads": 2,
        "num_classes": 3,
        "norm_groups": 4,
    }
    config.update(overrides)
    return config


def network_inputs(net, batch=2, seed=0):
    """Random NumPy inputs for a `UNet` or `SuperResUNet`."""
    from keras_cdm import SuperResUNet

    rng = np.random.default_rng(seed)
    s = net.image_size
    inputs = {
        "x_t": rng.normal(size=(batch, s, s, net.channels)).astype("float32"),
        "t": rng.integers(0, 1000, (batch,)).astype("int32"),
        "labels": rng.integers(0, max(net.num_classes, 1), (batch,)).astype("int32"),
    }
    if isinstance(net, SuperResUNet):
        lo = net.low_res_size
        inputs["low_res"] = rng.uniform(-1, 1, (batch, lo, lo, net.channels)).astype("float32")
        inputs["aug_level"] = rng.integers(0, 1000, (batch,)).astype("int32")
    return inputs


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def no_tensorflow_env(**extra):
    """An environment whose Python processes (and their children) cannot
    import TensorFlow: `tests/no_tensorflow/sitecustomize.py` is on the
    PYTHONPATH, before the repository root."""
    hider = os.path.join(ROOT, "tests", "no_tensorflow")
    return dict(os.environ, PYTHONPATH=os.pathsep.join([hider, ROOT]), **extra)


# Backend-agnostic logic (recipe flags and records, tools) runs once per CI
# pass, from the torch pass (the fastest here).
torch_pass_only = pytest.mark.skipif(
    BACKEND != "torch",
    reason="backend-agnostic recipe and tool logic; runs once per CI pass, from torch",
)


def free_port():
    """A free TCP port on 127.0.0.1 (for a test's coordinator or rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid):
    """The processes below `pid` (Linux's /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = open(f"/proc/{entry}/stat").read()
                parent = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def end_process_tree(proc):
    """Kills a started process and everything below it: torchrun's workers
    run in their own sessions, so killing the launcher alone leaves them."""
    for pid in descendants(proc.pid):  # found before the parent dies
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.kill()
    proc.wait(timeout=60)


STARTED = []  # processes a test started: the fixture below ends those still running


def started(proc):
    """Records a process a test started (`subprocess.Popen`), so that a
    test failing before it exits (an assertion, a timeout) does not leave
    it running into the next test; returns it."""
    STARTED.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _end_leftover_processes():
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            end_process_tree(proc)  # torchrun's workers and bash's children too


def run_to_end(cmd, timeout, **kwargs):
    """`subprocess.run(cmd, capture_output=True, text=True, ...)` for a
    launcher (torchrun): past `timeout` its workers are ended with it."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        end_process_tree(proc)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
