"""keras_cdm's networks as plain PyTorch: the PyTorch backend's fast path.

Keras's per-layer `__call__` costs about 0.2 ms of Python on eager PyTorch
(input conversion, autocast and name scopes, tree flattening, the
`torch.nn.Module` call), and each `keras.ops` call another 10-50 us of
checks and conversions: a few hundred of both per network forward, which
on an accelerator is most of a small stage's step (docs/SPEED.md). A
`Program` is made once per built functional network: its graph as a flat
list of steps, each running one layer as the same computation in
`torch.nn.functional` calls on the layer's own variables. Keras's semantics
are kept explicitly: a layer's floating inputs and variables are cast to
its compute dtype (Keras's autocast, so mixed precision gives Keras's
result), GroupNorm and attention logits stay in float32 as the layers
specify, and dropout in training draws through the Keras layer (same seed
stream). A layer without a kernel here runs through Keras's own
`__call__`, so any functional network still works. Gradients flow to the
variables' `torch.nn.Parameter`s as on Keras's path.

Only imported on the PyTorch backend (`keras_cdm.backend.run_network`).
"""

import math

import keras
import torch
import torch.nn.functional as F
from keras.src.backend.common.stateless_scope import in_stateless_scope

_DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
    "int32": torch.int32,
    "int64": torch.int64,
}


def torch_dtype(name):
    """The torch dtype of a Keras dtype name."""
    return _DTYPES[name]


def _dtype(layer):
    """The layer's compute dtype as a torch dtype (kept per policy object:
    Keras's `compute_dtype` property is a few microseconds per read)."""
    policy = layer._dtype_policy
    kept = layer.__dict__.get("_keras_cdm_dtype")
    if kept is None or kept[0] is not policy:
        kept = layer.__dict__["_keras_cdm_dtype"] = (policy, _DTYPES[policy.compute_dtype])
    return kept[1]


def _cast(x, dtype):
    """Keras's input autocast: floating tensors to the layer's compute dtype."""
    return x.to(dtype) if x.is_floating_point() and x.dtype != dtype else x


def _weight(variable, dtype):
    """A variable's `torch.nn.Parameter`, read as Keras's autocast reads it."""
    w = variable._value
    return w.to(dtype) if w.dtype != dtype else w


# ----------------------------------------------------------------------
# One function per layer type: (layer, input, training) -> output.
# ----------------------------------------------------------------------
def _same_padding(size, kernel, stride):
    """Keras's (TensorFlow's) "same" padding of one axis: (before, after)."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _conv_spec(layer):
    """`(plain, kernel size, strides)` of a convolution, read once: plain
    when this module computes it (no dilation or groups, NHWC, "same" or
    "valid" padding)."""
    spec = layer.__dict__.get("_keras_cdm_conv")
    if spec is None:
        plain = (
            tuple(layer.dilation_rate) == (1, 1)
            and layer.groups == 1
            and layer.data_format == "channels_last"
            and layer.padding in ("same", "valid")
        )
        spec = (plain, tuple(layer.kernel.shape[:2]), tuple(layer.strides))
        layer.__dict__["_keras_cdm_conv"] = spec
    return spec


def _conv(layer, x, training=None):
    dt = _dtype(layer)
    x = _cast(x, dt)
    plain, (kh, kw), (sh, sw) = _conv_spec(layer)
    if not plain or _altered(layer):
        return layer(x)
    w = _weight(layer.kernel, dt).permute(3, 2, 0, 1)
    b = _weight(layer.bias, dt) if layer.use_bias else None
    # The NCHW view of NHWC memory: PyTorch's kernels take it as it is.
    x = x.permute(0, 3, 1, 2)
    pad = (0, 0)
    if layer.padding == "same":
        top, bottom = _same_padding(x.shape[2], kh, sh)
        left, right = _same_padding(x.shape[3], kw, sw)
        if top == bottom and left == right:
            pad = (top, left)
        else:
            x = F.pad(x, (left, right, top, bottom))
    y = F.conv2d(x, w, b, stride=(sh, sw), padding=pad).permute(0, 2, 3, 1)
    return y if layer.activation is None else _activation(layer.activation, y)


def _group_norm(layer, x, training=None):
    dt = _dtype(layer)
    x = _cast(x, dt)
    if x.device.type == "cpu" and layer.groups == x.shape[-1]:
        return _channel_stats_group_norm(layer, x, dt)
    y = F.group_norm(
        x.permute(0, 3, 1, 2),
        layer.groups,
        _weight(layer.gamma, dt),
        _weight(layer.beta, dt),
        layer.epsilon,
    )
    return y.permute(0, 2, 3, 1)


def _channel_stats_group_norm(layer, x, dt):
    """GroupNorm from per-channel statistics over (h, w), combined per
    group, then one per-channel scale and shift (as GroupNorm32's JAX path;
    variance `E[x**2] - E[x]**2` clamped at 0). On a CPU, PyTorch's
    channels-last GroupNorm backward is 1.6-3x slower with one channel per
    group (the tiny presets' 64x64 levels) than this, whose reductions and
    products vectorise over the channels (`docs/SPEED.md`)."""
    b, c, groups = x.shape[0], x.shape[-1], layer.groups
    mean = x.mean(dim=(1, 2)).view(b, groups, c // groups).mean(-1, keepdim=True)
    square = (x * x).mean(dim=(1, 2)).view(b, groups, c // groups).mean(-1, keepdim=True)
    inv = torch.rsqrt((square - mean * mean).clamp_min(0.0) + layer.epsilon)
    gamma = _weight(layer.gamma, dt).view(1, groups, c // groups)
    scale = (inv * gamma).view(b, c)
    shift = _weight(layer.beta, dt) - (mean * inv * gamma).view(b, c)
    return x * scale[:, None, None, :] + shift[:, None, None, :]


def _activation(fn, x):
    if fn is keras.activations.silu:
        return F.silu(x)
    if fn is keras.activations.linear:
        return x
    return fn(x)


def _altered(layer):
    """LoRA or quantization (possibly enabled after the program was made):
    the layer's variables then mean something else; Keras's call then."""
    return getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None)


def _dense(layer, x, training=None):
    if _altered(layer):
        return layer(x)
    dt = _dtype(layer)
    x = _cast(x, dt)
    b = _weight(layer.bias, dt) if layer.use_bias else None
    y = F.linear(x, _weight(layer.kernel, dt).t(), b)
    return _activation(layer.activation, y)


def _embedding(layer, ids, training=None):
    if _altered(layer):
        return layer(ids)
    return _weight(layer.embeddings, _dtype(layer))[ids.long()]


def _add(layer, inputs, training=None):
    dt = _dtype(layer)
    out = _cast(inputs[0], dt)
    for x in inputs[1:]:
        out = out + _cast(x, dt)
    return out


def _concatenate(layer, inputs, training=None):
    dt = _dtype(layer)
    return torch.cat([_cast(x, dt) for x in inputs], dim=layer.axis)


def _activation_layer(layer, x, training=None):
    return _activation(layer.activation, _cast(x, _dtype(layer)))


def _upsample_nearest(x):
    return x.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)


def _average_pool(x):
    return F.avg_pool2d(x.permute(0, 3, 1, 2), 2, 2).permute(0, 2, 3, 1)


def _upsample(layer, x, training=None):
    x = _upsample_nearest(_cast(x, _dtype(layer)))
    return _conv(layer.conv, x) if layer.conv is not None else x


def _downsample(layer, x, training=None):
    x = _cast(x, _dtype(layer))
    return _conv(layer.conv, x) if layer.conv is not None else _average_pool(x)


def _timestep_embedding(layer, t, training=None):
    half = layer.frequency_dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(0, half, dtype=torch.float32, device=t.device) / half
    )
    args = t.reshape(-1, 1).to(torch.float32) * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if layer.frequency_dim % 2:
        emb = F.pad(emb, (0, 1))
    emb = emb.to(_dtype(layer))
    return _dense(layer.dense_2, _dense(layer.dense_1, emb))


def _residual_block(block, inputs, training=None):
    dt = _dtype(block)
    x, emb = (_cast(v, dt) for v in inputs)
    h = F.silu(_group_norm(block.norm_1, x).to(dt))
    if block.resample == "up":
        h, x = _upsample_nearest(h), _upsample_nearest(x)
    elif block.resample == "down":
        h, x = _average_pool(h), _average_pool(x)
    h = _conv(block.conv_1, h)
    emb_out = _dense(block.emb_proj, F.silu(emb))[:, None, None, :]
    if block.use_scale_shift_norm:
        scale, shift = emb_out.to(torch.float32).chunk(2, dim=-1)
        h = (_group_norm(block.norm_2, h) * (1.0 + scale) + shift).to(dt)
    else:
        h = _group_norm(block.norm_2, h + emb_out).to(dt)
    h = F.silu(h)
    if training and block.drop.rate > 0:
        h = block.drop(h, training=True)  # Keras's draw, from the layer's seed
    h = _conv(block.conv_2, h)
    skip = x if block.skip is None else _conv(block.skip, x)
    return skip + h


def _attention(block, x, training=None):
    dt = _dtype(block)
    x = _cast(x, dt)
    b, h, w, c = x.shape
    n, d = h * w, c // block.heads
    y = _group_norm(block.norm, x).to(dt)
    qkv = _dense(block.qkv, y.reshape(b, n, c)).reshape(b, n, 3, block.heads, d)
    # (batch, heads, tokens, head_dim), logits and softmax in float32.
    q, k, v = (qkv[:, :, i].to(torch.float32).transpose(1, 2) for i in range(3))
    out = F.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(d))
    out = out.transpose(1, 2).to(dt).reshape(b, n, c)
    return x + _dense(block.proj, out).reshape(b, h, w, c)


def _ops_only(layer, x, training=None):
    """A layer without variables whose `call` is `keras.ops` only."""
    return layer.call(_cast(x, _dtype(layer)))


def _keras_call(layer, inputs, training=None):
    """A layer without a kernel here: Keras's own `__call__`."""
    if training is not None and "training" in layer._call_signature.parameters:
        return layer(inputs, training=training)
    return layer(inputs)


# By exact class (a subclass may compute something else): keras_cdm's by
# their registered names (this bottom layer does not import the layers).
_KERNELS = {
    "keras_cdm>Conv2D": _conv,
    "keras_cdm>GroupNorm32": _group_norm,
    "keras_cdm>ResidualBlock": _residual_block,
    "keras_cdm>AttentionBlock": _attention,
    "keras_cdm>TimestepEmbedding": _timestep_embedding,
    "keras_cdm>Upsample": _upsample,
    "keras_cdm>Downsample": _downsample,
    "keras_cdm>UpsampleConditioning": _ops_only,
    keras.layers.Dense: _dense,
    keras.layers.Embedding: _embedding,
    keras.layers.Add: _add,
    keras.layers.Concatenate: _concatenate,
    keras.layers.Activation: _activation_layer,
}


def _kernel(layer):
    kernel = _KERNELS.get(type(layer))
    if kernel is None:
        kernel = _KERNELS.get(keras.saving.get_registered_name(type(layer)), _keras_call)
    if kernel is _embedding and layer.mask_zero:
        return _keras_call
    return kernel


class Program:
    """A built functional network as a list of steps over numbered slots:
    `(kernel, layer, input slots, whether the inputs are a list, output
    slot)`, in the order Keras's `Functional` runs its nodes. `None` from
    `Program.of` where the graph has a shape this does not cover (a node
    with keyword tensors or several outputs)."""

    def __init__(self, input_keys, steps, output_slot, size):
        self.input_keys = input_keys
        self.steps = steps
        self.output_slot = output_slot
        self.size = size

    @classmethod
    def of(cls, network):
        if "_keras_cdm_program" not in network.__dict__:
            network.__dict__["_keras_cdm_program"] = cls._build(network)
        return network.__dict__["_keras_cdm_program"]

    @classmethod
    def _build(cls, network):
        struct = network._inputs_struct
        if not isinstance(struct, dict) or len(network.outputs) != 1:
            return None
        keys = sorted(struct)
        if [id(struct[k]) for k in keys] != [id(x) for x in network.inputs]:
            return None
        slots = {id(x): i for i, x in enumerate(network.inputs)}
        steps = []
        for depth in sorted(network._nodes_by_depth, reverse=True):
            for node in network._nodes_by_depth[depth]:
                if not node.operation or node.is_input:
                    continue
                args = node.arguments
                if args.kwargs or len(args.args) != 1 or len(node.outputs) != 1:
                    return None
                arg = args.args[0]
                listed = isinstance(arg, (list, tuple))
                tensors = list(arg) if listed else [arg]
                if any(id(x) not in slots for x in tensors):
                    return None
                slots[id(node.outputs[0])] = len(slots)
                ins = tuple(slots[id(x)] for x in tensors)
                layer = node.operation
                steps.append((_kernel(layer), layer, ins, listed, slots[id(node.outputs[0])]))
        out = slots.get(id(network.outputs[0]))
        if out is None:
            return None
        return cls(keys, steps, out, len(slots))

    def __call__(self, inputs, training=None):
        """Runs the network on its inputs, a list in `network.inputs` order
        (as `Functional._standardize_inputs` returns them)."""
        values = list(inputs) + [None] * (self.size - len(inputs))
        for kernel, layer, ins, listed, out in self.steps:
            if listed:
                values[out] = kernel(layer, [values[i] for i in ins], training)
            else:
                values[out] = kernel(layer, values[ins[0]], training)
        return values[self.output_slot]


def runnable(inputs):
    """Whether these inputs can take the program: concrete tensors, not the
    meta-device stand-ins of Keras's symbolic calls, outside a stateless
    scope (whose variable values the program would not read)."""
    if in_stateless_scope():
        return False
    return all(isinstance(x, torch.Tensor) and x.device.type != "meta" for x in inputs)
