"""`tools/cascade_vs_single.py` at micro sizes: the rows a cascade is
judged by, the sweep over s, resuming, and refused stages."""

import json
import os
import sys

import numpy as np
import pytest
from conftest import ROOT
from conftest import micro_network_config
from conftest import torch_pass_only

import keras_cdm

sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "recipes"))

import cascade_vs_single  # noqa: E402
import evaluate  # noqa: E402

pytestmark = [pytest.mark.timeout(600), torch_pass_only]
DIFFUSION = {"schedule": "cosine", "num_timesteps": 50}


def _stages(tmp_path):
    nets = {
        "base16": keras_cdm.UNet(**micro_network_config(image_size=8)),
        "base32": keras_cdm.UNet(**micro_network_config(image_size=16)),
        "sr": keras_cdm.SuperResUNet(low_res_size=8, **micro_network_config(image_size=16)),
        "sr_noaug": keras_cdm.SuperResUNet(low_res_size=8, **micro_network_config(image_size=16)),
    }
    paths = {}
    for seed, (name, net) in enumerate(nets.items()):
        cls = (
            keras_cdm.SuperResDiffusionModel if name.startswith("sr") else keras_cdm.DiffusionModel
        )
        paths[name] = str(tmp_path / f"{name}.keras")
        cls(net, diffusion=DIFFUSION, seed=seed).save(paths[name])
    return paths


def test_rows_sweep_and_resume(tmp_path):
    paths = _stages(tmp_path)
    clf = evaluate.train_classifier(
        str(tmp_path / "clf.keras"), "synthetic", resolution=16, limit=64, epochs=1, width=8
    )
    out = str(tmp_path / "out")
    argv = [f"--{k}={v}" for k, v in paths.items()]
    argv += ["--data", "synthetic", "--extractor", clf, "--num_steps", "2", "--num_samples", "8"]
    argv += ["--sweep_samples", "6", "--levels", "0", "10", "--chunk", "3", "--out", out]
    rows, sweep, best = cascade_vs_single.main(argv)
    assert sorted(sweep) == ["0", "10"] and best in (0, 10)
    assert list(rows) == [
        "base16 alone",
        f"cascade, augmentation, non-truncated s={best}",
        f"cascade, augmentation, truncated s={best}",
        "cascade, no augmentation",
        "base8 + bicubic (SR floor)",
        "test images 8x8 + bicubic (data floor)",
        "test images 16x16",
    ]
    for r in rows.values():
        assert r["num_samples"] == 8 and len(r["fid_halves"]) == 2 and np.isfinite(r["fid"])
        assert 0 <= r["class_accuracy"] <= 1 and 0 <= r["precision"] <= 1
    # The SR rows on shared base samples are the cascade's own images.
    stages = [keras_cdm.models.resolve_stage(paths[k]) for k in ("base16", "sr")]
    cascade = keras_cdm.CascadeSampler(
        stages, aug_levels=[best], num_steps=2, sampler="ddpm", guidance_scale=1.0
    )
    labels = np.arange(8) % 3
    expected = cascade.sample(labels, seed=cascade_vs_single.SEED)
    kept = np.load(os.path.join(out, "samples", f"aug_s{best}.npz"))
    np.testing.assert_array_equal(kept["labels"], labels)
    np.testing.assert_array_equal(kept["images"], keras_cdm.utils.images.to_uint8(expected))
    table = open(os.path.join(out, "table.md")).read()
    assert "| cascade, no augmentation |" in table and "best s=" in table
    assert open(os.path.join(out, "sweep.svg")).read().count("<polyline") == 2
    # Resumed: rows and levels on record are kept, new levels are added.
    saved = json.load(open(os.path.join(out, "rows.json")))
    saved["base16 alone"]["fid"] = 123.0
    json.dump(saved, open(os.path.join(out, "rows.json"), "w"))
    rows2, sweep2, _ = cascade_vs_single.main(
        argv[:-2] + ["--levels", "0", "10", "20", "--out", out]
    )
    assert rows2["base16 alone"]["fid"] == 123.0 and sorted(sweep2) == ["0", "10", "20"]
    assert sweep2["0"] == sweep["0"]
    # Other settings into the same --out: refused, not mixed with its samples.
    with pytest.raises(SystemExit, match=r"--num_steps 2 -> 3"):
        cascade_vs_single.main(argv + ["--num_steps", "3"])


def test_real_rows_have_the_sample_rows_labels():
    # A test split listed class by class: its first images are one class.
    real = np.repeat(np.arange(3), 4)
    labels = np.arange(9) % 3
    pick = cascade_vs_single.matching_real_images(real, labels)
    np.testing.assert_array_equal(real[pick], labels)
    assert len(set(pick)) == 9
    with pytest.raises(SystemExit, match="5 samples of class 0 need as many real"):
        cascade_vs_single.matching_real_images(real, np.arange(15) % 3)


def test_refuses_stages_that_do_not_fit(tmp_path):
    paths = _stages(tmp_path)
    argv = [f"--{k}={paths['base32'] if k == 'sr' else v}" for k, v in paths.items()]
    out = str(tmp_path / "out")
    with pytest.raises(SystemExit, match=r"--sr: expected an SR stage 8->16"):
        cascade_vs_single.main(argv + ["--data", "synthetic", "--extractor", "x", "--out", out])
    # A refused run leaves no record that would refuse the corrected one.
    assert not os.path.exists(os.path.join(out, "run.json"))
    # The no-augmentation stage, the last row, is checked before any sampling.
    argv = [f"--{k}={paths['base32'] if k == 'sr_noaug' else v}" for k, v in paths.items()]
    with pytest.raises(SystemExit, match=r"--sr_noaug: expected an SR stage 8->16"):
        cascade_vs_single.main(argv + ["--data", "synthetic", "--extractor", "x", "--out", out])
    assert not os.path.exists(os.path.join(out, "run.json"))
    missing = str(tmp_path / "no_such_stage")
    argv = [f"--{k}={missing if k == 'sr_noaug' else v}" for k, v in paths.items()]
    with pytest.raises(SystemExit, match="--sr_noaug: Preset directory not found: .*no_such_stage"):
        cascade_vs_single.main(argv + ["--data", "synthetic", "--extractor", "x", "--out", out])
    assert not os.path.exists(os.path.join(out, "run.json"))
