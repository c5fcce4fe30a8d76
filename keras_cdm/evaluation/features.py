"""Feature extractors for the metrics: InceptionV3 or any Keras model/layer."""

import keras
import numpy as np
from keras import ops

from keras_cdm.evaluation.metrics import check_sample_images


class FeatureExtractor:
    """Maps uint8 images to (features, class probabilities) with a Keras model.

    Args:
        model: a Keras model taking images.
        feature_layer: str. Name of the layer whose output are the features
            (global-average pooled if 4D).
        probs_layer: str or None. Layer with class probabilities (softmax)
            or logits for the Inception Score and CAS-like checks.
        input_size: int or None. Images are resized to this size first.
        preprocess: callable. Maps float images in [0, 255] to model inputs.
            Defaults to scaling to [-1, 1].
        name: str. Stored with the statistics and checked on comparison.
        resize_filter: str. `keras.ops.image.resize` interpolation.
            Defaults to `"bilinear"`.

    Example:

    >>> extractor = keras_cdm.evaluation.inception_v3(weights=None)
    >>> feats, probs = extractor(np.zeros((2, 32, 32, 3), "uint8"))
    """

    def __init__(
        self,
        model,
        feature_layer,
        probs_layer=None,
        input_size=None,
        preprocess=None,
        name="custom",
        resize_filter="bilinear",
    ):
        self.model = model
        outputs = [model.get_layer(feature_layer).output]
        if probs_layer is not None:
            outputs.append(model.get_layer(probs_layer).output)
        self._probe = keras.Model(model.inputs, outputs)
        self.has_probs = probs_layer is not None
        self.input_size = input_size
        self.preprocess = preprocess or (lambda x: x / 127.5 - 1.0)
        self.name = name
        self.resize_filter = resize_filter

    def __call__(self, images, batch_size=64):
        images = check_sample_images(images)
        feats, probs = [], []
        for start in range(0, len(images), batch_size):
            x = ops.convert_to_tensor(images[start : start + batch_size].astype("float32"))
            if self.input_size and x.shape[1] != self.input_size:
                x = ops.image.resize(
                    x,
                    (self.input_size, self.input_size),
                    interpolation=self.resize_filter,
                    data_format="channels_last",
                )
            out = self._probe(self.preprocess(x), training=False)
            out = out if isinstance(out, (list, tuple)) else [out]
            f = ops.convert_to_numpy(out[0])
            if f.ndim == 4:
                f = f.mean(axis=(1, 2))
            feats.append(np.asarray(f, np.float64))
            if self.has_probs:
                p = np.asarray(ops.convert_to_numpy(out[1]), np.float64)
                if np.any(p < 0) or not np.allclose(p.sum(1), 1, atol=1e-3):
                    p = np.exp(p - p.max(1, keepdims=True))
                    p /= p.sum(1, keepdims=True)
                probs.append(p)
        return np.concatenate(feats), (np.concatenate(probs) if self.has_probs else None)


def inception_v3(weights="imagenet"):
    """InceptionV3 pool3 features (2048-d) and ImageNet probabilities.

    Images are resized to 299x299 bilinearly (no anti-aliasing) and scaled to
    [-1, 1] as `keras.applications.inception_v3.preprocess_input` does.
    `weights` is `"imagenet"` (download), `None` (random, for tests) or a
    path to a local weights file. Note: these are Keras's InceptionV3
    weights, not the TF1 graph of the original FID code, so absolute FIDs
    differ slightly from published ones; compare numbers made the same way.
    """
    model = keras.applications.InceptionV3(include_top=True, weights=None)
    if isinstance(weights, str) and weights != "imagenet":
        model.load_weights(weights)
    elif weights == "imagenet":
        model = keras.applications.InceptionV3(include_top=True, weights="imagenet")
    return FeatureExtractor(
        model,
        "avg_pool",
        "predictions",
        input_size=299,
        name="inception_v3" if weights else "inception_v3_random",
    )
