"""The GPU proof in one call: speed in bf16 against diffusers, and the CIFAR-10
cascade ablation, inside a fixed number of minutes.

    bash tools/prepare_gpu_proof.sh                     # bundle: wheels + data
    python tools/gpu_proof.py --out proof --minutes 8 --data gpu_bundle/cifar10.npz
    python tools/gpu_proof.py --dry_run --out /tmp/proof  # CPU, tiny sizes, < 1 min

1. Speed (`base32_small` at batch 256; `--bench_preset`, `--bench_batch`):
   keras_cdm on JAX and on PyTorch (`mixed_bfloat16`) and diffusers'
   `UNet2DModel` at the same architecture (bf16 autocast), each in its own
   process with its own share of the time: training images/s, forward
   images/s, MFU against the device's bf16 peak (training counted as 3x the
   forward FLOPs, which are counted by `torch.utils.flop_counter`), peak
   memory, and the sampling-step / forward ratio (`tools/benchmark.py`).
2. Sampling throughput (`tools/sampling_noise_cost.py`, `--sampling_share`
   of the time, JAX then PyTorch) at (256, 32x32), (64, 64x64) and
   (64, 256x256): the DDPM step with its noise drawn on the device, the
   deterministic DDIM step (the forward), what NumPy's host noise and its
   copy cost per step (the loop before), and the step/forward ratios.
3. Ablation (CDM Section 4.4 at 32x32), with what time is left: a base
   16x16 stage, an SR 16->32 stage without and one with Gaussian
   conditioning augmentation, and a non-cascaded 32x32 stage given the
   training time of the base plus one SR stage; then as many samples per arm
   as the deadline allows, scored with the project's classifier (trained here
   on the training images: FID on its features and class accuracy).

Everything is written as it comes, into `--out` (6 files): `proof.json`
(all figures and settings), `bench.csv`, `sampling.csv`, `ablation.csv`, `grid.png` (one row
of samples per class, one block per arm) and `log.txt`. A phase that runs
out of time is recorded as such; the others are kept.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The device machine runs it from a checkout without installing keras_cdm.
sys.path.insert(0, ROOT)

# bf16 dense peaks (FLOP/s) by device name; `--peak_tflops` overrides.
PEAK_BF16 = {"H200": 790e12, "H100": 790e12, "A100": 312e12}
BENCH_FRAMEWORKS = ("jax", "torch", "diffusers")

SIZES = {
    # speed: preset, batch, timed steps; ablation: networks, batch, samples, steps
    "gpu": {
        # The paper's base32 (826M parameters) compiles for minutes under
        # JAX: more than the proof's share; `--bench_preset base32` if time allows.
        "bench_preset": "base32_small",
        "bench_network": None,
        "bench_batch": 256,
        "bench_steps": 10,
        "sampling_sizes": ["256x32", "64x64", "64x256"],
        "network_16": {"base_channels": 64, "channel_mult": [1, 2, 2], "num_res_blocks": 2},
        "network_32": {"base_channels": 64, "channel_mult": [1, 2, 2, 2], "num_res_blocks": 2},
        "batch": 128,
        "learning_rate": 3e-4,
        "ema_decay": 0.999,
        "samples": 5000,
        "chunk": 1000,
        "sampling_steps": 100,
        "classifier_epochs": 8,
        "classifier_width": 64,
        "fit_chunk": 100,
        "train_by_time": True,
    },
    "dry_run": {
        "bench_preset": "base16_tiny",
        "bench_network": {"channel_mult": [1], "attention_resolutions": []},
        "bench_batch": 2,
        "bench_steps": 2,
        "sampling_sizes": ["2x32"],
        "network_16": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1},
        "network_32": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1},
        "batch": 8,
        "learning_rate": 1e-3,
        "ema_decay": 0.9,
        "samples": 20,
        "chunk": 20,
        "sampling_steps": 3,
        "classifier_epochs": 1,
        "classifier_width": 8,
        "fit_chunk": 2,
        "train_by_time": False,  # one chunk per stage: the code path, not the result
    },
}


# ----------------------------------------------------------------------
# Data: CIFAR-10 JPEG bytes packed in one .npz (see prepare_gpu_proof.sh)
# ----------------------------------------------------------------------
def class_files(folder, limit_per_class=None):
    """The paths of a class-folder's files, one sorted list per class (the
    classes in sorted order: their index is the label)."""
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    files = [sorted(os.listdir(os.path.join(folder, c)))[:limit_per_class] for c in classes]
    return [[os.path.join(folder, c, f) for f in fs] for c, fs in zip(classes, files)]


def pack_jpegs(folder, limit_per_class=None):
    """`(bytes uint8, offsets int64, labels int64)` of a class-folder of JPEGs."""
    import numpy as np

    blobs, labels = [], []
    for label, files in enumerate(class_files(folder, limit_per_class)):
        for path in files:
            with open(path, "rb") as fh:
                blobs.append(fh.read())
            labels.append(label)
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    data = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    return data, offsets, np.asarray(labels, np.int64)


def fitting_per_class(folder, train_per_class, max_bytes):
    """The most training files per class, at most `train_per_class`, whose
    `.npz` with all of `folder/test` fits in `max_bytes` (each image costs
    its JPEG bytes and 16 bytes of offset and label)."""

    def sizes(split):
        return [
            [os.path.getsize(f) + 16 for f in c] for c in class_files(os.path.join(folder, split))
        ]

    fixed = sum(map(sum, sizes("test"))) + 4096  # and the .npz's headers
    train = sizes("train")

    def total(k):
        return fixed + sum(sum(c[:k]) for c in train)

    if total(1) > max_bytes:
        raise SystemExit(
            f"--pack_max_mib {max_bytes / 2**20:.1f}: the test split and one training image "
            f"per class need {total(1) / 2**20:.1f} MiB"
        )
    lo, hi = 1, train_per_class  # total(lo) fits; the largest k that fits, by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if total(mid) <= max_bytes else (lo, mid - 1)
    return lo


def pack(folder, output, train_per_class, max_mib=None):
    """Packs `folder/train` (the first `train_per_class` files of each class,
    fewer if the file would exceed `max_mib`) and all of `folder/test` as
    JPEG bytes into one `.npz`; prints its size."""
    import numpy as np

    for split in ("train", "test"):
        if not os.path.isdir(os.path.join(folder, split)):
            raise SystemExit(f"--pack {folder!r}: no {split}/ folder (one sub-folder per class)")
    if max_mib is not None:
        train_per_class = fitting_per_class(folder, train_per_class, max_mib * 2**20)
    train = pack_jpegs(os.path.join(folder, "train"), train_per_class)
    test = pack_jpegs(os.path.join(folder, "test"))
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    np.savez(
        output,
        train_bytes=train[0],
        train_offsets=train[1],
        train_labels=train[2],
        test_bytes=test[0],
        test_offsets=test[1],
        test_labels=test[2],
    )
    size = os.path.getsize(output) / 2**20
    print(f"packed {len(train[2])} train and {len(test[2])} test images: {output} ({size:.1f} MiB)")
    return output


def unpack_jpegs(data, offsets, indices=None):
    """Decoded uint8 images (of `indices`, default all) from packed JPEG bytes."""
    import io

    import numpy as np
    from PIL import Image

    indices = range(len(offsets) - 1) if indices is None else indices
    out = []
    for i in indices:
        with Image.open(io.BytesIO(data[offsets[i] : offsets[i + 1]].tobytes())) as im:
            out.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
    return np.stack(out)


def load_data(path, dry_run):
    """Train and test images (uint8, 32x32), labels, and a note on the source."""
    import numpy as np

    if path:
        with np.load(path) as f:
            splits = []
            for split, dry in (("train", 400), ("test", 100)):
                labels = f[f"{split}_labels"]
                # The packed splits are sorted by class: a dry run takes every k-th.
                n = min(dry, len(labels))
                idx = np.linspace(0, len(labels) - 1, n).astype(int) if dry_run else None
                images = unpack_jpegs(f[f"{split}_bytes"], f[f"{split}_offsets"], idx)
                splits.append((images, labels if idx is None else labels[idx]))
        train, test = splits
        return train, test, f"{path} ({len(train[0])} train, {len(test[0])} test images)"
    from keras_cdm.data import synthetic_shapes

    n = 200 if dry_run else 20000
    train = synthetic_shapes(n, 32, seed=0)
    test = synthetic_shapes(n // 4, 32, seed=1)
    return train, test, f"synthetic shapes ({n} train, {n // 4} test; no --data given)"


# ----------------------------------------------------------------------
# Phase 1: speed (one child process per framework)
# ----------------------------------------------------------------------
def bench_child(fw, size):
    import benchmark

    if fw == "diffusers":
        return benchmark.measure_diffusers(
            size["bench_preset"],
            size["bench_batch"],
            size["bench_steps"],
            bf16=True,
            network_overrides=size["bench_network"],
        )
    return benchmark.measure(
        size["bench_preset"],
        size["bench_batch"],
        size["bench_steps"],
        dtype_policy="mixed_bfloat16",
        network_overrides=size["bench_network"],
    )


# ----------------------------------------------------------------------
# Phase 2: sampling throughput (one child process per backend)
# ----------------------------------------------------------------------
def sampling_child(size, dry_run):
    import sampling_noise_cost

    repeats = ["--rounds", "1", "--repeats", "1"] if dry_run else ["--rounds", "2"]
    if size["bench_network"]:  # the dry run's micro network
        repeats += ["--network", json.dumps(size["bench_network"])]
    rows = sampling_noise_cost.main(["--sizes", *size["sampling_sizes"], *repeats])
    for row in rows:
        row["ddpm_img_s"] = 1e3 * row["batch"] / row["step_ms"]
    return rows


# ----------------------------------------------------------------------
# Phase 3: the ablation (one child process)
# ----------------------------------------------------------------------
def train_for(model, dataset, seconds, chunk):
    """`fit` in chunks of `chunk` steps until `seconds` have passed (at least
    one chunk); returns (steps, seconds)."""
    t0 = time.time()
    steps = 0
    while True:
        model.fit(dataset.skip(steps), steps_per_epoch=chunk, epochs=1, verbose=0)
        steps += chunk
        if time.time() - t0 >= seconds:
            return steps, time.time() - t0


def ablation_child(args, size, deadline):
    import keras
    import numpy as np

    import keras_cdm
    from keras_cdm import evaluation as ev
    from keras_cdm.utils.images import make_grid
    from keras_cdm.utils.images import save_png
    from keras_cdm.utils.images import to_uint8

    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test), source_note = load_data(args.data, args.dry_run)
    report = {"data": source_note, "backend": keras.backend.backend()}
    yield "setup", report
    t0 = time.time()
    clf = ev.fit_classifier(
        x_train,
        y_train,
        10,
        width=size["classifier_width"],
        epochs=size["classifier_epochs"],
        batch_size=256,
    )
    probs = clf.predict(keras_cdm.utils.images.from_uint8(x_test), verbose=0)
    extractor = ev.classifier_extractor(clf, name="cifar_classifier")
    stats, _ = ev.feature_statistics(extractor, x_test)
    reference = (stats.mean, stats.covariance, extractor.name)
    acc = ev.classification_accuracy(probs, y_test, top=(1,))["top1"]
    yield "classifier", {"test_accuracy": float(acc), "seconds": time.time() - t0}

    source = keras_cdm.data.from_arrays(x_train, y_train, 10)
    left = deadline - time.time()
    unit = 0.7 * left / 5  # training: base16 1, each SR 1, base32 2 units; sampling the rest
    jit = keras_cdm.backend.default_jit_compile()
    models, train_report = {}, {}
    plan = [
        ("base16", "base16", size["network_16"], {}, 1),
        ("sr_noaug", "sr16to32", size["network_32"], {"augmentation": "none"}, 1),
        ("sr_gauss", "sr16to32", size["network_32"], {"augmentation": "gaussian"}, 1),
        ("base32", "base32", size["network_32"], {}, 2),
    ]
    for name, preset, network, extra, units in plan:
        if name == "base32":  # equal compute: the time base16 + one SR stage took
            seconds = train_report["base16"]["seconds"] + train_report["sr_gauss"]["seconds"]
        else:
            seconds = unit * units
        model = keras_cdm.DiffusionModel.from_preset(
            f"{preset}_small",
            network_overrides=network,
            ema_decay=size["ema_decay"],
            **extra,
        )
        model.compile(optimizer=keras.optimizers.Adam(size["learning_rate"]), jit_compile=jit)
        if preset.startswith("sr"):
            ds = keras_cdm.data.super_res_dataset(source, 16, 32, size["batch"], seed=1)
        else:
            res = 16 if preset == "base16" else 32
            ds = keras_cdm.data.base_dataset(source, res, size["batch"], seed=1)
        seconds = seconds if size["train_by_time"] else 0
        steps, took = train_for(model, ds, seconds, size["fit_chunk"])
        models[name] = model
        train_report[name] = {"steps": steps, "seconds": took, "batch": size["batch"]}
        yield f"train_{name}", train_report[name]

    # Sampling: chunks until the deadline (every arm gets the same labels).
    n, chunk, num_steps = size["samples"], size["chunk"], size["sampling_steps"]
    labels = np.arange(n) % 10
    arms = {
        "base32 (non-cascaded)": [],
        "cascade, no augmentation, s=0": [],
        f"cascade, gaussian, s={args.aug_level}": [],
    }
    made = 0
    reserve = 0.1 * (deadline - time.time())
    for start in range(0, n, chunk):
        lab = labels[start : start + chunk]
        t_chunk = time.time()
        # Per-image streams keyed by the global index: chunks never repeat noise.
        idx = range(start, start + len(lab))
        low = np.asarray(
            models["base16"].sample(lab, seed=21, num_steps=num_steps, image_indices=idx)
        )
        outs = [
            models["base32"].sample(lab, seed=31, num_steps=num_steps, image_indices=idx),
            models["sr_noaug"].sample(
                low, lab, seed=22, aug_level=0, num_steps=num_steps, image_indices=idx
            ),
            models["sr_gauss"].sample(
                low, lab, seed=22, aug_level=args.aug_level, num_steps=num_steps, image_indices=idx
            ),
        ]
        for key, images in zip(arms, outs):
            arms[key].append(to_uint8(np.asarray(images)))
        made += len(lab)
        spent = time.time() - t_chunk
        if time.time() + spent + reserve > deadline:
            break
    labels = labels[:made]
    results = {}
    rows = []
    for key, parts in arms.items():
        images = np.concatenate(parts)
        r = ev.evaluate_samples(extractor, images, labels, reference)
        results[key] = {
            "fid": float(r["fid"]),
            "class_accuracy": float(r.get("class_accuracy", float("nan"))),
            "samples": int(made),
        }
        per_class = [images[labels == c][:4] for c in range(10)]
        rows += [list(p) for p in zip(*per_class)]  # 4 rows of 10 classes per arm
    save_png(os.path.join(args.out, "grid.png"), make_grid(rows))
    yield "results", {"arms": results, "sampling_steps": num_steps, "samples": made}


# ----------------------------------------------------------------------
# The orchestrator
# ----------------------------------------------------------------------
class Proof:
    def __init__(self, out):
        self.out = out
        self.data = {
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "bench": {},
            "sampling": {},
            "ablation": {},
        }
        os.makedirs(out, exist_ok=True)
        self.log_file = open(os.path.join(out, "log.txt"), "a")

    def log(self, msg):
        line = f"[gpu_proof {time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def write(self):
        path = os.path.join(self.out, "proof.json")
        with open(path + ".tmp", "w") as f:
            json.dump(self.data, f, indent=2, default=float)
        os.replace(path + ".tmp", path)

    def write_csv(self, name, rows):
        if not rows:
            return
        keys = sorted({k for r in rows for k in r})
        path = os.path.join(self.out, name)
        with open(path + ".tmp", "w", newline="") as f:
            w = csv.DictWriter(f, keys)
            w.writeheader()
            w.writerows(rows)
        os.replace(path + ".tmp", path)


def run_child(proof, argv, env, timeout):
    """Runs a phase in a child process; returns its PART records, also those
    printed before a timeout."""
    cmd = [sys.executable, os.path.abspath(__file__), *argv]
    timed_out = False
    try:
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=max(1.0, timeout)
        )
        stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        timed_out, code = True, None
        stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        stderr = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
    parts = {}
    for line in stdout.splitlines():
        if line.startswith("PART "):
            key, value = json.loads(line[5:])
            parts[key] = value
    if timed_out:
        parts["error"] = f"timed out after {timeout:.0f} s"
    elif code:
        parts["error"] = f"exit {code}: {stderr.strip().splitlines()[-1:] or ''}"
        proof.log(stderr[-3000:])
    return parts


def device_info():
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"CPU ({os.cpu_count()} cores)"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="output folder (6 files)")
    p.add_argument(
        "--minutes", type=float, default=None, help="the whole run's time (8; dry run: at most 2)"
    )
    p.add_argument("--data", default=None, help="the bundle's CIFAR-10 .npz (default: synthetic)")
    p.add_argument("--dry_run", action="store_true", help="tiny sizes on the CPU, < 1 min")
    p.add_argument("--frameworks", nargs="+", default=list(BENCH_FRAMEWORKS))
    p.add_argument("--ablation_backend", default="jax", choices=("jax", "torch", "tensorflow"))
    p.add_argument("--bench_share", type=float, default=0.4, help="share of time for speed")
    p.add_argument(
        "--sampling_share", type=float, default=0.15, help="share of time for sampling speed"
    )
    p.add_argument("--aug_level", type=int, default=125, help="s of the Gaussian arm (of 1000)")
    p.add_argument("--peak_tflops", type=float, default=None, help="bf16 peak; default by name")
    p.add_argument("--bench_preset", default=None, help="speed: another preset")
    p.add_argument("--bench_batch", type=int, default=None, help="speed: another batch size")
    p.add_argument(
        "--pack", default=None, help="pack this CIFAR-10 folder (train/, test/) and exit"
    )
    p.add_argument("--pack_out", default="gpu_bundle/cifar10.npz")
    p.add_argument("--train_per_class", type=int, default=4000)
    p.add_argument(
        "--pack_max_mib",
        type=float,
        default=None,
        help="pack fewer training images per class if the file would exceed this size",
    )
    p.add_argument("--_phase", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_fw", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.pack:
        return pack(args.pack, args.pack_out, args.train_per_class, args.pack_max_mib)
    if not args.out:
        p.error("--out is required (the folder for the proof's files)")
    if args.minutes is None:
        args.minutes = 2.0 if args.dry_run else 8.0  # a dry run takes < 1 min of it
    if not args.minutes > 0:
        p.error(f"--minutes must be > 0. Received: {args.minutes}")
    if not 0 < args.bench_share < 1:
        p.error(f"--bench_share must lie in (0, 1). Received: {args.bench_share}")
    if not 0 <= args.sampling_share < 1 - args.bench_share:
        p.error(
            f"--sampling_share must lie in [0, 1 - --bench_share). Received: {args.sampling_share}"
        )
    bad = sorted(set(args.frameworks) - set(BENCH_FRAMEWORKS))
    if bad:
        p.error(f"--frameworks: unknown {bad}; expected some of {list(BENCH_FRAMEWORKS)}")
    if args.data and not os.path.isfile(args.data):
        p.error(f"--data {args.data!r}: file not found (make it with prepare_gpu_proof.sh)")
    size = dict(SIZES["dry_run" if args.dry_run else "gpu"])
    if args.bench_preset:
        size["bench_preset"], size["bench_network"] = args.bench_preset, None
    if args.bench_batch is not None:
        if args.bench_batch < 1:
            p.error(f"--bench_batch must be >= 1. Received: {args.bench_batch}")
        size["bench_batch"] = args.bench_batch

    if args._phase == "bench":
        print("PART " + json.dumps(["result", bench_child(args._fw, size)]), flush=True)
        return
    if args._phase == "sampling":
        print("PART " + json.dumps(["result", sampling_child(size, args.dry_run)]), flush=True)
        return
    if args._phase == "ablation":
        for key, value in ablation_child(args, size, args._deadline):
            print("PART " + json.dumps([key, value], default=float), flush=True)
        return

    start = time.time()
    deadline = start + 60 * args.minutes
    proof = Proof(args.out)
    device = device_info()
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    if peak is None:
        peak = next((v for k, v in PEAK_BF16.items() if k in device), None)
    proof.data.update(
        device=device,
        peak_bf16_flops=peak,
        minutes=args.minutes,
        dry_run=args.dry_run,
        sizes=size,
        command=" ".join(sys.argv),
    )
    proof.log(f"device: {device}; {args.minutes} min; out: {args.out}")
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=path)

    # Phase 1: speed.
    import importlib.util

    frameworks = [
        fw
        for fw in args.frameworks
        if importlib.util.find_spec("diffusers" if fw == "diffusers" else fw) is not None
    ]
    for fw in set(args.frameworks) - set(frameworks):
        proof.data["bench"][fw] = {"error": "not installed"}
    bench_budget = args.bench_share * (deadline - time.time())
    # JAX compiles three programs (train step, forward, sampler): twice the share.
    weights = {"jax": 2.0, "torch": 1.0, "diffusers": 1.0}
    rows = []
    for i, fw in enumerate(frameworks):
        left = bench_budget - (time.time() - start)
        share = left * weights[fw] / sum(weights[f] for f in frameworks[i:])
        proof.log(f"speed: {fw} ({share:.0f} s)")
        child_env = dict(env, KERAS_BACKEND="torch" if fw == "diffusers" else fw)
        argv_child = ["--_phase", "bench", "--_fw", fw, "--out", args.out]
        argv_child += ["--dry_run"] if args.dry_run else []
        if args.bench_preset:
            argv_child += ["--bench_preset", args.bench_preset]
        if args.bench_batch is not None:
            argv_child += ["--bench_batch", str(args.bench_batch)]
        parts = run_child(proof, argv_child, child_env, share)
        result = parts.get("result", {"error": parts.get("error", "no result")})
        proof.data["bench"][fw] = result
        proof.log(f"speed: {fw}: {json.dumps(result, default=float)[:400]}")
    flops = {fw: r.get("gflops") for fw, r in proof.data["bench"].items()}
    for fw, r in proof.data["bench"].items():
        if "train_img_s" not in r:
            continue
        gflops = flops.get(fw) or flops.get("torch")  # keras_cdm's FLOPs are counted under torch
        row = {"framework": fw, "preset": size["bench_preset"], "batch": size["bench_batch"]}
        row.update({k: v for k, v in r.items() if not k.startswith("_")})
        if gflops and peak:
            row["mfu_train"] = 3 * gflops * 1e9 * r["train_img_s"] / peak
            row["mfu_forward"] = gflops * 1e9 * r["forward_img_s"] / peak
        rows.append(row)
        r.update({k: row[k] for k in ("mfu_train", "mfu_forward") if k in row})
    proof.write_csv("bench.csv", rows)
    proof.write()

    # Phase 2: sampling throughput, noise drawn on the device.
    sampling_end = time.time() + args.sampling_share * (deadline - start)
    sampling_rows = []
    backends = [b for b in ("jax", "torch") if importlib.util.find_spec(b) is not None]
    for i, backend in enumerate(backends if args.sampling_share else []):
        share = (sampling_end - time.time()) / (len(backends) - i)
        proof.log(f"sampling: {backend} ({share:.0f} s)")
        argv_child = ["--_phase", "sampling", "--out", args.out]
        argv_child += ["--dry_run"] if args.dry_run else []
        parts = run_child(proof, argv_child, dict(env, KERAS_BACKEND=backend), share)
        result = parts.get("result", {"error": parts.get("error", "no result")})
        proof.data["sampling"][backend] = result
        if isinstance(result, list):
            sampling_rows += [dict(backend=backend, **row) for row in result]
        proof.log(f"sampling: {backend}: {json.dumps(result, default=float)[:400]}")
    proof.write_csv("sampling.csv", sampling_rows)
    proof.write()

    # Phase 3: the ablation, with the time left.
    left = deadline - time.time() - 10
    proof.log(f"ablation on {args.ablation_backend} ({left:.0f} s)")
    child_env = dict(env, KERAS_BACKEND=args.ablation_backend)
    argv_child = [
        "--_phase",
        "ablation",
        "--out",
        args.out,
        "--_deadline",
        str(time.time() + left - 5),
        "--aug_level",
        str(args.aug_level),
    ]
    if args.data:
        argv_child += ["--data", args.data]
    if args.dry_run:
        argv_child.append("--dry_run")
    parts = run_child(proof, argv_child, child_env, left)
    proof.data["ablation"] = parts
    arms = parts.get("results", {}).get("arms", {})
    proof.write_csv(
        "ablation.csv",
        [dict(arm=k, **v) for k, v in arms.items()],
    )
    for key, value in parts.items():
        proof.log(f"ablation: {key}: {json.dumps(value, default=float)[:400]}")
    proof.data["seconds"] = time.time() - start
    proof.write()
    proof.log(f"done in {time.time() - start:.0f} s -> {args.out}")
    return proof.data


if __name__ == "__main__":
    main()
