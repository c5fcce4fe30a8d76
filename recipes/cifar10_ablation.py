"""CIFAR-10 conditioning-augmentation ablation (CDM Section 4.4, at CPU scale).

    KERAS_BACKEND=torch python recipes/cifar10_ablation.py \\
        --data ../shared/data/cifar10 --output_dir runs/cifar10_ablation --num_steps 10

(the run reported in the README; the default of 20 sampling steps costs twice
as much sampling time).

Arms, all class-conditional and scored against the CIFAR-10 test split:
  * `base32`: a non-cascaded 32x32 model given the training time of base + SR;
  * `noaug_s0`: base 16x16 -> SR 16->32 trained without augmentation (s = 0);
  * `gauss_s{s}`: the same SR network trained with Gaussian conditioning
    augmentation over the full range of s, sampled non-truncated at s;
  * `gauss_trunc_s{s}`: the same, truncated (the base stops at z_s).
The level s of the last two is picked by a sweep on a separate, smaller sample
set (`sweep.json`), as in the paper. Metrics use a classifier trained here on
the training split (InceptionV3 weights cannot be downloaded everywhere).

Every step is resumable: rerun the same command after a kill. Training
continues from the latest checkpoint; sampling continues from the last
finished chunk; finished steps are skipped. `--scale` multiplies every
training budget, `--num_samples` the final sample sets.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import evaluate  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_cdm  # noqa: E402
from keras_cdm import evaluation as ev  # noqa: E402
from keras_cdm.utils.images import save_class_grid  # noqa: E402
from keras_cdm.utils.images import save_npz  # noqa: E402

# A few hundred thousand parameters: trains in minutes on 2 CPU cores.
NETWORK_16 = {"base_channels": 16, "channel_mult": [1, 2, 2], "num_res_blocks": 1}
NETWORK_32 = {"base_channels": 16, "channel_mult": [1, 2, 2, 2], "num_res_blocks": 1}
# (stage, run name, network, steps at --scale 1, extra flags)
TRAINING = [
    ("base16", "base16", NETWORK_16, 600, {}),
    ("sr16to32", "sr_noaug", NETWORK_32, 350, {"augmentation": "none"}),
    ("sr16to32", "sr_gauss", NETWORK_32, 350, {"augmentation": "gaussian"}),
    # Same wall-clock training budget as base16 + one SR model (measured:
    # the 32x32 network steps at about the SR network's speed).
    ("base32", "base32", NETWORK_32, 700, {}),
]
SWEEP = (0, 25, 62, 125, 250)  # of 1000 = 0, 100, 250, 500, 1000 of the paper's 4000


def log(msg):
    print(f"[ablation {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train_all(args):
    paths = {}
    for stage, name, network, steps, extra in TRAINING:
        out = os.path.join(args.output_dir, name)
        final = os.path.join(out, f"{stage}.keras")
        paths[name] = final
        if os.path.exists(final):
            continue
        log(f"training {name}")
        start = time.time()
        common.train(
            stage,
            dataset=args.data,
            preset="small",
            network=network,
            batch_size=args.batch_size,
            train_steps=max(1, int(steps * args.scale)),
            checkpoint_every=50,
            learning_rate=args.learning_rate,
            ema_decay=0.995,
            seed=args.seed,
            output_dir=out,
            resume=os.path.exists(os.path.join(out, "checkpoint.keras")),
            smoke=args.smoke,
            **extra,
        )
        common.write_json(
            os.path.join(out, "train_time.json"), {"seconds_this_run": time.time() - start}
        )
    return paths


def sample_chunked(path, make, labels, chunk):
    """Samples `make(labels_chunk, first_index)` chunk by chunk into `path`;
    finished chunks are kept on disk and skipped when the run is resumed."""
    parts = path + ".parts"
    os.makedirs(parts, exist_ok=True)
    out = []
    for i, start in enumerate(range(0, len(labels), chunk)):
        f = os.path.join(parts, f"{i:04d}.npy")
        if not os.path.exists(f):
            np.save(f + ".tmp.npy", make(labels[start : start + chunk], start))
            os.replace(f + ".tmp.npy", f)
        out.append(np.load(f))
    images = np.concatenate(out)
    save_npz(path, images, labels)
    return images


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/cifar10")
    p.add_argument("--output_dir", default="runs/cifar10_ablation")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies the training steps")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--num_samples", type=int, default=5000)
    p.add_argument("--sweep_samples", type=int, default=500)
    p.add_argument("--num_steps", type=int, default=20, help="respaced sampling steps, all arms")
    p.add_argument("--classifier_images", type=int, default=20000)
    p.add_argument("--classifier_epochs", type=int, default=4)
    p.add_argument("--chunk", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="every step at toy size, for tests")
    args = p.parse_args(argv)
    if args.smoke:
        args.scale, args.num_samples, args.sweep_samples, args.chunk = 0.005, 20, 10, 10
        args.num_steps, args.classifier_images, args.classifier_epochs = 2, None, 1
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    out = args.output_dir

    # 1. Feature extractor / classifier and reference statistics (test split).
    clf = os.path.join(out, "classifier.keras")
    if not os.path.exists(clf):
        log("training the evaluation classifier")
        evaluate.train_classifier(
            clf,
            dataset=args.data,
            resolution=32,
            limit=args.classifier_images,
            epochs=args.classifier_epochs,
            width=32,
        )
    ref = os.path.join(out, "reference_test.npz")
    if not os.path.exists(ref):
        log("reference statistics of the test split")
        evaluate.reference_statistics(
            ref, evaluate.get_extractor(clf), dataset=args.data, split="test", resolution=32
        )

    # 2. Models.
    paths = train_all(args)
    base16 = keras.saving.load_model(paths["base16"])
    sr = {k: keras.saving.load_model(paths[k]) for k in ("sr_noaug", "sr_gauss")}
    base32 = keras.saving.load_model(paths["base32"])

    extractor = evaluate.get_extractor(clf)
    reference = ev.load_statistics(ref)
    real = np.load(os.path.splitext(ref)[0] + "_features.npz")
    steps = args.num_steps

    def score(images, labels):
        result = ev.evaluate_samples(
            extractor, images, labels, reference, real["features"], real["labels"]
        )
        result.pop("fid_per_class", None)
        return result

    def cascade_samples(name, stages, labels, seed, aug_levels=(), mode="non_truncated"):
        """The cascade's samples, chunk by chunk; arms with the same seed
        share their base samples (image i draws the same streams)."""
        cascade = keras_cdm.CascadeSampler(
            stages, aug_levels=list(aug_levels), mode=mode, num_steps=steps
        )
        return sample_chunked(
            os.path.join(out, "samples", f"{name}.npz"),
            lambda lab, first: cascade.sample(lab, seed=seed, first_index=first),
            labels,
            args.chunk,
        )

    # 3. Sweep of s on a separate, smaller sample set.
    sweep_path = os.path.join(out, "sweep.json")
    sweep = read_json(sweep_path)
    sweep_labels = np.arange(args.sweep_samples) % 10
    for s in SWEEP:
        if str(s) in sweep:
            continue
        log(f"sweep: gauss model at s={s}")
        images = cascade_samples(
            f"sweep_gauss_s{s}", [base16, sr["sr_gauss"]], sweep_labels, 11, [s]
        )
        r = ev.evaluate_samples(extractor, to_u8(images), sweep_labels, reference)
        sweep[str(s)] = {"fid": r["fid"], "class_accuracy": r.get("class_accuracy")}
        common.write_json(sweep_path, sweep)
    best = int(min(sweep, key=lambda k: sweep[k]["fid"]))
    log(
        f"sweep FIDs {json.dumps({k: round(v['fid'], 2) for k, v in sweep.items()})}; best s={best}"
    )

    # 4. Final arms on num_samples each (same labels, 500 per class; the
    # cascades share the base16 arm's samples through the seed).
    labels = np.arange(args.num_samples) % 10
    results_path = os.path.join(out, "results.json")
    results = read_json(results_path)
    gauss = [base16, sr["sr_gauss"]]
    arms = {
        "base16 (16x16, for reference)": lambda: cascade_samples("base16", [base16], labels, 21),
        "base32 (non-cascaded)": lambda: cascade_samples("base32", [base32], labels, 31),
        "cascade, no augmentation, s=0": lambda: cascade_samples(
            "noaug_s0", [base16, sr["sr_noaug"]], labels, 21, [0]
        ),
        f"cascade, gaussian, non-truncated s={best}": lambda: cascade_samples(
            f"gauss_s{best}", gauss, labels, 21, [best]
        ),
        f"cascade, gaussian, truncated s={best}": lambda: cascade_samples(
            f"gauss_trunc_s{best}", gauss, labels, 21, [best], mode="truncated"
        ),
    }
    for name, make in arms.items():
        if name in results:
            continue
        log(f"sampling {name}")
        images = to_u8(make())
        if images.shape[1] != 32:  # the 16x16 base output, upsampled for scoring
            images = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)
        results[name] = score(images, labels)
        per_class = 8
        pick = np.concatenate([np.where(labels == c)[0][:per_class] for c in range(10)])
        slug = name.split(" (")[0].replace(", ", "_").replace(" ", "_").replace("=", "")
        save_class_grid(os.path.join(out, f"grid_{slug}.png"), images[pick], labels[pick])
        common.write_json(results_path, results)
        log(f"{name}: FID {results[name]['fid']:.2f}")
    write_table(out, results, sweep, best, args)


def read_json(path):
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def to_u8(images):
    return keras_cdm.utils.images.to_uint8(np.asarray(images))


def metrics_table(results, first_column, fid_column="FID"):
    """Markdown lines: one row per named result of `evaluate_samples`."""
    lines = [
        f"| {first_column} | {fid_column} | FID of the two halves | class acc. | precision | recall |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        halves = " / ".join(f"{h:.2f}" for h in r["fid_halves"])
        lines.append(
            f"| {name} | {r['fid']:.2f} | {halves} | {r.get('class_accuracy', 0):.3f} | "
            f"{r.get('precision', 0):.3f} | {r.get('recall', 0):.3f} |"
        )
    return lines


def write_table(out, results, sweep, best, args):
    clf = read_json(os.path.join(out, "classifier.json"))
    lines = metrics_table(results, "arm", f"FID ({args.num_samples} samples)")
    lines += [
        "",
        "Sweep of s (gaussian-augmented SR, non-truncated, "
        f"{args.sweep_samples} samples): "
        + ", ".join(f"s={k}: {v['fid']:.2f}" for k, v in sweep.items())
        + f"; best s={best}.",
        f"Classifier: {clf['train_images']} training images, {clf['epochs']} epochs, "
        f"test accuracy {clf['test_accuracy']:.3f} on {clf['test_images']} test images.",
        f"Sampling: {args.num_steps} respaced DDPM steps for every stage and arm.",
    ]
    text = "\n".join(lines)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
