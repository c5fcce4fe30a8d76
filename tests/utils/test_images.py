"""keras_cdm.utils.images: grids, with class names beside their rows."""

import numpy as np
import pytest
from PIL import Image

from keras_cdm.utils.images import make_grid
from keras_cdm.utils.images import save_class_grid


def test_class_grid_rows_carry_their_names(tmp_path):
    images = np.zeros((4, 16, 16, 3), "uint8")  # black samples
    plain = make_grid([[images[0], images[1]], [images[2], images[3]]])
    named = np.asarray(
        Image.open(
            save_class_grid(
                str(tmp_path / "g.png"), images, [0, 0, 2, 2], class_names=["cat", "dog", "owl"]
            )
        )
    )
    margin = named.shape[1] - plain.shape[1]
    assert named.shape[0] == plain.shape[0] and margin > 10
    np.testing.assert_array_equal(named[:, margin:], plain)  # the samples are untouched
    # Text in the margin of each row (rows of 16 px after 2 px of padding).
    for row in range(2):
        band = named[2 + row * 18 : 2 + row * 18 + 16, :margin]
        assert (band < 128).any(), f"row {row} has no label"
    with pytest.raises(ValueError, match=r"one row label per row \(2\)"):
        make_grid([[images[0]], [images[1]]], row_labels=["x"])
