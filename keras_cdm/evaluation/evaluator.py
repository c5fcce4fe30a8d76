"""Scoring sample sets against reference statistics, overall and per class."""

import numpy as np

from keras_cdm.evaluation.metrics import classification_accuracy
from keras_cdm.evaluation.metrics import frechet_distance
from keras_cdm.evaluation.metrics import inception_score
from keras_cdm.evaluation.metrics import precision_recall
from keras_cdm.evaluation.metrics import warn_if_few
from keras_cdm.evaluation.statistics import RunningStatistics


def feature_statistics(extractor, images, batch_size=256):
    """Streams images through `extractor` into `RunningStatistics`.

    `images` may be an array or an iterable of uint8 batches, so large sets
    never sit in memory at once.
    """
    batches = [images] if isinstance(images, np.ndarray) else images
    stats, probs = None, []
    for batch in batches:
        feats, p = extractor(batch, batch_size=batch_size)
        if stats is None:
            stats = RunningStatistics(feats.shape[1], extractor.name)
        stats.update(feats)
        if p is not None:
            probs.append(p)
    return stats, (np.concatenate(probs) if probs else None)


def evaluate_samples(extractor, images, labels, reference, real_features=None, real_labels=None):
    """All metrics of a labelled sample set against a reference.

    Args:
        extractor: a `FeatureExtractor`.
        images: uint8 `(n, h, w, 3)` samples; labels: int `(n,)` (-1:
            unlabelled samples, e.g. an unconditional cascade's: no class
            accuracy nor per-class FID).
        reference: `(mu, sigma, extractor_name)` of the real data.
        real_features, real_labels: optional real features and labels for
            precision/recall and per-class FID.

    Returns:
        A dict of metrics: `fid`, `inception_score` (if the extractor has
        probabilities), `class_accuracy` (whether the extractor's classifier
        agrees with the conditioning label), `precision`, `recall`,
        `fid_per_class` (if real features are given), `fid_halves` (the
        FIDs of the first and the second half of the samples, scored apart:
        the spread a sample set of half the size would show; with at least
        4 samples).
    """
    mu_ref, sigma_ref, name = reference
    if name != extractor.name:
        raise ValueError(
            f"Reference statistics come from extractor {name!r} but the samples are "
            f"scored with {extractor.name!r}; recompute the reference."
        )
    feats, probs = extractor(images)
    warn_if_few(len(feats), feats.shape[1])
    stats = RunningStatistics(feats.shape[1], extractor.name).update(feats)
    result = {
        "num_samples": int(len(feats)),
        "fid": frechet_distance(stats.mean, stats.covariance, mu_ref, sigma_ref),
    }
    half = len(feats) // 2
    if half >= 2:
        result["fid_halves"] = [
            frechet_distance(part.mean(0), np.cov(part, rowvar=False), mu_ref, sigma_ref)
            for part in (feats[:half], feats[half : 2 * half])
        ]
    if probs is not None:
        result["inception_score"], result["inception_score_std"] = inception_score(probs)
        if np.min(labels) >= 0 and probs.shape[1] >= int(np.max(labels)) + 1:
            result["class_accuracy"] = classification_accuracy(probs, labels, top=(1,))["top1"]
    if real_features is not None:
        result["precision"], result["recall"] = precision_recall(real_features, feats)
        if real_labels is not None and np.min(labels) >= 0:
            per_class = {}
            for c in np.unique(labels):
                a, b = feats[labels == c], real_features[real_labels == c]
                if len(a) > 1 and len(b) > 1:
                    per_class[int(c)] = frechet_distance(
                        a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
                    )
            result["fid_per_class"] = per_class
    return result


def classification_accuracy_score(
    train_images,
    train_labels,
    test_images,
    test_labels,
    num_classes,
    epochs=10,
    batch_size=64,
    seed=0,
):
    """Classification Accuracy Score: train a classifier on generated samples,
    report top-1/top-5 accuracy on real held-out data."""
    from keras_cdm.evaluation.classifier import fit_classifier

    model = fit_classifier(
        train_images,
        np.asarray(train_labels),
        num_classes,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
    )
    probs = model.predict(test_images.astype("float32") / 127.5 - 1, verbose=0)
    return classification_accuracy(probs, test_labels, top=(1, min(5, num_classes)))
