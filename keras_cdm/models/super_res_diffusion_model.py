import math

import keras
import numpy as np
from keras import ops

from keras_cdm.backend import random_normal
from keras_cdm.backend import random_uniform
from keras_cdm.diffusion.gaussian_diffusion import GaussianDiffusion
from keras_cdm.models import batches
from keras_cdm.models.augmentation import area_downsample
from keras_cdm.models.augmentation import per_example_gaussian_blur
from keras_cdm.models.diffusion_model import DiffusionModel
from keras_cdm.models.reverse_process import variational_bound_bpd
from keras_cdm.networks.super_res_unet import SuperResUNet
from keras_cdm.utils.seeds import ImageNoise
from keras_cdm.utils.seeds import check_seed
from keras_cdm.utils.validation import check_positive_int

AUGMENTATIONS = ("gaussian", "blur", "none")


@keras.saving.register_keras_serializable(package="keras_cdm")
class SuperResDiffusionModel(DiffusionModel):
    """A super-resolution diffusion stage with conditioning augmentation.

    Batches are `({"high_res": x0, "low_res": z0}, labels)`, or
    `(high_res, labels)` in which case the model makes `z0` by box-filter
    downsampling `x0`; a dict may also hold `"labels"`. In every step the
    conditioning is corrupted according to `augmentation`:

    - `"gaussian"`: `s ~ U{aug_level_range}` per example and
      `z_s = √ᾱ_s z0 + √(1−ᾱ_s) ε_z` with the low-resolution stage's
      schedule (`low_res_diffusion`); `s` is given to the network.
    - `"blur"`: with probability `blur_probability` per example, a Gaussian
      blur with a `blur_kernel_size` kernel and `σ ~ U(blur_sigma_range)`;
      never at sampling time.
    - `"none"`: the clean `z0` with `s = 0` (the paper's ablation baseline).

    Args:
        network: `keras_cdm.SuperResUNet`.
        diffusion: `keras_cdm.GaussianDiffusion` or config dict of this stage.
        low_res_diffusion: `GaussianDiffusion` or config dict whose schedule
            defines ᾱ_s (the stage below's). Defaults to this stage's.
        augmentation: str. `"gaussian"`, `"blur"` or `"none"`.
            Defaults to `"gaussian"`.
        aug_level_range: `(min_s, max_s)`, inclusive, in the paper's
            1-indexed levels (`0` = clean). Defaults to `(1, T_low)`, the
            whole range as in Algorithm 1.
        blur_probability: float. Defaults to `0.5`.
        blur_kernel_size: int. Odd kernel size. Defaults to `3`.
        blur_sigma_range: `(min, max)`. Defaults to `(0.4, 0.6)`.
        **kwargs: the arguments of `keras_cdm.DiffusionModel`.

    Example:

    >>> sr = keras_cdm.SuperResDiffusionModel.from_preset("sr32to64_tiny")
    >>> sr.compile(optimizer="adam")
    >>> hi = np.random.uniform(-1, 1, (4, 64, 64, 3)).astype("float32")
    >>> sr.fit(hi, np.arange(4), batch_size=2)
    >>> lo = hi[:, ::2, ::2]
    >>> out = sr.sample(lo, np.arange(4), aug_level=250, num_steps=10)

    References:
        - CDM, arXiv:2106.15282, Section 3.2 and Algorithm 1.
    """

    network_class = SuperResUNet

    def __init__(
        self,
        network,
        diffusion=None,
        low_res_diffusion=None,
        augmentation="gaussian",
        aug_level_range=None,
        blur_probability=0.5,
        blur_kernel_size=3,
        blur_sigma_range=(0.4, 0.6),
        **kwargs,
    ):
        super().__init__(network, diffusion=diffusion, **kwargs)
        if augmentation not in AUGMENTATIONS:
            raise ValueError(
                f"`augmentation` must be one of {AUGMENTATIONS}. "
                f"Received: augmentation={augmentation!r}"
            )
        if low_res_diffusion is None:
            low_res_diffusion = GaussianDiffusion(
                self.diffusion.schedule, self.diffusion.original_num_timesteps
            )
        elif isinstance(low_res_diffusion, dict):
            low_res_diffusion = GaussianDiffusion.from_config(low_res_diffusion)
        self.low_res_diffusion = low_res_diffusion
        max_level = low_res_diffusion.num_timesteps
        if aug_level_range is None:
            aug_level_range = (1, max_level)
        aug_level_range = tuple(int(s) for s in aug_level_range)
        if (
            len(aug_level_range) != 2
            or not 0 <= aug_level_range[0] <= aug_level_range[1] <= max_level
        ):
            raise ValueError(
                f"`aug_level_range` must be (min_s, max_s) with 0 <= min_s <= "
                f"max_s <= {max_level}. Received: aug_level_range={aug_level_range}"
            )
        if blur_kernel_size < 1 or blur_kernel_size % 2 == 0:
            raise ValueError(
                f"`blur_kernel_size` must be a positive odd integer. "
                f"Received: blur_kernel_size={blur_kernel_size}"
            )
        if not 0.0 <= blur_probability <= 1.0:
            raise ValueError(f"`blur_probability` must be in [0, 1]. Received: {blur_probability}")
        blur_sigma_range = tuple(float(s) for s in blur_sigma_range)
        if len(blur_sigma_range) != 2 or not 0 < blur_sigma_range[0] <= blur_sigma_range[1]:
            raise ValueError(
                f"`blur_sigma_range` must be (min, max) with 0 < min <= max. "
                f"Received: blur_sigma_range={blur_sigma_range}"
            )
        self.augmentation = augmentation
        self.aug_level_range = aug_level_range
        self.blur_probability = blur_probability
        self.blur_kernel_size = blur_kernel_size
        self.blur_sigma_range = blur_sigma_range

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "low_res_diffusion": self.low_res_diffusion.get_config(),
                "augmentation": self.augmentation,
                "aug_level_range": self.aug_level_range,
                "blur_probability": self.blur_probability,
                "blur_kernel_size": self.blur_kernel_size,
                "blur_sigma_range": self.blur_sigma_range,
            }
        )
        return config

    @property
    def low_res_size(self):
        return self.network.low_res_size

    @property
    def low_res_size_step(self):
        """What a low-resolution size must be a multiple of for this stage
        to run at it (`with_low_res_size`): every level of its U-Net whole."""
        levels = 2 ** (len(self.network.get_config()["channel_mult"]) - 1)
        factor = self.image_size // self.low_res_size
        return levels // math.gcd(levels, factor)

    def attention_resolutions_at(self, image_size):
        """The resolutions this stage's U-Net attends at when rebuilt for
        `image_size` outputs: attention stays at the same levels."""
        levels = len(self.network.get_config()["channel_mult"])
        attended = self.network.get_config()["attention_resolutions"]
        return tuple(
            image_size // 2**level
            for level in range(levels)
            if self.image_size // 2**level in attended
        )

    def with_low_res_size(self, low_res_size):
        """This stage, with its weights, in a network built for
        `low_res_size` inputs (outputs `low_res_size * factor`).

        The U-Net is convolutional; only its input sizes are fixed, and its
        attention sits at fixed levels (not pixel sizes), so the same
        weights run at another size. Used to upscale images larger or
        smaller than the stage's own low resolution
        (`keras_cdm.sampling.upscale`). The size must keep every level of
        the U-Net whole: the output side must divide by
        `2 ** (levels - 1)`. Attention at the lowest level costs memory
        quadratic in its pixel count.

        Example:

        >>> sr = keras_cdm.SuperResDiffusionModel.from_preset("sr16to32_tiny")
        >>> big = sr.with_low_res_size(24)
        >>> big.low_res_size, big.image_size
        (24, 48)
        """
        check_positive_int("low_res_size", low_res_size)
        if low_res_size == self.low_res_size:
            return self
        factor = self.image_size // self.low_res_size
        config = self.network.get_config()
        levels = len(config["channel_mult"])
        image_size = low_res_size * factor
        if low_res_size % self.low_res_size_step:
            raise ValueError(
                f"This stage's U-Net has {levels} levels, so its low-resolution size must be "
                f"a multiple of {self.low_res_size_step}. Received: low_res_size={low_res_size}"
            )
        config["attention_resolutions"] = self.attention_resolutions_at(image_size)
        config.update(image_size=image_size, low_res_size=low_res_size)
        stage_config = self.get_config()
        stage_config["network"] = self.network.__class__.from_config(config)
        stage = self.__class__(**stage_config)
        stage.network.set_weights(self.network.get_weights())
        stage.ema_network.set_weights(self.ema_network.get_weights())
        return stage

    # ------------------------------------------------------------------
    # Training
    # ------------------------------------------------------------------
    def _conditioning_images(self, extra):
        return ["low_res"]

    def _network_inputs(self, x_t, t, labels, extra, training):
        return {"x_t": x_t, "t": t, "labels": labels, **self._augment(extra["low_res"])}

    def _unpack_batch(self, x, y):
        images, labels, extra = super()._unpack_batch(x, y)
        low_res = extra.get("low_res")
        if low_res is None:
            low_res = area_downsample(images, self.image_size // self.low_res_size)
        else:
            batches.check_images(low_res, "low_res", self.low_res_size, self.channels)
        return images, labels, {"low_res": ops.cast(low_res, "float32")}

    def augment_conditioning(self, low_res):
        """Applies this stage's training-time augmentation to clean `low_res`.

        Returns:
            A dict with the corrupted `"low_res"` and the `"aug_level"` given
            to the network.
        """
        return self._augment(ops.cast(low_res, "float32"))

    def _augment(self, low_res):
        batch = ops.shape(low_res)[0]
        if self.augmentation == "gaussian":
            lo, hi = self.aug_level_range
            s = self._draw(keras.random.randint, (batch,), minval=lo, maxval=hi + 1, dtype="int32")
            eps = self._draw(random_normal, tuple(ops.shape(low_res)))
            low_res = self.low_res_diffusion.q_sample_augmentation(low_res, s, eps)
            return {"low_res": low_res, "aug_level": s}
        s = ops.zeros((batch,), dtype="int32")
        if self.augmentation == "blur":
            lo, hi = self.blur_sigma_range
            sigma = self._draw(random_uniform, (batch,), minval=lo, maxval=hi)
            blurred = per_example_gaussian_blur(low_res, sigma, self.blur_kernel_size)
            apply = self._draw(random_uniform, (batch,)) < self.blur_probability
            low_res = ops.where(ops.reshape(apply, (-1, 1, 1, 1)), blurred, low_res)
        return {"low_res": low_res, "aug_level": s}

    # ------------------------------------------------------------------
    # Sampling
    # ------------------------------------------------------------------
    def prepare_conditioning(self, low_res, aug_level=0, noisy=False, seed=0, image_indices=None):
        """Turns the stage below's output into this stage's conditioning.

        Args:
            low_res: array `(batch, low, low, channels)`: a clean `z0` in
                [-1, 1], or an already noisy `z_s` when `noisy=True` (the
                truncated cascade's hand-over).
            aug_level: int. The level `s` the network is told (and, for a
                clean input, the noise level added: non-truncated cascade).
            noisy: bool. `low_res` is already `z_s`.
            seed: int. Seed of the added noise (image `i` of the request
                draws from its own stream, see `keras_cdm.utils.seeds`).
            image_indices: ints or None. The images' indices in the request.

        Returns:
            A dict with `"low_res"` and `"aug_level"` network inputs.
        """
        low_res = np.asarray(ops.convert_to_numpy(low_res), dtype="float32")
        expected = (self.low_res_size, self.low_res_size, self.channels)
        if low_res.ndim != 4 or low_res.shape[1:] != expected:
            raise ValueError(
                f"Expected low_res of shape (batch, {', '.join(map(str, expected))}) "
                f"for this stage. Received: low_res.shape={low_res.shape}"
            )
        if not np.isfinite(low_res).all():
            bad = np.argwhere(~np.isfinite(low_res).reshape(len(low_res), -1).all(axis=1))[:, 0]
            raise ValueError(
                f"low_res holds non-finite values (NaN or Inf) in {len(bad)} images, "
                f"the first at index {int(bad[0])}."
            )
        max_level = self.low_res_diffusion.num_timesteps
        if isinstance(aug_level, bool) or not isinstance(aug_level, (int, np.integer)):
            raise ValueError(f"`aug_level` must be an int. Received: aug_level={aug_level!r}")
        if not 0 <= aug_level <= max_level:
            raise ValueError(
                f"`aug_level` must lie in [0, {max_level}]. Received: aug_level={aug_level}"
            )
        if self.augmentation != "gaussian" and aug_level != 0:
            raise ValueError(
                f"This stage was trained with augmentation={self.augmentation!r}, "
                f"which has no noise level; use aug_level=0. Received: aug_level={aug_level}"
            )
        if not noisy:
            if low_res.min() < -1.0 - 1e-6 or low_res.max() > 1.0 + 1e-6:
                raise ValueError(
                    "Expected a clean low_res in [-1, 1]. Received values in "
                    f"[{low_res.min():.3f}, {low_res.max():.3f}]; pass noisy=True "
                    "for a truncated cascade's z_s."
                )
            if aug_level > 0:
                levels = ops.full((low_res.shape[0],), aug_level, dtype="int32")
                if image_indices is None:
                    image_indices = range(len(low_res))
                noise = ImageNoise(seed, image_indices, stream=1).normal(low_res.shape[1:])
                low_res = ops.convert_to_numpy(
                    self.low_res_diffusion.q_sample_augmentation(
                        ops.convert_to_tensor(low_res), levels, noise
                    )
                )
        aug = np.full((low_res.shape[0],), aug_level, dtype="int32")
        return {"low_res": low_res, "aug_level": aug}

    def sample(
        self,
        low_res,
        labels=None,
        aug_level=0,
        noisy_low_res=False,
        seed=None,
        image_indices=None,
        **kwargs,
    ):
        """Draws high-resolution images conditioned on `low_res`:
        `prepare_conditioning` followed by `DiffusionModel.sample`.

        Args:
            low_res: array of low-resolution images (see
                `prepare_conditioning`).
            labels: int array `(batch,)` of class ids; `None` for an
                unconditional stage (one image per `low_res` image).
            aug_level: int. Conditioning-augmentation level `s`.
            noisy_low_res: bool. `low_res` is already `z_s` (truncated mode).
            seed: int or None. Seed of the added and the sampling noise.
            image_indices: ints or None. See `DiffusionModel.sample`.
            **kwargs: as `keras_cdm.DiffusionModel.sample` (`settings`,
                `num_steps`, `sampler`, `guidance_scale`, `stop_at`, ...).
        """
        seed = check_seed(seed)
        conditioning = self.prepare_conditioning(
            low_res, aug_level, noisy_low_res, seed, image_indices
        )
        if self.unconditional and labels is None:
            kwargs["num_images"] = len(conditioning["low_res"])
        return super().sample(
            labels, seed=seed, image_indices=image_indices, conditioning=conditioning, **kwargs
        )

    def compute_bpd(self, images, labels=None, low_res=None, use_ema=True, seed=0, verbose=False):
        """The variational bound in bits/dim given clean conditioning (s = 0);
        `T` network calls (a progress bar when `verbose`); `labels=None` for
        an unconditional stage."""
        images = np.asarray(images, "float32")
        labels = self.resolve_labels(labels, len(images))
        if low_res is None:
            factor = self.image_size // self.low_res_size
            low_res = ops.convert_to_numpy(area_downsample(ops.convert_to_tensor(images), factor))
        cond = self.prepare_conditioning(low_res, 0)
        return variational_bound_bpd(self, images, labels, cond, use_ema, check_seed(seed), verbose)
