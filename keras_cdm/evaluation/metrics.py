"""Sample-quality metrics: FID, Inception Score, precision/recall, CAS.

References:
    - FID: Heusel et al., 2017, arXiv:1706.08500.
    - Inception Score: Salimans et al., 2016, arXiv:1606.03498.
    - Improved precision and recall: Kynkäänniemi et al., 2019, arXiv:1904.06991.
    - Classification Accuracy Score: Ravuri & Vinyals, 2019, arXiv:1905.10887.
"""

import warnings

import numpy as np


def _sqrt_psd(matrix):
    vals, vecs = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    tr(sqrt(Σ1 Σ2)) is computed as the trace of sqrt(√Σ1 Σ2 √Σ1), a symmetric
    PSD matrix, by eigendecomposition; if that fails to be finite, `eps` is
    added to both diagonals (the usual fallback for near-singular products).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(
            f"Statistics differ in shape: mu {mu1.shape} vs {mu2.shape}, "
            f"sigma {sigma1.shape} vs {sigma2.shape}"
        )
    for attempt in range(2):
        root1 = _sqrt_psd(sigma1)
        inner = root1 @ sigma2 @ root1
        vals = np.linalg.eigvalsh((inner + inner.T) / 2)
        trace_sqrt = np.sqrt(np.clip(vals, 0, None)).sum()
        if np.isfinite(trace_sqrt):
            break
        offset = np.eye(len(sigma1)) * eps
        sigma1, sigma2 = sigma1 + offset, sigma2 + offset
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def inception_score(probs, splits=10):
    """Inception Score of class probabilities `(n, classes)`: mean and std over
    splits (at most one split per sample: fewer samples than `splits` would
    leave empty splits, whose score is NaN)."""
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or not len(probs):
        raise ValueError(
            f"Expected probabilities of shape (n, classes), n >= 1. Received: {probs.shape}"
        )
    if np.any(probs < 0) or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("Expected rows of class probabilities (non-negative, summing to 1).")
    scores = []
    for part in np.array_split(probs, max(1, min(splits, len(probs)))):
        marginal = part.mean(axis=0, keepdims=True)
        kl = part * (np.log(part + 1e-12) - np.log(marginal + 1e-12))
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def _pairwise_sq_dists(a, b):
    return np.maximum((a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T, 0.0)


def _knn_radii(features, k):
    d = _pairwise_sq_dists(features, features)
    return np.sqrt(np.sort(d, axis=1)[:, k])  # index 0 is the point itself


def _coverage(reference, radii, queries, batch=1024):
    inside = np.zeros(len(queries), bool)
    for start in range(0, len(queries), batch):
        d = np.sqrt(_pairwise_sq_dists(queries[start : start + batch], reference))
        inside[start : start + batch] = np.any(d <= radii[None, :] + 1e-9, axis=1)
    return inside.mean()


def precision_recall(real_features, fake_features, k=3):
    """Improved precision and recall with k-NN manifolds.

    Precision: fraction of generated samples inside the real manifold;
    recall: fraction of real samples inside the generated manifold.
    """
    real = np.asarray(real_features, np.float64)
    fake = np.asarray(fake_features, np.float64)
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"Precision/recall with k={k} needs more than {k} samples per set.")
    precision = _coverage(real, _knn_radii(real, k), fake)
    recall = _coverage(fake, _knn_radii(fake, k), real)
    return float(precision), float(recall)


def check_sample_images(images):
    """Checks a sample set is uint8 `(n, h, w, 3)`; returns it."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(
            f"Expected uint8 sample images (as written by the cascade sampler). "
            f"Received: dtype={images.dtype}"
        )
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"Expected images of shape (n, h, w, 3). Received: {images.shape}")
    return images


def warn_if_few(n, dim):
    if n < dim:
        warnings.warn(
            f"Only {n} samples for {dim}-dimensional features: the covariance is "
            "singular and FID is unreliable; use at least as many samples as dimensions.",
            stacklevel=2,
        )


def classification_accuracy(probs, labels, top=(1, 5)):
    """Top-k accuracies of class probabilities against integer labels."""
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    order = np.argsort(-probs, axis=1)
    return {f"top{k}": float(np.mean(np.any(order[:, :k] == labels[:, None], axis=1))) for k in top}
