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
