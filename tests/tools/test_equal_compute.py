"""`tools/equal_compute.py`: step counts at equal compute from step times
measured side by side (tiny presets, one round)."""

import json
import os
import sys

import pytest
from conftest import ROOT
from conftest import torch_pass_only

sys.path.insert(0, os.path.join(ROOT, "tools"))

import equal_compute  # noqa: E402

pytestmark = [torch_pass_only, pytest.mark.timeout(600)]


def test_equal_compute_steps_follow_the_measured_step_times(tmp_path, capsys):
    out = tmp_path / "equal.json"
    equal_compute.main(
        [
            "--reference", 'base16_tiny:{"base_channels":16}:4:100', "sr16to32_tiny::4:50",
            "--candidate", "base32_tiny::4",
            "--rounds", "2", "--steps", "1", "--output", str(out),
        ]
    )  # fmt: skip
    result = json.load(open(out))
    (r1, r2), (c,) = result["references"], result["candidates"]
    assert r1["network"] == {"base_channels": 16} and r2["network"] == {}
    budget = 100 * r1["median_step_s"] + 50 * r2["median_step_s"]
    assert c["equal_compute_steps"] == int(budget / c["median_step_s"])
    assert c["parameters"] > 0 and "steps at equal compute" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="PRESET:NETWORK_JSON:BATCH:STEPS"):
        equal_compute.main(["--reference", "base16_tiny:4", "--candidate", "base32_tiny::4"])
    with pytest.raises(SystemExit, match="is not JSON"):
        equal_compute.main(["--reference", "base16_tiny:{x:4:1", "--candidate", "base32_tiny::4"])
