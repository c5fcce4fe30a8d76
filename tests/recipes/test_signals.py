"""A recipe stopped by SIGINT or SIGTERM after its first checkpoint writes the
checkpoint of the step it stopped at, prints the command that resumes it and
exits 130 / 143; that command ends at the target step with the weights of an
uninterrupted run. A second signal exits at once (every backend)."""

import csv
import importlib
import os
import shlex
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import free_port
from conftest import started
from conftest import to_numpy

import keras_cdm  # noqa: F401  (registers the stage classes for load_model)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = [pytest.mark.timeout(600)]
sys.path.insert(0, os.path.join(ROOT, "recipes"))

# SIGINT on JAX (where it used to be lost) and SIGTERM on PyTorch by default;
# TensorFlow's SIGTERM and PyTorch's SIGINT with `-m large` (the handler is
# the recipe's own Python, the same for both signals; `fit`'s own Ctrl-C is
# tested on every backend in tests/utils/test_interrupts.py).
SIGNALS = {
    "jax": [pytest.param("SIGINT")],
    "tensorflow": [pytest.param("SIGTERM", marks=pytest.mark.large)],
    "torch": [pytest.param("SIGINT", marks=pytest.mark.large), pytest.param("SIGTERM")],
}[BACKEND]
FLAGS = ["--smoke", "--seed", "3", "--checkpoint_every", "2"]


def start_recipe(out, train_steps):
    argv = FLAGS + ["--train_steps", str(train_steps), "--output_dir", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "recipes/train_base16.py"] + argv,
        cwd=ROOT,
        env=dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return started(proc), argv


def wait_for(path, proc, timeout=300):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def logged_steps(out):
    with open(os.path.join(out, "log.csv")) as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize("name", SIGNALS)
def test_signal_stops_at_a_step_and_the_printed_command_resumes(name, tmp_path):
    signum = getattr(signal, name)
    out = tmp_path / "stopped"
    # A target far beyond where the signal lands: the run cannot end first.
    proc, argv = start_recipe(out, 10_000)
    wait_for(out / "checkpoint.keras", proc)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, stderr[-3000:]
    assert f"{name}: stopping after this step" in stderr
    lines = stdout.splitlines()
    stopped = next(line for line in lines if line.startswith(f"[keras_cdm] stopped by {name}"))
    step = int(stopped.split(" at step ")[1].split()[0])
    assert 2 <= step < 10_000
    assert stopped.endswith(f"checkpoint: {out / 'checkpoint.keras'}")
    assert logged_steps(out)[-1] == step  # the checkpoint is that step's
    assert not os.path.exists(out / "base16.keras")
    command = next(line for line in lines if line.startswith("[keras_cdm] resume with: "))
    tokens = shlex.split(command.split("resume with: ", 1)[1])
    assert tokens[:3] == [f"KERAS_BACKEND={BACKEND}", "python", "recipes/train_base16.py"]
    assert tokens[3:] == argv + ["--resume"]
    # Run the printed command, to a target 3 steps past the stop.
    target = step + 3
    tokens[tokens.index("--train_steps") + 1] = str(target)
    resumed = subprocess.run(
        [sys.executable] + tokens[2:],
        cwd=ROOT,
        env=dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed at step {step}" in resumed.stdout
    # The uninterrupted run to the same target, in this process.
    common = importlib.import_module("common")
    full = common.main(
        "base16", FLAGS + ["--train_steps", str(target), "--output_dir", str(tmp_path / "full")]
    )
    a = keras.saving.load_model(full)
    b = keras.saving.load_model(out / "base16.keras")
    assert int(to_numpy(b.optimizer.iterations)) == target
    # Same data, t and noise after the resume, so the weights agree up to
    # float noise: CPU reductions are not bitwise reproducible between
    # processes, and Adam's normalised update can turn that noise on
    # near-zero gradients into up to ±lr per element and step.
    bound = 2 * 1e-4 * target
    for wa, wb in zip(a.network.weights, b.network.weights):
        np.testing.assert_allclose(to_numpy(wa), to_numpy(wb), atol=bound)
    for wa, wb in zip(a.ema_network.weights, b.ema_network.weights):
        np.testing.assert_allclose(to_numpy(wa), to_numpy(wb), atol=bound)


# The signal handling is the recipe's own Python, the same on every backend:
# from the torch pass (seconds) by default, elsewhere with `-m large`.
@pytest.mark.parametrize(
    "_", [pytest.param(0, marks=[] if BACKEND == "torch" else [pytest.mark.large])]
)
def test_second_signal_exits_at_once_leaving_the_checkpoint(_, tmp_path):
    out = tmp_path / "run"
    proc, _ = start_recipe(out, 10_000)
    wait_for(out / "checkpoint.keras", proc)
    first = os.path.getmtime(out / "checkpoint.keras")
    proc.send_signal(signal.SIGINT)
    seen = []  # the second signal once the first is taken (two at once would merge)
    while not any("SIGINT: stopping after this step" in line for line in seen):
        seen.append(proc.stderr.readline())
        assert seen[-1] or proc.poll() is None, "".join(seen)[-3000:]
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    stderr = "".join(seen) + stderr
    assert proc.returncode == 130, stderr[-3000:]
    assert "second SIGINT: exiting at once" in stderr
    assert "resume with" not in stdout
    # Whatever step it was at, the checkpoint on disk is a whole one.
    model = keras.saving.load_model(out / "checkpoint.keras")
    step = int(to_numpy(model.optimizer.iterations))
    assert step >= 2 and os.path.getmtime(out / "checkpoint.keras") >= first


@pytest.mark.skipif(BACKEND != "torch", reason="torchrun: PyTorch DDP")
def test_signal_stops_every_torchrun_process_after_the_same_step(tmp_path):
    """Processes that stopped at different steps would leave one waiting in
    the next step's all-reduce: they agree, stop together, rank 0 writes."""
    out = tmp_path / "ddp"
    argv = FLAGS + ["--train_steps", "10000", "--output_dir", str(out)]
    proc = started(
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
            + [f"--master_port={free_port()}", "recipes/train_base16.py"]
            + argv,
            cwd=ROOT,
            env=dict(os.environ, KERAS_BACKEND="torch", OMP_NUM_THREADS="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    )
    wait_for(out / "checkpoint.keras", proc)
    proc.send_signal(signal.SIGINT)  # torchrun passes it on to both workers
    stdout, stderr = proc.communicate(timeout=300)
    assert stderr.count("SIGINT: stopping after this step") == 2, stderr[-3000:]
    stopped = [line for line in stdout.splitlines() if "stopped by SIGINT at step" in line]
    assert len(stopped) == 1  # rank 0 alone writes and reports
    step = int(stopped[0].split(" at step ")[1].split()[0])
    assert logged_steps(out)[-1] == step
    model = keras.saving.load_model(out / "checkpoint.keras")
    assert int(to_numpy(model.optimizer.iterations)) == step
    assert "resume with: KERAS_BACKEND=torch torchrun --nnodes=1 --nproc_per_node=2" in stdout
