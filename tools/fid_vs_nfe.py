"""FID against the number of network calls (NFE) for each sampler, on one
class-conditional base stage or a whole cascade: a table (Markdown + JSON)
and a plot (SVG).

    KERAS_BACKEND=jax python tools/fid_vs_nfe.py weights/cifar10/base16 \\
        --data ../shared/data/cifar10 --extractor runs/eval/classifier.keras \\
        --samplers ddpm ddim dpm++2m --nfe 10 20 50 100 --num_images 1000 \\
        --out results/fid_vs_nfe

Every sampler here calls the network once per step, so NFE = `num_steps`.
Given a cascade (a base stage, then SR stages, with `--aug_levels`, one `s`
per SR stage, non-truncated), every stage takes the same sampler and steps:
the NFE is per stage, and the reference is at the last stage's resolution.
`--spacings uniform quadratic` adds a row per sampler with quadratically
spaced timesteps (`SAMPLER/quadratic`, dashed in the plot).
All settings draw the same images' noise (same seed, per-image streams), with
the same labels (`i % classes`) and no guidance. The reference is the test
split brought to the stage's resolution by the training pipeline (so the FID
measures the stage, not the missing resolution); samples and reference are
both enlarged to the extractor's input size by pixel repetition. Resumable:
each setting's figures are written when they are done and not redone.
`--weights_dtype_check DIR32` also scores a float32 copy of the stage (same
seed) at the first sampler and NFE, to measure what float16 weights cost;
`--real_floor` scores `num_images` real training images the same way: the
FID a perfect stage would get with this many samples. `--students DIR ...`
adds a `distilled` row: each distilled student of the stage
(`recipes/distill.py`) at its recorded settings, its steps as the NFE; for
a cascade each is `BASE_DIR,SR_DIR,...` (one student per stage, all of the
same step count). `--student_samplers ddim_renoise` adds a
`distilled/ddim_renoise` row: the same students on their own grid and step
count with another solver (e.g. the stochastic one of Meng et al.).
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "recipes"))

import numpy as np  # noqa: E402

import keras_cdm  # noqa: E402
from keras_cdm import evaluation as ev  # noqa: E402
from keras_cdm.utils.images import to_uint8  # noqa: E402

COLOURS = {
    "ddpm": "#1f77b4",
    "ddim": "#ff7f0e",
    "dpm++2m": "#2ca02c",
    "dpm++2m_sde": "#d62728",
    "distilled": "#9467bd",
}


def row_label(sampler, spacing):
    """A row of the table: the sampler, with its spacing unless uniform."""
    return sampler if spacing == "uniform" else f"{sampler}/{spacing}"


def enlarge(images, size):
    """uint8 images repeated pixel by pixel up to `size` (an integer factor)."""
    factor = size // images.shape[1]
    if factor * images.shape[1] != size:
        raise ValueError(f"{images.shape[1]}x{images.shape[1]} images do not tile {size}")
    return np.repeat(np.repeat(images, factor, axis=1), factor, axis=2)


def reference(path, extractor, data, resolution, size, limit):
    """Features of the test split at `resolution`, enlarged to `size` (cached)."""
    if os.path.isfile(path):
        r = np.load(path)
        return r["features"], r["labels"]
    import evaluate  # recipes/evaluate.py

    images, labels = evaluate.load_images(data, "test", resolution, limit)
    features, _ = extractor(enlarge(images, size))
    np.savez(path, features=features, labels=labels)
    return features, labels


def score(extractor, images, labels, real):
    feats, _ = real
    ref = (feats.mean(0), np.cov(feats, rowvar=False), extractor.name)
    result = ev.evaluate_samples(extractor, images, labels, ref, feats, real[1])
    keep = ("num_samples", "fid", "class_accuracy", "precision", "recall")
    return {k: float(result[k]) for k in keep if k in result}


def write_table(out, results, samplers, nfes, meta):
    lines = [
        "| sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
        "|---|" + "---|" * len(nfes),
    ]
    for s in samplers:
        cells = []
        for n in nfes:
            r = results.get(f"{s}@{n}")
            cells.append(f"{r['fid']:.2f} ({r['class_accuracy']:.2f})" if r else "—")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n\nCells: FID (class accuracy). " + meta + "\n"
    with open(os.path.join(out, "fid_vs_nfe.md"), "w") as f:
        f.write(text)
    return text


def write_svg(path, results, samplers, nfes, title):
    """A log-x line plot of FID against NFE, one line per sampler."""
    points = {
        s: [(n, results[f"{s}@{n}"]["fid"]) for n in nfes if f"{s}@{n}" in results]
        for s in samplers
    }
    fids = [f for pts in points.values() for _, f in pts]
    if not fids:
        return None
    w, h, left, right, top, bottom = 580, 340, 60, 180, 30, 50
    lo, hi = 0.0, max(fids) * 1.1
    xs = np.log(np.asarray(nfes, float))

    def x_of(n):
        span = xs.max() - xs.min() or 1.0
        return left + (np.log(n) - xs.min()) / span * (w - left - right)

    def y_of(f):
        return top + (1 - (f - lo) / (hi - lo)) * (h - top - bottom)

    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2 - 60}" y="18">{title}</text>',
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="black"/>',
        f'<text x="{(w - right) / 2}" y="{h - 12}">network calls (NFE, log scale)</text>',
        f'<text x="14" y="{(top + h - bottom) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(top + h - bottom) / 2})">FID</text>',
    ]
    for n in nfes:
        svg.append(f'<text x="{x_of(n) - 8}" y="{h - bottom + 16}">{n}</text>')
    for i in range(5):
        f = lo + (hi - lo) * i / 4
        svg.append(f'<text x="{left - 40}" y="{y_of(f) + 4}">{f:.1f}</text>')
        svg.append(
            f'<line x1="{left}" y1="{y_of(f)}" x2="{w - right}" y2="{y_of(f)}" stroke="#ddd"/>'
        )
    for k, (s, pts) in enumerate(points.items()):
        colour = COLOURS.get(s.split("/")[0], "black")
        dash = ' stroke-dasharray="6,3"' if "/" in s else ""
        coords = " ".join(f"{x_of(n):.1f},{y_of(f):.1f}" for n, f in pts)
        svg.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
        )
        for n, f in pts:
            svg.append(f'<circle cx="{x_of(n):.1f}" cy="{y_of(f):.1f}" r="3" fill="{colour}"/>')
        svg.append(f'<text x="{w - right + 10}" y="{top + 20 + 18 * k}" fill="{colour}">{s}</text>')
    svg.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(svg))
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "stages",
        nargs="+",
        help="a base stage, or a cascade (base, then SR stages): preset directories or .keras files",
    )
    p.add_argument(
        "--aug_levels",
        type=int,
        nargs="+",
        default=None,
        help="a cascade's conditioning augmentation level s, one per SR stage (required then)",
    )
    p.add_argument("--data", required=True, help="the dataset of the reference (test split)")
    p.add_argument("--extractor", required=True, help="the evaluation classifier (.keras)")
    p.add_argument(
        "--samplers",
        nargs="+",
        default=["ddpm", "ddim", "dpm++2m", "dpm++2m_sde"],
        choices=list(keras_cdm.diffusion.solver_names()),
    )
    p.add_argument(
        "--spacings",
        nargs="+",
        default=["uniform"],
        choices=list(keras_cdm.models.reverse_process.SPACINGS),
        help="timestep spacings; a row per sampler and spacing (quadratic rows: SAMPLER/quadratic)",
    )
    p.add_argument("--nfe", type=int, nargs="+", default=[10, 20, 50, 100])
    p.add_argument("--num_images", type=int, default=1000)
    p.add_argument("--reference_limit", type=int, default=None, help="test images (all)")
    p.add_argument("--batch_size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights_dtype_check", default=None, help="a float32 copy of the stage")
    p.add_argument("--real_floor", action="store_true", help="also score real train images")
    p.add_argument(
        "--students",
        nargs="+",
        default=[],
        help="distilled students of the stage (preset directories), each at its recorded "
        "settings: a 'distilled' row; for a cascade, BASE_DIR,SR_DIR,... per student",
    )
    p.add_argument(
        "--student_samplers",
        nargs="+",
        default=[],
        choices=keras_cdm.diffusion.solver_names(),
        help="also sample the students with these solvers (on their own grid and steps): "
        "a 'distilled/SAMPLER' row each",
    )
    p.add_argument("--out", default="results/fid_vs_nfe")
    args = p.parse_args(argv)
    if args.student_samplers and not args.students:
        p.error("--student_samplers: there are no --students to sample")
    import evaluate  # recipes/evaluate.py

    n_sr = len(args.stages) - 1
    if n_sr and (args.aug_levels is None or len(args.aug_levels) != n_sr):
        p.error(
            f"--aug_levels: a cascade of {len(args.stages)} stages needs {n_sr} level(s) s, "
            f"one per SR stage. Received: {args.aug_levels}"
        )
    if not n_sr and args.aug_levels:
        p.error(f"--aug_levels {args.aug_levels}: a single base stage has no SR stage")
    if n_sr and args.weights_dtype_check:
        p.error("--weights_dtype_check compares one base stage; not a cascade")
    aug = {"aug_levels": args.aug_levels} if n_sr else {}
    os.makedirs(args.out, exist_ok=True)
    extractor = evaluate.get_extractor(args.extractor)
    size = extractor.input_size
    cascade = keras_cdm.CascadeSampler(args.stages, **aug)
    stage, last = cascade.stages[0], cascade.stages[-1]
    real = reference(
        os.path.join(args.out, f"reference_{last.image_size}.npz"),
        extractor,
        args.data,
        last.image_size,
        size,
        args.reference_limit,
    )
    labels = np.arange(args.num_images) % max(stage.num_classes, 1)
    path = os.path.join(args.out, "fid_vs_nfe.json")
    results = json.load(open(path)) if os.path.isfile(path) else {}
    # Each run: its key in the results, its stages, CascadeSampler's settings.
    # Run in the order given (NFE first), show in sampler and NFE order.
    runs = [
        (f"{row_label(s, sp)}@{n}", cascade.stages, dict(num_steps=n, sampler=s, spacing=sp))
        for n in args.nfe
        for sp in args.spacings
        for s in args.samplers
    ]
    if args.weights_dtype_check:
        s, sp, n = args.samplers[0], args.spacings[0], args.nfe[0]
        settings = dict(num_steps=n, sampler=s, spacing=sp)
        runs.append((f"{row_label(s, sp)}@{n}@float32", [args.weights_dtype_check], settings))
    students = {}
    for group in args.students:
        chain = group.split(",")
        if len(chain) != len(args.stages):
            p.error(
                f"--students {group!r}: {len(chain)} stage(s) for a cascade of "
                f"{len(args.stages)} (BASE_DIR,SR_DIR,... one per stage)"
            )
        recorded = [keras_cdm.models.loading.recorded_sampler_settings(d) or {} for d in chain]
        steps = {r.get("num_steps") for r in recorded}
        if None in steps or len(steps) != 1:
            p.error(
                f"--students {group!r}: every stage must be a distilled student recording one "
                f"step count (recorded: {sorted(steps, key=str)})"
            )
        students[steps.pop()] = chain
    # A student samples with its recorded steps and grid, and its recorded
    # solver unless --student_samplers names another.
    runs += [
        (f"distilled@{n}" if s is None else f"distilled/{s}@{n}", chain, dict(sampler=s))
        for s in [None, *args.student_samplers]
        for n, chain in students.items()
    ]
    for key, chain, settings in runs:
        if key in results:
            continue
        start = time.time()
        sampling = keras_cdm.CascadeSampler(chain, **settings, **aug)
        images = sampling.sample(labels, seed=args.seed, batch_size=args.batch_size)
        results[key] = dict(
            score(extractor, enlarge(to_uint8(images), size), labels, real),
            seconds=round(time.time() - start, 1),
        )
        with open(path + ".tmp", "w") as f:
            json.dump(results, f, indent=2)
        os.replace(path + ".tmp", path)
        print(f"[fid_vs_nfe] {key}: {results[key]}", flush=True)
    if args.real_floor and "real" not in results:
        images, real_labels = evaluate.load_images(
            args.data, "train", last.image_size, args.num_images
        )
        results["real"] = score(extractor, enlarge(images, size), real_labels, real)
        with open(path + ".tmp", "w") as f:
            json.dump(results, f, indent=2)
        os.replace(path + ".tmp", path)
    floor = (
        f" Real training images scored the same way (the floor at this sample size): FID "
        f"{results['real']['fid']:.2f}, class accuracy {results['real']['class_accuracy']:.2f}."
        if "real" in results
        else ""
    )
    names = " -> ".join(os.path.basename(os.path.normpath(s)) for s in args.stages)
    where = (
        f"The cascade {names}, non-truncated at s = {args.aug_levels}, the same sampler and "
        "NFE at every stage (NFE per stage); "
        if n_sr
        else ""
    )
    meta = where + (
        f"{args.num_images} samples ({args.num_images // max(stage.num_classes, 1)} per class), "
        f"seed {args.seed}, no guidance; reference: {len(real[0])} test images at "
        f"{last.image_size}x{last.image_size}; features of {args.extractor}." + floor
    )
    samplers = [
        row_label(s, sp)
        for sp in args.spacings
        for s in keras_cdm.diffusion.solver_names()
        if s in args.samplers
    ]
    nfes = sorted(set(args.nfe) | set(students))
    samplers += [f"distilled/{s}" for s in args.student_samplers]
    samplers += ["distilled"] if students else []
    table = write_table(args.out, results, samplers, nfes, meta)
    svg = write_svg(
        os.path.join(args.out, "fid_vs_nfe.svg"),
        results,
        samplers,
        nfes,
        f"FID vs NFE{' per stage' if n_sr else ''}, {names}",
    )
    print(table)
    print(f"[fid_vs_nfe] wrote {path}, {svg}")
    return results


if __name__ == "__main__":
    main()
