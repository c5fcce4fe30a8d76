"""Every recipe's --smoke run and kill-and-resume, on every backend (the
CIFAR-10 ablation driver and the evaluation recipe, which only chain the
others, from the torch pass)."""

import csv
import importlib
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import INSTALLED_BACKENDS
from conftest import to_numpy

import keras_cdm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# No recipe case may hang (a bad flag once looped forever): each is ended
# after 10 minutes (pytest-timeout, installed by the `test` extra).
pytestmark = [pytest.mark.timeout(600)]
sys.path.insert(0, os.path.join(ROOT, "recipes"))
sys.path.insert(0, os.path.join(ROOT, "tools"))

torch_pass_only = pytest.mark.skipif(
    BACKEND != "torch",
    reason="backend-agnostic recipe logic; runs once per CI pass, from torch (fastest here)",
)

STAGES = ["base32", "sr32to64", "sr64to128", "sr64to256", "base16", "sr16to64", "sr16to32"]
# Every stage on torch (eager: seconds each); on JAX and TensorFlow, whose
# compilation makes each stage a minute here, one base and one SR stage in
# the default run (the recipe's code path is the same for every stage) and
# the rest with `-m large`. The base stage's recipe also runs on every
# backend in the kill-and-resume and signal tests, so on JAX only the SR
# stage's smoke run is in the default run; on TensorFlow (its SR stage
# trains in tests/models, its recipe runs in the signal test) none, to keep
# CI inside its time.
EVERY_BACKEND = ("sr16to32",)


def _stage_param(stage):
    default = BACKEND == "torch" or (stage in EVERY_BACKEND and BACKEND == "jax")
    marks = [] if default else [pytest.mark.large]
    return pytest.param(stage, marks=marks)


@pytest.mark.parametrize("stage", [_stage_param(s) for s in STAGES])
def test_train_recipe_smoke(stage, tmp_path):
    module = importlib.import_module(f"train_{stage}")
    assert f"recipes/train_{stage}.py" in module.__doc__
    common = importlib.import_module("common")
    final = common.main(stage, ["--smoke", "--output_dir", str(tmp_path)])
    assert os.path.exists(final)
    assert os.path.exists(tmp_path / "samples_final.png")
    rows = read_csv(tmp_path / "log.csv")
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert json.load(open(tmp_path / "run.json"))["stage"] == stage


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


_RESUME_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import common
common.main("base16", sys.argv[2:])
"""

CYCLE = ("jax", "torch", "tensorflow")


def next_backend():
    """The next installed backend after this one in CYCLE (None if none)."""
    i = CYCLE.index(BACKEND)
    others = [CYCLE[(i + k) % 3] for k in (1, 2)]
    return next((b for b in others if b in INSTALLED_BACKENDS), None)


# On TensorFlow (5 min there) the signal test already stops, resumes and
# compares a TF run with an uninterrupted one, and the torch pass resumes
# its checkpoint under TensorFlow; `-m large` runs it there too.
@pytest.mark.parametrize(
    "_", [pytest.param(0, marks=[pytest.mark.large] if BACKEND == "tensorflow" else [])]
)
def test_kill_and_resume_here_and_under_another_backend(_, tmp_path):
    """A run killed after its first checkpoint and resumed, here and under
    the next backend (a JAX checkpoint's jit_compile must not become
    torch.compile, nor a torch checkpoint's Adam run torch kernels under
    TF), ends at exactly the requested step with the uninterrupted run's
    weights, to the tolerance the backends allow."""
    common = importlib.import_module("common")
    args = ["--smoke", "--checkpoint_every", "2", "--seed", "3"]
    # The uninterrupted run takes two steps per execution (the same weights).
    full = common.main(
        "base16",
        args
        + ["--train_steps", "4", "--steps_per_execution", "2", "--output_dir", str(tmp_path / "a")],
    )
    # A run stopped after its first checkpoint (as if killed), then resumed.
    common.main("base16", args + ["--train_steps", "2", "--output_dir", str(tmp_path / "b")])
    shutil.copytree(tmp_path / "b", tmp_path / "c")
    resumed = common.main(
        "base16", args + ["--train_steps", "4", "--resume", "--output_dir", str(tmp_path / "b")]
    )
    other = next_backend()  # None in a one-backend install: no cross-backend resume
    if other:
        proc = subprocess.run(
            [sys.executable, "-c", _RESUME_SCRIPT, os.path.join(ROOT, "recipes")]
            + args
            + ["--train_steps", "4", "--resume", "--output_dir", str(tmp_path / "c")],
            env=dict(os.environ, KERAS_BACKEND=other, TF_CPP_MIN_LOG_LEVEL="3"),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"backend={other}" in proc.stdout and "resumed at step 2" in proc.stdout
        assert [int(r["step"]) for r in read_csv(tmp_path / "c" / "log.csv")] == [2, 4]
    rows = read_csv(tmp_path / "b" / "log.csv")
    assert [int(r["step"]) for r in rows] == [2, 4]
    # Same data, t and noise after the resume: the step-4 losses agree.
    full_rows = read_csv(tmp_path / "a" / "log.csv")
    assert float(rows[-1]["loss"]) == pytest.approx(float(full_rows[-1]["loss"]), rel=1e-3)
    # Weights agree up to float noise: CPU reductions are not bitwise
    # reproducible between runs (the step-2 losses of two identical runs
    # already differ in the 5th digit), and Adam's normalised update turns
    # noise on near-zero gradients (branches behind zero-initialised convs)
    # into up to ±lr per element and step: |diff| <= 2 * lr * steps. Under
    # another backend the noise streams differ, which the same bound covers.
    a = keras.saving.load_model(full)
    for path in [resumed] + ([str(tmp_path / "c" / "base16.keras")] if other else []):
        b = keras.saving.load_model(path)
        assert int(to_numpy(b.optimizer.iterations)) == 4
        for wa, wb in zip(a.network.weights, b.network.weights):
            np.testing.assert_allclose(to_numpy(wa), to_numpy(wb), atol=2 * 1e-4 * 4)
    # The bound can fail: a network initialised from another seed is far away.
    keras.utils.set_random_seed(4)
    c = keras_cdm.DiffusionModel.from_preset("base16_tiny")
    gap = max(
        np.abs(to_numpy(x) - to_numpy(y)).max()
        for x, y in zip(a.network.weights, c.network.weights)
    )
    assert gap > 1e-2


@torch_pass_only
def test_sample_and_sweep_tools(tmp_path):
    common = importlib.import_module("common")
    base = common.main(
        "base16", ["--smoke", "--label_dropout", "0.1", "--output_dir", str(tmp_path / "base")]
    )
    sr = common.main("sr16to32", ["--smoke", "--output_dir", str(tmp_path / "sr")])
    sample = importlib.import_module("sample_cascade")
    # The demo's cascade: label dropout on the base stage only, so guidance per stage.
    grid, npz = sample.main(
        [base, sr, "--smoke", "--aug_levels", "10", "--guidance_scale", "3", "1"]
        + ["--output_dir", str(tmp_path / "s")]
    )
    with pytest.raises(ValueError, match=r"guidance_scale=3.0 for stage 1.*\[3.0, 1.0\]"):
        sample.main([base, sr, "--smoke", "--guidance_scale", "3", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match=r"--sampler takes one value or one per stage \(2\)"):
        sample.main([base, sr, "--smoke", "--sampler", "ddim", "ddim", "ddpm"])
    data = np.load(npz)
    assert data["images"].shape == (2, 32, 32, 3) and data["images"].dtype == np.uint8
    sweep = importlib.import_module("sweep_aug_levels")
    sweep.main(
        [
            base,
            sr,
            "--levels",
            "0",
            "20",
            "--num_steps",
            "2",
            "--sampler",
            "ddim",
            "ddpm",
            "--num_images",
            "2",
            "--output_dir",
            str(tmp_path / "w"),
        ]
    )
    assert sorted(os.listdir(tmp_path / "w")) == [
        "grid_s0000.png",
        "grid_s0020.png",
        "samples_s0000.npz",
        "samples_s0020.npz",
    ]


@torch_pass_only
def test_evaluate_recipe_smoke(tmp_path):
    evaluate = importlib.import_module("evaluate")
    result = evaluate.main(["smoke", "--output", str(tmp_path)])
    assert np.isfinite(result["fid"]) and 0.0 <= result["precision"] <= 1.0
    assert os.path.exists(tmp_path / "metrics.json")


@torch_pass_only
def test_stops_exactly_and_keeps_the_checkpoint_interval(tmp_path):
    common = importlib.import_module("common")
    final = common.main(
        "base16",
        ["--smoke", "--train_steps", "3", "--checkpoint_every", "2"]
        + ["--network", '{"base_channels": 8}', "--output_dir", str(tmp_path)],
    )
    # Checkpoints every 2 steps and at the last one; no silent change of the interval.
    assert [int(r["step"]) for r in read_csv(tmp_path / "log.csv")] == [2, 3]
    assert keras.saving.load_model(final).network.get_config()["base_channels"] == 8
    # A log begun by an older version (it had a bad_input column) keeps its
    # columns: each value stays under its own name.
    rows = read_csv(tmp_path / "log.csv")
    with open(tmp_path / "log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["step", "time", "bad_input", "loss", "mse", "vb"])
        w.writeheader()
        w.writerows(dict(r, bad_input="0") for r in rows)
    # Train further from step 3 (between two checkpoints) to step 6, two
    # steps per execution once the run is back on a multiple of two.
    common.main(
        "base16",
        ["--smoke", "--train_steps", "6", "--checkpoint_every", "2", "--resume"]
        + ["--steps_per_execution", "2"]
        + ["--network", '{"base_channels": 8}', "--output_dir", str(tmp_path)],
    )
    rows = read_csv(tmp_path / "log.csv")
    assert [int(r["step"]) for r in rows] == [2, 3, 4, 6]
    # Progress lines (--log_every 50: only at each run's end) in train.log.
    progress = (tmp_path / "train.log").read_text().splitlines()
    assert [line.split("  ")[0] for line in progress] == [
        "[keras_cdm] step 3/3",
        "[keras_cdm] step 6/6",
    ]
    assert "img/s" in progress[-1] and progress[-1].endswith("ETA 0:00:00")
    assert [r["bad_input"] for r in rows] == ["0", "0", "", ""]
    assert all(float(r["loss"]) >= float(r["mse"]) > 0 for r in rows)


@torch_pass_only
def test_cifar10_ablation_smoke(tmp_path):
    # A 10-class, 32x32 image folder with train/test splits stands in for CIFAR-10.
    from PIL import Image

    from keras_cdm.data import synthetic_shapes

    for split, seed in (("train", 0), ("test", 1)):
        images, labels = synthetic_shapes(40, 32, seed=seed)
        for i, (img, lab) in enumerate(zip(images, labels)):
            folder = tmp_path / "data" / split / f"class{lab}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i}.png")
    ablation = importlib.import_module("cifar10_ablation")
    out = tmp_path / "out"
    argv = ["--smoke", "--data", str(tmp_path / "data"), "--output_dir", str(out)]
    ablation.main(argv)
    results = json.load(open(out / "results.json"))
    assert len(results) == 5
    for r in results.values():
        assert r["num_samples"] == 20 and np.isfinite(r["fid"]) and len(r["fid_halves"]) == 2
    assert set(json.load(open(out / "sweep.json"))) == {"0", "25", "62", "125", "250"}
    assert (out / "results.md").read_text().count("| cascade") == 3
    # Resuming a finished run redoes nothing: the sample files are untouched.
    before = os.path.getmtime(out / "samples" / "base32.npz")
    ablation.main(argv)
    assert os.path.getmtime(out / "samples" / "base32.npz") == before
