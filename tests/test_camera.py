"""Camera statistics against theory (DESIGN §4.2)."""

import pytest
import torch

from deepsmlm.camera import Camera, _gamma
from deepsmlm.config import CAMERA_PRESETS

EMCCD = Camera(**CAMERA_PRESETS["emccd-smlm2016"])


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("photons", [0.5, 20.0, 300.0])
def test_emccd_mean_and_variance_with_excess_factor_two(photons):
    s = torch.full((400_000,), photons)
    e = EMCCD.electrons(s, gen())
    lam = 0.9 * photons + 0.002
    assert float(e.mean()) == pytest.approx(300 * lam, rel=0.01)
    assert float(e.var()) == pytest.approx(2 * 300 ** 2 * lam + 74.4 ** 2, rel=0.02)
    assert float(EMCCD.var_electrons(torch.tensor(photons))) == pytest.approx(
        2 * 300 ** 2 * lam + 74.4 ** 2)


def test_ideal_camera_is_poisson():
    cam = Camera(**CAMERA_PRESETS["ideal"])
    adu = cam(torch.full((200_000,), 7.3), gen(1))
    assert torch.all(adu == adu.round())
    assert float(adu.mean()) == pytest.approx(7.3, rel=0.01)
    assert float(adu.var()) == pytest.approx(7.3, rel=0.02)


def test_scmos_read_noise_and_gain():
    cam = Camera(**CAMERA_PRESETS["scmos"])
    e = cam.electrons(torch.full((200_000,), 50.0), gen(2))
    assert float(e.var()) == pytest.approx(0.8 * 50 + 1.6 ** 2, rel=0.02)  # F = 1


def test_adu_mean_and_inverse():
    s = torch.full((400_000,), 40.0)
    adu = EMCCD(s, gen(3))
    # floor of a continuous value: mean ADU = mean e⁻/(e⁻/ADU) + baseline − ½
    expected = 300 * (0.9 * 40 + 0.002) / 45 + 100 - 0.5
    assert float(adu.mean()) == pytest.approx(expected, rel=0.005)
    back = EMCCD.to_photons(adu).mean()
    assert float(back) == pytest.approx(40.0, rel=0.01)  # within the ½-ADU quantisation bias


def test_clipping_to_bit_depth():
    cam = Camera(qe=1.0, em_gain=1.0, e_per_adu=1.0, baseline_adu=10.0, bit_depth=8)
    adu = cam(torch.tensor([0.0, 1e6]), gen())
    assert adu.tolist() == [10.0, 255.0]


def test_differentiable_path_moments_and_gradient():
    s = torch.full((200_000,), 25.0, requires_grad=True)
    adu = EMCCD.sample_differentiable(s, gen(4))
    mean_e = 300 * (0.9 * 25 + 0.002)
    adu = adu.detach()
    assert float(adu.mean()) == pytest.approx(mean_e / 45 + 100, rel=0.01)
    var_adu = (2 * 300 ** 2 * (0.9 * 25 + 0.002) + 74.4 ** 2) / 45 ** 2
    assert float(adu.var()) == pytest.approx(var_adu, rel=0.02)
    EMCCD.sample_differentiable(s, gen(4)).sum().backward()
    assert torch.all(torch.isfinite(s.grad)) and float(s.grad.mean()) == pytest.approx(
        300 * 0.9 / 45, rel=0.05)


def test_gamma_sampler_moments_and_zero_shape():
    k = torch.tensor([0.0, 0.3, 1.0, 5.0, 80.0]).repeat_interleave(100_000)
    g = _gamma(k, 2.0, gen(5)).view(5, -1)
    assert torch.all(g[0] == 0)
    for i, shape in enumerate([0.3, 1.0, 5.0, 80.0], start=1):
        assert float(g[i].mean()) == pytest.approx(2 * shape, rel=0.02)
        assert float(g[i].var()) == pytest.approx(4 * shape, rel=0.04)


def test_same_seed_same_noise():
    s = torch.full((1000,), 12.0)
    assert torch.equal(EMCCD(s, gen(7)), EMCCD(s, gen(7)))
    assert not torch.equal(EMCCD(s, gen(7)), EMCCD(s, gen(8)))
