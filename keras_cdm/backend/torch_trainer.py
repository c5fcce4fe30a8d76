"""A leaner PyTorch training step for keras_cdm's models.

Keras's PyTorch `train_step` (keras/src/backend/torch/trainer.py) calls the
model on the batch, zeroes the gradients through `torch.nn.Module`'s walk
of every submodule and reads `model.trainable_weights` twice, each read a
walk of every layer: about a fifth of a small stage's step on eager
PyTorch (docs/SPEED.md). keras_cdm's models do all their work in
`compute_loss` (their `call` returns a raw batch unchanged), so this step
is Keras's without the call, with the trainable weights read once per
`fit` and their gradients cleared directly. Keras's PyTorch Adam reads
every weight and slot through `Variable.value` (~7 us each, ~900 per step
for a small U-Net); plain Adam (no clipping, weight decay, EMA, gradient
accumulation, loss scaling or AMSGrad) runs here as the same
`torch._foreach` update on the variables' tensors, listed once per `fit`.
Everything else (loss tracker, loss scaling, other optimizers, metrics) is
Keras's own.

Only imported on the PyTorch backend (`keras_cdm.backend.train_step`).
"""

import keras
import torch


def trainable_weights(model):
    """`model.trainable_weights`, read once per `fit` (`forget`)."""
    weights = model.__dict__.get("_keras_cdm_trainable")
    if weights is None:
        # (In __dict__: Keras would track a list set as an attribute.)
        weights = model.__dict__["_keras_cdm_trainable"] = model.trainable_weights[:]
    return weights


def losses(model):
    """`model.losses` (`add_loss` and weight regularizers) from the layers
    and regularized weights listed once per `fit`, not walked every step."""
    listed = model.__dict__.get("_keras_cdm_loss_sources")
    if listed is None:
        layers = list(model._flatten_layers(include_self=True))
        regularized = [v for v in trainable_weights(model) if v.regularizer is not None]
        listed = model.__dict__["_keras_cdm_loss_sources"] = (layers, regularized)
    layers, regularized = listed
    found = [loss for layer in layers for loss in layer._losses]
    return found + [v.regularizer(v) for v in regularized]


def forget(model):
    """Reads the weights and layers again at the next step (a new `fit`)."""
    model.__dict__.pop("_keras_cdm_trainable", None)
    model.__dict__.pop("_keras_cdm_loss_sources", None)
    if model.optimizer is not None:
        model.optimizer.__dict__.pop("_keras_cdm_adam_slots", None)


def _plain_adam(optimizer):
    return (
        type(optimizer).__module__ == "keras.src.backend.torch.optimizers.torch_adam"
        and type(optimizer).__name__ == "Adam"
        and optimizer.built
        and not optimizer.amsgrad
        and optimizer.clipnorm is None
        and optimizer.clipvalue is None
        and optimizer.global_clipnorm is None
        and not optimizer.weight_decay
        and not optimizer.use_ema
        and not optimizer.gradient_accumulation_steps
        and optimizer.loss_scale_factor is None
    )


def _apply_adam(optimizer, grads, weights, params):
    """Keras's PyTorch Adam update (keras/src/backend/torch/optimizers/
    torch_adam.py), the same operations in the same order, on the tensors
    behind the variables; False where it does not apply (then Keras's)."""
    if not _plain_adam(optimizer) or any(g is None for g in grads):
        return False
    slots = optimizer.__dict__.get("_keras_cdm_adam_slots")
    if slots is None or slots[0] is not weights:
        index = [optimizer._get_variable_index(v) for v in weights]
        m = [optimizer._momentums[i]._value for i in index]
        v = [optimizer._velocities[i]._value for i in index]
        slots = optimizer.__dict__["_keras_cdm_adam_slots"] = (weights, m, v)
    _, m_list, v_list = slots
    dtype = params[0].dtype
    lr = optimizer.learning_rate
    lr = (lr.value if hasattr(lr, "value") else torch.as_tensor(lr)).to(dtype)
    local_step = (optimizer.iterations.value + 1).to(dtype)
    beta_1, beta_2 = optimizer.beta_1, optimizer.beta_2
    beta_1_power = torch.pow(torch.tensor(beta_1, dtype=dtype), local_step)
    beta_2_power = torch.pow(torch.tensor(beta_2, dtype=dtype), local_step)
    alpha = lr * torch.sqrt(1 - beta_2_power) / (1 - beta_1_power)
    torch._foreach_mul_(m_list, beta_1)
    torch._foreach_add_(m_list, grads, alpha=1 - beta_1)
    torch._foreach_mul_(v_list, beta_2)
    torch._foreach_add_(v_list, torch._foreach_mul(grads, grads), alpha=1 - beta_2)
    torch._foreach_add_(
        params,
        torch._foreach_div(
            torch._foreach_mul(m_list, alpha),
            torch._foreach_add(torch._foreach_sqrt(v_list), optimizer.epsilon),
        ),
        alpha=-1,
    )
    optimizer.iterations.assign_add(1)
    return True


def train_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    weights = trainable_weights(model)
    params = [v._value for v in weights]  # the torch.nn.Parameters
    for p in params:
        p.grad = None
    loss = model._compute_loss(x=x, y=y, y_pred=x, sample_weight=sample_weight, training=True)
    first = next(i for i in keras.tree.flatten(x) if i is not None)
    model._loss_tracker.update_state(loss, sample_weight=first.shape[0])
    if model.optimizer is not None:
        loss = model.optimizer.scale_loss(loss)
    if weights:
        loss.backward()
        grads = [p.grad for p in params]
        with torch.no_grad():
            if not _apply_adam(model.optimizer, grads, weights, params):
                model.optimizer.apply(grads, weights)
    return model.compute_metrics(x, y, x, sample_weight=sample_weight)
