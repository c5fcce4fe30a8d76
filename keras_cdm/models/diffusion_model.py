import keras
import numpy as np
from keras import ops

from keras_cdm.backend import call_network
from keras_cdm.backend import model_losses
from keras_cdm.backend import random_normal
from keras_cdm.backend import random_uniform
from keras_cdm.backend import replica_context
from keras_cdm.diffusion.gaussian_diffusion import GaussianDiffusion
from keras_cdm.models import batches
from keras_cdm.models import ema
from keras_cdm.models import labels as class_labels
from keras_cdm.models import training_guard
from keras_cdm.models.presets import get_preset
from keras_cdm.models.presets import list_presets
from keras_cdm.models.reverse_process import SamplerSettings
from keras_cdm.models.stage_sampling import StageSampling
from keras_cdm.networks.unet import UNet


class _PerExampleLoss(keras.losses.Loss):
    """Averages a per-example loss passed as `y_pred`.

    Going through a `Loss` object lets each backend's trainer scale the loss
    correctly under data parallelism.
    """

    def call(self, y_true, y_pred):
        return y_pred


@keras.saving.register_keras_serializable(package="keras_cdm")
class DiffusionModel(StageSampling, training_guard.GuardedFit, keras.Model):
    """A class-conditional diffusion stage trained with `fit` (CDM's base model).

    Owns a `keras_cdm.UNet`, a `keras_cdm.GaussianDiffusion`, a non-trainable
    EMA copy of the network and a `SeedGenerator`. Each training step draws
    `t` uniformly, Gaussian noise and (optionally) drops labels to the null
    label, forms `x_t = q_sample(x0, t, noise)` and minimises the simple or
    hybrid loss. All of it happens in `compute_loss`, so the same code trains
    on JAX, TensorFlow and PyTorch.

    Batches are `(images, labels)` or a dict with `"images"` and `"labels"`;
    images are float32 NHWC in [-1, 1], labels ints in `[0, num_classes)`.

    Args:
        network: `keras_cdm.UNet`. The denoising network.
        diffusion: `keras_cdm.GaussianDiffusion` or its config dict.
        ema_decay: float. Decay of the exponential moving average of the
            weights. Defaults to `0.9999`.
        ema_warmup: bool. Use decay `min(ema_decay, (1 + n) / (10 + n))` at
            update `n`. Defaults to `True`.
        label_dropout: float. Probability of replacing a label by the null
            label in training (classifier-free guidance). Defaults to `0.0`.
        vb_weight: float. λ of the hybrid loss. Defaults to `0.001`.
        seed: int or None. Seed of the model's random draws.
        class_names: list of str or None. A name per class, saved with the
            stage; `sample` and the recipes then take names as labels and
            show them in grids and errors. The recipes set them from the
            data set's.
        sampler_settings: `keras_cdm.models.SamplerSettings`, its config
            dict, or None. How this stage samples when the caller does not
            say (`sample`, `CascadeSampler`, `sample_cascade.py`); set on a
            distilled student, which only samples well on the grid it was
            trained for (`keras_cdm.models.ProgressiveDistillation`). `None`:
            `SamplerSettings()`'s defaults.

    The EMA is updated at the start of each training step from the weights
    that step sees, so it trails the raw weights by one optimizer update;
    with `gradient_accumulation_steps=k` it moves once per optimizer update
    (every `k` batches).

    Bad inputs never train silently: `fit` checks array inputs (shapes,
    dtypes, label range, finite pixels in [-1, 1]) and a dataset's element
    spec before the compiled step, and each step flags labels outside
    `[0, num_classes)`, non-finite or out-of-range pixels and a non-finite
    loss: training then stops with an error that names the step, also with
    `compile(steps_per_execution=N)`, which `fit` supports on every backend
    (`keras_cdm.models.training_guard`).

    `evaluate` reports the training objective on held-out data (`loss`, its
    `mse` and `vb` terms, one random `t` and noise per example) with noise
    drawn from `evaluate(..., seed=0)`, so the same data and seed give the
    same figures; `compute_bpd` gives the full bound in bits/dim.

    Example:

    >>> model = keras_cdm.DiffusionModel.from_preset("base32_tiny")
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-4))
    >>> images = np.random.uniform(-1, 1, (8, 32, 32, 3)).astype("float32")
    >>> labels = np.arange(8) % 10
    >>> model.fit(images, labels, batch_size=4, epochs=1)
    >>> samples = model.sample(labels[:2], num_steps=10, seed=0)
    >>> model.save("base.keras")

    References:
        - CDM, arXiv:2106.15282, Algorithm 1.
        - Improved DDPM, arXiv:2102.09672.
    """

    network_class = UNet

    def __init__(
        self,
        network,
        diffusion=None,
        ema_decay=0.9999,
        ema_warmup=True,
        label_dropout=0.0,
        vb_weight=0.001,
        seed=None,
        class_names=None,
        sampler_settings=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(network, self.network_class):
            raise ValueError(
                f"{type(self).__name__} needs a {self.network_class.__name__} "
                f"network. Received: network of type {type(network).__name__}"
            )
        if diffusion is None:
            diffusion = GaussianDiffusion()
        elif isinstance(diffusion, dict):
            diffusion = GaussianDiffusion.from_config(diffusion)
        diffusion.check_trainable(network.learn_sigma)
        ema.check_decay(ema_decay)
        if not (np.isfinite(vb_weight) and vb_weight >= 0.0):
            raise ValueError(
                f"`vb_weight` must be a finite number >= 0. Received: vb_weight={vb_weight}"
            )
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(
                f"`label_dropout` must be in [0, 1). Received: label_dropout={label_dropout}"
            )
        if network.num_classes == 0 and label_dropout:
            raise ValueError(
                "An unconditional stage (num_classes=0) has no labels to drop. "
                f"Received: label_dropout={label_dropout}"
            )
        self.class_names = class_labels.check_class_names(class_names, network.num_classes)
        self.sampler_settings = (
            None if sampler_settings is None else SamplerSettings.resolve(sampler_settings)
        )
        self.network = network
        self.diffusion = diffusion
        self.ema_decay = ema_decay
        self.ema_warmup = ema_warmup
        self.label_dropout = label_dropout
        self.vb_weight = vb_weight
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.ema_network = ema.copy_network(network)
        self.ema_updates = self.add_weight(
            shape=(), initializer="zeros", dtype="float32", trainable=False, name="ema_updates"
        )
        # Training batches seen; with gradient accumulation the EMA moves on
        # every k-th (the optimizer's own counter is not readable inside the
        # JAX loss computation).
        self.train_batches = self.add_weight(
            shape=(), initializer="zeros", dtype="int32", trainable=False, name="train_batches"
        )
        self._per_example_loss = _PerExampleLoss(name="diffusion_loss")
        self.mse_tracker = keras.metrics.Mean(name="mse")
        self.vb_tracker = keras.metrics.Mean(name="vb")
        self.input_guard = training_guard.InputGuardMetric()
        self._samplers = {}
        self.built = True

    # ------------------------------------------------------------------
    # Construction and serialization
    # ------------------------------------------------------------------
    @classmethod
    def presets(cls):
        """`{name: description}` of the presets `from_preset` builds with this class."""
        return {
            name: text
            for name, text in list_presets().items()
            if issubclass(stage_class(get_preset(name).model_class), cls)
        }

    @classmethod
    def from_preset(cls, name, network_overrides=None, safe_mode=True, **kwargs):
        """Builds the stage of a named preset (see `keras_cdm.presets`), or
        loads a preset directory written by `save_to_preset`.

        Called on `DiffusionModel`, it returns the preset's own class (a
        `SuperResDiffusionModel` for an SR preset). A named preset is an
        untrained architecture; a directory holds trained weights.

        Args:
            name: str. Preset name, e.g. `"base32"` or `"sr16to32_tiny"`, or
                a preset directory.
            network_overrides: dict. Changes to the network config (named
                presets only).
            safe_mode: bool. Directories: refuse configs that would run
                code when loaded (Keras `safe_mode`). Defaults to `True`.
            **kwargs: model arguments, over the preset's (e.g. its
                augmentation and EMA decay); `diffusion` may be a dict of
                changes to the preset's diffusion config.

        Example:

        >>> sr = keras_cdm.DiffusionModel.from_preset("sr16to32_tiny")
        >>> type(sr).__name__, sr.augmentation
        ('SuperResDiffusionModel', 'gaussian')
        >>> path = sr.save_to_preset("sr_preset")
        >>> keras_cdm.DiffusionModel.from_preset("sr_preset").low_res_size
        16
        """
        from keras_cdm.models import preset_directory

        return preset_directory.from_preset(cls, name, network_overrides, safe_mode, kwargs)

    def save_to_preset(self, directory, weights="all", dtype="float32"):
        """Writes this stage as a preset directory (KerasHub's convention):
        `config.json` (stage config, keras_cdm and Keras versions) and a
        weights file. `DiffusionModel.from_preset(directory)` loads it on any
        backend. Returns `directory`.

        Args:
            directory: str. Created if needed.
            weights: `"all"` (default): `model.weights.h5` with the raw and
                EMA weights, EMA counters and RNG state (no optimizer: a
                `.keras` checkpoint resumes a run). `"ema"`: a release,
                `ema.weights.h5` with the EMA weights alone, which a load
                puts into both the EMA and the raw network.
            dtype: `"float32"` or `"float16"` (`weights="ema"` only; half
                the size).
        """
        from keras_cdm.models import preset_directory

        return preset_directory.save_to_preset(self, directory, weights=weights, dtype=dtype)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "network": keras.saving.serialize_keras_object(self.network),
            "diffusion": self.diffusion.get_config(),
            "ema_decay": self.ema_decay,
            "ema_warmup": self.ema_warmup,
            "label_dropout": self.label_dropout,
            "vb_weight": self.vb_weight,
            "seed": self.seed,
            "class_names": None if self.class_names is None else list(self.class_names),
            "sampler_settings": None
            if self.sampler_settings is None
            else self.sampler_settings.get_config(),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)

    def build(self, input_shape=None):
        self.built = True

    def save_own_variables(self, store):
        super().save_own_variables(store)
        # Keras does not save SeedGenerator state; a resumed run must not
        # replay the noise it already drew.
        store["seed_generator_state"] = ops.convert_to_numpy(self.seed_generator.state.value)

    def load_own_variables(self, store):
        keys = list(store.keys())
        super().load_own_variables({k: store[k] for k in keys if k != "seed_generator_state"})
        if "seed_generator_state" in keys:
            self.seed_generator.state.assign(np.asarray(store["seed_generator_state"]))

    # ------------------------------------------------------------------
    # Properties
    # ------------------------------------------------------------------
    @property
    def image_size(self):
        return self.network.image_size

    @property
    def channels(self):
        return self.network.channels

    @property
    def num_classes(self):
        return self.network.num_classes

    @property
    def unconditional(self):
        """Whether the stage has no classes (`num_classes=0`): batches hold
        images only and `sample` takes `num_images`."""
        return self.network.num_classes == 0

    @property
    def metrics(self):
        metrics = list(super().metrics)
        for m in (self.mse_tracker, self.vb_tracker, self.input_guard):
            if m not in metrics:
                metrics.append(m)
        return metrics

    # ------------------------------------------------------------------
    # Training
    # ------------------------------------------------------------------
    def call(self, inputs, training=False):
        """Runs the network on a dict of network inputs (`"x_t"`, `"t"`,
        `"labels"`, ...). A raw training batch is returned unchanged: `fit`
        does all of its work in `compute_loss`."""
        if isinstance(inputs, dict) and "x_t" in inputs:
            return self.network(inputs, training=training)
        return inputs

    def _unpack_batch(self, x, y):
        """Returns `(images, labels, extra)` from a batch, checking static shapes."""
        return batches.unpack(self, x, y)

    def _draw(self, fn, shape, **kwargs):
        """Draws `fn(shape)` from the model's seed, distinct per replica.

        Under `tf.distribute` every replica reads the same seed state, so
        each draws the numbers of all replicas and keeps its own slice.
        """
        replica, replicas = replica_context()
        if replicas == 1:
            return fn(shape, seed=self.seed_generator, **kwargs)
        batch = shape[0]
        full = fn((replicas * batch,) + tuple(shape[1:]), seed=self.seed_generator, **kwargs)
        return full[replica * batch : (replica + 1) * batch]

    def _drop_labels(self, labels, training):
        if not training or self.label_dropout == 0.0:
            return labels
        u = self._draw(random_uniform, tuple(ops.shape(labels)))
        return ops.where(u < self.label_dropout, self.num_classes, labels)

    def _network_inputs(self, x_t, t, labels, extra, training):
        return {"x_t": x_t, "t": t, "labels": labels}

    def _conditioning_images(self, extra):
        """Extra image inputs of a batch that the input guard checks (SR: low_res)."""
        return []

    def _guard_inputs(self, images, labels, extra):
        """`(flags, images, labels, extra)`: see `batches.guard`."""
        return batches.guard(self, images, labels, extra)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        images, labels, extra = self._unpack_batch(x, y)
        flags, images, labels, extra = self._guard_inputs(images, labels, extra)
        batch = ops.shape(images)[0]
        t = self._draw(
            keras.random.randint,
            (batch,),
            minval=0,
            maxval=self.diffusion.num_timesteps,
            dtype="int32",
        )
        noise = self._draw(random_normal, tuple(ops.shape(images)))
        x_t = self.diffusion.q_sample(images, t, noise)
        labels = self._drop_labels(labels, training)
        inputs = self._network_inputs(x_t, t, labels, extra, training)
        output = call_network(self.network, inputs, training=training)
        terms = self.diffusion.training_losses(
            output, images, x_t, t, noise, vb_weight=self.vb_weight
        )
        if training:
            self._update_ema()
        finite = ops.all(ops.isfinite(terms["loss"]))
        flags = flags + training_guard.NONFINITE_LOSS * (1.0 - ops.cast(finite, "float32"))
        self.input_guard.update_state(flags)
        self.mse_tracker.update_state(terms["mse"])
        self.vb_tracker.update_state(terms["vb"])
        loss = self._per_example_loss(ops.zeros_like(terms["loss"]), terms["loss"], sample_weight)
        added = model_losses(self)  # add_loss, regularizers
        if added:
            loss = loss + ops.sum(added)
        return loss

    def _update_ema(self):
        ema.update(self)

    # ------------------------------------------------------------------
    # fit / evaluate: checks before the compiled step
    # ------------------------------------------------------------------
    def _check_inputs(self, x, y):
        batches.check_inputs(self, x, y)

    def reset_ema(self):
        """Copies the raw weights into the EMA network."""
        ema.reset(self)


def stage_class(name):
    """The stage class Keras has registered under `name`: a registered name
    (`"keras_cdm>SuperResDiffusionModel"`, or any package's) or a keras_cdm
    class name (`"SuperResDiffusionModel"`). Keras's registry is the only
    one; a preset's `model_class` and a preset directory's config name
    their class through it."""
    registered = name if ">" in str(name) else f"keras_cdm>{name}"
    cls = keras.saving.get_registered_object(registered)
    if not (isinstance(cls, type) and issubclass(cls, DiffusionModel)):
        raise ValueError(
            f"{name!r} is not a registered keras_cdm stage class (a DiffusionModel "
            "subclass decorated with keras.saving.register_keras_serializable)."
        )
    return cls
