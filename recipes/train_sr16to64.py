"""Train the sr16to64 stage of a cascade.

    KERAS_BACKEND=jax python recipes/train_sr16to64.py --preset tiny --dataset synthetic

Flags: `--help` (defined in `recipes/recipe_flags.py`). `--smoke` runs the same path in seconds.
"""

from common import main

if __name__ == "__main__":
    main("sr16to64")
