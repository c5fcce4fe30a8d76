"""A small CNN classifier: the feature extractor of CPU-scale experiments
(InceptionV3 weights cannot be downloaded everywhere) and the CAS classifier."""

import keras

from keras_cdm.evaluation.features import FeatureExtractor


def small_classifier(image_size, num_classes, width=64):
    """A VGG-style CNN: 3 blocks of two 3x3 convs, global pooling, dense head."""
    inputs = keras.Input((image_size, image_size, 3))
    x = inputs
    for i, mult in enumerate((1, 2, 4)):
        for j in range(2):
            x = keras.layers.Conv2D(width * mult, 3, padding="same", name=f"conv_{i}_{j}")(x)
            x = keras.layers.BatchNormalization(name=f"bn_{i}_{j}")(x)
            x = keras.layers.Activation("relu")(x)
        if i < 2:
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    x = keras.layers.Dropout(0.3)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="small_classifier")


def classifier_extractor(model, name=None):
    """Wraps a `small_classifier` (or any model with `features`/`probs`
    layers) as a `FeatureExtractor`."""
    return FeatureExtractor(
        model, "features", "probs", input_size=model.input_shape[1], name=name or model.name
    )
