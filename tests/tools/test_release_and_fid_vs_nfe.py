"""`tools/release_weights.py` (checkpoint → float16 preset directory with its
run's record) and `tools/fid_vs_nfe.py` (FID per sampler and NFE, resumable,
table and plot) and `tools/sr_conditioning_check.py`, at micro sizes."""

import csv
import json
import os
import sys

import numpy as np
import pytest
from conftest import ROOT
from conftest import micro_network_config
from conftest import to_numpy
from conftest import torch_pass_only

import keras_cdm

sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "recipes"))

import evaluate  # noqa: E402
import fid_vs_nfe  # noqa: E402
import release_weights  # noqa: E402
import sr_conditioning_check  # noqa: E402

pytestmark = [pytest.mark.timeout(600), torch_pass_only]


def _checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    model = keras_cdm.DiffusionModel(
        keras_cdm.UNet(**micro_network_config(learn_sigma=True)),
        diffusion={"num_timesteps": 100, "var_type": "learned_range", "loss_type": "hybrid"},
    )
    model.save(str(run / "checkpoint.keras"))
    (run / "run.json").write_text(json.dumps({"stage": "base16", "batch_size": 8}))
    with open(run / "log.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "time", "loss"])
        # 2 s per step, then a 1000 s pause (a kill and a resume), then 2 s again.
        for step, t in ((10, 100.0), (20, 120.0), (30, 1140.0), (40, 1160.0)):
            w.writerow([step, t, 0.1])
    return model, str(run / "checkpoint.keras")


def test_release_weights_writes_a_float16_preset_with_its_run_record(tmp_path):
    model, ckpt = _checkpoint(tmp_path)
    # The command of a longer run stopped at this checkpoint: recorded with
    # the checkpoint's step count, which reproduces the weights.
    command = "python recipes/train_base16.py --train_steps 80 --network '{\"a\": 1}' --seed 0"
    out = release_weights.main([ckpt, str(tmp_path / "release"), "--command", command])
    assert sorted(os.listdir(out)) == ["config.json", "ema.weights.h5", "training.json"]
    info = json.load(open(os.path.join(out, "training.json")))
    assert info["run"] == {"stage": "base16", "batch_size": 8}
    assert info["weights_dtype"] == "float16" and info["logged_steps"] == 40
    assert info["command"] == command.replace("--train_steps 80", "--train_steps 40")
    assert info["steps"] == 40  # an uncompiled checkpoint: the last logged step
    assert release_weights.command_at_step("python r.py --seed 0", 7) == (
        "python r.py --seed 0 --train_steps 7"
    )
    # The median rate between checkpoints ignores the pause of the resume.
    assert info["seconds_per_step"] == 2.0 and info["train_time_s"] == 80
    again = keras_cdm.DiffusionModel.from_preset(out)
    for a, b in zip(model.ema_network.weights, again.ema_network.weights):
        np.testing.assert_array_equal(to_numpy(a).astype("float16"), to_numpy(b))


def test_fid_vs_nfe_scores_each_setting_once_and_writes_table_and_plot(tmp_path, capsys):
    keras_cdm.models.load_stage  # noqa: B018 (the stage loader the tool uses)
    _, ckpt = _checkpoint(tmp_path)
    release = release_weights.main([ckpt, str(tmp_path / "r16")])
    full = release_weights.main([ckpt, str(tmp_path / "r32"), "--dtype", "float32"])
    clf = evaluate.train_classifier(
        str(tmp_path / "clf.keras"), "synthetic", resolution=16, limit=64, epochs=1, width=8
    )
    out = str(tmp_path / "out")
    argv = [release, "--data", "synthetic", "--extractor", clf, "--samplers", "ddim", "dpm++2m"]
    argv += ["--nfe", "2", "3", "--num_images", "20", "--reference_limit", "40", "--out", out]
    results = fid_vs_nfe.main(argv + ["--weights_dtype_check", full, "--real_floor"])
    assert results.pop("real")["num_samples"] == 20
    assert sorted(results) == sorted(
        ["ddim@2", "ddim@3", "ddim@2@float32", "dpm++2m@2", "dpm++2m@3"]
    )
    on_record = json.load(open(os.path.join(out, "fid_vs_nfe.json")))
    assert sorted(results) == sorted(set(on_record) - {"real"})
    for r in results.values():
        assert r["num_samples"] == 20 and np.isfinite(r["fid"]) and 0 <= r["class_accuracy"] <= 1
    # Float16 weights draw nearly the same images as float32 ones.
    assert abs(results["ddim@2"]["fid"] - results["ddim@2@float32"]["fid"]) < 0.05 * (
        results["ddim@2@float32"]["fid"] + 1e-3
    )
    table = open(os.path.join(out, "fid_vs_nfe.md")).read()
    assert "| dpm++2m |" in table and "NFE 3" in table and "Real training images" in table
    assert open(os.path.join(out, "fid_vs_nfe.svg")).read().count("<polyline") == 2
    # Resumed: settings on record are not sampled again.
    saved = json.load(open(os.path.join(out, "fid_vs_nfe.json")))
    saved["ddim@3"]["fid"] = 123.0
    json.dump(saved, open(os.path.join(out, "fid_vs_nfe.json"), "w"))
    again = fid_vs_nfe.main(argv + ["--nfe", "2", "3", "4"])
    assert again["ddim@3"]["fid"] == 123.0 and "ddim@4" in again
    # Quadratic spacing: a row of its own, scored once, dashed in the plot.
    spaced = fid_vs_nfe.main(argv + ["--spacings", "uniform", "quadratic"])
    assert spaced["ddim@3"]["fid"] == 123.0 and spaced["dpm++2m/quadratic@3"]["num_samples"] == 20
    assert "| ddim/quadratic |" in open(os.path.join(out, "fid_vs_nfe.md")).read()
    assert open(os.path.join(out, "fid_vs_nfe.svg")).read().count("stroke-dasharray") == 2
    with pytest.raises(SystemExit):
        fid_vs_nfe.main(argv + ["--samplers", "euler"])
    # A distilled student: a row of its own, at its recorded steps.
    teacher = keras_cdm.DiffusionModel.from_preset(release)
    student = keras_cdm.models.ProgressiveDistillation(teacher, 2).student
    folder = student.save_to_preset(str(tmp_path / "student_2"), weights="ema")
    distilled = fid_vs_nfe.main(argv + ["--students", folder])
    assert distilled["distilled@2"]["num_samples"] == 20 and "distilled@3" not in distilled
    assert "| distilled | " in open(os.path.join(out, "fid_vs_nfe.md")).read()
    # ... and with another solver on its own grid: a row of its own, other samples.
    renoised = fid_vs_nfe.main(argv + ["--students", folder, "--student_samplers", "ddim_renoise"])
    assert renoised["distilled@2"] == distilled["distilled@2"]
    assert renoised["distilled/ddim_renoise@2"]["num_samples"] == 20
    assert renoised["distilled/ddim_renoise@2"]["fid"] != distilled["distilled@2"]["fid"]
    assert "| distilled/ddim_renoise | " in open(os.path.join(out, "fid_vs_nfe.md")).read()
    capsys.readouterr()
    with pytest.raises(SystemExit):  # no students to sample
        fid_vs_nfe.main(argv + ["--student_samplers", "ddim_renoise"])
    assert "--student_samplers: there are no --students to sample" in capsys.readouterr().err
    # A whole cascade: every stage at the sampler's NFE, scored at the last
    # stage's size; distilled students given one per stage.
    sr = keras_cdm.SuperResDiffusionModel(
        keras_cdm.SuperResUNet(low_res_size=8, **micro_network_config(image_size=16)),
        diffusion={"num_timesteps": 100},
    )
    sr_dir = sr.save_to_preset(str(tmp_path / "sr"), weights="ema")
    sr_student = keras_cdm.models.ProgressiveDistillation(sr, 2).student
    sr_student_dir = sr_student.save_to_preset(str(tmp_path / "sr_student_2"), weights="ema")
    cascade_out = str(tmp_path / "cascade")
    argv = [release, sr_dir, "--data", "synthetic", "--extractor", clf, "--samplers", "ddim"]
    argv += ["--nfe", "2", "--num_images", "12", "--reference_limit", "24", "--out", cascade_out]
    with pytest.raises(SystemExit):  # no --aug_levels
        fid_vs_nfe.main(argv)
    with pytest.raises(SystemExit):  # one student for two stages
        fid_vs_nfe.main(argv + ["--aug_levels", "10", "--students", folder])
    scored = fid_vs_nfe.main(
        argv + ["--aug_levels", "10", "--students", f"{folder},{sr_student_dir}"]
    )
    assert sorted(scored) == ["ddim@2", "distilled@2"]
    assert scored["distilled@2"]["num_samples"] == 12
    assert os.path.exists(os.path.join(cascade_out, "reference_16.npz"))
    table = open(os.path.join(cascade_out, "fid_vs_nfe.md")).read()
    assert "s = [10]" in table and "at 16x16" in table and "| distilled |" in table


def test_sr_conditioning_check_reports_both_measurements(tmp_path):

    sr = keras_cdm.DiffusionModel.from_preset(
        "sr16to32_tiny", network_overrides={"base_channels": 8, "norm_groups": 4}
    )
    folder = sr.save_to_preset(str(tmp_path / "sr"), weights="ema")
    out = sr_conditioning_check.main([folder, "--num_images", "4", "--num_steps", "2"])
    assert sorted(out["eps_mse"]) == [100, 500, 900]
    for mse in out["eps_mse"].values():
        assert mse["own_low_res"] > 0 and mse["other_low_res"] > 0
    assert 0 < out["sample_vs_low_res"]["own"] < 2
    assert sorted(out["x0_vs_low_res"]) == [100, 500, 900]
    # The network output is read by its mean_type. Untrained, it outputs 0
    # whatever the input: ε = 0 (MSE near 1), or v = 0, i.e. ε = √(1−ᾱ) x_t,
    # close to the true ε at t = 900; own and other inputs agree exactly.
    for mean_type, low, high in (("epsilon", 0.8, 1.2), ("v", 0.0, 0.1)):
        net = keras_cdm.DiffusionModel.from_preset(
            "sr16to32_tiny",
            network_overrides={"base_channels": 8, "norm_groups": 4},
            diffusion={"mean_type": mean_type},
        )
        folder = net.save_to_preset(str(tmp_path / mean_type), weights="ema")
        out = sr_conditioning_check.main([folder, "--num_images", "4", "--num_steps", "2"])
        assert out["mean_type"] == mean_type
        mse = out["eps_mse"][900]
        assert low < mse["own_low_res"] == mse["other_low_res"] < high
    base = str(tmp_path / "base")
    keras_cdm.DiffusionModel.from_preset("base16_tiny").save_to_preset(base)
    with pytest.raises(ValueError, match="is not a super-resolution stage"):
        sr_conditioning_check.main([base, "--num_images", "4"])
