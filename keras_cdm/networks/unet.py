import numbers

import keras

from keras_cdm.backend import run_network_directly
from keras_cdm.layers.attention_block import AttentionBlock
from keras_cdm.layers.convolution import Conv2D
from keras_cdm.layers.normalization import group_norm
from keras_cdm.layers.resample import Downsample
from keras_cdm.layers.resample import Upsample
from keras_cdm.layers.residual_block import ResidualBlock
from keras_cdm.layers.timestep_embedding import TimestepEmbedding
from keras_cdm.networks.architectures import architecture_names
from keras_cdm.networks.architectures import get_architecture
from keras_cdm.utils.validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_cdm")
class UNet(keras.Model):
    """ADM-style class-conditional U-Net over `(x_t, t, label)`.

    A functional Keras model (it builds on construction and saves to
    `.keras`) whose inputs are a dict with `"x_t"` (NHWC), `"t"` (int
    timesteps, shape `(batch,)`) and `"labels"` (ints in `[0, num_classes]`,
    where `num_classes` is the "null" label for classifier-free guidance).

    Args:
        image_size: int. Height and width of `x_t`.
        channels: int. Image channels. Defaults to `3`.
        base_channels: int. Channels of the first level. Defaults to `128`.
        channel_mult: tuple of ints. Channel multiplier per resolution level.
            Defaults to `(1, 2, 2, 2)`.
        num_res_blocks: int. Residual blocks per level. Defaults to `2`.
        attention_resolutions: tuple of ints. Resolutions (in pixels) that get
            self-attention after their residual blocks. Defaults to `(16,)`.
        num_heads: int. Attention heads. Defaults to `4`.
        head_channels: int or None. Channels per head, overrides `num_heads`.
        dropout: float. Dropout in residual blocks. Defaults to `0.0`.
        num_classes: int or None. Number of classes (one extra null label is
            added); `0` or `None`: an unconditional network (no class
            embedding; its `"labels"` input is accepted and unused).
            Defaults to `10`.
        learn_sigma: bool. Double the output channels for a learned-range
            variance. Defaults to `False`.
        use_scale_shift_norm: bool. FiLM conditioning. Defaults to `True`.
        resblock_updown: bool. BigGAN-style resampling residual blocks instead
            of plain convolutions. Defaults to `True`.
        norm_groups: int. GroupNorm groups. Defaults to `32`.
        seed: int or None. Seed of the dropout layers.

    Example:

    >>> net = keras_cdm.UNet.from_preset("base32_tiny")
    >>> out = net({"x_t": keras.ops.zeros((2, 32, 32, 3)),
    ...            "t": keras.ops.array([0, 5]), "labels": keras.ops.array([1, 2])})
    >>> out.shape
    (2, 32, 32, 6)

    References:
        - ADM, arXiv:2105.05233; Improved DDPM, arXiv:2102.09672;
          CDM, arXiv:2106.15282.
    """

    def __init__(
        self,
        image_size,
        channels=3,
        base_channels=128,
        channel_mult=(1, 2, 2, 2),
        num_res_blocks=2,
        attention_resolutions=(16,),
        num_heads=4,
        head_channels=None,
        dropout=0.0,
        num_classes=10,
        learn_sigma=False,
        use_scale_shift_norm=True,
        resblock_updown=True,
        norm_groups=32,
        seed=None,
        dtype=None,
        _extra_config=None,
        **kwargs,
    ):
        for name, value in [
            ("image_size", image_size),
            ("channels", channels),
            ("base_channels", base_channels),
            ("num_res_blocks", num_res_blocks),
        ]:
            check_positive_int(name, value)
        num_classes = 0 if num_classes is None else num_classes
        if (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, numbers.Integral)
            or num_classes < 0
        ):
            raise ValueError(
                "`num_classes` must be an int >= 0 (0 or None: unconditional). "
                f"Received: num_classes={num_classes!r}"
            )
        num_classes = int(num_classes)
        channel_mult = tuple(int(m) for m in channel_mult)
        if not channel_mult:
            raise ValueError("`channel_mult` must not be empty.")
        if image_size % (2 ** (len(channel_mult) - 1)):
            raise ValueError(
                f"`image_size` must be divisible by 2**{len(channel_mult) - 1} "
                f"for {len(channel_mult)} levels. Received: image_size={image_size}"
            )
        attention_resolutions = tuple(int(r) for r in attention_resolutions)
        config = {
            "image_size": image_size,
            "channels": channels,
            "base_channels": base_channels,
            "channel_mult": channel_mult,
            "num_res_blocks": num_res_blocks,
            "attention_resolutions": attention_resolutions,
            "num_heads": num_heads,
            "head_channels": head_channels,
            "dropout": dropout,
            "num_classes": num_classes,
            "learn_sigma": learn_sigma,
            "use_scale_shift_norm": use_scale_shift_norm,
            "resblock_updown": resblock_updown,
            "norm_groups": norm_groups,
            "seed": seed,
        }
        config.update(_extra_config or {})
        inputs = self._make_inputs(config)
        x, emb = self._stem(inputs, config, dtype)
        outputs = _unet_body(x, emb, config, dtype)
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)
        self._unet_config = config

    # The pieces a subclass changes: its inputs and what enters the body.
    def _make_inputs(self, config):
        size, ch = config["image_size"], config["channels"]
        return {
            "x_t": keras.Input((size, size, ch), name="x_t"),
            "t": keras.Input((), dtype="int32", name="t"),
            "labels": keras.Input((), dtype="int32", name="labels"),
        }

    def _stem(self, inputs, config, dtype):
        emb_dim = 4 * config["base_channels"]
        emb = TimestepEmbedding(config["base_channels"], emb_dim, dtype=dtype, name="time_embed")(
            inputs["t"]
        )
        if config["num_classes"] == 0:  # unconditional: no class embedding
            return inputs["x_t"], emb
        label_emb = keras.layers.Embedding(
            config["num_classes"] + 1, emb_dim, dtype=dtype, name="label_embed"
        )(inputs["labels"])
        emb = keras.layers.Add(dtype=dtype, name="add_label_embed")([emb, label_emb])
        return inputs["x_t"], emb

    def call(self, inputs, training=None, mask=None, **kwargs):
        # PyTorch: the same computation as plain PyTorch calls, without Keras's
        # per-layer bookkeeping (keras_cdm.backend.torch_network, docs/SPEED.md).
        if not kwargs and all(m is None for m in keras.tree.flatten(mask)):
            out = run_network_directly(self, inputs, training, standardized=True)
            if out is not None:
                return out
        return super().call(inputs, training=training, mask=mask, **kwargs)

    @property
    def image_size(self):
        return self._unet_config["image_size"]

    @property
    def channels(self):
        return self._unet_config["channels"]

    @property
    def num_classes(self):
        return self._unet_config["num_classes"]

    @property
    def learn_sigma(self):
        return self._unet_config["learn_sigma"]

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable}
        config.update(self._unet_config)
        config["dtype"] = keras.dtype_policies.serialize(self.dtype_policy)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)

    @classmethod
    def presets(cls):
        """Names of the architectures this class builds
        (`keras_cdm.networks.architectures`)."""
        return architecture_names(cls.__name__)

    @classmethod
    def from_preset(cls, name, **overrides):
        """Builds the network of a named preset, with config `overrides`.

        Example:

        >>> keras_cdm.UNet.from_preset("base32_tiny", dropout=0.0).image_size
        32
        """
        config = get_architecture(name, cls.__name__)
        config.update(overrides)
        return cls(**config)


def _unet_body(x, emb, config, dtype):
    """The down path, middle and up path of the U-Net (ADM's layout)."""
    ch0 = config["base_channels"]
    groups = config["norm_groups"]
    seed = config["seed"]

    def res_block(h, out_ch, resample=None, name=None):
        return ResidualBlock(
            out_ch,
            dropout=config["dropout"],
            use_scale_shift_norm=config["use_scale_shift_norm"],
            resample=resample,
            norm_groups=groups,
            seed=seed,
            dtype=dtype,
            name=name,
        )([h, emb])

    def attention(h, name):
        return AttentionBlock(
            num_heads=config["num_heads"],
            head_channels=config["head_channels"],
            norm_groups=groups,
            dtype=dtype,
            name=name,
        )(h)

    resolution = config["image_size"]
    h = Conv2D(ch0, 3, padding="same", dtype=dtype, name="conv_in")(x)
    skips = [h]
    levels = config["channel_mult"]
    for level, mult in enumerate(levels):
        for i in range(config["num_res_blocks"]):
            h = res_block(h, mult * ch0, name=f"down_{level}_res_{i}")
            if resolution in config["attention_resolutions"]:
                h = attention(h, name=f"down_{level}_attn_{i}")
            skips.append(h)
        if level != len(levels) - 1:
            if config["resblock_updown"]:
                h = res_block(h, mult * ch0, resample="down", name=f"down_{level}_resample")
            else:
                h = Downsample(mult * ch0, dtype=dtype, name=f"down_{level}_resample")(h)
            skips.append(h)
            resolution //= 2

    mid_ch = levels[-1] * ch0
    h = res_block(h, mid_ch, name="mid_res_0")
    h = attention(h, name="mid_attn")
    h = res_block(h, mid_ch, name="mid_res_1")

    for level, mult in reversed(list(enumerate(levels))):
        for i in range(config["num_res_blocks"] + 1):
            h = keras.layers.Concatenate(dtype=dtype, name=f"up_{level}_concat_{i}")(
                [h, skips.pop()]
            )
            h = res_block(h, mult * ch0, name=f"up_{level}_res_{i}")
            if resolution in config["attention_resolutions"]:
                h = attention(h, name=f"up_{level}_attn_{i}")
        if level != 0:
            if config["resblock_updown"]:
                h = res_block(h, mult * ch0, resample="up", name=f"up_{level}_resample")
            else:
                h = Upsample(mult * ch0, dtype=dtype, name=f"up_{level}_resample")(h)
            resolution *= 2

    h = group_norm(h.shape[-1], groups, name="norm_out")(h)
    h = keras.layers.Activation("silu", dtype=dtype, name="silu_out")(h)
    out_channels = config["channels"] * (2 if config["learn_sigma"] else 1)
    h = Conv2D(
        out_channels,
        3,
        padding="same",
        kernel_initializer="zeros",
        dtype=dtype,
        name="conv_out",
    )(h)
    # The diffusion math runs in float32 whatever the compute dtype.
    return keras.layers.Activation("linear", dtype="float32", name="output")(h)
