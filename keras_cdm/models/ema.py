"""A stage's exponential moving average (EMA) of its network's weights.

The EMA network is a second copy of the network (same config, name
`<network>_ema`, not trainable) that sampling uses by default. It moves
once per optimizer update: with `decay` warmed up as
`min(decay, (1 + n) / (10 + n))` after `n` updates (Improved DDPM's
warm-up) if the stage asks for it, and only on the first batch after each
update under gradient accumulation.
"""

import weakref

from keras import ops

from keras_cdm.backend import fused_moving_average

# (EMA weights, weights) per stage: a built network's weight lists do not
# change, and walking its layers for them costs ~1 ms of Python per step on
# eager PyTorch. Kept outside the stage (Keras would track lists of
# variables set on it).
_PAIRS = weakref.WeakKeyDictionary()


def check_decay(decay):
    """Refuses an EMA decay outside [0, 1)."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"`ema_decay` must be in [0, 1). Received: ema_decay={decay}")


def _pairs(stage):
    pairs = _PAIRS.get(stage)
    if pairs is None:
        pairs = _PAIRS[stage] = (list(stage.ema_network.weights), list(stage.network.weights))
    return pairs


def _copy_weights(targets, sources):
    for target, source in zip(targets, sources):
        target.assign(ops.copy(source.value))


def copy_network(network):
    """The EMA copy of `network`: same config and weights, not trainable."""
    config = network.get_config()
    config["name"] = f"{network.name}_ema"
    ema_network = network.__class__.from_config(config)
    ema_network.trainable = False
    _copy_weights(ema_network.weights, network.weights)
    return ema_network


def update(stage):
    """One EMA step of `stage` (inside its training step): reads and moves
    `stage.ema_updates` and `stage.train_batches`."""
    n = stage.ema_updates.value
    decay = ops.convert_to_tensor(stage.ema_decay, "float32")
    if stage.ema_warmup:
        decay = ops.minimum(decay, (1.0 + n) / (10.0 + n))
    moves = ops.convert_to_tensor(1.0, "float32")
    optimizer = getattr(stage, "optimizer", None)
    accumulation = getattr(optimizer, "gradient_accumulation_steps", None)
    if accumulation:
        # The weights change once every `accumulation` batches; the EMA
        # moves on the first batch after each update (batches % k == 0).
        batches = stage.train_batches.value
        moves = ops.cast(ops.equal(ops.mod(batches, accumulation), 0), "float32")
        decay = moves * decay + (1.0 - moves)
    stage.train_batches.assign(stage.train_batches.value + 1)
    pairs = _pairs(stage)
    if not fused_moving_average(*pairs, decay):
        for ema_var, var in zip(*pairs):
            value = ops.stop_gradient(ops.cast(var.value, ema_var.dtype))
            ema_var.assign(decay * ema_var.value + (1.0 - decay) * value)
    stage.ema_updates.assign(n + moves)


def reset(stage):
    """Copies the raw weights into the EMA network and zeroes its count."""
    _copy_weights(*_pairs(stage))
    stage.ema_updates.assign(0.0)
