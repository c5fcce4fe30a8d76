"""`tools/host_overhead.py` refuses bad counts before starting any process."""

import os
import sys

import pytest
from conftest import ROOT
from conftest import torch_pass_only

sys.path.insert(0, os.path.join(ROOT, "tools"))

import host_overhead  # noqa: E402

pytestmark = torch_pass_only


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--rounds", "0"], "--rounds must be >= 1. Received: 0"),
        (["--steps", "0"], "--steps must be >= 1. Received: 0"),
        (["--steps", "10", "--steps_per_execution", "3"], "--steps_per_execution 3"),
        (["--frameworks", "pytorch"], "invalid choice: 'pytorch'"),
    ],
)
def test_bad_counts_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        host_overhead.main(argv)
    assert message in capsys.readouterr().err
