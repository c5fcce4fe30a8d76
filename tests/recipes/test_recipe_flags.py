"""Bad recipe flags and bad resumes: each is refused up front with a message
that names the flag, value or file (none of them hangs). Backend-agnostic:
run from the torch pass."""

import argparse
import csv
import importlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import torch_pass_only

import keras_cdm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# No recipe case may hang (a bad flag once looped forever): each is ended
# after 10 minutes (pytest-timeout, installed by the `test` extra).
pytestmark = [pytest.mark.timeout(600), torch_pass_only]
sys.path.insert(0, os.path.join(ROOT, "recipes"))
sys.path.insert(0, os.path.join(ROOT, "tools"))


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--train_steps", "-1"], r"--train_steps: expected a positive int, received '-1'"),
        (["--train_steps", "0"], r"--train_steps: expected a positive int, received '0'"),
        (["--batch_size", "0"], r"--batch_size: expected a positive int, received '0'"),
        (["--batch_size", "-4"], r"--batch_size: expected a positive int"),
        (["--checkpoint_every", "-5"], r"--checkpoint_every: expected a positive int"),
        (["--checkpoint_every", "0"], r"--checkpoint_every: expected a positive int"),
        (["--learning_rate", "0"], r"--learning_rate: expected a positive number, received '0'"),
        (["--learning_rate=-1e-4"], r"--learning_rate: expected a positive number"),
        (["--learning_rate", "nan"], r"--learning_rate: expected a positive number"),
        (["--ema_decay", "1.5"], r"--ema_decay: expected a number in \[0, 1\)"),
        (["--label_dropout", "-0.1"], r"--label_dropout: expected a number in \[0, 1\)"),
        (["--num_synthetic", "0"], r"--num_synthetic: expected a positive int"),
        (["--sample_every", "-1"], r"--sample_every: expected an int >= 0"),
        (["--seed", "-3"], r"--seed: expected an int >= 0"),
        (["--steps_per_execution", "0"], r"--steps_per_execution: expected a positive int"),
        (["--flip", "2"], r"--flip: invalid choice: 2"),
        (["--network", "[8]"], r"--network: expected a JSON object, received '\[8\]'"),
        (["--network", "{base_channels: 8}"], r"--network: expected a JSON object.*Expecting"),
        (
            ["--network", '{"base_chanels": 8}'],
            r"--network: unknown network field\(s\) \['base_chanels'\]",
        ),
    ],
)
def test_bad_flags_name_the_flag(flags, match, capsys, tmp_path):
    common = importlib.import_module("common")
    with pytest.raises(SystemExit) as exit_info:
        common.main("base16", ["--smoke", "--output_dir", str(tmp_path)] + flags)
    assert exit_info.value.code == 2
    assert re.search(match, capsys.readouterr().err)
    assert not os.path.exists(tmp_path / "checkpoint.keras")


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(batch_size=0), r"--batch_size: expected a positive int, received 0"),
        (dict(batch_size=2.5), r"--batch_size: expected a positive int, received 2.5"),
        (dict(train_steps=True), r"--train_steps: expected a positive int, received True"),
        (dict(learning_rate="1e-4"), r"--learning_rate: expected a positive number"),
        (dict(preset="big"), r"--preset: expected one of \['paper', 'small', 'tiny'\]"),
        (dict(resume="yes"), r"--resume: expected True or False"),
        (dict(network=[8]), r"--network: expected a dict"),
        (dict(network={"base_chanels": 8}), r"unknown network field\(s\) \['base_chanels'\]"),
    ],
)
def test_train_from_python_checks_each_typed_field(fields, match, tmp_path):
    common = importlib.import_module("common")
    with pytest.raises(common.FlagError, match=match):
        common.train("base16", smoke=True, output_dir=str(tmp_path), **fields)
    with pytest.raises(TypeError, match="batch_sise"):
        common.train("base16", batch_sise=4)
    assert not os.path.exists(tmp_path / "checkpoint.keras")


def test_train_is_what_the_command_line_calls(tmp_path, capsys):
    """`train(**fields)` and the flags parse into the same options; a run
    from Python stops at its steps and prints a resume command made of them."""
    common = importlib.import_module("common")
    options = common.TrainingOptions(
        preset="tiny", network={"base_channels": 8}, train_steps=3, resume=True, flip=0
    )
    argv = options.to_argv()
    assert argv == [
        "--preset", "tiny", "--train_steps", "3", "--network", '{"base_channels": 8}',
        "--resume", "--flip", "0",
    ]  # fmt: skip
    assert common.parse_args("base16", argv) == options
    assert common.parse_args("base16", []) == common.TrainingOptions()
    final = common.train(
        "base16",
        smoke=True,
        train_steps=2,
        checkpoint_every=1,
        network={"base_channels": 8, "norm_groups": 4},
        output_dir=str(tmp_path),
    )
    assert final == os.path.join(str(tmp_path), "base16.keras") and os.path.exists(final)
    with open(tmp_path / "log.csv") as f:
        assert [row["step"] for row in csv.DictReader(f)] == ["1", "2"]
    record = json.load(open(tmp_path / "run.json"))
    assert record["network"] == {"base_channels": 8, "norm_groups": 4}


def test_missing_dataset_folder_is_named(tmp_path):
    common = importlib.import_module("common")
    missing = str(tmp_path / "no_such_folder")
    with pytest.raises(ValueError, match=r"--dataset.*no_such_folder.*not found"):
        common.main("base16", ["--smoke", "--dataset", missing, "--output_dir", str(tmp_path)])


def test_bad_resumes_are_refused(tmp_path):
    common = importlib.import_module("common")
    out = str(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match=r"--resume: no checkpoint at .*checkpoint.keras"):
        common.main("base16", ["--smoke", "--resume", "--output_dir", out])
    common.main("base16", ["--smoke", "--train_steps", "2", "--output_dir", out])
    with pytest.raises(FileExistsError, match="already holds a checkpoint: pass --resume"):
        common.main("base16", ["--smoke", "--output_dir", out])
    with pytest.raises(ValueError, match=r"at step 2, not below --train_steps 2"):
        common.main("base16", ["--smoke", "--train_steps", "2", "--resume", "--output_dir", out])
    with pytest.raises(ValueError, match=r"batch_size=4 .* gives 8 \(--batch_size\)"):
        common.main("base16", ["--smoke", "--batch_size", "8", "--resume", "--output_dir", out])
    with pytest.raises(ValueError, match=r"stage='base16' .* gives 'sr16to32' \(the recipe\)"):
        common.main("sr16to32", ["--smoke", "--resume", "--output_dir", out])
    # A record written anew from this command's flags: the checkpoint itself is still checked.
    with pytest.raises(ValueError, match=r"not the stage this command trains.*DiffusionModel"):
        common.main("sr16to32", ["--smoke", "--resume", "--new_run_record", "--output_dir", out])
    # ... and a refused resume leaves the record as it was.
    assert json.load(open(os.path.join(out, "run.json")))["stage"] == "base16"
    with pytest.raises(ValueError, match=r"--new_run_record goes with --resume"):
        common.main("base16", ["--smoke", "--new_run_record", "--output_dir", str(tmp_path / "x")])
    # Several steps per execution: checkpoints and the end must fall on execution ends.
    with pytest.raises(
        ValueError,
        match=r"--steps_per_execution 3 must divide the checkpoint "
        r"interval \(2 steps\) and --train_steps \(4\)",
    ):
        common.main("base16", ["--smoke", "--steps_per_execution", "3", "--output_dir", out + "3"])
    assert not os.path.exists(out + "3")


@pytest.mark.parametrize(
    "damage, match",
    [
        ("remove", r"run.json' is missing; it records the data stream"),
        ("truncate", r"run.json' is not valid JSON \(Unterminated string"),
        ("list", r"run.json' holds a list, not a run record"),
    ],
)
def test_missing_or_damaged_run_record_is_refused_in_one_line(damage, match, tmp_path):
    common = importlib.import_module("common")
    out = str(tmp_path / "run")
    common.main("base16", ["--smoke", "--train_steps", "2", "--output_dir", out])
    record = os.path.join(out, "run.json")
    if damage == "remove":
        os.remove(record)
    else:
        with open(record, "w") as f:
            f.write('{"stage": "base' if damage == "truncate" else "[1, 2]")
    resume = ["--smoke", "--train_steps", "3", "--resume", "--output_dir", out]
    with pytest.raises(
        common.ResumeRefused, match=match + r".*restore it, or pass --new_run_record"
    ):
        common.main("base16", resume)
    # From the command line: one line on stderr, exit 2, no traceback.
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "recipes", "train_base16.py")] + resume,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert re.fullmatch(
        r"error: --resume: .*" + match + r".*\n", proc.stderr.splitlines()[-1] + "\n"
    )
    assert "Traceback" not in proc.stderr
    # The way out it names works, and writes this command's record.
    common.main("base16", resume[:-2] + ["--new_run_record", "--output_dir", out])
    assert json.load(open(record))["stage"] == "base16"
    assert int(read_steps(out)[-1]) == 3


def read_steps(out):
    with open(os.path.join(out, "log.csv")) as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_sr_sample_grid_shows_each_row_its_own_class():
    # The SR stage is told each image's class: the grid's low-resolution
    # input i must be a shape of class labels[i] (it once showed class i % 10).
    common = importlib.import_module("common")
    labels = np.repeat(np.arange(10), 3)
    lo = common.grid_low_res(labels, 10, 16)
    images, shape_labels = keras_cdm.data.synthetic_shapes(len(labels), 16, seed=123)
    rendered = images.astype("float32") / 127.5 - 1
    for i, image in enumerate(lo):
        match = [j for j in range(len(rendered)) if np.array_equal(rendered[j], image)]
        assert len(match) == 1 and shape_labels[match[0]] == labels[i]


def test_mean_type_flag_trains_it_and_a_resume_must_keep_it(tmp_path):
    common = importlib.import_module("common")
    out = str(tmp_path / "run")
    # The small/tiny SR presets predict v; --mean_type trains another choice.
    assert keras_cdm.presets.get_preset("sr16to32_tiny").diffusion["mean_type"] == "v"
    common.main("sr16to32", ["--smoke", "--mean_type", "epsilon", "--output_dir", out])
    model = keras_cdm.models.load_stage(os.path.join(out, "checkpoint.keras"), compile=False)
    assert model.diffusion.mean_type == "epsilon"
    with pytest.raises(
        ValueError, match=r"mean_type='epsilon' \(--mean_type epsilon\), expected 'v'"
    ):
        common.main("sr16to32", ["--smoke", "--train_steps", "8", "--resume", "--output_dir", out])


def test_spacing_flag_takes_one_value_or_one_per_stage(capsys):
    common = importlib.import_module("common")
    p = argparse.ArgumentParser()
    common.add_sampling_flags(p)
    one = common.sampling_kwargs(p.parse_args(["--spacing", "quadratic"]), 2)
    assert one["spacing"] == ["quadratic", "quadratic"]
    both = common.sampling_kwargs(p.parse_args(["--spacing", "quadratic", "uniform"]), 2)
    assert both["spacing"] == ["quadratic", "uniform"]
    with pytest.raises(common.FlagError, match="--spacing"):
        common.sampling_kwargs(p.parse_args(["--spacing", "quadratic", "uniform", "uniform"]), 2)
    with pytest.raises(SystemExit):
        p.parse_args(["--spacing", "karras"])
    assert "--spacing: invalid choice: 'karras'" in capsys.readouterr().err


def test_sampling_flags_come_from_the_sampler_settings_fields():
    """Every `SamplerSettings` field is a flag or deliberately not one, so a
    new field cannot go missing from the command lines; the help shows each
    flag's default (the caller's over the dataclass's)."""
    import dataclasses

    common = importlib.import_module("common")
    fields = {f.name for f in dataclasses.fields(keras_cdm.models.SamplerSettings)}
    assert fields == set(common.SAMPLING_FLAGS) | set(common.NOT_SAMPLING_FLAGS)
    p = argparse.ArgumentParser()
    common.add_sampling_flags(p, sampler="dpm++2m", num_steps=20)
    flags = {a.dest: a for a in p._actions}
    assert set(common.SAMPLING_FLAGS) <= set(flags)
    assert not set(common.NOT_SAMPLING_FLAGS) & set(flags)
    assert "else dpm++2m)" in flags["sampler"].help and "else 20)" in flags["num_steps"].help
    assert "else uniform)" in flags["spacing"].help
    args = p.parse_args(["--eta", "0.5"])
    assert common.sampling_kwargs(args, 2)["eta"] == [0.5, 0.5]
    assert args._sampling_defaults == {"sampler": "dpm++2m", "num_steps": 20}


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["weights/cifar10/base1", "weights/cifar10/sr16to32"],
            "error: Preset directory not found: 'weights/cifar10/base1' does not exist",
        ),
        (
            ["weights/cifar10/sr16to32", "weights/cifar10/base16"],
            "error: The first stage of a cascade must be a base DiffusionModel.",
        ),
        (
            ["weights/cifar10/base16", "weights/cifar10/sr16to32", "--num_steps", "20", "20", "20"],
            "error: --num_steps takes one value or one per stage (2). Received: 3 values",
        ),
    ],
)
def test_sample_cascade_refuses_in_one_line(argv, message, tmp_path):
    proc = subprocess.run(
        [sys.executable, "recipes/sample_cascade.py", *argv, "--output_dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not os.listdir(tmp_path)


def test_the_keras_backend_is_checked_before_keras_loads(tmp_path):
    """A backend name Keras does not know, or a keras.json backend that is
    not installed (TensorFlow hidden here): one line naming the valid
    backends and the extra to install, exit 2, before Keras is imported."""
    from conftest import no_tensorflow_env

    (tmp_path / "keras.json").write_text(json.dumps({"backend": "tensorflow"}))
    cases = [
        (
            dict(os.environ, KERAS_BACKEND="pytorch"),
            "error: KERAS_BACKEND asks for the Keras backend 'pytorch'; keras_cdm runs on "
            "jax, tensorflow, torch",
        ),
        (
            {
                k: v
                for k, v in no_tensorflow_env(KERAS_HOME=str(tmp_path)).items()
                if k != "KERAS_BACKEND"
            },
            f"error: {tmp_path / 'keras.json'} (no KERAS_BACKEND set) asks for the Keras backend "
            "'tensorflow', which is not installed here",
        ),
    ]
    for env, message in cases:
        proc = subprocess.run(
            [sys.executable, "recipes/train_base16.py", "--smoke", "--output_dir", str(tmp_path)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
    assert 'pip install -e ".[tensorflow]"' in proc.stderr
    assert not os.path.exists(tmp_path / "run.json")


def test_help_shows_defaults_and_paper_presets_on_a_cpu_get_a_note(capsys):
    common = importlib.import_module("common")
    with pytest.raises(SystemExit):
        common.parse_args("base32", ["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: paper)", "(default: 0.0001)", "(default: 50)", "(default: 1)"):
        assert default in text
    note = common.paper_preset_note("base32", 825_000_000, accelerator=False)
    assert "base32 is the paper's network (825,000,000 parameters)" in note
    assert "--preset small or tiny are sized for CPUs" in note
    assert common.paper_preset_note("base32", 825_000_000, accelerator=True) is None
    assert common.paper_preset_note("base32_small", 30_000_000, accelerator=False) is None


def test_an_image_folders_classes_are_printed_and_recorded(tmp_path, capsys):
    from PIL import Image

    common = importlib.import_module("common")
    rng = np.random.default_rng(0)
    for name in ("dog", "cat"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / name / f"{i}.png")
    out = tmp_path / "run"
    common.main(
        "base16",
        ["--smoke", "--train_steps", "1", "--dataset", str(tmp_path / "data")]
        + ["--network", '{"base_channels": 8, "norm_groups": 4}', "--output_dir", str(out)],
    )
    printed = capsys.readouterr().out
    assert "2 classes, label = 0=cat, 1=dog" in printed
    assert json.load(open(out / "run.json"))["class_names"] == ["cat", "dog"]
    # The data has 2 classes, the stage 10: the names are not saved, and it says so.
    assert "class names are not saved with the stage, which has 10" in printed


def test_a_run_measures_its_step_time_and_keeps_its_data_class_names(tmp_path, capsys):
    common = importlib.import_module("common")
    out = tmp_path / "run"
    path = common.main(
        "base16",
        ["--smoke", "--train_steps", "4", "--dataset", "synthetic", "--output_dir", str(out)]
        + ["--network", '{"base_channels": 8, "norm_groups": 4}'],
    )
    # After the compiling step and two more: the measured rate and the run's length.
    printed = capsys.readouterr().out
    assert re.search(r"measured [\d.e+-]+ s/step .*: the 1 step left take about 0:00:0\d", printed)
    assert "measured" in (out / "train.log").read_text()
    model = keras_cdm.models.load_stage(path)
    assert model.class_names == tuple(keras_cdm.data.CLASS_NAMES)
