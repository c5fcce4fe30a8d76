import warnings

import numpy as np
import pytest

from keras_cdm import evaluation as ev

RNG = np.random.default_rng(0)


def test_fid_of_a_set_against_itself_is_zero():
    x = RNG.normal(size=(500, 16))
    s = ev.RunningStatistics(16).update(x)
    assert abs(ev.frechet_distance(s.mean, s.covariance, s.mean, s.covariance)) < 1e-6


def test_fid_between_gaussians_matches_closed_form():
    # For commuting (diagonal) covariances: |mu1-mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    a = RNG.uniform(0.5, 2.0, 8)
    b = RNG.uniform(0.5, 2.0, 8)
    mu1, mu2 = RNG.normal(size=8), RNG.normal(size=8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = ev.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-10)
    # Non-commuting case against the scipy-free formula's definition via eig.
    q, _ = np.linalg.qr(RNG.normal(size=(8, 8)))
    s2 = q @ np.diag(b) @ q.T
    prod = np.diag(a) @ s2
    tr = np.sum(np.sqrt(np.linalg.eigvals(prod).real))
    expected = np.sum((mu1 - mu2) ** 2) + a.sum() + b.sum() - 2 * tr
    assert ev.frechet_distance(mu1, np.diag(a), mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_fid_singular_fallback_is_finite():
    x = RNG.normal(size=(5, 20))  # fewer samples than dimensions: singular
    s = ev.RunningStatistics(20).update(x)
    assert np.isfinite(ev.frechet_distance(s.mean, s.covariance, np.zeros(20), np.eye(20)))


def test_inception_score_of_confident_balanced_predictions():
    probs = np.eye(10)[np.arange(1000) % 10]
    mean, std = ev.inception_score(probs, splits=10)
    assert mean == pytest.approx(10.0, rel=1e-6) and std < 1e-6
    uniform = np.full((100, 10), 0.1)
    assert ev.inception_score(uniform)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="probabilities"):
        ev.inception_score(np.full((10, 3), 2.0))
    with pytest.raises(ValueError, match=r"n >= 1"):
        ev.inception_score(np.zeros((0, 3)))
    # Fewer samples than splits: one split per sample, no empty split's NaN.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        few = ev.inception_score(np.eye(3)[np.arange(6) % 3], splits=10)
    assert few == (pytest.approx(1.0), pytest.approx(0.0))


def test_streaming_equals_one_shot(tmp_path):
    x = RNG.normal(size=(1000, 12)) * 3 + 1
    s = ev.RunningStatistics(12, "test")
    for chunk in np.array_split(x, 7):
        s.update(chunk)
    np.testing.assert_allclose(s.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.covariance, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)
    path = s.save(str(tmp_path / "ref.npz"))
    mu, sigma, name = ev.load_statistics(path)
    assert name == "test"
    np.testing.assert_allclose(sigma, s.covariance)
    with pytest.raises(ValueError, match="shape"):
        s.update(np.zeros((3, 5)))


def test_precision_recall_of_a_set_against_itself():
    x = RNG.normal(size=(200, 5))
    assert ev.precision_recall(x, x, k=3) == (1.0, 1.0)
    far = x + 100
    p, r = ev.precision_recall(x, far, k=3)
    assert p == 0.0 and r == 0.0


def test_load_statistics_errors(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, mean=np.zeros(3))
    with pytest.raises(ValueError, match="'mu' and 'sigma'"):
        ev.load_statistics(str(bad))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="Cannot read"):
        ev.load_statistics(str(tmp_path / "junk.npz"))
