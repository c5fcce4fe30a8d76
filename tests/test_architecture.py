"""The layer order of docs/ARCHITECTURE.md, read from the imports."""

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "keras_cdm")

LAYERS = {
    "diffusion": 1,
    "backend": 1,
    "distribute": 1,
    "utils": 1,
    "layers": 2,
    "networks": 3,
    "models": 4,
    "sampling": 5,
    "data": 5,
    "evaluation": 5,
}


def _room(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _imports():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            module = "keras_cdm." + os.path.relpath(path, PACKAGE)[:-3].replace(os.sep, ".")
            with open(path) as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module:
                    targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                else:
                    continue
                for target in targets:
                    if target.startswith("keras_cdm."):
                        yield module, target


def test_no_import_goes_up_a_layer():
    wrong = []
    for module, target in _imports():
        src, dst = _room(module), _room(target)
        if src in (None, "__init__") or dst not in LAYERS or src not in LAYERS:
            continue
        if LAYERS[dst] > LAYERS[src] or (LAYERS[dst] == LAYERS[src] == 5 and src != dst):
            wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_config_sniffing_and_no_backend_imports_in_recipes():
    for folder in ("keras_cdm", "recipes", "tools"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                if name.endswith(".py"):
                    with open(os.path.join(dirpath, name)) as f:
                        assert '"low_res_size" in' not in f.read(), name
    for name in os.listdir(os.path.join(ROOT, "recipes")):
        if name.endswith(".py"):
            with open(os.path.join(ROOT, "recipes", name)) as f:
                text = f.read()
            found = re.findall(r"^\s*(?:import|from) (jax|torch|tensorflow)\b", text, re.M)
            assert not found, f"recipes/{name} imports {found}"


def test_backend_branching_lives_in_the_backend_module():
    """Only `keras_cdm/backend/` and `keras_cdm/distribute.py` ask Keras
    which backend runs; everything else asks them what to do."""
    allowed = {
        os.path.join("keras_cdm", "backend", "__init__.py"),
        os.path.join("keras_cdm", "distribute.py"),
    }
    found = []
    for folder in ("keras_cdm", "recipes"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                path = os.path.relpath(os.path.join(dirpath, name), ROOT)
                if name.endswith(".py") and path not in allowed:
                    with open(os.path.join(ROOT, path)) as f:
                        if "keras.backend.backend()" in f.read():
                            found.append(path)
    assert not found, f"keras.backend.backend() outside the backend module: {found}"
