"""Evaluate samples: reference statistics, FID / IS / precision-recall / CAS.

    # 1. a feature extractor (InceptionV3 needs its weights; or train a classifier)
    KERAS_BACKEND=jax python recipes/evaluate.py train_classifier \\
        --dataset ../shared/data/cifar10 --resolution 32 --output runs/eval/classifier.keras
    # 2. reference statistics of the real data, once
    KERAS_BACKEND=jax python recipes/evaluate.py reference --dataset ../shared/data/cifar10 \\
        --split test --extractor runs/eval/classifier.keras --output runs/eval/ref.npz
    # 3. score an .npz of samples (as written by sample_cascade.py)
    KERAS_BACKEND=jax python recipes/evaluate.py score runs/samples/samples.npz \\
        --reference runs/eval/ref.npz --extractor runs/eval/classifier.keras \\
        --output runs/eval/metrics.json

`--extractor inception` uses Keras's InceptionV3 ImageNet weights (download)
or `--inception_weights PATH`. `--smoke` runs all three steps on the
synthetic set in seconds.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import write_json  # noqa: E402

import keras_cdm  # noqa: E402
from keras_cdm import evaluation as ev  # noqa: E402


def load_images(dataset, split, resolution, limit, data_dir=None):
    source = keras_cdm.data.resolve_source(
        dataset, data_dir=data_dir, split=split, resolution=resolution, num_images=limit or 2000
    )
    # A limited subset is a random one (folders list images by class; the
    # native pipeline shuffles the whole source, a TFDS stream a large buffer).
    ds = keras_cdm.data.base_dataset(
        source,
        resolution,
        256,
        shuffle=bool(limit),
        repeat=False,
        flip=False,
        drop_remainder=False,
        seed=0,
        shuffle_buffer=None if source.random_access else 60_000,
    )
    images, labels = [], []
    for x, y in ds:
        images.append(keras_cdm.utils.images.to_uint8(np.asarray(x)))
        labels.append(np.asarray(y))
        if limit and sum(len(i) for i in images) >= limit:
            break
    images, labels = np.concatenate(images), np.concatenate(labels)
    return (images[:limit], labels[:limit]) if limit else (images, labels)


def get_extractor(spec, inception_weights=None):
    if spec == "inception":
        return ev.inception_v3(weights=inception_weights or "imagenet")
    model = keras.saving.load_model(spec)
    return ev.classifier_extractor(model, name=os.path.basename(spec))


def train_classifier(
    output, dataset="synthetic", resolution=32, limit=None, epochs=30, width=64, data_dir=None
):
    """Trains the evaluation classifier on the training split; writes it and
    a JSON report (test accuracy) beside it. Returns the `.keras` path."""
    images, labels = load_images(dataset, "train", resolution, limit, data_dir)
    test_images, test_labels = (
        load_images(dataset, "test", resolution, None, data_dir)
        if dataset != "synthetic"
        else (images[-200:], labels[-200:])
    )
    num_classes = int(max(labels.max(), test_labels.max())) + 1
    model = ev.fit_classifier(
        images,
        labels,
        num_classes,
        width=width,
        epochs=epochs,
        batch_size=128,
        validation_data=(test_images, test_labels),
        verbose=2,
    )
    probs = model.predict(keras_cdm.utils.images.from_uint8(test_images), verbose=0)
    acc = ev.classification_accuracy(probs, test_labels, top=(1,))["top1"]
    model.save(output + ".tmp.keras")
    os.replace(output + ".tmp.keras", output)
    report = {
        "classifier": output,
        "train_images": int(len(images)),
        "epochs": epochs,
        "test_images": int(len(test_images)),
        "test_accuracy": float(acc),
    }
    write_json(os.path.splitext(output)[0] + ".json", report)
    print(json.dumps(report))
    return output


def reference_statistics(
    output, extractor, dataset="synthetic", split="train", resolution=32, limit=None, data_dir=None
):
    """Feature statistics of the real images (and their features, for
    precision/recall and per-class FID) under `output`. Returns its path."""
    images, labels = load_images(dataset, split, resolution, limit, data_dir)
    stats, _ = ev.feature_statistics(extractor, images)
    stats.save(output)
    feats, _ = extractor(images)
    np.savez(os.path.splitext(output)[0] + "_features.npz", features=feats, labels=labels)
    print(f"[keras_cdm] reference statistics of {stats.count} images -> {output}")
    return output


def score(samples, reference, extractor, real_features=None, output=None):
    """FID / IS / precision-recall / class accuracy of an `.npz` of samples."""
    data = np.load(samples)
    real = real_features or os.path.splitext(reference)[0] + "_features.npz"
    real_feats = real_labels = None
    if os.path.exists(real):
        r = np.load(real)
        real_feats, real_labels = r["features"], r["labels"]
    result = ev.evaluate_samples(
        extractor,
        data["images"],
        data["labels"],
        ev.load_statistics(reference),
        real_feats,
        real_labels,
    )
    print(json.dumps(result, indent=2))
    if output:
        write_json(output, result)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description="Evaluate samples of a cascade.")
    p.add_argument("command", choices=["train_classifier", "reference", "score", "smoke"])
    p.add_argument("samples", nargs="?", help="score: .npz with images and labels")
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--data_dir", default=None)
    p.add_argument("--split", default="train")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--limit", type=int, default=None, help="use at most this many real images")
    p.add_argument("--extractor", default="inception")
    p.add_argument("--inception_weights", default=None)
    p.add_argument("--reference", default=None)
    p.add_argument("--real_features", default=None, help="optional .npz with real features/labels")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--width", type=int, default=64, help="train_classifier: CNN width")
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)

    if args.command == "smoke":
        return smoke(args)
    if args.command != "score" and not args.output:
        p.error(f"{args.command} needs --output")
    if args.command == "train_classifier":
        return train_classifier(
            args.output,
            args.dataset,
            args.resolution,
            args.limit,
            args.epochs,
            args.width,
            args.data_dir,
        )
    extractor = get_extractor(args.extractor, args.inception_weights)
    if args.command == "reference":
        return reference_statistics(
            args.output,
            extractor,
            args.dataset,
            args.split,
            args.resolution,
            args.limit,
            args.data_dir,
        )
    if not args.samples or not args.reference:
        p.error("score needs a samples .npz and --reference")
    return score(args.samples, args.reference, extractor, args.real_features, args.output)


def smoke(args):
    out = args.output or "runs/eval_smoke"
    os.makedirs(out, exist_ok=True)
    clf = main(
        [
            "train_classifier",
            "--resolution",
            "16",
            "--limit",
            "64",
            "--epochs",
            "1",
            "--output",
            os.path.join(out, "clf.keras"),
        ]
    )
    ref = main(
        [
            "reference",
            "--resolution",
            "16",
            "--limit",
            "64",
            "--extractor",
            clf,
            "--output",
            os.path.join(out, "ref.npz"),
        ]
    )
    images, labels = keras_cdm.data.synthetic_shapes(32, 16, seed=9)
    np.savez(os.path.join(out, "samples.npz"), images=images, labels=labels)
    return main(
        [
            "score",
            os.path.join(out, "samples.npz"),
            "--reference",
            ref,
            "--extractor",
            clf,
            "--output",
            os.path.join(out, "metrics.json"),
        ]
    )


if __name__ == "__main__":
    main()
