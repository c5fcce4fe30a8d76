"""keras_cdm.backend's random draws: Keras semantics on every backend."""

import keras
import numpy as np
from conftest import to_numpy

from keras_cdm.backend import compile_stateful
from keras_cdm.backend import random_normal
from keras_cdm.backend import random_uniform


def test_random_normal_statistics_and_seeding():
    seed = keras.random.SeedGenerator(3)
    a = to_numpy(random_normal((20000,), seed=seed))
    b = to_numpy(random_normal((20000,), seed=seed))
    assert not np.allclose(a, b)  # the generator advances
    again = to_numpy(random_normal((20000,), seed=keras.random.SeedGenerator(3)))
    np.testing.assert_array_equal(a, again)
    assert abs(a.mean()) < 0.03 and abs(a.std() - 1.0) < 0.03
    shifted = to_numpy(random_normal((20000,), mean=2.0, stddev=0.5, seed=seed))
    assert abs(shifted.mean() - 2.0) < 0.02 and abs(shifted.std() - 0.5) < 0.02


def test_random_uniform_range_and_compiled_state():
    seed = keras.random.SeedGenerator(0)
    draw = compile_stateful(
        lambda: random_uniform((20000,), minval=-2.0, maxval=4.0, seed=seed), [], [seed.state]
    )
    u1, u2 = to_numpy(draw()), to_numpy(draw())
    assert not np.allclose(u1, u2)  # the compiled draw writes the seed state back
    for u in (u1, u2):
        assert u.min() >= -2.0 and u.max() < 4.0
        assert abs(u.mean() - 1.0) < 0.05
