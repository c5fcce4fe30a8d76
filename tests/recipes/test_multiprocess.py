"""A recipe as two JAX processes on localhost (`jax.distributed`, gloo CPU
collectives, the README's JAX_* variables): the same losses and weights as
one process on the same global batch, each process feeding only its share,
one checkpoint written once, and a run whose processes are all killed and
restarted with `--resume` ending at the same step with the same weights.
(PyTorch's torchrun: tests/models/test_distribution.py and
tests/recipes/test_signals.py.)"""

import csv
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import to_numpy

import keras_cdm  # noqa: F401  (registers the stage classes for load_model)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.skipif(BACKEND != "jax", reason="jax.distributed processes"),
]
FLAGS = ["--smoke", "--seed", "3", "--checkpoint_every", "2", "--batch_size", "4"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out, steps, processes, extra=()):
    """Starts the processes; their output goes to files beside `out` (a
    pipe nobody reads could fill and stall them)."""
    port = free_port()
    procs = []
    for pid in range(processes):
        env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
        if processes > 1:
            env.update(
                JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                JAX_NUM_PROCESSES=str(processes),
                JAX_PROCESS_ID=str(pid),
            )
        argv = FLAGS + ["--train_steps", str(steps), "--output_dir", str(out), *extra]
        log = open(f"{out}.{pid}.{len(extra)}.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "recipes/train_base16.py"] + argv,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        proc.log = log.name
        procs.append(proc)
    return procs


def finish(procs):
    outs = []
    for p in procs:
        p.wait(timeout=600)
        outs.append(open(p.log).read())
        assert p.returncode == 0, outs[-1][-3000:]
    return outs


def rows(out):
    with open(os.path.join(out, "log.csv")) as f:
        return list(csv.DictReader(f))


def test_two_jax_processes_train_as_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    finish(launch(one, 4, 1))
    stdout = finish(launch(two, 4, 2))
    assert "jax DataParallel over 2 devices, 2 processes" in stdout[0]
    # One global batch of 4 = two shares of 2: the same losses as one process
    # (had each fed the whole batch, the global batch would be 8).
    a, b = rows(one), rows(two)
    assert [r["step"] for r in b] == ["2", "4"]
    for ra, rb in zip(a, b):
        assert float(rb["loss"]) == pytest.approx(float(ra["loss"]), rel=1e-4)
    # One checkpoint and one final stage, written by process 0 alone.
    assert sorted(os.listdir(two)) == ["base16.keras", "checkpoint.keras", "log.csv", "run.json"]
    # Float noise only (CPU reductions differ between processes and runs;
    # Adam's normalised update can raise it to ~lr per element and step).
    single = keras.saving.load_model(one / "base16.keras")
    double = keras.saving.load_model(two / "base16.keras")
    for w1, w2 in zip(single.network.weights, double.network.weights):
        np.testing.assert_allclose(to_numpy(w1), to_numpy(w2), atol=2 * 1e-4 * 4)


@pytest.mark.large
def test_two_jax_processes_killed_and_resumed_end_as_uninterrupted(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    finish(launch(full, 6, 2))
    procs = launch(killed, 6, 2)
    deadline = time.time() + 600
    while not os.path.exists(killed / "checkpoint.keras"):
        assert all(p.poll() is None for p in procs) and time.time() < deadline
        time.sleep(0.02)
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert int(rows(killed)[-1]["step"]) < 6
    finish(launch(killed, 6, 2, ["--resume"]))
    assert [r["step"] for r in rows(killed)][-1] == "6"
    a = keras.saving.load_model(full / "base16.keras")
    b = keras.saving.load_model(killed / "base16.keras")
    assert int(to_numpy(b.optimizer.iterations)) == 6
    for w1, w2 in zip(a.network.weights, b.network.weights):
        np.testing.assert_allclose(to_numpy(w1), to_numpy(w2), atol=2 * 1e-4 * 6)
