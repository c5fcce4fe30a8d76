"""The recipes' training loop: data, checkpoints every N steps, stopping
on a signal at a step boundary, the final stage and its sample grid; and
`main`, the command line of every `train_*.py` recipe."""

import csv
import dataclasses
import os
import signal
import sys
import time

import keras
import numpy as np
from recipe_flags import FlagError
from recipe_flags import ResumeRefused
from recipe_flags import TrainingOptions
from recipe_flags import Unsupported
from recipe_flags import cli
from recipe_flags import parse_args
from recipe_flags import stage_settings
from run_state import current_step
from run_state import load_or_build
from run_state import paper_preset_note
from run_state import resume_command

import keras_cdm
from keras_cdm.backend import any_process
from keras_cdm.backend import has_accelerator
from keras_cdm.distribute import configure_data_parallel
from keras_cdm.models.presets import get_preset
from keras_cdm.utils.interrupts import SignalStop
from keras_cdm.utils.interrupts import StopOnSignal
from keras_cdm.utils.progress import TrainingProgress


def open_source(stage, preset, args):
    """The training data; makes the stage unconditional (network
    num_classes=0 in `args.network`) when asked to or when the data has no
    classes, and says so."""
    size = dict(get_preset(preset).network, **(args.network or {}))["image_size"]
    source = keras_cdm.data.resolve_source(
        args.dataset,
        data_dir=args.data_dir,
        resolution=size,
        seed=args.seed,
        num_images=min(args.num_synthetic, 16) if args.smoke else args.num_synthetic,
    )
    unlabelled = source.num_classes == 0
    if args.unconditional or unlabelled or (args.network or {}).get("num_classes") == 0:
        why = (
            "--unconditional"
            if args.unconditional
            else f"--dataset {args.dataset!r} has no class sub-folders"
            if unlabelled
            else "--network num_classes=0"
        )
        if args.label_dropout:
            raise FlagError(
                f"--label_dropout {args.label_dropout}: an unconditional stage ({why}) has no "
                "labels to drop."
            )
        print(f"[keras_cdm] {stage}: unconditional stage ({why})")
        args.network = dict(args.network or {}, num_classes=0)
        if not unlabelled:
            source = source.without_labels()
    elif source.class_names:
        mapping = ", ".join(f"{i}={name}" for i, name in enumerate(source.class_names))
        print(f"[keras_cdm] {args.dataset}: {source.num_classes} classes, label = {mapping}")
    return source


def build_dataset(model, args, batch, shard=None, source=None):
    sr = isinstance(model, keras_cdm.SuperResDiffusionModel)
    size = model.image_size
    if source.num_classes > model.num_classes:
        raise FlagError(
            f"--dataset {args.dataset!r} has {source.num_classes} classes but the stage has "
            f"{model.num_classes}: labels would fall outside [0, {model.num_classes}). Pass "
            f"--network '{{\"num_classes\": {source.num_classes}}}' for a new run."
        )
    if source.skipped:
        print(
            f"[keras_cdm] skipped {len(source.skipped)} unreadable image(s), "
            f"first: {source.skipped[0]}"
        )
    if sr:
        return keras_cdm.data.super_res_dataset(
            source,
            model.low_res_size,
            size,
            batch,
            flip=bool(args.flip),
            seed=args.seed,
            shard=shard,
        )
    return keras_cdm.data.base_dataset(
        source, size, batch, flip=bool(args.flip), seed=args.seed, shard=shard
    )


def save_collectively(model, path):
    """`model.save(path)` in the writing process; with `path=None` (the other
    processes) the same save into a scratch folder that is removed: under
    several JAX processes Keras's saving creates variables, a collective
    that every process must join."""
    if path is not None:
        return model.save(path)
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        model.save(os.path.join(scratch, "scratch.keras"))


class Checkpoint(keras.callbacks.Callback):
    """At the end of each epoch (= `checkpoint_every` steps, fewer when the
    run ends between two, or the step a stop signal ended): saves the whole
    stage (raw + EMA weights, optimizer with its step counter, RNG), logs a
    CSV row, and writes sample grids. Every file is replaced atomically."""

    def __init__(self, output_dir, sample_every, num_classes, write=True):
        super().__init__()
        self.write = write
        self.output_dir = output_dir
        self.sample_every = sample_every
        self.num_classes = num_classes
        self.csv_path = os.path.join(output_dir, "log.csv")
        self.path = os.path.join(output_dir, "checkpoint.keras")
        self.saves = 0
        self.saved_step = None

    def on_epoch_end(self, epoch, logs=None):
        # Every process runs this: reading `self.model` brings JAX's trainer
        # state back into the variables, a collective with several processes.
        step = current_step(self.model)
        self.saved_step = step
        if not self.write:  # one process writes (the others run the same save)
            return save_collectively(self.model, None)
        save_collectively(self.model, self.path + ".tmp.keras")
        os.replace(self.path + ".tmp.keras", self.path)  # atomic: a kill never leaves half a file
        header = None
        if os.path.exists(self.csv_path):
            with open(self.csv_path, newline="") as f:
                header = next(csv.reader(f), None)
        row = {"step": step, "time": f"{time.time():.1f}"}
        row.update({k: f"{float(v):.6g}" for k, v in (logs or {}).items()})
        with open(self.csv_path, "a", newline="") as f:
            # A resumed run keeps the file's columns (a run begun by an
            # older version logged more): a value is never written under
            # another column's name.
            w = csv.DictWriter(
                f,
                header or ["step", "time"] + sorted(logs or {}),
                restval="",
                extrasaction="ignore",
            )
            if header is None:
                w.writeheader()
            w.writerow(row)
        self.saves += 1
        print(f"[keras_cdm] checkpoint at step {step}: {self.path}", flush=True)
        if self.sample_every and self.saves % self.sample_every == 0:
            write_sample_grid(
                self.model,
                os.path.join(self.output_dir, f"samples_{step:08d}.png"),
                self.num_classes,
            )


class StopAtStep(keras.callbacks.Callback):
    """Ends `fit` after global step `last` (inside an epoch if need be), so a
    run stops exactly at `--train_steps` whatever the checkpoint interval."""

    def __init__(self, first, last):
        super().__init__()
        self.step, self.last = first, last

    def on_train_batch_begin(self, batch, logs=None):
        self.begin = batch

    def on_train_batch_end(self, batch, logs=None):
        self.step += batch - self.begin + 1  # several with steps_per_execution
        if self.step >= self.last:
            self.model.stop_training = True


def fit_to_step(model, dataset, done, steps, every, callbacks, stop, spe=1, data_name="the data"):
    """Trains `model` from step `done` to step `steps` in epochs of `every`
    steps (each ends with a checkpoint among `callbacks`), or until `stop`
    received a signal; returns the step reached. The input pipeline is
    deterministic given its seed, so a resumed run skips the batches
    already consumed and continues on exactly the next one."""
    while done < steps:
        # Epochs end on multiples of `every` (checkpoints); a resumed run
        # whose step is between two first finishes that interval.
        first = min(every - done % every, steps - done) if done % every else 0
        data = keras_cdm.backend.per_process_input(model, dataset.skip(done) if done else dataset)
        # A run resumed from a checkpoint written with another
        # --steps_per_execution first steps to a multiple of this one.
        set_steps_per_execution(model, spe if first % spe == 0 else 1)
        if first:
            model.fit(
                data, epochs=1, steps_per_epoch=first, callbacks=callbacks, shuffle=False, verbose=0
            )
        else:
            model.fit(
                data,
                epochs=-(-steps // every),
                initial_epoch=done // every,
                steps_per_epoch=every,
                callbacks=callbacks + [StopAtStep(done, steps)],
                shuffle=False,  # the datasets shuffle themselves, per seed
                verbose=0,
            )
        if current_step(model) == done:
            raise RuntimeError(
                f"Training made no progress at step {done}: the dataset ended early ({data_name})."
            )
        done = current_step(model)
        if stop.received is not None:
            break
    return done


def grid_low_res(labels, num_classes, size):
    """Low-resolution shapes for an SR stage's sample grid, in [-1, 1]: image
    `i` shows class `labels[i]` (the stage is told the class of the image it
    upsamples), for stages of up to ten classes; other stages get the shapes
    in the set's order."""
    shape_classes = min(num_classes, len(keras_cdm.data.CLASS_NAMES))
    images, shape_labels = keras_cdm.data.synthetic_shapes(
        len(labels), size, seed=123, num_classes=shape_classes
    )
    if num_classes <= shape_classes:
        images = images[np.argsort(shape_labels, kind="stable")]
    return images.astype("float32") / 127.5 - 1


def write_sample_grid(model, path, num_classes, per_class=4, num_steps=50):
    """A grid of samples: a row per class (an unconditional stage: rows of
    `per_class` samples, as many rows as `num_classes` asks)."""
    from keras_cdm.utils.images import save_class_grid

    labels = np.repeat(np.arange(num_classes), per_class)
    given = None if model.unconditional else labels
    count = {"num_images": len(labels)} if model.unconditional else {}
    if isinstance(model, keras_cdm.SuperResDiffusionModel):
        lo = grid_low_res(labels, num_classes, model.low_res_size)
        out = model.sample(lo, given, aug_level=0, num_steps=num_steps, seed=0)
        return save_class_grid(path, out, labels, extra_stages=[lo], class_names=model.class_names)
    out = model.sample(given, num_steps=num_steps, seed=0, **count)
    return save_class_grid(path, out, labels, class_names=model.class_names)


def set_steps_per_execution(model, n):
    """Runs `n` training steps per call of the compiled step from the next `fit` on."""
    if model.steps_per_execution != n:
        model.steps_per_execution = n
        model.train_function = None


def train(stage, options=None, **fields):
    """Trains `stage` (`"base16"`, `"sr16to32"`, ...) and returns the final
    `.keras` path: the recipe's run from Python, with its flags as typed
    keyword arguments (`train("base16", preset="small", network={...},
    resume=True)`) or as `TrainingOptions` (`fields` replace some of its
    fields), checked as on the command line (`FlagError`).

    SIGINT (Ctrl-C) or SIGTERM stops the run at the end of the step that is
    running: the checkpoint of that step is written, the command that resumes
    it is printed, and the process exits with 128 + the signal number (130,
    143; `SystemExit` when called from Python). A second signal exits at once
    and leaves the last checkpoint as it was.
    """
    if options is None:
        options = TrainingOptions(**fields)
    elif fields:
        options = dataclasses.replace(options, **fields)
    return _run(stage, options, options.to_argv())


def main(stage, argv=None):
    """The command line of every `train_*.py` recipe: its flags parsed into
    `TrainingOptions`, then `train`. A refusal (`RecipeError`) is printed as
    one line (exit 2) from the command line; raised when `argv` is given."""
    if argv is not None:
        return _run(stage, parse_args(stage, list(argv)), list(argv))
    return cli(lambda: _run(stage, parse_args(stage, sys.argv[1:]), sys.argv[1:]))


def recipe_signal_stop():
    """The recipes' SIGINT/SIGTERM handler: the first signal stops the run
    after the step that is running (checkpoint, resume command); a second
    exits at once, leaving the last checkpoint as it is."""
    return SignalStop(
        (signal.SIGINT, signal.SIGTERM),
        second="exit",
        message="[keras_cdm] {name}: stopping after this step and writing its checkpoint "
        "(send it again to exit at once, leaving the last checkpoint as it is)",
    )


def _run(stage, args, argv):
    """`train`'s run, with `argv` the flags its resume command prints."""
    args = dataclasses.replace(args)  # the run edits its copy (an unlabelled set's network)
    with recipe_signal_stop() as stop:
        return _train(stage, args, argv, stop)


def _train(stage, args, argv, stop):
    keras.utils.set_random_seed(args.seed)
    preset, batch, steps, every = stage_settings(stage, args)
    spe = args.steps_per_execution
    if every % spe or steps % spe:
        raise FlagError(
            f"--steps_per_execution {spe} must divide the checkpoint interval ({every} steps) "
            f"and --train_steps ({steps})."
        )
    output_dir = args.output_dir or os.path.join("runs", f"{stage}_{args.preset}")
    os.makedirs(output_dir, exist_ok=True)
    try:
        setup = configure_data_parallel()
    except NotImplementedError as e:
        raise Unsupported(str(e)) from None
    print(
        f"[keras_cdm] {stage}: preset={preset} batch={batch} steps={steps} "
        f"backend={keras_cdm.backend.name()} ({setup.description}) -> {output_dir}"
    )
    source = open_source(stage, preset, args)
    rank, world = setup.rank, setup.world
    with setup.scope:
        # The checkpoint holds raw and EMA weights, optimizer state, the step
        # counter (optimizer.iterations) and the model's RNG state.
        model, start = load_or_build(
            stage, preset, batch, args, output_dir, setup.jit_compile, rank == 0, source.class_names
        )
    if start >= steps:
        raise ResumeRefused(
            f"--resume: the checkpoint in {output_dir!r} is at step {start}, not below "
            f"--train_steps {steps}; pass a larger --train_steps to train further."
        )
    if start:
        print(f"[keras_cdm] resumed at step {start} (from the checkpoint's optimizer)")
    note = paper_preset_note(preset, model.network.count_params(), has_accelerator())
    if note and rank == 0:
        print(note, flush=True)
    shard = None
    if world > 1:
        if batch % world:
            raise FlagError(f"--batch_size {batch} must be divisible by the {world} processes.")
        # PyTorch: the same start on every rank, gradients averaged.
        keras_cdm.backend.share_across_processes(model)
        # Each process reads only its share of every global batch (JAX's
        # DataParallel assembles the global batch from the processes' shares).
        batch, shard = batch // world, (world, rank)
    dataset = build_dataset(model, args, batch, shard, source)
    num_classes = min(model.num_classes, 10) or 4  # unconditional: 4 rows of samples
    # Under DDP every rank holds the same weights; rank 0 alone writes.
    checkpoint = Checkpoint(output_dir, args.sample_every, num_classes, write=rank == 0)
    # With several processes every one stops after the same step (one
    # collective of a flag per step).
    agree = any_process if world > 1 else None
    callbacks = [StopOnSignal(stop, "stop", agree), checkpoint]
    if rank == 0:
        log = os.path.join(output_dir, "train.log")
        callbacks.append(
            TrainingProgress(steps, batch * world, args.log_every, first_step=start, log_path=log)
        )
    if args.tensorboard and rank == 0:
        callbacks.append(
            keras.callbacks.TensorBoard(os.path.join(output_dir, "tb"), update_freq="epoch")
        )
    done = fit_to_step(
        model, dataset, start, steps, every, callbacks, stop, spe, f"--dataset {args.dataset!r}"
    )
    final = os.path.join(output_dir, f"{stage}.keras")
    if stop.received is not None and done < steps:
        if checkpoint.saved_step != done:
            checkpoint.on_epoch_end(0, {})  # the signal came between two fits
        if rank == 0:
            print(
                f"[keras_cdm] stopped by {stop.name} at step {done} of {steps}; checkpoint: "
                f"{checkpoint.path}\n[keras_cdm] resume with: {resume_command(stage, argv, world)}",
                flush=True,
            )
        sys.exit(stop.exit_code)
    if rank > 0:
        save_collectively(model, None)
        return final
    save_collectively(model, final + ".tmp.keras")
    os.replace(final + ".tmp.keras", final)
    if keras_cdm.backend.sampling_needs_every_process(world):
        print(f"[keras_cdm] wrote {final} (no sample grid with several JAX processes)")
        return final
    if stop.received is not None:
        print(f"[keras_cdm] {stop.name} after the last step: wrote {final}, no sample grid")
        sys.exit(stop.exit_code)
    grid = write_sample_grid(
        model,
        os.path.join(output_dir, "samples_final.png"),
        2 if args.smoke else num_classes,
        per_class=1 if args.smoke else 4,
        num_steps=2 if args.smoke else 50,
    )
    print(f"[keras_cdm] wrote {final} and {grid}")
    return final
