"""Train the base16 stage of a cascade.

    KERAS_BACKEND=jax python recipes/train_base16.py --preset tiny --dataset synthetic

Flags: see `recipes/common.py` (`--help`). `--smoke` runs the same path in seconds.
"""

from common import main

if __name__ == "__main__":
    main("base16")
