"""JAX and PyTorch users need no TensorFlow: the core path runs in a process
where `import tensorflow` fails (`tests/no_tensorflow/sitecustomize.py`), on
this pass's backend."""

import subprocess
import sys

import pytest
from conftest import BACKEND
from conftest import ROOT
from conftest import no_tensorflow_env

SCRIPT = r"""
import os
import sys

# tests/no_tensorflow/sitecustomize.py (on PYTHONPATH) hides TensorFlow.
BLOCKED = ("tensorflow", "tensorflow_datasets", "tf_keras")
try:
    import tensorflow  # noqa: F401
except ModuleNotFoundError:
    pass
else:
    raise AssertionError("the blocker let TensorFlow in")
root, out = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(root, "recipes"))

import numpy as np

import keras_cdm

net = {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
       "attention_resolutions": [], "norm_groups": 4}

# dataset -> fit -> sample -> save -> load
source = keras_cdm.data.synthetic(num_images=16, resolution=16)
ds = keras_cdm.data.base_dataset(source, 8, batch_size=4, seed=0)
model = keras_cdm.DiffusionModel.from_preset(
    "base16_tiny", network_overrides=dict(net, image_size=8)
)
model.compile(optimizer="adam")
history = model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
assert np.isfinite(history.history["loss"][-1])
images = model.sample(np.array([0, 1]), seed=0, num_steps=3)
assert images.shape == (2, 8, 8, 3) and np.isfinite(images).all()
path = os.path.join(out, "stage.keras")
model.save(path)
again = keras_cdm.models.load_stage(path)
np.testing.assert_allclose(again.sample(np.array([0, 1]), seed=0, num_steps=3), images, atol=1e-5)

# an SR stage from an image folder, and a recipe run
sr_source = keras_cdm.data.synthetic(num_images=8, resolution=32)
sr = keras_cdm.data.super_res_dataset(sr_source, 16, 32, 2, seed=0)
assert sr[0][0]["low_res"].shape == (2, 16, 16, 3)
if sys.argv[3] == "torch":  # the recipe code is backend-agnostic; JAX compiles it for a minute
    import common

    common.main("base16", ["--smoke", "--output_dir", os.path.join(out, "run"),
                           "--network", '{"base_channels": 8, "norm_groups": 4}'])

# what needs TensorFlow says which extra to install
for call in (lambda: keras_cdm.data.from_tfds("cifar10"),
             lambda: keras_cdm.data.base_dataset(source, 8, 4, pipeline="tf")):
    try:
        call()
    except ImportError as e:
        assert "keras-cdm[tensorflow]" in str(e), e
    else:
        raise AssertionError("expected an ImportError")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
print("TF-FREE OK")
"""


@pytest.mark.timeout(600)
@pytest.mark.skipif(BACKEND == "tensorflow", reason="the TensorFlow backend needs TensorFlow")
def test_core_path_without_tensorflow(tmp_path):
    env = no_tensorflow_env(KERAS_BACKEND=BACKEND)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, ROOT, str(tmp_path), BACKEND],
        env=env,
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert proc.returncode == 0 and "TF-FREE OK" in proc.stdout, (
        proc.stdout[-3000:] + proc.stderr[-5000:]
    )
