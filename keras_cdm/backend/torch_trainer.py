"""A leaner PyTorch training step for keras_cdm's models.

Keras's PyTorch `train_step` (keras/src/backend/torch/trainer.py) calls the
model on the batch, zeroes the gradients through `torch.nn.Module`'s walk
of every submodule and reads `model.trainable_weights` twice, each read a
walk of every layer: about a fifth of a small stage's step on eager
PyTorch (docs/SPEED.md). keras_cdm's models do all their work in
`compute_loss` (their `call` returns a raw batch unchanged), so this step
is Keras's without the call, with the trainable weights read once per
`fit` and their gradients cleared directly. Everything else (loss tracker,
loss scaling, optimizer, metrics) is Keras's own.

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
        with torch.no_grad():
            model.optimizer.apply([p.grad for p in params], weights)
    return model.compute_metrics(x, y, x, sample_weight=sample_weight)
