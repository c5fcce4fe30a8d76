"""recipes/upscale.py: your own images, of any size, through SR stages
(chained), labels from a flag, a CSV or class sub-folders, and its errors."""

import importlib
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import BACKEND
from conftest import ROOT
from PIL import Image

import keras_cdm

sys.path.insert(0, os.path.join(ROOT, "recipes"))
pytestmark = pytest.mark.skipif(
    BACKEND != "torch",
    reason="backend-agnostic recipe logic; runs once per CI pass, from torch (fastest here)",
)
MICRO = {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "norm_groups": 4}
NAMES = [f"class{i}" for i in range(10)]
FAST = ["--num_steps", "2", "--sampler", "dpm++2m"]


def _stage(tmp_path, preset, **kwargs):
    keras.utils.set_random_seed(0)
    model = keras_cdm.DiffusionModel.from_preset(preset, network_overrides=MICRO, **kwargs)
    path = str(tmp_path / f"{preset}.keras")
    model.save(path)
    return path


def _png(path, shape, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def test_upscale_keeps_every_size_and_chains(tmp_path):
    upscale = importlib.import_module("upscale")
    photos = tmp_path / "photos"
    _png(str(photos / "wide.png"), (12, 20, 3))
    _png(str(photos / "big.jpg"), (24, 24, 3), seed=1)
    _png(str(photos / "grey.png"), (6, 6), seed=2)
    sr32 = _stage(tmp_path, "sr16to32_tiny", class_names=NAMES)
    sr64 = _stage(tmp_path, "sr32to64_tiny")
    out = tmp_path / "out"
    argv = [str(photos), "--stage", sr32, "--stage", sr64, "--out", str(out), "--label", "class2"]
    written, grid = upscale.main(argv + FAST)
    sizes = {os.path.basename(w): Image.open(w).size for w in written}
    # Nothing is cropped or resized: x4 in each direction (Pillow's size is (w, h)).
    assert sizes == {"big.png": (96, 96), "grey.png": (24, 24), "wide.png": (80, 48)}
    assert Image.open(grid).size[0] > 96 + 48 + 24  # input, x2 and x4 side by side
    # The outputs are there: a second run refuses to replace them, --overwrite does.
    with pytest.raises(ValueError, match=r"already exists.*--overwrite"):
        upscale.main(argv + FAST)
    # A 64x64 photo through one 16->32 stage comes back 128x128 (it used to be
    # box-filtered to 16x16 and come back 32x32).
    _png(str(tmp_path / "single" / "photo.png"), (64, 64, 3), seed=3)
    alone, _ = upscale.main(
        [str(tmp_path / "single"), "--stage", sr32, "--out", str(tmp_path / "o64"), "--label", "1"]
        + FAST
    )
    assert Image.open(alone[0]).size == (128, 128)
    before = os.path.getmtime(written[0])
    written_again, _ = upscale.main(argv + FAST + ["--overwrite", "--mode", "tiles"])
    assert Image.open(written_again[2]).size == (80, 48) and os.path.getmtime(written[0]) >= before


def test_upscale_labels_three_ways(tmp_path):
    upscale = importlib.import_module("upscale")
    folders = tmp_path / "by_class"
    _png(str(folders / "class3" / "a.png"), (8, 8, 3))
    _png(str(folders / "7" / "b.png"), (8, 8, 3))
    sr32 = _stage(tmp_path, "sr16to32_tiny", class_names=NAMES)
    stages = upscale.load_stages([sr32])
    files, folder_labels = upscale.list_images([str(folders)])
    args = upscale.argparse.Namespace(stage=[sr32], label=None, labels=None)
    assert [os.path.basename(f) for f in files] == ["b.png", "a.png"]  # sorted sub-folders
    assert upscale.resolve_labels(args, stages, files, folder_labels).tolist() == [7, 3]
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label\na.png,class5\nb.png,1\n")
    args.labels = str(csv)
    with pytest.raises(ValueError, match="one way; received --labels and class sub-folders"):
        upscale.resolve_labels(args, stages, files, folder_labels)
    flat = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert upscale.resolve_labels(args, stages, flat, [None, None]).tolist() == [5, 1]
    csv.write_text("a.png,class5\n")
    with pytest.raises(ValueError, match=r"has no line for 'b.png' \(1 of 2"):
        upscale.resolve_labels(args, stages, flat, [None, None])
    args.labels, args.label = None, "dog"
    with pytest.raises(ValueError, match=r"Unknown class name 'dog'.*0=class0, 1=class1"):
        upscale.resolve_labels(args, stages, flat, [None, None])
    args.label = None
    with pytest.raises(ValueError, match="give --label for every image, --labels FILE.csv, or"):
        upscale.resolve_labels(args, stages, flat, [None, None])


def test_upscale_errors(tmp_path):
    upscale = importlib.import_module("upscale")
    photos = tmp_path / "photos"
    _png(str(photos / "a.png"), (8, 8, 3))
    sr32 = _stage(tmp_path, "sr16to32_tiny")
    sr64 = _stage(tmp_path, "sr32to64_tiny")
    base = _stage(tmp_path, "base16_tiny")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    mixed = tmp_path / "mixed"
    _png(str(mixed / "cls" / "x.png"), (8, 8, 3))
    _png(str(mixed / "y.png"), (8, 8, 3))
    cases = [
        ([str(photos), "--stage", base], "is a base stage"),
        ([str(photos), "--stage", sr64, "--stage", sr32], "cascade order"),
        ([str(photos), "--stage", sr32, "--label", "99"], r"--label.*Labels must lie in \[0, 10\)"),
        ([str(tmp_path / "missing.png"), "--stage", sr32], "no such file or folder"),
        ([str(tmp_path / "broken.jpg"), "--stage", sr32], "broken.jpg"),
        ([str(mixed), "--stage", sr32], "both class sub-folders"),
        ([str(photos), "--stage", sr32, "--overlap", "16"], r"--overlap 16.*at most 15"),
        ([str(photos), "--stage", sr32, "--aug_levels", "1", "2"], "one value or one per stage"),
        ([str(photos), "--stage", str(tmp_path / "nowhere")], "nowhere"),
    ]
    for argv, message in cases:
        with pytest.raises(ValueError, match=message):
            upscale.main(
                argv
                + ["--out", str(tmp_path / "out")]
                + (["--label", "1"] if "--label" not in argv else [])
            )
    with pytest.raises(ValueError, match=r"class-conditional \(0..9\)"):
        upscale.main([str(photos), "--stage", sr32, "--out", str(tmp_path / "out")])
    # An unconditional SR stage takes no label.
    keras.utils.set_random_seed(0)
    free = keras_cdm.DiffusionModel.from_preset(
        "sr16to32_tiny", network_overrides=dict(MICRO, num_classes=0)
    )
    free_path = str(tmp_path / "free.keras")
    free.save(free_path)
    written, _ = upscale.main(
        [str(photos / "a.png"), "--stage", free_path, "--out", str(tmp_path / "free")] + FAST
    )
    assert Image.open(written[0]).size == (16, 16)
    with pytest.raises(ValueError, match="every --stage is unconditional"):
        upscale.main(
            [str(photos), "--stage", free_path, "--out", str(tmp_path / "o"), "--label", "1"]
        )
    # From the command line: one line, exit 2, no traceback.
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "recipes", "upscale.py"),
            str(photos),
            "--stage",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, KERAS_BACKEND=BACKEND),
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "error: --stage" in result.stderr
