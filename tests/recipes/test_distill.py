"""recipes/distill.py: rounds down to --final_steps, each student a preset
directory that samples with its recorded settings; a SIGTERM stops a round
at a step and the printed command resumes it to the uninterrupted run's
weights; flags are checked (the recipe's logic is backend-agnostic: torch
pass; `ProgressiveDistillation` itself is tested on every backend in
tests/models/test_distillation.py)."""

import importlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import BACKEND
from conftest import started
from conftest import torch_pass_only

import keras_cdm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "recipes"))
sys.path.insert(0, os.path.join(ROOT, "tools"))
pytestmark = [torch_pass_only, pytest.mark.timeout(600)]


def tiny_teacher(path):
    return keras_cdm.DiffusionModel.from_preset("base16_tiny", seed=0).save_to_preset(str(path))


def flags(teacher, out, steps=6):
    return [
        str(teacher),
        "--teacher_steps", "8", "--final_steps", "2", "--steps_per_round", str(steps),
        "--checkpoint_every", "2", "--batch_size", "4", "--num_synthetic", "16",
        "--seed", "3", "--output_dir", str(out),
    ]  # fmt: skip


def run(argv, **kwargs):
    proc = subprocess.Popen(
        [sys.executable, "recipes/distill.py"] + argv,
        cwd=ROOT,
        env=dict(os.environ, KERAS_BACKEND=BACKEND),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )
    return started(proc)  # ended by conftest's fixture if the test fails first


def student_weights(directory):
    return [np.asarray(w) for w in keras_cdm.DiffusionModel.from_preset(directory).get_weights()]


def test_rounds_resume_after_sigterm_and_students_sample_as_recorded(tmp_path, capsys):
    teacher = tiny_teacher(tmp_path / "teacher")
    whole = run(flags(teacher, tmp_path / "whole"))
    # The same run, stopped by SIGTERM in its first round after a checkpoint.
    stopped = run(flags(teacher, tmp_path / "stopped"))
    ckpt = tmp_path / "stopped" / "round_4" / "checkpoint.keras"
    deadline = time.time() + 300
    while not ckpt.exists():
        assert stopped.poll() is None, stopped.communicate()[1][-3000:]
        assert time.time() < deadline
        time.sleep(0.02)
    stopped.send_signal(signal.SIGTERM)
    out, err = stopped.communicate(timeout=300)
    assert stopped.returncode == 143, err[-3000:]
    line = next(x for x in out.splitlines() if "resume with: " in x)
    command = shlex.split(line.split("resume with: ")[1])
    assert command[:3] == [f"KERAS_BACKEND={BACKEND}", "python", "recipes/distill.py"]
    assert command[-1] == "--resume"
    assert not (tmp_path / "stopped" / "student_4").exists()
    resumed = run(command[3:])
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert "round 4: resumed at step" in out
    out_whole, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err[-3000:]
    # Both rounds, each student with its record, equal to the uninterrupted run's.
    for steps in (4, 2):
        a = tmp_path / "whole" / f"student_{steps}"
        b = tmp_path / "stopped" / f"student_{steps}"
        record = json.load(open(a / "distillation.json"))
        assert (record["student_steps"], record["teacher_steps"]) == (steps, 2 * steps)
        assert record["command"].startswith(f"KERAS_BACKEND={BACKEND} python recipes/distill.py")
        for x, y in zip(student_weights(a), student_weights(b)):
            np.testing.assert_allclose(x, y, atol=1e-5)  # same steps, data and noise
    # A student samples with its recorded steps, solver and grid, unless told otherwise.
    sample = importlib.import_module("sample_cascade")
    capsys.readouterr()
    sample.main([str(tmp_path / "whole" / "student_2"), "--num_images", "2",
                 "--output_dir", str(tmp_path / "samples")])  # fmt: skip
    assert "base stage 16x16: 2 ddim steps for 2 images" in capsys.readouterr().out
    sample.main([str(tmp_path / "whole" / "student_2"), "--num_images", "2", "--num_steps", "3",
                 "--output_dir", str(tmp_path / "samples")])  # fmt: skip
    assert "3 ddim steps" in capsys.readouterr().out


def test_flags_are_checked(tmp_path, capsys):
    distill = importlib.import_module("distill")
    common = importlib.import_module("common")
    teacher = tiny_teacher(tmp_path / "teacher")
    with pytest.raises(SystemExit):
        distill.main([str(teacher), "--teacher_steps", "12", "--final_steps", "4"])
    assert (
        "--teacher_steps 12 must be --final_steps 4 times a power of 2" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        distill.main([str(teacher), "--guidance_scale", "inf"])
    assert "--guidance_scale: expected a number >= 0" in capsys.readouterr().err
    out = tmp_path / "run"
    distill.main(flags(teacher, out, steps=1)[:-2] + ["--output_dir", str(out)])
    assert sorted(os.listdir(out)) == ["round_2", "round_4", "run.json", "student_2", "student_4"]
    with pytest.raises(common.CheckpointExists, match="--resume"):
        distill.main(flags(teacher, out, steps=1))
    with pytest.raises(common.ResumeRefused, match="--batch_size 8 differs from the run's 4"):
        argv = flags(teacher, out, steps=1)
        argv[argv.index("--batch_size") + 1] = "8"
        distill.main(argv + ["--resume"])
    # Resuming a finished run does nothing more.
    assert distill.main(flags(teacher, out, steps=1) + ["--resume"]) == [
        str(out / "student_4"),
        str(out / "student_2"),
    ]
    # A student released as float16 with its record (tools/release_weights.py).
    release_weights = importlib.import_module("release_weights")
    release = release_weights.main([str(out / "student_2"), str(tmp_path / "release")])
    info = json.load(open(os.path.join(release, "training.json")))
    assert info["student_steps"] == 2 and info["weights_dtype"] == "float16"
    assert info["logged_steps"] == 1 and info["run"]["batch_size"] == 4
    assert "--resume" not in info["command"] and "recipes/distill.py" in info["command"]
    released = keras_cdm.DiffusionModel.from_preset(release)
    assert released.sampler_settings.num_steps == 2
    for a, b in zip(student_weights(out / "student_2"), released.get_weights()):
        np.testing.assert_array_equal(a.astype("float16"), np.asarray(b))
    # A student distils only from its own step count.
    with pytest.raises(common.StageError, match="--teacher_steps 8: .* distilled stage of 2 steps"):
        distill.main(flags(out / "student_2", tmp_path / "from_student", steps=1))
    assert not os.path.exists(tmp_path / "from_student" / "run.json")
    with pytest.raises(common.StageError, match="not found"):
        distill.main(flags(tmp_path / "nothing", tmp_path / "other", steps=1))
