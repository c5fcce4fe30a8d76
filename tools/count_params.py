"""Prints the parameter count of every network preset.

    python tools/count_params.py [--tiny]

Networks are built on the abstract level (no weights are run), so even the
paper presets count in seconds.
"""

import sys

import keras_cdm  # noqa: E402
from keras_cdm.networks.architectures import ARCHITECTURES  # noqa: E402


def main(argv):
    show_small = "--tiny" in argv
    for name in sorted(ARCHITECTURES):
        if name.endswith(("_tiny", "_small")) != show_small:
            continue
        cls = getattr(keras_cdm, ARCHITECTURES[name]["class_name"])
        net = cls.from_preset(name)
        print(f"{name:20s} {net.count_params():>14,d}")


if __name__ == "__main__":
    main(sys.argv[1:])
