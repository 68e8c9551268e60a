import math

import pytest
import torch

from deepsmlm.optics.pupil import PupilGrid
from deepsmlm.optics.zernike import noll_to_nm, zernike_basis


def test_noll_table():
    expected = {1: (0, 0), 2: (1, 1), 3: (1, -1), 4: (2, 0), 5: (2, -2), 6: (2, 2),
                7: (3, -1), 8: (3, 1), 9: (3, -3), 10: (3, 3), 11: (4, 0), 12: (4, 2),
                13: (4, -2), 22: (6, 0)}
    for j, nm in expected.items():
        assert noll_to_nm(j) == nm, j
    with pytest.raises(ValueError):
        noll_to_nm(0)


def test_orthonormal_on_the_disk():
    grid = PupilGrid(256, 600.0, 1.0)
    rho, theta = grid.polar()
    inside = rho <= 1
    basis = zernike_basis(list(range(1, 16)), rho, theta)[:, inside]
    gram = basis @ basis.T / inside.sum()
    assert torch.allclose(gram, torch.eye(15, dtype=gram.dtype), atol=0.03)


def test_defocus_formula():
    rho = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    z4 = zernike_basis([4], rho, torch.zeros(3, dtype=torch.float64))[0]
    assert torch.allclose(z4, math.sqrt(3) * (2 * rho ** 2 - 1))
