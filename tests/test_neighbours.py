"""neighbours.pairs_within against the pairs written out."""

import numpy as np
import pytest

from deepsmlm.neighbours import pairs_within


def _brute(fa, a, fb, b, radius):
    out = set()
    for i in range(len(a)):
        for j in range(len(b)):
            if fa[i] == fb[j] and np.hypot(*(a[i] - b[j])) <= radius:
                out.add((i, j))
    return out


@pytest.mark.parametrize("radius", [0.0, 1.0, 2.5, 40.0])
def test_pairs_within_equal_the_pairs_written_out(radius):
    rng = np.random.default_rng(1)
    # negative coordinates, frames far apart in number, points on a grid (distances equal
    # to the radius occur), one point at NaN
    fa, fb = rng.choice([-3, 0, 7, 10**6], 120), rng.choice([-3, 0, 7, 10**6], 90)
    a = rng.integers(-10, 10, (120, 2)) * 0.5
    b = rng.integers(-10, 10, (90, 2)) * 0.5
    a[5] = np.nan
    i, j, d = pairs_within(fa, a, fb, b, radius)
    assert set(zip(i.tolist(), j.tolist())) == _brute(fa, a, fb, b, radius)
    assert len(set(zip(i.tolist(), j.tolist()))) == len(i)  # each pair once
    assert np.allclose(d, np.hypot(*(a[i] - b[j]).T))


def test_pairs_within_handles_empty_sides_and_rejects_a_bad_radius():
    i, j, d = pairs_within(np.zeros(0, int), np.zeros((0, 2)), [0], [[1.0, 2.0]], 3.0)
    assert len(i) == len(j) == len(d) == 0
    with pytest.raises(ValueError, match="radius"):
        pairs_within([0], [[0.0, 0.0]], [0], [[0.0, 0.0]], np.inf)
