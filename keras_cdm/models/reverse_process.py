"""One stage's reverse process: its settings, a step compiled once per
shape and looped in Python, and the variational bound in bits/dim."""

import dataclasses
import numbers

import keras
import numpy as np
from keras import ops

from keras_cdm.backend import call_network
from keras_cdm.backend import compile_stateful
from keras_cdm.backend import local_devices
from keras_cdm.backend import random_normal
from keras_cdm.backend import spread_over_devices
from keras_cdm.diffusion.solvers import get_solver
from keras_cdm.utils.seeds import ImageNoise
from keras_cdm.utils.seeds import device_normal
from keras_cdm.utils.seeds import image_keys
from keras_cdm.utils.validation import check_positive_int
from keras_cdm.utils.validation import per_stage

SPACINGS = ("uniform", "quadratic", "trailing")


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """How one stage samples: the one settings object of `sample`, the stage
    sampler and the cascade (one per stage there).

    Args:
        num_steps: int or None. Respaced steps (`None`: all `T`).
        sampler: str. A registered solver (`keras_cdm.diffusion.solver_names()`,
            each described in `keras_cdm.diffusion.solvers`). Defaults to
            ancestral `"ddpm"`.
        eta: float. DDIM stochasticity (>= 0; only for solvers that take it,
            `"ddim"`). Defaults to `0.0`.
        clip_denoised: bool. Clip the predicted x0 to [-1, 1].
        guidance_scale: float. Classifier-free guidance weight (>= 0); `1`
            disables it. Needs a stage trained with `label_dropout > 0`.
        use_ema: bool. Sample with the EMA weights. Defaults to `True`.
        spacing: str. Which `num_steps` of the `T` steps are visited:
            `"uniform"` (evenly spaced, the default), `"quadratic"` (dense
            at low noise, sparse at high noise; DDIM's "quad") or
            `"trailing"` (evenly spaced and ending at `T - 1`, the grid of
            distilled students; `keras_cdm.diffusion.respacing.
            trailing_timesteps`). With few steps, quadratic spacing gave the
            released CIFAR-10 base a much lower FID (docs/RESULTS.md).

    Example:

    >>> s = keras_cdm.models.SamplerSettings(num_steps=50, sampler="ddim")
    >>> keras_cdm.models.SamplerSettings.from_config(s.get_config()) == s
    True
    """

    num_steps: object = None
    sampler: str = "ddpm"
    eta: float = 0.0
    clip_denoised: bool = True
    guidance_scale: float = 1.0
    use_ema: bool = True
    spacing: str = "uniform"

    def __post_init__(self):
        solver = get_solver(self.sampler)  # an error naming the registered ones
        if self.spacing not in SPACINGS:
            raise ValueError(
                f"`spacing` must be one of {SPACINGS}. Received: spacing={self.spacing!r}"
            )
        check_positive_int("num_steps", self.num_steps, allow_none=True)
        if not solver.takes_eta and isinstance(self.eta, numbers.Real) and self.eta != 0:
            raise ValueError(
                f"`eta` is DDIM's stochasticity; sampler={self.sampler!r} takes none. "
                f"Received: eta={self.eta!r}"
            )
        for name in ("guidance_scale", "eta"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not np.isfinite(value)
                or value < 0
            ):
                hint = " (1 disables guidance)" if name == "guidance_scale" else ""
                raise ValueError(
                    f"`{name}` must be a finite number >= 0{hint}. Received: {name}={value!r}"
                )

    def get_config(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def resolve(cls, settings=None, **kwargs):
        """`settings` (a `SamplerSettings`, a config dict or None) with
        `kwargs` replacing fields."""
        if settings is None:
            return cls(**kwargs)
        if isinstance(settings, dict):
            settings = cls(**settings)
        if not isinstance(settings, cls):
            raise ValueError(
                f"`settings` must be a SamplerSettings or a dict. Received: {settings!r}"
            )
        return dataclasses.replace(settings, **kwargs) if kwargs else settings

    @classmethod
    def per_stage(cls, num_stages, **kwargs):
        """One `SamplerSettings` per stage from fields that are each one value
        or a list of one value per stage."""
        columns = {name: per_stage(name, value, num_stages) for name, value in kwargs.items()}
        return [cls(**{k: v[i] for k, v in columns.items()}) for i in range(num_stages)]


def truncated_timesteps(num_timesteps, num_steps, stop_at, spacing="uniform"):
    """Original timesteps a (respaced) reverse process visits.

    With `stop_at = s > 0` (paper's 1-indexed level) the kept steps run from
    `T - 1` down to `s - 1`, the 0-indexed step whose sample is z_s, and the
    process stops there; with `s = 0` they include step 0 and the process runs
    to z_0. `spacing`: `"uniform"` (evenly spaced, Improved DDPM's
    respacing), `"quadratic"` (dense at low noise,
    `keras_cdm.diffusion.respacing.quadratic_timesteps`) or `"trailing"`
    (`keras_cdm.diffusion.respacing.trailing_timesteps`; `stop_at = 0` only).
    """
    from keras_cdm.diffusion.respacing import quadratic_timesteps
    from keras_cdm.diffusion.respacing import space_timesteps
    from keras_cdm.diffusion.respacing import trailing_timesteps

    if spacing not in SPACINGS:
        raise ValueError(f"`spacing` must be one of {SPACINGS}. Received: spacing={spacing!r}")
    if spacing == "trailing":
        if stop_at:
            raise ValueError(
                "The trailing spacing is a distilled student's grid, which runs to the clean "
                "image; a truncated reverse process (stop_at > 0) takes 'uniform' or "
                f"'quadratic' spacing. Received: stop_at={stop_at}"
            )
        return trailing_timesteps(num_timesteps, num_steps or num_timesteps)
    if stop_at == 0:
        if spacing == "quadratic":
            return quadratic_timesteps(0, num_timesteps - 1, num_steps or num_timesteps)
        return space_timesteps(num_timesteps, num_steps or num_timesteps)
    start = stop_at - 1
    available = num_timesteps - start
    count = min(num_steps + 1, available) if num_steps else available
    if spacing == "quadratic":
        return quadratic_timesteps(start, num_timesteps - 1, count)
    return np.unique(np.round(np.linspace(start, num_timesteps - 1, count)).astype(np.int64))


def guided_output(network, inputs, guidance_scale):
    """The network's output for `inputs` (a dict of network inputs), with
    classifier-free guidance of weight `guidance_scale` on the mean channels
    (`1`: one plain call): `uncond + w (cond - uncond)`, the unconditional
    output from the null label (`network.num_classes`), in one doubled batch.
    The variance channels, if any, are the conditional call's."""
    if guidance_scale == 1.0:
        return call_network(network, inputs, training=False)
    doubled = {k: ops.concatenate([v, v], axis=0) for k, v in inputs.items()}
    null = ops.full(ops.shape(inputs["labels"]), network.num_classes, dtype="int32")
    doubled["labels"] = ops.concatenate([inputs["labels"], null], axis=0)
    out = ops.cast(call_network(network, doubled, training=False), "float32")
    cond, uncond = ops.split(out, 2, axis=0)
    c = network.channels
    guided = uncond[..., :c] + guidance_scale * (cond[..., :c] - uncond[..., :c])
    return ops.concatenate([guided, cond[..., c:]], axis=-1)


class StageSampler:
    """Compiled sampling loop of one stage for fixed sampler settings.

    Built by `DiffusionModel.stage_sampler(settings, stop_at)` and cached there, so that
    repeated `sample` calls of the same batch size reuse the compiled step.
    `trace_count` counts how often the step was traced (JAX, TensorFlow).

    The noise of image `i` comes from its own streams, so an image depends
    on the seed and its index only, not on the batch it is sampled in nor on
    the device count: its `x_T` from `keras_cdm.utils.seeds.ImageNoise`
    (once per request, on the host), and every step's fresh noise from
    `keras_cdm.utils.seeds.device_normal`, keyed by (seed, image index,
    step) and drawn inside the compiled step: no noise crosses from the host
    to the device inside the loop.
    """

    # `ImageNoise` / `image_keys` streams: 0 is x_T, 1 an SR stage's
    # conditioning augmentation, 2 the reverse process's step noise.
    STEP_NOISE_STREAM = 2

    def __init__(self, model, settings=None, stop_at=0):
        settings = SamplerSettings.resolve(settings)
        T = model.diffusion.num_timesteps
        num_steps = settings.num_steps
        if num_steps is not None and num_steps > T:
            raise ValueError(
                f"Cannot sample with {num_steps} steps from a {T}-step diffusion. "
                f"Received: num_steps={num_steps}"
            )
        if isinstance(stop_at, bool) or not isinstance(stop_at, numbers.Integral):
            raise ValueError(f"`stop_at` must be an int level. Received: stop_at={stop_at!r}")
        if not 0 <= stop_at <= T:
            raise ValueError(f"`stop_at` must lie in [0, {T}]. Received: stop_at={stop_at}")
        if settings.guidance_scale != 1.0 and model.label_dropout == 0.0:
            raise ValueError(
                "Classifier-free guidance needs a stage trained with label_dropout > 0 "
                "(its null label is untrained otherwise). "
                f"Received: guidance_scale={settings.guidance_scale}"
            )
        self.settings = settings
        self.model = model
        self.diffusion = model.diffusion.respace(
            timesteps=truncated_timesteps(T, num_steps, stop_at, settings.spacing)
        )
        self.sampler = settings.sampler
        self.solver = get_solver(settings.sampler)(
            self.diffusion, eta=settings.eta, clip_denoised=settings.clip_denoised
        )
        self.guidance_scale = float(settings.guidance_scale)
        self.stop_at = stop_at
        self.last_index = 1 if stop_at > 0 else 0
        self.network = model.ema_network if settings.use_ema else model.network
        self.trace_count = 0
        self._step = compile_stateful(self._step_fn, self.network.variables, [])

    @property
    def num_steps(self):
        return self.diffusion.num_timesteps - self.last_index

    def _model_output(self, inputs):
        return guided_output(self.network, inputs, self.guidance_scale)

    @property
    def draws_noise(self):
        """Whether a step uses fresh noise (the solver's say)."""
        return self.solver.draws_noise

    def _step_fn(self, x, i, first, labels, conditioning, state, keys):
        self.trace_count += 1
        noise = None
        if self.solver.draws_noise:
            shape = (self.model.image_size, self.model.image_size, self.model.channels)
            noise = ops.cast(device_normal(keys, i, shape), x.dtype)
        t = ops.full(ops.shape(labels), i, dtype="int32")
        inputs = {"x_t": x, "t": self.diffusion.original_timesteps(t), "labels": labels}
        inputs.update(conditioning)
        return self.solver.step(self._model_output(inputs), x, t, first, state, noise)

    def run(self, labels, conditioning, seed, image_indices=None, noise=None, verbose=False):
        """Runs the reverse process and returns a float32 NumPy array.

        Args:
            labels: int32 array `(batch,)`.
            conditioning: dict of extra network inputs (SR stages).
            seed: int. Seed of every image's noise stream.
            image_indices: ints. The images' indices in the whole request
                (`None`: `0 .. batch-1`).
            noise: optional initial `x_T`.
            verbose: bool. Show a progress bar.
        """
        batch = len(labels)
        if image_indices is None:
            image_indices = range(batch)
        if len(image_indices) != batch:
            raise ValueError(
                f"Expected one image index per label ({batch}). "
                f"Received: {len(image_indices)} image_indices"
            )
        image_shape = (self.model.image_size, self.model.image_size, self.model.channels)
        streams = ImageNoise(seed, image_indices, stream=0)
        if noise is None:
            x = streams.normal(image_shape)
        else:
            x = np.asarray(noise, "float32")
            if x.shape != (batch,) + image_shape:
                raise ValueError(
                    f"Expected noise of shape {(batch,) + image_shape}. Received: {x.shape}"
                )
        # Each image's key for its step noise: copied once, drawn on the device.
        keys = image_keys(seed, image_indices, self.STEP_NOISE_STREAM).astype("int32")
        names = sorted(conditioning)
        arrays = [x, np.asarray(labels, "int32"), keys] + [conditioning[k] for k in names]
        # The batch split over this process's devices (JAX): padded to a
        # multiple of their count with copies of the last image, dropped at
        # the end (each image's noise is its own, so the others are unchanged).
        pad = -batch % local_devices()
        if pad:
            arrays = [ops.concatenate([a, ops.repeat(a[-1:], pad, axis=0)]) for a in arrays]
        x, labels, keys, *values = spread_over_devices(arrays)
        conditioning = dict(zip(names, values))
        steps = list(range(self.diffusion.num_timesteps - 1, self.last_index - 1, -1))
        progbar = None
        if verbose:
            size = self.model.image_size
            kind = "SR" if getattr(self.model, "low_res_size", None) else "base"
            print(
                f"[keras_cdm] {kind} stage {size}x{size}: {len(steps)} {self.sampler} steps "
                f"for {batch} images",
                flush=True,
            )
            progbar = keras.utils.Progbar(len(steps), unit_name="step")
        state = self.solver.initial_state(x)  # e.g. a multistep solver's history
        first, after = (ops.convert_to_tensor(v, "float32") for v in (1.0, 0.0))
        for n, i in enumerate(steps):
            step = ops.convert_to_tensor(i, "int32")
            x, state = self._step(
                x, step, first if n == 0 else after, labels, conditioning, state, keys
            )
            if progbar is not None:
                progbar.update(n + 1)
        return np.asarray(ops.convert_to_numpy(x), dtype="float32")[:batch]


def variational_bound_bpd(model, images, labels, conditioning, use_ema=True, seed=0, verbose=False):
    """Full variational bound (sum of L_t over all t plus the prior), bits/dim.

    Uses the true posterior sample x_t ~ q(x_t | x_0) at every t, as DDPM's
    and Improved DDPM's `calc_bpd_loop`: `T` network calls, shown by a
    progress bar when `verbose`. The same `seed` gives the same figures.
    """
    network = model.ema_network if use_ema else model.network
    diffusion = model.diffusion
    seed = keras.random.SeedGenerator(seed)
    x0 = ops.convert_to_tensor(images)
    labels = ops.convert_to_tensor(labels, "int32")
    cond = {k: ops.convert_to_tensor(v) for k, v in conditioning.items()}

    def term(x0, t):
        noise = random_normal(ops.shape(x0), seed=seed)
        x_t = diffusion.q_sample(x0, t, noise)
        out = call_network(network, {"x_t": x_t, "t": t, "labels": labels, **cond}, training=False)
        return diffusion.vb_terms_bpd(out, x0, x_t, t, clip_denoised=False)

    step = compile_stateful(term, network.variables, [seed.state])
    total = diffusion.prior_bpd(x0)
    progbar = keras.utils.Progbar(diffusion.num_timesteps, unit_name="t") if verbose else None
    for i in range(diffusion.num_timesteps):
        t = ops.full((len(images),), i, dtype="int32")
        total = total + step(x0, t)
        if progbar is not None:
            progbar.update(i + 1)
    return np.asarray(ops.convert_to_numpy(total))
