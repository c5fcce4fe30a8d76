"""`tools/gpu_proof.py --dry_run`: the GPU proof's code, at tiny sizes on the
CPU, without TensorFlow; and the data bundle it reads."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import BACKEND
from conftest import INSTALLED_BACKENDS
from conftest import ROOT
from conftest import no_tensorflow_env
from PIL import Image

PROOF = os.path.join(ROOT, "tools", "gpu_proof.py")
pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(BACKEND == "tensorflow", reason="the proof runs JAX and PyTorch"),
]
# The torch pass runs the dry run with JAX's and PyTorch's speed phase and
# the ablation on PyTorch; the JAX pass's own run (the ablation compiled by
# XLA, about 1.5 min here) runs with `-m large`.


def _cifar_like(root, per_class=3):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(10):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(d / f"{i:04d}.jpg", quality=90)


def test_pack_fits_the_data_to_the_room_left(tmp_path):
    sys.path.insert(0, os.path.dirname(PROOF))
    import gpu_proof

    _cifar_like(tmp_path / "cifar", per_class=5)
    out = str(tmp_path / "c.npz")
    gpu_proof.pack(str(tmp_path / "cifar"), out, 5)
    whole = os.path.getsize(out)
    room = (whole - 10 * 3200) / 2**20  # about two random 32x32 JPEGs per class less
    gpu_proof.pack(str(tmp_path / "cifar"), out, 5, max_mib=room)
    with np.load(out) as f:
        kept = len(f["train_labels"])
        assert len(f["test_labels"]) == 50 and 10 <= kept < 50 and kept % 10 == 0
    assert os.path.getsize(out) <= room * 2**20
    with pytest.raises(SystemExit, match="--pack_max_mib 0.0"):
        gpu_proof.pack(str(tmp_path / "cifar"), out, 5, max_mib=0.01)


@pytest.mark.parametrize(
    "backend", [pytest.param(BACKEND, marks=[pytest.mark.large] if BACKEND == "jax" else [])]
)
def test_dry_run_without_tensorflow(tmp_path, backend):
    """The speed phase and the whole ablation (torch also reads a packed data
    bundle), in processes that cannot import TensorFlow; the files and
    figures the GPU run will report come out."""
    frameworks = [BACKEND] + (["jax"] if BACKEND == "torch" and "jax" in INSTALLED_BACKENDS else [])
    argv = ["--dry_run", "--out", str(tmp_path / "out")]
    argv += ["--frameworks", *frameworks, "--ablation_backend", BACKEND, "--minutes", "4"]
    argv += ["--sampling_share", "0.3"]
    if BACKEND == "torch":
        _cifar_like(tmp_path / "cifar")
        bundle = tmp_path / "cifar.npz"
        packed = subprocess.run(
            [sys.executable, PROOF, "--pack", str(tmp_path / "cifar"), "--pack_out", str(bundle)],
            env=no_tensorflow_env(),
            capture_output=True,
            text=True,
        )
        assert packed.returncode == 0, packed.stderr[-3000:]
        assert "packed 30 train and 30 test images" in packed.stdout
        with np.load(bundle) as f:
            assert f["train_offsets"][-1] == len(f["train_bytes"])
            assert np.bincount(f["train_labels"]).tolist() == [3] * 10
        argv += ["--data", str(bundle)]
    proc = subprocess.run(
        [sys.executable, PROOF, *argv],
        env=no_tensorflow_env(KERAS_BACKEND=BACKEND),
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out"
    proof = json.load(open(out / "proof.json"))
    for fw in frameworks:
        bench = proof["bench"][fw]
        assert "error" not in bench, (fw, bench, open(out / "log.txt").read()[-3000:])
    # The sampling phase: noise drawn on the device, images/s and the ratios.
    for backend, rows in proof["sampling"].items():
        assert isinstance(rows, list), (backend, rows, open(out / "log.txt").read()[-3000:])
    files = sorted(os.listdir(out))
    assert files == [
        "ablation.csv",
        "bench.csv",
        "grid.png",
        "log.txt",
        "proof.json",
        "sampling.csv",
    ]
    for backend, rows in proof["sampling"].items():
        (row,) = rows
        assert (row["batch"], row["size"]) == (2, 32)
        assert row["ddpm_img_s"] > 0 and row["host_noise_ms"] > 0 and row["ratio_now"] > 0
    assert bench["train_img_s"] > 0 and bench["forward_img_s"] > 0 and bench["overhead"] > 0
    ablation = proof["ablation"]
    assert "error" not in ablation, ablation
    arms = ablation["results"]["arms"]
    assert len(arms) == 3 and all(np.isfinite(a["fid"]) for a in arms.values())
    assert all(ablation[f"train_{k}"]["steps"] > 0 for k in ("base16", "sr_noaug", "base32"))
    if BACKEND == "torch":
        assert "(400 train" not in ablation["setup"]["data"]  # the 30-image bundle was read
        assert "cifar.npz (30 train, 30 test images)" in ablation["setup"]["data"]


def test_bad_flags_are_refused(tmp_path):
    for argv, message in (
        (["--dry_run"], "--out is required"),
        (["--out", str(tmp_path), "--minutes", "0"], "--minutes must be > 0"),
        (["--out", str(tmp_path), "--data", str(tmp_path / "none.npz")], "file not found"),
        (["--out", str(tmp_path), "--frameworks", "mxnet"], "unknown"),
    ):
        proc = subprocess.run(
            [sys.executable, PROOF, *argv], capture_output=True, text=True, env=no_tensorflow_env()
        )
        assert proc.returncode != 0 and message in proc.stderr, (argv, proc.stderr[-1000:])
