"""Progress lines at a steady rate: step of the target, losses, img/s, ETA."""

import re

import pytest

from keras_cdm.utils.progress import TrainingProgress


def test_a_line_every_n_steps_and_at_the_end(tmp_path, capsys):
    log = tmp_path / "train.log"
    progress = TrainingProgress(10, batch_size=8, every=4, first_step=1, log_path=str(log))
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


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"`every` must be a positive int. Received: every=0"):
        TrainingProgress(10, batch_size=8, every=0)
    with pytest.raises(ValueError, match=r"`total_steps` must be a positive int"):
        TrainingProgress(2.5, batch_size=8)
