"""The README's Python API block and every docstring `Example:` run as
written (from the torch pass: they are backend-agnostic and torch runs the
tiny presets fastest)."""

import importlib
import inspect
import os
import pkgutil
import re

import keras
import numpy as np
import pytest
from conftest import BACKEND

import keras_cdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(
    BACKEND != "torch", reason="documentation runs once per CI pass, from the torch run"
)


def _public_objects():
    seen = set()
    for info in pkgutil.walk_packages(keras_cdm.__path__, "keras_cdm."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            targets = (
                [obj]
                + [
                    m
                    for m in vars(obj).values()
                    if inspect.isfunction(m) or isinstance(m, classmethod)
                ]
                if inspect.isclass(obj)
                else [obj]
            )
            for t in targets:
                t = t.__func__ if isinstance(t, classmethod) else t
                doc = inspect.cleandoc(t.__doc__ or "")
                if "Example:" in doc and id(t) not in seen:
                    seen.add(id(t))
                    yield f"{module.__name__}.{t.__qualname__}", doc
        doc = inspect.getdoc(module) or ""
        if ">>>" in doc and id(module) not in seen:
            seen.add(id(module))
            yield module.__name__, doc


def _example_code(doc):
    lines = []
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped.startswith(">>> ") or stripped == ">>>":
            lines.append(stripped[4:])
        elif stripped.startswith("... ") or stripped == "...":
            lines.append(stripped[4:])
    return "\n".join(lines)


EXAMPLES = sorted(_public_objects())


def test_every_public_class_has_an_example():
    documented = {name for name, _ in EXAMPLES}
    for cls in (
        keras_cdm.DiffusionModel,
        keras_cdm.SuperResDiffusionModel,
        keras_cdm.CascadeSampler,
        keras_cdm.UNet,
        keras_cdm.SuperResUNet,
        keras_cdm.models.SamplerSettings,
    ):
        assert f"{cls.__module__}.{cls.__qualname__}" in documented


@pytest.mark.parametrize("name, doc", EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_docstring_example_runs(name, doc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = _example_code(doc)
    assert code.strip(), f"{name}: no >>> lines"
    exec(compile(code, name, "exec"), {"keras": keras, "keras_cdm": keras_cdm, "np": np})


def test_readme_python_api_block_runs(tmp_path, monkeypatch):
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    block = re.search(r"## Python API\s+```python\n(.*?)```", readme, re.S).group(1)
    # The block as written, with fewer training and sampling steps (what
    # is tested is that it runs and returns what it says, not its images).
    for long, short in (
        ("steps_per_epoch=50", "steps_per_epoch=2"),
        ("num_steps=[100, 50]", "num_steps=[3, 2]"),
    ):
        assert long in block, long
        block = block.replace(long, short)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    images = namespace["images"]
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8
    assert set(namespace["per_s"]) == {"low_res", 0, 100, 250, 500}


def _imports_keras(script):
    """Whether a script imports Keras in its own process (a backend then has
    to be chosen); the tools that run each backend in a child process set
    it themselves."""
    source = open(os.path.join(ROOT, script)).read()
    return re.search(r"^(import|from) (keras|keras_cdm|common)\b", source, re.M) is not None


def test_readme_commands_choose_their_backend():
    """Every README command that runs Keras says `KERAS_BACKEND=`: without
    it, Keras reads `~/.keras/keras.json`, whose backend may not be
    installed."""
    text = open(os.path.join(ROOT, "README.md")).read().replace("\\\n", " ")
    missing = []
    for match in re.finditer(
        r"(?:^|[`|;&(]\s*)([^`\n|;&(]*?)\bpython ((?:recipes|tools)/\w+\.py)", text, re.M
    ):
        prefix, script = match.groups()
        if _imports_keras(script) and "KERAS_BACKEND=" not in prefix:
            missing.append(f"{script}: {match.group(0).strip()[:60]!r}")
    assert not missing, "\n".join(missing)
