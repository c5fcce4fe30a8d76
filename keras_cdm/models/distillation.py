"""Progressive distillation of a stage: one round halves its sampling steps."""

import keras
import numpy as np
from keras import ops

from keras_cdm.backend import call_network
from keras_cdm.backend import no_gradient
from keras_cdm.backend import random_normal
from keras_cdm.diffusion.distillation import truncated_snr_weight
from keras_cdm.diffusion.distillation import two_step_target
from keras_cdm.diffusion.respacing import trailing_timesteps
from keras_cdm.models import training_guard
from keras_cdm.models.diffusion_model import DiffusionModel
from keras_cdm.models.reverse_process import SamplerSettings
from keras_cdm.models.reverse_process import guided_output
from keras_cdm.utils.validation import check_positive_int

MEAN_TYPES = ("v", "x0", "epsilon")


def distilled_steps(settings):
    """The step count a distilled stage records (its `sampler_settings`, or
    their config dict, on the trailing grid), or None for any other stage:
    such a stage is only right on that grid, so it teaches only a student
    of half as many steps."""
    if settings is None:
        return None
    if not isinstance(settings, dict):
        settings = settings.get_config()
    if settings.get("spacing") != "trailing":
        return None
    return settings.get("num_steps")


def student_settings(num_steps):
    """How a distilled student of `num_steps` steps samples: deterministic
    DDIM on the trailing grid it was trained on."""
    return SamplerSettings(num_steps=num_steps, sampler="ddim", spacing="trailing")


def student_of(teacher, num_steps, guidance_scale=1.0, mean_type="v"):
    """A new stage like `teacher` (class, network, schedule, conditioning
    augmentation, class names), its raw and EMA weights the teacher's EMA
    weights, that predicts `mean_type` and samples in `num_steps` DDIM
    steps (`sampler_settings`). With guidance distilled
    (`guidance_scale != 1`) the student has no null label to guide with
    (`label_dropout=0`)."""
    config = teacher.get_config()
    config["network"] = type(teacher.network).from_config(teacher.network.get_config())
    config["diffusion"] = dict(config["diffusion"], mean_type=mean_type)
    config["sampler_settings"] = student_settings(num_steps).get_config()
    if guidance_scale != 1.0:
        config["label_dropout"] = 0.0
    config["name"] = f"{teacher.name}_student{num_steps}"
    student = type(teacher)(**config)
    weights = teacher.ema_network.get_weights()
    student.network.set_weights(weights)
    student.ema_network.set_weights(weights)
    return student


@keras.saving.register_keras_serializable(package="keras_cdm")
class ProgressiveDistillation(training_guard.GuardedFit, keras.Model):
    """One round of progressive distillation (Salimans & Ho 2022, Algorithm
    2), trained with `fit` on the teacher's training data.

    Holds a frozen `teacher` stage and a `student` (by default a copy of
    the teacher, `student_of`) that learns to take in one DDIM step the two
    deterministic DDIM steps the teacher takes on the grid of
    `2 * student_steps` trailing steps (`keras_cdm.diffusion.distillation`):
    each training step draws a student step `i`, noise and `z_t` from a
    batch, runs the teacher twice (with classifier-free guidance of weight
    `guidance_scale` if it is not 1: two calls each) and regresses the
    student's x-prediction onto the target with the truncated-SNR weight.
    An SR stage's conditioning (its low-resolution input, augmentation
    level `s` and augmentation noise) is drawn once and shown to both.

    The student is a stage like any other: its EMA, the input checks and
    the training guard work as in `DiffusionModel.fit` (batches are the
    stage's), and its `sampler_settings` record its step count and solver,
    so `student.sample(...)`, `CascadeSampler` and `sample_cascade.py` use
    them without being told. Guidance is distilled at one fixed weight,
    the teacher's, as Salimans & Ho's rounds and the first stage of Meng et
    al. (arXiv:2210.03142) do for one `w`: a `w` input would change the
    network, and the released stages are sampled at one `w` anyway; a
    student of a guided teacher has no null label (`label_dropout=0`).

    Args:
        teacher: `keras_cdm.DiffusionModel` (or SR). Sampled with its EMA
            weights; a distilled teacher with its own `clip_denoised`.
        student_steps: int. The student's steps (the teacher takes twice
            as many, on the trailing grid).
        guidance_scale: float. The teacher's guidance weight (`1`: none).
        mean_type: str. What a new student predicts: `"v"` (the paper's
            choice; an epsilon-prediction student fails at few steps, its
            x-prediction at high noise divides by a tiny `sqrt(abar)`),
            `"x0"` or `"epsilon"`.
        student: the student stage (a saved round's, when loading);
            `None` makes it with `student_of`.

    Example:

    >>> teacher = keras_cdm.DiffusionModel.from_preset("base16_tiny")
    >>> round_ = keras_cdm.models.ProgressiveDistillation(teacher, 4)
    >>> round_.compile(optimizer=keras.optimizers.Adam(1e-4))
    >>> images = np.random.uniform(-1, 1, (8, 16, 16, 3)).astype("float32")
    >>> round_.fit(images, np.arange(8) % 10, batch_size=4, epochs=1, verbose=0)
    <keras.src.callbacks.history.History object at ...>
    >>> round_.student.sample([0, 1], seed=0).shape  # 4 DDIM steps
    (2, 16, 16, 3)

    References:
        - Salimans & Ho, Progressive Distillation for Fast Sampling of
          Diffusion Models, arXiv:2202.00512.
        - Meng et al., On Distillation of Guided Diffusion Models,
          arXiv:2210.03142.
    """

    def __init__(
        self,
        teacher,
        student_steps,
        guidance_scale=1.0,
        mean_type="v",
        student=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(teacher, DiffusionModel):
            raise ValueError(
                f"The teacher must be a keras_cdm stage. Received: {type(teacher).__name__}"
            )
        check_positive_int("student_steps", student_steps)
        T = teacher.diffusion.num_timesteps
        if 2 * student_steps > T:
            raise ValueError(
                f"A student of {student_steps} steps needs a teacher of {2 * student_steps}, "
                f"more than its diffusion's {T} steps. Received: student_steps={student_steps}"
            )
        if mean_type not in MEAN_TYPES:
            raise ValueError(f"`mean_type` must be one of {MEAN_TYPES}. Received: {mean_type!r}")
        if not (np.isfinite(guidance_scale) and guidance_scale >= 0):
            raise ValueError(
                f"`guidance_scale` must be a finite number >= 0 (1: none). "
                f"Received: guidance_scale={guidance_scale!r}"
            )
        if guidance_scale != 1.0 and teacher.label_dropout == 0.0:
            raise ValueError(
                f"guidance_scale={guidance_scale} needs a teacher trained with label dropout "
                "(label_dropout > 0); this one has no unconditional model to guide with."
            )
        if student is None:
            student = student_of(teacher, student_steps, guidance_scale, mean_type)
        elif type(student) is not type(teacher) or [
            tuple(w.shape) for w in student.network.weights
        ] != [tuple(w.shape) for w in teacher.network.weights]:
            raise ValueError(
                "The student must be a stage of the teacher's class with the teacher's "
                f"network. Received: a {type(student).__name__} for a {type(teacher).__name__}"
            )
        teacher.trainable = False
        self.teacher = teacher
        self.student = student
        self.student_steps = int(student_steps)
        self.guidance_scale = float(guidance_scale)
        self.mean_type = mean_type
        settings = teacher.sampler_settings
        recorded = distilled_steps(settings)
        if recorded is not None and recorded != 2 * self.student_steps:
            # A distilled teacher is only right on the grid it was trained on.
            raise ValueError(
                f"The teacher records {recorded} trailing steps (a distilled "
                f"stage is only right on its own grid), so its student has "
                f"{recorded // 2} steps. Received: student_steps={student_steps}"
            )
        self.teacher_clip = True if settings is None else settings.clip_denoised
        grid = trailing_timesteps(T, 2 * self.student_steps)
        self._teacher_diffusion = teacher.diffusion.respace(timesteps=grid)
        self._student_diffusion = student.diffusion.respace(timesteps=grid[1::2])
        self.built = True

    # Only the student's network trains. Said explicitly: a loaded teacher's
    # network may build its variables after `trainable = False` was set
    # (they would then count as trainable).
    @property
    def trainable_weights(self):
        return list(self.student.network.trainable_weights) if self.trainable else []

    @property
    def trainable_variables(self):
        return self.trainable_weights

    @property
    def non_trainable_weights(self):
        trained = {id(v) for v in self.trainable_weights}
        return [v for v in self.weights if id(v) not in trained]

    @property
    def non_trainable_variables(self):
        trained = {id(v) for v in self.trainable_weights}
        return [v for v in self.variables if id(v) not in trained]

    # The student's RNG, guard and EMA are the round's.
    @property
    def seed_generator(self):
        return self.student.seed_generator

    @property
    def metrics(self):
        metrics = list(super().metrics)
        for m in (self.student.mse_tracker, self.student.input_guard):
            if m not in metrics:
                metrics.append(m)
        return metrics

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "student": keras.saving.serialize_keras_object(self.student),
            "student_steps": self.student_steps,
            "guidance_scale": self.guidance_scale,
            "mean_type": self.mean_type,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("teacher", "student"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    def build(self, input_shape=None):
        self.built = True

    def call(self, inputs, training=False):
        return inputs  # fit does its work in compute_loss

    def _check_inputs(self, x, y):
        self.student._check_inputs(x, y)

    def _teacher_step(self, inputs, z, j):
        """One DDIM step (eta = 0) of the teacher from `z` at its step `j`."""
        d = self._teacher_diffusion
        inputs = dict(inputs, x_t=z, t=d.original_timesteps(j))
        out = guided_output(self.teacher.ema_network, inputs, self.guidance_scale)
        z_prev, _ = d.ddim_step(out, z, j, ops.zeros_like(z), 0.0, self.teacher_clip)
        return z_prev

    def targets(self, inputs, z, i):
        """`x~` for student steps `i` at `z` (`inputs`: the other network
        inputs): where the teacher's two steps land, as the student's
        x-prediction (`keras_cdm.diffusion.distillation.two_step_target`)."""
        with no_gradient():
            j = 2 * i + 1
            z_next = self._teacher_step(inputs, self._teacher_step(inputs, z, j), j - 1)
            s = self._student_diffusion
            abar = s._extract(s.alphas_cumprod, i, z)[:, 0, 0, 0]
            abar_next = s._extract(s.alphas_cumprod_prev, i, z)[:, 0, 0, 0]
            target = two_step_target(z, z_next, abar, abar_next)
        return ops.stop_gradient(target)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        s = self.student
        images, labels, extra = s._unpack_batch(x, y)
        flags, images, labels, extra = s._guard_inputs(images, labels, extra)
        batch = ops.shape(images)[0]
        i = s._draw(
            keras.random.randint, (batch,), minval=0, maxval=self.student_steps, dtype="int32"
        )
        t = self._student_diffusion.original_timesteps(i)
        noise = s._draw(random_normal, tuple(ops.shape(images)))
        z = s.diffusion.q_sample(images, t, noise)
        labels = s._drop_labels(labels, training)
        inputs = s._network_inputs(z, t, labels, extra, training)
        target = self.targets(inputs, z, i)
        output = call_network(s.network, inputs, training=training)
        d = self._student_diffusion
        pred = d.p_mean_variance(output, z, i, clip_denoised=False)["pred_x0"]
        abar = d._extract(d.alphas_cumprod, i, z)[:, 0, 0, 0]
        mse = ops.mean(ops.square(pred - target), axis=(1, 2, 3))
        per_example = truncated_snr_weight(abar) * mse
        if training:
            s._update_ema()
        finite = ops.all(ops.isfinite(per_example))
        flags = flags + training_guard.NONFINITE_LOSS * (1.0 - ops.cast(finite, "float32"))
        s.input_guard.update_state(flags)
        s.mse_tracker.update_state(mse)
        return s._per_example_loss(ops.zeros_like(per_example), per_example, sample_weight)
