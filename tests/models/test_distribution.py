"""Data parallelism: JAX keras.distribution over 4 simulated CPU devices,
TF MirroredStrategy over 2 logical CPUs, PyTorch DDP (gloo) over 2 processes."""

import os
import subprocess
import sys

import pytest
from conftest import BACKEND
from conftest import free_port
from conftest import run_to_end

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_SCRIPT = r"""
import numpy as np, keras, jax
import keras_cdm
assert len(jax.devices()) == 4, jax.devices()
cfg = dict(image_size=8, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
           attention_resolutions=(4,), num_heads=2, num_classes=3, norm_groups=4)
rng = np.random.default_rng(0)
x = np.tanh(rng.normal(size=(16, 8, 8, 3))).astype("float32")
y = (np.arange(16) % 3).astype("int32")

def run(distribution):
    keras.distribution.set_distribution(distribution)
    keras.utils.set_random_seed(0)
    model = keras_cdm.DiffusionModel(keras_cdm.UNet(**cfg), diffusion={"num_timesteps": 100}, seed=1)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    hist = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    kernel = keras.ops.convert_to_numpy(model.network.weights[-2].value)
    return np.array(hist.history["loss"]), kernel

single = run(None)
parallel = run(keras.distribution.DataParallel())
print("losses", single[0], parallel[0])
np.testing.assert_allclose(parallel[0], single[0], rtol=1e-4)
np.testing.assert_allclose(parallel[1], single[1], atol=1e-5)
print("ok")
"""


@pytest.mark.skipif(BACKEND != "jax", reason="JAX keras.distribution test")
def test_jax_data_parallel_matches_single_device(tmp_path):
    script = tmp_path / "dp.py"
    script.write_text(_SCRIPT)
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        PYTHONPATH=ROOT,
        XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4",
    )
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "ok" in proc.stdout


_TF_SCRIPT = r"""
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np, keras
import keras_cdm
cfg = dict(image_size=8, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
           attention_resolutions=(4,), num_heads=2, num_classes=3, norm_groups=4)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = keras_cdm.DiffusionModel(keras_cdm.UNet(**cfg), diffusion={"num_timesteps": 100}, seed=1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)

@tf.function
def draw():
    return model._draw(keras.random.normal, (2, 3))

per_replica = strategy.experimental_local_results(strategy.run(draw))
a, b = (np.asarray(v) for v in per_replica)
assert not np.allclose(a, b), "replicas drew identical noise"
rng = np.random.default_rng(0)
x = np.tanh(rng.normal(size=(16, 8, 8, 3))).astype("float32")
y = (np.arange(16) % 3).astype("int32")
hist = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
assert np.isfinite(hist.history["loss"]).all()
# A bad pixel in the second replica's share of the next fit's second batch
# (a dataset: arrays are checked before the fit), the guard names that problem and step (not a mean of the replicas' flags).
bad = x.copy()
bad[12, 0, 0, 0] = 5.0
try:
    model.fit(tf.data.Dataset.from_tensor_slices((bad, y)).batch(8), epochs=1, verbose=0)
    raise AssertionError("the bad pixel passed")
except ValueError as e:
    message = str(e)
assert "Training stopped at step 6: the batch had non-finite pixels or pixels outside" in message, message
assert "labels" not in message.split(". ")[0], message
print("ok", hist.history["loss"])
"""


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow tf.distribute test")
def test_tf_mirrored_strategy_trains_with_distinct_replica_noise_and_guards(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(_TF_SCRIPT)
    env = dict(os.environ, KERAS_BACKEND="tensorflow", PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "ok" in proc.stdout


_TORCH_SCRIPT = r"""
import os, sys
import numpy as np, keras, torch
import torch.distributed as dist
import keras_cdm
from keras_cdm.backend import setup_torch_ddp

out = sys.argv[1]
world = int(os.environ.get("WORLD_SIZE", "1"))
if world > 1:
    dist.init_process_group("gloo")
rank = dist.get_rank() if world > 1 else 0
cfg = dict(image_size=8, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
           attention_resolutions=(4,), num_heads=2, num_classes=3, norm_groups=4)
rng = np.random.default_rng(0)
x = np.tanh(rng.normal(size=(16, 8, 8, 3))).astype("float32")
y = (np.arange(16) % 3).astype("int32")
# Rank r holds the r-th contiguous slice of each global batch of 8.
per = 8 // world
idx = np.concatenate([np.arange(b, b + 8)[rank * per:(rank + 1) * per] for b in (0, 8)])
keras.utils.set_random_seed(100 + rank)  # different init per rank: the broadcast must fix it
model = keras_cdm.DiffusionModel(keras_cdm.UNet(**cfg), diffusion={"num_timesteps": 100}, seed=1)
model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
setup_torch_ddp(model)
hist = model.fit(x[idx], y[idx], batch_size=per, epochs=2, shuffle=False, verbose=0)
weights = [keras.ops.convert_to_numpy(w) for w in model.network.weights]
ema = [keras.ops.convert_to_numpy(w) for w in model.ema_network.weights]
np.savez(os.path.join(out, f"world{world}_rank{rank}.npz"), loss=np.array(hist.history["loss"]),
         *weights, **{f"ema{i}": e for i, e in enumerate(ema)})


class LastRankBad(keras.utils.PyDataset):  # checked in the step, batch by batch
    def __len__(self):
        return 2

    def __getitem__(self, i):
        xb, yb = x[idx][i * per:(i + 1) * per].copy(), y[idx][i * per:(i + 1) * per]
        if i == 1 and rank == world - 1:
            xb[0, 0, 0, 0] = 5.0
        return xb, yb


# A bad pixel on the last rank only: every rank stops at that step.
try:
    model.fit(LastRankBad(), epochs=1, shuffle=False, verbose=0)
    print("no error")
except ValueError as e:
    # One write per line: two ranks share the pipe, and print's separate writes interleave.
    sys.stdout.write("guard: " + str(e).split(". ")[0] + "\n")
    sys.stdout.flush()
"""


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch DDP test")
def test_torch_ddp_keeps_replicas_identical_and_matches_one_process(tmp_path):
    import numpy as np

    script = tmp_path / "ddp.py"
    script.write_text(_TORCH_SCRIPT)
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    runs = [
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={free_port()}",
        ],
        [sys.executable],
    ]
    for launcher in runs:
        proc = run_to_end(launcher + [str(script), str(tmp_path)], 900, env=env)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        stopped = "guard: Training stopped at step 6: the batch had non-finite pixels or "
        assert proc.stdout.count(stopped) == (2 if len(launcher) > 1 else 1), proc.stdout
    r0, r1 = (np.load(tmp_path / f"world2_rank{r}.npz") for r in (0, 1))
    one = np.load(tmp_path / "world1_rank0.npz")
    keys = [k for k in r0.files if k != "loss"]
    assert len(keys) > 10
    for k in keys:
        # Gradients are averaged before every update: the replicas stay bitwise equal.
        np.testing.assert_array_equal(r0[k], r1[k])
        # ... and follow the one-process run on the global batch (the replicas
        # draw disjoint slices of the same global t and noise), up to float
        # noise that Adam's normalised update can raise to ~lr per step.
        np.testing.assert_allclose(r0[k], one[k], atol=2 * 1e-3 * 2)
    # Each rank logs the global batch's loss (the mean of the ranks' halves).
    np.testing.assert_allclose(r0["loss"], one["loss"], rtol=1e-4)
    np.testing.assert_allclose(r1["loss"], one["loss"], rtol=1e-4)


_TORCH_EXIT_SCRIPT = r"""
import atexit, sys
import torch.distributed as dist
import keras_cdm

def report():  # one write per line: the two ranks share the pipe
    sys.stdout.write(f"group at exit: {dist.is_initialized()}\n")
    sys.stdout.flush()

# Registered first, so it runs last: after keras_cdm's own exit handler.
atexit.register(report)
rank, world = keras_cdm.distribute.initialize_processes()
assert world == 2, world
if sys.argv[1] == "raise":
    raise RuntimeError("stopped on purpose")
"""


@pytest.mark.skipif(BACKEND != "torch", reason="torchrun: a torch.distributed group")
@pytest.mark.parametrize("ending", ["return", "raise"])
def test_torch_group_is_destroyed_at_a_normal_exit_only(tmp_path, ending):
    """Left to interpreter shutdown, a gloo group can abort the process
    after its work (SIGABRT, "terminate called without an active
    exception"); an uncaught exception leaves it alone (destroying it could
    wait on the other processes)."""
    script = tmp_path / "exit.py"
    script.write_text(_TORCH_EXIT_SCRIPT)
    proc = run_to_end(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
        + [f"--master_port={free_port()}", str(script), ending],
        300,
        env=dict(os.environ, KERAS_BACKEND="torch", PYTHONPATH=ROOT, OMP_NUM_THREADS="1"),
    )
    assert (proc.returncode == 0) == (ending == "return"), proc.stderr[-3000:]
    expected = "group at exit: False" if ending == "return" else "group at exit: True"
    assert proc.stdout.count(expected) == 2, proc.stdout + proc.stderr[-3000:]
