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


def fit_classifier(
    images,
    labels,
    num_classes,
    width=64,
    epochs=10,
    batch_size=64,
    seed=0,
    validation_data=None,
    verbose=0,
):
    """Trains a `small_classifier` on uint8 images; the evaluation recipe's
    feature extractor and the CAS classifier are both made by it.

    Args:
        images: uint8 array `(n, size, size, 3)`.
        labels: int array `(n,)`.
        num_classes: int.
        validation_data: optional `(uint8 images, labels)`.

    Returns:
        The trained `keras.Model` (with `features` and `probs` layers).
    """
    from keras_cdm.utils.images import from_uint8

    keras.utils.set_random_seed(seed)
    model = small_classifier(images.shape[1], num_classes, width=width)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    if validation_data is not None:
        validation_data = (from_uint8(validation_data[0]), validation_data[1])
    model.fit(
        from_uint8(images),
        labels,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=validation_data,
        verbose=verbose,
    )
    return model


def classifier_extractor(model, name=None):
    """Wraps a `small_classifier` (or any model with `features`/`probs`
    layers) as a `FeatureExtractor`."""
    return FeatureExtractor(
        model, "features", "probs", input_size=model.input_shape[1], name=name or model.name
    )
