"""`tools/run_tests.py` says which extra is missing instead of failing every pass."""

import importlib.util
import os
import sys

from conftest import ROOT
from conftest import torch_pass_only

sys.path.insert(0, os.path.join(ROOT, "tools"))

import run_tests  # noqa: E402

pytestmark = torch_pass_only


def test_missing_extras_are_named(monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    hidden = {"ruff", "pytest_timeout", "tensorflow"}
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in hidden else find_spec(name, *a),
    )
    assert run_tests.main(["jax", "tensorflow"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "error: the `test` extra is not installed (missing: pytest-timeout, ruff): "
        'pip install -e ".[cpu,test]" (or ".[jax,test]", ".[torch,test]")',
        'error: the tensorflow backend is not installed: pip install -e ".[tensorflow]", '
        "or test the installed ones only (python tools/run_tests.py jax torch)",
    ]


def test_jax_and_tf_passes_run_on_one_worker_per_core_unless_told(monkeypatch):
    monkeypatch.delenv("KERAS_CDM_TEST_WORKERS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert run_tests.worker_flags([]) == ["-n", "2"]
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert run_tests.worker_flags(["-x"]) == ["-n", "4"]
    assert run_tests.worker_flags(["-n", "3"]) == [] and run_tests.worker_flags(["-n3"]) == []
    assert run_tests.worker_flags([], "torch") == []
    monkeypatch.setenv("KERAS_CDM_TEST_WORKERS", "1")
    assert run_tests.worker_flags([]) == []
    monkeypatch.setenv("KERAS_CDM_TEST_WORKERS", "2")
    assert run_tests.worker_flags([], "torch") == ["-n", "2"]
