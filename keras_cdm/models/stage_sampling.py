"""A stage's own sampling and likelihood: the methods `DiffusionModel`
(and `SuperResDiffusionModel`) take from `StageSampling`, kept apart from
the training step. They read the stage's network, diffusion, classes and
`sampler_settings`, and run `reverse_process`."""

import numpy as np

from keras_cdm.models import batches
from keras_cdm.models import labels as class_labels
from keras_cdm.models.reverse_process import SamplerSettings
from keras_cdm.models.reverse_process import StageSampler
from keras_cdm.models.reverse_process import variational_bound_bpd
from keras_cdm.utils.seeds import check_seed


class StageSampling:
    """Sampling, labels and likelihood of a diffusion stage: the methods a
    `keras_cdm.DiffusionModel` (base or SR) draws images with, apart from
    its training step. A mixin; it reads the stage's `network`,
    `diffusion`, classes and `sampler_settings`.

    Example:

    >>> model = keras_cdm.DiffusionModel.from_preset("base16_tiny")
    >>> model.sample([0, 1], num_steps=2, seed=0).shape
    (2, 16, 16, 3)
    >>> model.describe_classes()
    '0..9'
    """

    def resolve_labels(self, labels=None, num_images=None):
        """The int32 labels a sampling request runs on: `labels`, checked,
        for a class-conditional stage; zeros for `num_images` images of an
        unconditional one (whose network does not read them)."""
        return class_labels.resolve(labels, num_images, self.num_classes, self.class_names)

    def class_ids(self, labels):
        """Class ids from ids or class names (`class_names`), checked.

        Example:

        >>> m = keras_cdm.DiffusionModel.from_preset("base16_tiny",
        ...     class_names=[f"c{i}" for i in range(10)])
        >>> m.class_ids(["c3", 4]).tolist()
        [3, 4]
        """
        return class_labels.class_ids(labels, self.num_classes, self.class_names)

    def describe_classes(self):
        """`"0..9 (0=cat, 1=dog, ...)"`: the class ids, with names if known."""
        return class_labels.describe_classes(self.num_classes, self.class_names)

    def check_labels(self, labels):
        """Returns labels as int32 after checking they are valid class ids."""
        return class_labels.check_labels(labels, self.num_classes, self.class_names)

    def resolve_settings(self, settings=None, **kwargs):
        """`settings` (None: this stage's `sampler_settings`, else the
        defaults) with `kwargs` replacing fields, as a `SamplerSettings`."""
        if settings is None:
            settings = self.sampler_settings
        return SamplerSettings.resolve(settings, **kwargs)

    def stage_sampler(self, settings=None, stop_at=0):
        """The compiled `StageSampler` for these settings (cached; None:
        this stage's `sampler_settings`)."""
        settings = self.resolve_settings(settings)
        key = (settings, stop_at)
        if key not in self._samplers:
            self._samplers[key] = StageSampler(self, settings, stop_at)
        return self._samplers[key]

    def sample(
        self,
        labels=None,
        seed=None,
        settings=None,
        stop_at=0,
        noise=None,
        verbose=False,
        image_indices=None,
        conditioning=None,
        num_images=None,
        **kwargs,
    ):
        """Draws images for `labels` (or `num_images` of an unconditional
        stage) by running the reverse process.

        Args:
            labels: int array `(batch,)` of class ids (class-conditional
                stages).
            seed: int or None. Seed of the initial noise and every step
                (`None`: a fresh random seed). Image `i` draws from its own
                stream, so it does not depend on the batch it is in.
            settings: `keras_cdm.models.SamplerSettings` (or its config;
                None: the stage's `sampler_settings`, else the defaults).
            stop_at: int. Stop the reverse process at level `s` (paper's
                1-indexed convention) and return `z_s` (truncated cascade);
                `0` runs to the end.
            noise: optional initial `x_T`.
            verbose: bool. Show a progress bar.
            image_indices: ints or None. The images' indices in a larger
                request (`None`: `0 .. batch-1`); `CascadeSampler` passes
                them so batching does not change the images.
            conditioning: dict of extra network inputs (what
                `SuperResDiffusionModel.prepare_conditioning` returns).
            num_images: int. How many images an unconditional stage draws.
            **kwargs: fields of `SamplerSettings` (`num_steps`, `sampler`,
                `eta`, `clip_denoised`, `guidance_scale`, `use_ema`),
                replacing those of `settings`.

        Returns:
            A float32 NumPy array `(batch, size, size, channels)`; in [-1, 1]
            when `stop_at == 0`.
        """
        labels = self.resolve_labels(labels, num_images)
        seed = check_seed(seed)
        conditioning = dict(conditioning or {})
        for key, value in conditioning.items():
            if len(value) != len(labels):
                raise ValueError(
                    f"{key} and labels must have the same batch size. Received: "
                    f"{len(value)} and {len(labels)}"
                )
        stage = self.stage_sampler(self.resolve_settings(settings, **kwargs), stop_at)
        return stage.run(labels, conditioning, seed, image_indices, noise=noise, verbose=verbose)

    def compute_bpd(self, images, labels=None, use_ema=True, seed=0, verbose=False):
        """The full variational bound in bits per dimension, per example
        (`labels=None` for an unconditional stage).

        Runs the network once per timestep (T calls, a progress bar when
        `verbose`), so use small batches. The same `seed` gives the same
        figures.
        """
        images = np.asarray(images, "float32")
        labels = self.resolve_labels(labels, len(images))
        batches.check_arrays(self, images, None if self.unconditional else labels)
        return variational_bound_bpd(self, images, labels, {}, use_ema, check_seed(seed), verbose)

    def predict(self, x, *args, **kwargs):
        """The network's output (ε, or v, and the variance channels) for a
        dict of network inputs (`"x_t"`, `"t"`, `"labels"`; an SR stage also
        `"low_res"` and `"aug_level"`), as `keras.Model.predict`.

        Images are made by `sample`; a batch of images or a dataset is
        refused with an error that says so, instead of being returned
        unchanged.
        """
        if not (isinstance(x, dict) and "x_t" in x):
            raise ValueError(
                f"{type(self).__name__}.predict runs the denoising network and takes a dict "
                'of network inputs {"x_t", "t", "labels", ...}. To generate images use '
                "model.sample(labels, seed=..., num_steps=...) (or keras_cdm.CascadeSampler). "
                f"Received: {type(x).__name__}"
            )
        return super().predict(x, *args, **kwargs)
