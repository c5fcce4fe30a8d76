"""Progress lines at a steady rate: step of the target, losses, img/s, ETA."""

import re

import pytest

from keras_cdm.utils.progress import TrainingProgress


def test_a_line_every_n_steps_and_at_the_end(tmp_path, capsys):
    log = tmp_path / "train.log"
    progress = TrainingProgress(
        10, batch_size=8, every=4, first_step=1, log_path=str(log), estimate_after=None
    )
    progress.on_train_begin()
    # Single steps, then executions of three steps (steps_per_execution=3).
    for begin, end in [(0, 0), (1, 1), (2, 4), (5, 7), (8, 8)]:
        progress.on_train_batch_begin(begin)
        progress.on_train_batch_end(end, {"loss": 0.5, "mse": 0.25, "bad_input": 0.0})
    out = [line for line in capsys.readouterr().out.splitlines() if line]
    # Steps 2, 3, 6, 9 and 10: a line on crossing 4 and 8, and at the target.
    assert [int(re.search(r"step (\d+)/10", line).group(1)) for line in out] == [6, 9, 10]
    assert all(
        re.fullmatch(
            r"\[keras_cdm\] step \d+/10  loss 0\.5  mse 0\.25  [\d.e+]+ img/s  ETA \d+:\d\d:\d\d",
            line,
        )
        for line in out
    ), out
    assert out[-1].endswith("ETA 0:00:00")
    assert log.read_text().splitlines() == out == progress.lines


def test_the_measured_time_per_step_and_run_length_come_early(monkeypatch, capsys):
    clock = iter([0.0, 100.0, 101.5, 103.0, 104.5, 106.0])  # the first step compiles: 100 s
    monkeypatch.setattr("keras_cdm.utils.progress.time.perf_counter", lambda: next(clock))
    progress = TrainingProgress(1000, batch_size=8, every=500, estimate_after=2)
    progress.on_train_begin()
    for step in range(4):
        progress.on_train_batch_begin(step)
        progress.on_train_batch_end(step, {"loss": 0.5})
    out = [line for line in capsys.readouterr().out.splitlines() if line]
    # Steps 2 and 3 took 1.5 s each: 997 steps left after step 3.
    assert out == [
        "[keras_cdm] measured 1.5 s/step (after the first, which compiles): "
        "the 997 steps left take about 0:24:56"
    ]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"`every` must be a positive int. Received: every=0"):
        TrainingProgress(10, batch_size=8, every=0)
    with pytest.raises(ValueError, match=r"`total_steps` must be a positive int"):
        TrainingProgress(2.5, batch_size=8)
