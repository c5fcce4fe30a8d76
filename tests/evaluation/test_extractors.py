import keras
import numpy as np
import pytest
from conftest import INSTALLED_BACKENDS

from keras_cdm import evaluation as ev


def test_inception_v3_runs_without_weights():
    extractor = ev.inception_v3(weights=None)
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    feats, probs = extractor(images)
    assert feats.shape == (2, 2048) and probs.shape == (2, 1000)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)


def test_sample_checks_and_extractor_mismatch():
    keras.utils.set_random_seed(0)
    extractor = ev.classifier_extractor(ev.small_classifier(16, 3, width=16), name="clf")
    images = np.random.default_rng(0).integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(40) % 3
    with pytest.raises(ValueError, match="uint8"):
        extractor(images.astype("float32"))
    with pytest.raises(ValueError, match=r"\(n, h, w, 3\)"):
        extractor(images[..., :1])
    stats, _ = ev.feature_statistics(extractor, images)
    with pytest.raises(ValueError, match="recompute the reference"):
        ev.evaluate_samples(extractor, images, labels, (stats.mean, stats.covariance, "other"))
    feats, _ = extractor(images)
    with pytest.warns(UserWarning, match="singular"):
        result = ev.evaluate_samples(
            extractor, images, labels, (stats.mean, stats.covariance, "clf"), feats, labels
        )
    assert abs(result["fid"]) < 1e-6
    assert result["precision"] == 1.0 and result["recall"] == 1.0
    assert set(result["fid_per_class"]) == {0, 1, 2}
    # The halves are scored apart: a set whose second half is another
    # distribution (here: black images) shows it in the second FID only.
    dark = np.concatenate([images[:20], np.zeros_like(images[20:])])
    with pytest.warns(UserWarning, match="singular"):
        halves = ev.evaluate_samples(
            extractor, dark, labels, (stats.mean, stats.covariance, "clf")
        )["fid_halves"]
    dark_feats, _ = extractor(dark)
    for half, part in zip(halves, (dark_feats[:20], dark_feats[20:])):
        expected = ev.frechet_distance(
            part.mean(0), np.cov(part, rowvar=False), stats.mean, stats.covariance
        )
        np.testing.assert_allclose(half, expected, rtol=1e-5, atol=1e-9)
    # (An untrained classifier's features of black and of noise images can
    # be close: the halves are checked against their own statistics, not
    # against a margin that depends on the initialisation.)
    np.testing.assert_array_equal(dark_feats[:20], feats[:20])
    assert halves[1] != halves[0]


def test_classification_accuracy_score_learns_separable_data():
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 2
    images = np.where(labels[:, None, None, None] == 1, 220, 30).astype(np.uint8)
    images = np.broadcast_to(images, (60, 8, 8, 3)).copy()
    images = np.clip(images + rng.integers(-20, 20, images.shape), 0, 255).astype(np.uint8)
    acc = ev.classification_accuracy_score(images, labels, images, labels, 2, epochs=5)
    assert acc["top1"] > 0.9


_FEATURES_SCRIPT = r"""
import sys, numpy as np, keras
from keras_cdm import evaluation as ev
extractor = ev.classifier_extractor(keras.saving.load_model(sys.argv[1]), name="clf")
images = np.load(sys.argv[2])
stats, _ = ev.feature_statistics(extractor, images)
np.savez(sys.argv[3], features=extractor(images)[0], mu=stats.mean, sigma=stats.covariance)
"""


@pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="runs once per CI pass, from the torch run, spawning JAX and TF",
)
@pytest.mark.skipif(len(INSTALLED_BACKENDS) < 2, reason="only one backend is installed")
def test_features_agree_across_backends(tmp_path):
    import os
    import subprocess
    import sys

    keras.utils.set_random_seed(0)
    model = ev.small_classifier(16, 3, width=8)
    path = str(tmp_path / "clf.keras")
    model.save(path)
    images = np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    (tmp_path / "feats.py").write_text(_FEATURES_SCRIPT)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    results = {}
    for backend in INSTALLED_BACKENDS:
        out = tmp_path / f"{backend}.npz"
        env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=root)
        proc = subprocess.run(
            [
                sys.executable,
                str(tmp_path / "feats.py"),
                path,
                str(tmp_path / "images.npy"),
                str(out),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[backend] = np.load(out)
    for backend in set(INSTALLED_BACKENDS) - {"torch"}:
        np.testing.assert_allclose(
            results[backend]["features"], results["torch"]["features"], atol=1e-4
        )
        np.testing.assert_allclose(results[backend]["mu"], results["torch"]["mu"], atol=1e-4)
