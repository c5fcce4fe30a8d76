"""Argument checks shared by every layer of keras_cdm, each failing with
Keras's `ValueError("... Received: name=value")`."""

import numbers


def check_positive_int(name, value, allow_none=False):
    """Returns `value` after checking it is an int > 0 (or None if allowed)."""
    if value is None and allow_none:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        expected = "a positive int or None" if allow_none else "a positive int"
        raise ValueError(f"`{name}` must be {expected}. Received: {name}={value!r}")
    return int(value)


def per_stage(name, value, num_stages):
    """`value` as a list of one value per stage: a list or tuple must hold
    exactly `num_stages` values; anything else is repeated. The one rule
    behind every "one value or one per stage" argument and flag (`name`:
    an argument, or a flag such as `"--num_steps"`)."""
    if isinstance(value, (list, tuple)):
        if len(value) != num_stages:
            label = name if name.startswith("-") else f"`{name}`"
            raise ValueError(
                f"{label} takes one value or one per stage ({num_stages}). "
                f"Received: {len(value)} values {list(value)}"
            )
        return list(value)
    return [value] * num_stages
