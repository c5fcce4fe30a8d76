"""A cascade against one 32x32 model (CDM's Table 4, at CPU scale), from
trained stages: each row's samples scored on the same classifier features
against the test split, with the FIDs of the two halves beside the whole.

    KERAS_BACKEND=jax python tools/cascade_vs_single.py \\
        --base16 weights/cifar10/base16 --sr weights/cifar10/sr16to32 \\
        --sr_noaug weights/cifar10/sr16to32_noaug --base32 weights/cifar10/base32 \\
        --data ../shared/data/cifar10 --extractor runs/eval/classifier.keras \\
        --sampler ddpm --spacing uniform --num_steps 20 --out results/cascade_vs_single/ddpm20

Rows (the same labels, 500 per class at 5,000 samples; every row's model
samples with the same sampler, steps and no guidance):
  * base32 alone;
  * base16 -> SR with augmentation, non-truncated at the best `s` of the
    sweep, and truncated at that `s` (the base stops at z_s);
  * base16 -> SR without augmentation (`s = 0`);
  * base16 upsampled by bicubic (the floor any SR stage must beat);
  * real test images box-downsampled to 16x16 and upsampled by bicubic
    (the data's own floor), and real test images at 32x32.
The non-truncated rows share one set of base16 samples, drawn as the
cascade draws them (`CascadeSampler` with the same seed gives the same
images). The sweep over `s` (non-truncated, `--sweep_samples` per level,
its own seed) picks `s` by FID and is plotted to `sweep.svg`. Every
sample set is written chunk by chunk: rerun the command after a kill and it
goes on from the last finished chunk; finished rows are not scored again.
"""

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "recipes"))

import common  # noqa: E402
import evaluate  # noqa: E402
import numpy as np  # noqa: E402
from cifar10_ablation import metrics_table  # noqa: E402
from cifar10_ablation import read_json  # noqa: E402
from cifar10_ablation import sample_chunked  # noqa: E402
from keras import ops  # noqa: E402

import keras_cdm  # noqa: E402
from keras_cdm import evaluation as ev  # noqa: E402
from keras_cdm.data.stage_dataset import box_downsample  # noqa: E402
from keras_cdm.models.reverse_process import SPACINGS  # noqa: E402
from keras_cdm.utils.images import to_uint8  # noqa: E402

SEED, SWEEP_SEED = 21, 11
KEEP = ("num_samples", "fid", "fid_halves", "class_accuracy", "precision", "recall")


def bicubic(images, size):
    """Float images in [-1, 1] resized to `size` by bicubic interpolation."""
    out = ops.image.resize(np.asarray(images, "float32"), (size, size), interpolation="bicubic")
    return np.clip(ops.convert_to_numpy(out), -1.0, 1.0)


def matching_real_images(real_labels, labels):
    """Indices of real images with the sample rows' labels, in their order:
    the k-th image of class c for the k-th sample of class c (a data set's
    first n images may hold a few classes only: image folders list by class)."""
    pick = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        want, have = np.flatnonzero(labels == c), np.flatnonzero(real_labels == c)
        if len(have) < len(want):
            raise SystemExit(
                f"--num_samples: {len(want)} samples of class {c} need as many real test "
                f"images of it for the real rows; the test split has {len(have)}"
            )
        pick[want] = have[: len(want)]
    return pick


def sr_from(cascade, low_res, labels, first, aug_level, seed):
    """The cascade's last stage on given stage-1 samples, non-truncated: the
    images `cascade.sample(labels, seed=seed, first_index=first)` gives
    when its base draws `low_res` (same seeds, same per-image streams)."""
    stage = cascade.stages[1]
    return stage.sample(
        np.clip(low_res, -1.0, 1.0),
        labels,
        aug_level=aug_level,
        noisy_low_res=False,
        image_indices=first + np.arange(len(labels)),
        settings=cascade.settings[1],
        seed=cascade.stage_seed(seed, 1),
    )


def write_svg(path, sweep, best, title):
    """FID and class accuracy against `s`, one line each (FID's axis left)."""
    levels = sorted(int(s) for s in sweep)
    fids = [sweep[str(s)]["fid"] for s in levels]
    accs = [sweep[str(s)].get("class_accuracy", 0.0) for s in levels]
    w, h, left, right, top, bottom = 560, 320, 60, 70, 30, 50
    span = (max(levels) - min(levels)) or 1

    def x_of(s):
        return left + (s - min(levels)) / span * (w - left - right)

    def span_of(values):
        """An axis around the values (not from 0: the sweep's effect is small)."""
        lo, hi = min(values), max(values)
        pad = 0.1 * (hi - lo) or 0.05 * abs(hi) or 1.0
        return lo - pad, hi + pad

    def y_of(v, axis):
        lo, hi = axis
        return top + (1 - (v - lo) / (hi - lo)) * (h - top - bottom)

    ax_f, ax_a = span_of(fids), span_of(accs)
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{left}" y="18">{title}</text>',
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="black"/>',
        f'<text x="{(w - right) / 2}" y="{h - 12}">conditioning augmentation level s</text>',
        f'<text x="8" y="{top - 8}" fill="#1f77b4">FID</text>',
        f'<text x="{w - right + 6}" y="{top - 8}" fill="#d62728">class acc.</text>',
    ]
    for i in range(5):
        f = ax_f[0] + (ax_f[1] - ax_f[0]) * i / 4
        a = ax_a[0] + (ax_a[1] - ax_a[0]) * i / 4
        y = y_of(f, ax_f)
        svg.append(f'<line x1="{left}" y1="{y}" x2="{w - right}" y2="{y}" stroke="#ddd"/>')
        svg.append(f'<text x="{left - 40}" y="{y + 4}" fill="#1f77b4">{f:.2f}</text>')
        svg.append(f'<text x="{w - right + 6}" y="{y + 4}" fill="#d62728">{a:.3f}</text>')
    for s in levels:
        svg.append(f'<text x="{x_of(s) - 8}" y="{h - bottom + 16}">{s}</text>')
    for values, axis, colour in ((fids, ax_f, "#1f77b4"), (accs, ax_a, "#d62728")):
        pts = [(x_of(s), y_of(v, axis)) for s, v in zip(levels, values)]
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        svg.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
        svg += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in pts]
    svg.append(f'<text x="{x_of(best) + 4}" y="{top + 14}">best s = {best}</text>')
    svg.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(svg))
    return path


def write_table(out, rows, sweep, best, meta):
    lines = metrics_table(rows, "row")
    lines += [
        "",
        "Sweep of s (SR with augmentation, non-truncated): "
        + ", ".join(
            f"s={s}: {sweep[s]['fid']:.2f} ({sweep[s].get('class_accuracy', 0):.3f})"
            for s in sorted(sweep, key=int)
        )
        + f"; best s={best}. Cells: FID (class accuracy).",
        meta,
    ]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(text)
    return text


def check_same_run(args):
    """`--out` keeps sample sets and scores to resume from: they belong to
    one set of stages and settings. A rerun with others is refused (it
    would mix their samples into these rows); new `--levels` are added.
    Returns the record, which `main` writes once the stages pass their checks."""
    record = {k: v for k, v in vars(args).items() if k not in ("levels", "out")}
    path = os.path.join(args.out, "run.json")
    kept = read_json(path)
    if kept and kept != record:
        changed = ", ".join(
            f"--{k} {kept.get(k)!r} -> {v!r}" for k, v in record.items() if kept.get(k) != v
        )
        raise SystemExit(
            f"--out {args.out} holds a run with other flags ({changed}); use another --out "
            "or delete it"
        )
    return record


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("base16", "sr", "sr_noaug", "base32"):
        p.add_argument(f"--{flag}", required=True, help="a stage: preset directory or .keras")
    p.add_argument("--data", required=True, help="the data set (its test split is the reference)")
    p.add_argument("--extractor", required=True, help="the evaluation classifier (.keras)")
    p.add_argument("--sampler", default="ddpm", choices=keras_cdm.diffusion.solver_names())
    p.add_argument("--spacing", default="uniform", choices=SPACINGS)
    p.add_argument("--num_steps", type=common.POSITIVE_INT, default=20, help="per stage")
    p.add_argument("--num_samples", type=common.POSITIVE_INT, default=5000)
    p.add_argument("--sweep_samples", type=common.POSITIVE_INT, default=1000)
    p.add_argument(
        "--levels", type=common.NON_NEGATIVE_INT, nargs="+", default=[0, 25, 62, 125, 250, 500]
    )
    p.add_argument("--chunk", type=common.POSITIVE_INT, default=500)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    record = check_same_run(args)
    settings = dict(
        num_steps=args.num_steps, sampler=args.sampler, spacing=args.spacing, guidance_scale=1.0
    )

    def load(k):
        try:
            return keras_cdm.models.resolve_stage(getattr(args, k))
        except FileNotFoundError as e:
            raise SystemExit(f"--{k}: {e}") from None

    stages = {k: load(k) for k in ("base16", "base32")}
    size, low_size = stages["base32"].image_size, stages["base16"].image_size
    num_classes = stages["base32"].num_classes
    if not num_classes or stages["base16"].num_classes != num_classes:
        raise SystemExit(
            "--base16 and --base32: expected class-conditional stages with the same classes; "
            f"received {stages['base16'].num_classes} and {num_classes} classes"
        )

    def sr_stage(k):
        """An SR stage from its flag, checked to chain --base16 to --base32."""
        if k not in stages:
            stage = load(k)
            got = (getattr(stage, "low_res_size", None), stage.image_size)
            if got != (low_size, size):
                what = "a base stage" if got[0] is None else f"{got[0]}->{got[1]}"
                raise SystemExit(
                    f"--{k}: expected an SR stage {low_size}->{size} (--base16's size to "
                    f"--base32's); received {what} ({getattr(args, k)})"
                )
            stages[k] = stage
        return stages[k]

    sr_stage("sr")
    sr_stage("sr_noaug")  # every stage checked before hours of sampling
    os.makedirs(os.path.join(args.out, "samples"), exist_ok=True)
    common.write_json(os.path.join(args.out, "run.json"), record)
    extractor = evaluate.get_extractor(args.extractor)
    ref_path = os.path.join(args.out, "reference_test.npz")
    if not os.path.isfile(ref_path):
        images, labels = evaluate.load_images(args.data, "test", size, None)
        feats, _ = extractor(images)
        np.savez(ref_path, features=feats, labels=labels, images=images)
    real = np.load(ref_path)
    reference = (real["features"].mean(0), np.cov(real["features"], rowvar=False), extractor.name)

    def score(images, labels):
        r = ev.evaluate_samples(
            extractor, to_uint8(images), labels, reference, real["features"], real["labels"]
        )
        return {k: r[k] for k in KEEP if k in r}

    def cascade(sr, mode="non_truncated", s=0):
        return keras_cdm.CascadeSampler(
            [stages["base16"], sr_stage(sr)], aug_levels=[s], mode=mode, **settings
        )

    def chunked(name, make, labels):
        return sample_chunked(
            os.path.join(args.out, "samples", f"{name}.npz"), make, labels, args.chunk
        )

    # 1. The sweep over s on its own labels and seed.
    sweep_path = os.path.join(args.out, "sweep.json")
    sweep = read_json(sweep_path)
    sweep_labels = np.arange(args.sweep_samples) % num_classes
    todo = [s for s in args.levels if str(s) not in sweep]
    if todo:
        c = keras_cdm.CascadeSampler([stages["base16"], stages["sr"]], **settings)
        for s, images in c.sweep_aug_levels(todo, labels=sweep_labels, seed=SWEEP_SEED).items():
            if s != "low_res":
                sweep[str(s)] = score(images, sweep_labels)
                common.write_json(sweep_path, sweep)
    best = int(min(sweep, key=lambda s: sweep[s]["fid"]))
    print(
        f"[cascade_vs_single] sweep {json.dumps({s: round(v['fid'], 3) for s, v in sweep.items()})}; best s={best}"
    )

    # 2. The rows.
    labels = np.arange(args.num_samples) % num_classes
    base = keras_cdm.CascadeSampler([stages["base16"]], **settings)
    one = keras_cdm.CascadeSampler([stages["base32"]], **settings)
    aug = cascade("sr", s=best)
    truncated = cascade("sr", mode="truncated", s=best)
    low = chunked(
        "base16", lambda lab, first: base.sample(lab, seed=SEED, first_index=first), labels
    )

    def on_low(c, s):
        return lambda lab, first: sr_from(c, low[first : first + len(lab)], lab, first, s, SEED)

    pick = matching_real_images(real["labels"], labels)
    test_images = real["images"][pick].astype("float32") / 127.5 - 1.0
    test_labels = real["labels"][pick]
    rows_spec = {
        f"base{size} alone": (
            lambda: chunked(
                "base32", lambda lab, first: one.sample(lab, seed=SEED, first_index=first), labels
            ),
            labels,
        ),
        f"cascade, augmentation, non-truncated s={best}": (
            lambda: chunked(f"aug_s{best}", on_low(aug, best), labels),
            labels,
        ),
        f"cascade, augmentation, truncated s={best}": (
            lambda: chunked(
                f"aug_truncated_s{best}",
                lambda lab, first: truncated.sample(lab, seed=SEED, first_index=first),
                labels,
            ),
            labels,
        ),
        "cascade, no augmentation": (
            lambda: chunked("noaug", on_low(cascade("sr_noaug"), 0), labels),
            labels,
        ),
        f"base{low_size} + bicubic (SR floor)": (lambda: bicubic(low, size), labels),
        f"test images {low_size}x{low_size} + bicubic (data floor)": (
            lambda: bicubic(box_downsample(test_images, size // low_size), size),
            test_labels,
        ),
        f"test images {size}x{size}": (lambda: test_images, test_labels),
    }
    rows_path = os.path.join(args.out, "rows.json")
    rows = read_json(rows_path)
    last = "cascade, no augmentation"
    for name in sorted(rows_spec, key=lambda n: n == last):
        make, row_labels = rows_spec[name]
        if name in rows:
            continue
        rows[name] = score(make(), row_labels)
        rows = {n: rows[n] for n in rows_spec if n in rows}
        common.write_json(rows_path, rows)
        print(f"[cascade_vs_single] {name}: FID {rows[name]['fid']:.3f}", flush=True)
    meta = (
        f"{args.num_samples} samples per row (real rows: as many test images, with the same labels) "
        f"against the {len(real['labels'])} test images; {args.sampler} ({args.spacing} spacing), "
        f"{args.num_steps} steps per stage, no guidance; sweep {args.sweep_samples} samples per level."
    )
    print(write_table(args.out, rows, sweep, best, meta))
    title = f"s sweep: {args.sampler}, {args.num_steps} steps, {args.sweep_samples} samples/level"
    write_svg(os.path.join(args.out, "sweep.svg"), sweep, best, title)
    return rows, sweep, best


if __name__ == "__main__":
    main()
