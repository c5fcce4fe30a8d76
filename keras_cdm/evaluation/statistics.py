"""Streaming feature statistics (float64) and their `.npz` files."""

import numpy as np


class RunningStatistics:
    """Mean and covariance of features accumulated batch by batch in float64.

    Args:
        dim: int. Feature dimension.
        extractor: str. Name of the feature extractor the features came from;
            stored and checked when two statistics are compared.

    Example:

    >>> stats = keras_cdm.evaluation.RunningStatistics(8, "my_extractor")
    >>> for batch in np.split(np.random.normal(size=(300, 8)), 3):
    ...     stats = stats.update(batch)
    >>> mu, sigma = stats.mean, stats.covariance
    """

    def __init__(self, dim, extractor="unknown"):
        self.dim = int(dim)
        self.extractor = extractor
        self.count = 0
        self._sum = np.zeros(self.dim, np.float64)
        self._outer = np.zeros((self.dim, self.dim), np.float64)

    def update(self, features):
        features = np.asarray(features, np.float64)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(
                f"Expected features of shape (batch, {self.dim}). Received: {features.shape}"
            )
        self.count += len(features)
        self._sum += features.sum(axis=0)
        self._outer += features.T @ features
        return self

    @property
    def mean(self):
        if self.count == 0:
            raise ValueError("No features were added.")
        return self._sum / self.count

    @property
    def covariance(self):
        if self.count < 2:
            raise ValueError("A covariance needs at least 2 samples.")
        mu = self.mean
        return (self._outer - self.count * np.outer(mu, mu)) / (self.count - 1)

    def save(self, path):
        """Writes `mu`, `sigma`, `count` and `extractor` to `.npz`."""
        np.savez(
            path,
            mu=self.mean,
            sigma=self.covariance,
            count=self.count,
            extractor=np.array(self.extractor),
        )
        return path


def load_statistics(path):
    """Reads `(mu, sigma, extractor)` from an `.npz` with `mu`/`sigma` keys.

    Files from other tools without an `extractor` key load with
    `extractor="unknown"`.
    """
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:
        raise ValueError(f"Cannot read statistics file {path!r}: {e}") from e
    if "mu" not in data or "sigma" not in data:
        raise ValueError(f"{path!r} needs 'mu' and 'sigma' arrays. Found: {sorted(data.files)}")
    extractor = str(data["extractor"]) if "extractor" in data else "unknown"
    return np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64), extractor
