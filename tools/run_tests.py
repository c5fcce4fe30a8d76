"""Runs the linter and the default test suite on JAX, TensorFlow and PyTorch.

    python tools/run_tests.py            # all three backends
    python tools/run_tests.py torch -x   # one backend, extra pytest flags

Each backend runs in its own process (the backend is fixed at import).
Exits non-zero if ruff or any backend fails.
"""

import importlib.util
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("jax", "tensorflow", "torch")


# What the suite needs besides a backend: the `test` extra.
TEST_MODULES = {
    "pytest": "pytest",
    "pytest_timeout": "pytest-timeout",
    "xdist": "pytest-xdist",
    "ruff": "ruff",
}


def worker_flags(extra, backend="jax"):
    """pytest-xdist's `-n N` for a backend's pass. JAX and TensorFlow: one
    worker per core, at most 4 (each holds a backend in memory); their
    tests are dominated by single-threaded compiling and tracing, and two
    workers ran the TF pass's heaviest files in 145 s instead of 234 s on 2
    cores (whole passes: JAX 357 s, TF 361 s, against 536 s and 812 s in one
    process with other work on the cores). PyTorch: one process (its
    kernels already use every core; its pass took 637 s on two workers
    against 573 s in one). KERAS_CDM_TEST_WORKERS sets N for every backend;
    a caller's own `-n` wins."""
    if any(a == "-n" or a.startswith("-n") and a[2:].isdigit() for a in extra):
        return []
    default = 1 if backend == "torch" else min(4, os.cpu_count() or 1)
    n = int(os.environ.get("KERAS_CDM_TEST_WORKERS", default))
    return ["-n", str(n)] if n > 1 else []


def missing_requirements(backends):
    """Lines that say what is not installed and which extra installs it."""
    lines = []
    test = [pkg for mod, pkg in TEST_MODULES.items() if importlib.util.find_spec(mod) is None]
    if test:
        lines.append(
            f"the `test` extra is not installed (missing: {', '.join(test)}): "
            'pip install -e ".[cpu,test]" (or ".[jax,test]", ".[torch,test]")'
        )
    installed = [b for b in BACKENDS if importlib.util.find_spec(b) is not None]
    only = f", or test the installed ones only (python tools/run_tests.py {' '.join(installed)})"
    for backend in backends:
        if backend not in installed:
            lines.append(
                f'the {backend} backend is not installed: pip install -e ".[{backend}]"'
                + (only if installed else "")
            )
    return lines


def main(argv):
    backends = [a for a in argv if a in BACKENDS] or list(BACKENDS)
    extra = [a for a in argv if a not in BACKENDS]
    missing = missing_requirements(backends)
    if missing:
        for line in missing:
            print(f"error: {line}", file=sys.stderr)
        return 2
    failed = []
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT)
    if lint.returncode:
        failed.append("ruff")
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    for backend in backends:
        start = time.time()
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
        print(f"\n===== KERAS_BACKEND={backend} =====", flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rfE", "--durations=10"]
            + worker_flags(extra, backend)
            + extra,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        sys.stdout.write(proc.stdout[-20000:])
        sys.stderr.write(proc.stderr[-5000:])
        for key in totals:
            m = re.search(
                rf"(\d+) {key}", proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
            )
            totals[key] += int(m.group(1)) if m else 0
        if proc.returncode:
            failed.append(backend)
            last = proc.stdout.strip().splitlines()[-1:] or [""]
            if "failed" not in last[0]:
                totals["failed"] += 1  # a crash or collection error counts as a failure
        print(
            f"===== {backend}: {time.time() - start:.0f} s, exit {proc.returncode} =====",
            flush=True,
        )
    print(f"\nbackends: {', '.join(backends)}; failing: {', '.join(failed) or 'none'}")
    print(f"{totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
