"""Makes TensorFlow look uninstalled in every Python process that has this
folder on its PYTHONPATH (the TF-free tests put it there, so that child
processes inherit it): `import tensorflow` raises ModuleNotFoundError and
`importlib.util.find_spec("tensorflow")` returns None."""

import importlib.abc
import sys

BLOCKED = ("tensorflow", "tensorflow_datasets", "tf_keras")


class _Hidden(importlib.abc.MetaPathFinder):
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.finder, attr)


sys.meta_path[:] = [_Hidden(f) for f in sys.meta_path]
