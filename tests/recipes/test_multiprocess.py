"""A recipe as two processes on localhost, with the README's variables:
JAX processes (`jax.distributed`, gloo CPU collectives, `JAX_*`) and
TensorFlow workers (`TF_CONFIG`, `MultiWorkerMirroredStrategy`). The same
losses and weights as one process on the same global batch, each process
feeding only its share, one checkpoint written once, and a run whose
processes are all killed and restarted with `--resume` ending at the same
step with the same weights; then sampling spread over both processes gives
one process's images.
(PyTorch's torchrun: tests/models/test_distribution.py and
tests/recipes/test_signals.py.)"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import end_process_tree
from conftest import free_port
from conftest import run_to_end
from conftest import started
from conftest import to_numpy

import keras_cdm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = [pytest.mark.timeout(900)]
several = pytest.mark.skipif(BACKEND not in ("jax", "tensorflow", "torch"), reason="no engine")
FLAGS = ["--smoke", "--seed", "3", "--checkpoint_every", "2", "--batch_size", "4"]


def launch(out, steps, processes, extra=()):
    """Starts the recipe's processes; their output goes to files beside
    `out` (a pipe nobody reads could fill and stall them)."""
    argv = FLAGS + ["--train_steps", str(steps), "--output_dir", str(out), *extra]
    return start_processes("recipes/train_base16.py", argv, processes, f"{out}.{len(extra)}")


def start_processes(script, argv, processes, log_prefix, **env):
    """`processes` processes of `script` on this test's backend, joined as
    the README says (one process: alone): JAX processes by a localhost
    coordinator, TensorFlow workers by `TF_CONFIG`; logs at
    `log_prefix.PID.log`."""
    ports = [free_port() for _ in range(processes)]
    procs = []
    for pid in range(processes):
        variables = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3", **env)
        launcher = [sys.executable]
        if processes > 1 and BACKEND == "torch":  # one node per process
            launcher += ["-m", "torch.distributed.run", f"--nnodes={processes}"]
            launcher += [f"--node_rank={pid}", "--nproc_per_node=1"]
            launcher += [f"--rdzv_endpoint=127.0.0.1:{ports[0]}"]
            variables["OMP_NUM_THREADS"] = "1"
        if processes > 1 and BACKEND == "jax":
            variables.update(
                JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{ports[0]}",
                JAX_NUM_PROCESSES=str(processes),
                JAX_PROCESS_ID=str(pid),
            )
        elif processes > 1 and BACKEND == "tensorflow":
            cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
            config = {"cluster": cluster, "task": {"type": "worker", "index": pid}}
            variables["TF_CONFIG"] = json.dumps(config)
        log = open(f"{log_prefix}.{pid}.log", "w")
        proc = subprocess.Popen(
            launcher + [script] + argv,
            cwd=ROOT,
            env=variables,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        proc.log = log.name
        procs.append(proc)
        started(proc)
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


def stop_with_sigterm(procs, out, tmp_path, steps):
    """What a scheduler does to a multi-host job: SIGTERM to every process
    once the first checkpoint is written. Each stops after the same step
    (exit 143; torchrun reports its own 1), process 0 prints the resume
    command, and each process resumes with its own identity from it.
    Returns the processes' logs of the stopped run."""
    deadline = time.time() + 600
    while not os.path.exists(out / "checkpoint.keras"):
        assert all(p.poll() is None for p in procs) and time.time() < deadline
        time.sleep(0.02)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(timeout=300)
    logs = [open(p.log).read() for p in procs]
    expected = 1 if BACKEND == "torch" else 143
    assert [p.returncode for p in procs] == [expected] * 2, logs[0][-2000:] + logs[1][-2000:]
    step = int(rows(out)[-1]["step"])
    assert step < steps
    assert f"stopped by SIGTERM at step {step} of {steps}" in logs[0]
    command = logs[0].split("resume with: ")[1].splitlines()[0]
    first = {"jax": "JAX_PROCESS_ID=0", "tensorflow": '"index": 0', "torch": "--node_rank=0"}[
        BACKEND
    ]
    assert first in command
    resumed = []
    for pid in range(2):
        mine = command.replace(first, first.replace("0", str(pid)))
        log = open(tmp_path / f"resume.{pid}.log", "w")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.Popen(
            ["bash", "-c", mine], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        proc.log = log.name
        started(proc)
        resumed.append(proc)
    finish(resumed)
    assert [r["step"] for r in rows(out)][-1] == str(steps)
    return logs


@several
def test_two_processes_train_as_one_and_resume_after_sigterm(tmp_path):
    """Two processes train as one (each feeds its share of the global
    batch: the losses and weights of one process), stopped by SIGTERM to
    both and resumed from the printed command (both engines' processes once
    ignored it: joining the others hands SIGTERM to the runtime's own
    preemption notifier), then sample as one. PyTorch trains without the
    stop here: SIGTERM under torchrun (its forwarding to every process) is
    tested in tests/recipes/test_signals.py."""
    steps = 12
    one, two = tmp_path / "one", tmp_path / "two"
    finish(launch(one, steps, 1))
    procs = launch(two, steps, 2)
    if BACKEND == "torch":
        stdout = finish(procs)
    else:
        stdout = stop_with_sigterm(procs, two, tmp_path, steps)
    for rank in (0, 1):
        expected = {
            "jax": "jax DataParallel over 2 devices, 2 processes",
            "tensorflow": f"tf MultiWorkerMirroredStrategy: worker {rank} of 2",
            "torch": f"torch DDP rank {rank} of 2",
        }[BACKEND]
        assert expected in stdout[rank]
    # No traceback from the recipe. torchrun's own agent may log one from its
    # exit barrier when the node hosting the rendezvous store exits first
    # (seen under load; both exit 0, which `finish` checks).
    recipe_lines = [
        line
        for out in stdout
        for line in out.splitlines()
        if "torch/distributed/elastic/" not in line
    ]
    assert not any("Traceback" in line for line in recipe_lines)
    # One global batch of 4 = two shares of 2: the same losses as one process
    # (had each fed the whole batch, the global batch would be 8), before
    # and after the resume. A row logs its interval's mean loss: the row
    # after a stop between two checkpoints covers part of one (not compared).
    a = {r["step"]: r for r in rows(one)}
    b = rows(two)
    assert [r["step"] for r in b if int(r["step"]) % 2 == 0] == [str(s) for s in range(2, 13, 2)]
    compared = 0
    for previous, rb in zip([{"step": "0"}] + b, b):
        if int(rb["step"]) - int(previous["step"]) == 2:
            assert float(rb["loss"]) == pytest.approx(float(a[rb["step"]]["loss"]), rel=1e-4)
            compared += 1
    assert compared >= 4
    # One checkpoint and one final stage, written by process 0 alone (a
    # sample grid too where sampling needs no other process: TensorFlow).
    grid = ["samples_final.png"] if BACKEND != "jax" else []
    assert sorted(os.listdir(two)) == sorted(
        ["base16.keras", "checkpoint.keras", "log.csv", "run.json", "train.log"] + grid
    )
    assert "checkpoint at step 2" in stdout[0] and "checkpoint at step" not in stdout[1]
    # Float noise only (CPU reductions differ between processes and runs;
    # Adam's normalised update can raise it to ~lr per element and step).
    single = keras.saving.load_model(one / "base16.keras")
    double = keras.saving.load_model(two / "base16.keras")
    assert int(to_numpy(double.optimizer.iterations)) == steps
    for w1, w2 in zip(single.network.weights, double.network.weights):
        np.testing.assert_allclose(to_numpy(w1), to_numpy(w2), atol=2 * 1e-4 * steps)

    # Sampling spread over the two processes (JAX: each batch over two
    # devices per process): the same images as this one process on one device.
    devices = 2 if BACKEND == "jax" else 1
    argv = [str(two / "base16.keras"), "--num_images", "5", "--num_steps", "3"]
    argv += ["--sampler", "ddpm", "--seed", "4", "--output_dir", str(tmp_path / "samples")]
    procs = start_processes(
        "recipes/sample_cascade.py",
        argv,
        2,
        str(tmp_path / "sample"),
        XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2",
    )
    stdout = finish(procs)
    assert f"process 0 of 2: images 0-2 of 5, each batch over {devices} devices" in stdout[0]
    assert f"process 1 of 2: images 3-4 of 5, each batch over {devices} devices" in stdout[1]
    assert "wrote" in stdout[0] and "wrote" not in stdout[1]
    spread = np.load(tmp_path / "samples" / "samples.npz")
    cascade = keras_cdm.CascadeSampler([str(two / "base16.keras")], num_steps=3, sampler="ddpm")
    here = cascade.sample(np.arange(5) % double.num_classes, seed=4, output="uint8")
    np.testing.assert_array_equal(spread["labels"], np.arange(5) % double.num_classes)
    assert np.abs(spread["images"].astype(int) - here.astype(int)).max() <= 1


@pytest.mark.large
@several
def test_two_processes_killed_and_resumed_end_as_uninterrupted(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    finish(launch(full, 6, 2))
    procs = launch(killed, 6, 2)
    deadline = time.time() + 600
    while not os.path.exists(killed / "checkpoint.keras"):
        assert all(p.poll() is None for p in procs) and time.time() < deadline
        time.sleep(0.02)
    for p in procs:  # torchrun's workers too (they run in their own sessions)
        end_process_tree(p)
    assert int(rows(killed)[-1]["step"]) < 6
    finish(launch(killed, 6, 2, ["--resume"]))
    assert [r["step"] for r in rows(killed)][-1] == "6"
    a = keras.saving.load_model(full / "base16.keras")
    b = keras.saving.load_model(killed / "base16.keras")
    assert int(to_numpy(b.optimizer.iterations)) == 6
    for w1, w2 in zip(a.network.weights, b.network.weights):
        np.testing.assert_allclose(to_numpy(w1), to_numpy(w2), atol=2 * 1e-4 * 6)


@pytest.mark.skipif(BACKEND != "torch", reason="torchrun: a torch.distributed group")
def test_torchrun_processes_sample_as_one(tmp_path):
    """`sample_cascade.py` under torchrun: each process samples its share,
    rank 0 writes every image, the images are one process's."""
    from conftest import micro_network_config

    keras.utils.set_random_seed(0)
    stage = keras_cdm.DiffusionModel(
        keras_cdm.UNet(**micro_network_config()),
        diffusion=keras_cdm.GaussianDiffusion(num_timesteps=10),
    )
    stage.save(tmp_path / "base.keras")
    argv = [str(tmp_path / "base.keras"), "--num_images", "5", "--num_steps", "3"]
    argv += ["--sampler", "ddpm", "--seed", "4", "--output_dir", str(tmp_path / "samples")]
    proc = run_to_end(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
        + [f"--master_port={free_port()}", "recipes/sample_cascade.py"]
        + argv,
        600,
        cwd=ROOT,
        env=dict(os.environ, KERAS_BACKEND="torch", OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "process 0 of 2: images 0-2 of 5" in proc.stdout
    assert "process 1 of 2: images 3-4 of 5" in proc.stdout
    assert proc.stdout.count("wrote") == 1
    spread = np.load(tmp_path / "samples" / "samples.npz")
    cascade = keras_cdm.CascadeSampler([str(tmp_path / "base.keras")], num_steps=3, sampler="ddpm")
    here = cascade.sample(np.arange(5) % 3, seed=4, output="uint8")
    np.testing.assert_array_equal(spread["labels"], np.arange(5) % 3)
    assert np.abs(spread["images"].astype(int) - here.astype(int)).max() <= 1
