"""What the training guard costs: training steps with and without it,
interleaved in one process so that machine drift cannot favour either side.

    KERAS_BACKEND=jax python tools/guard_cost.py --preset base16_tiny --batch 16 --steps 20

"With" is `DiffusionModel.fit` as shipped: the in-step label/pixel/loss
flags and the `TrainingGuard` callback reading them after every batch.
"Without" replaces both by no-ops on a second, identical model.
"""

import argparse
import json
import time

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_cdm  # noqa: E402
from keras_cdm.models.training_guard import TrainingGuard  # noqa: E402


class _NoGuard(TrainingGuard):
    def on_train_begin(self, logs=None):
        pass

    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end


def build(preset, guarded):
    model = keras_cdm.DiffusionModel.from_preset(preset, seed=0)
    if not guarded:
        model._guard_inputs = lambda images, labels, extra: (0.0, images, labels, extra)
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    return model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="base16_tiny")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    models = {"with guard": build(args.preset, True), "without": build(args.preset, False)}
    size = models["with guard"].image_size
    rng = np.random.default_rng(0)
    n = args.batch * args.steps
    x = np.tanh(rng.normal(size=(n, size, size, 3))).astype("float32")
    y = rng.integers(0, models["with guard"].num_classes, n)
    times = {k: [] for k in models}
    for r in range(args.rounds + 1):  # round 0 compiles
        for name, model in models.items():
            callbacks = [] if name == "with guard" else [_NoGuard()]
            start = time.perf_counter()
            model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0, callbacks=callbacks)
            if r:
                times[name].append((time.perf_counter() - start) / args.steps * 1e3)
    result = {k: float(np.median(v)) for k, v in times.items()}
    result["ratio"] = result["with guard"] / result["without"]
    result.update(backend=keras.backend.backend(), preset=args.preset, batch=args.batch)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
