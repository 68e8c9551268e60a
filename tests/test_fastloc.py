"""fastloc, the camera-resolution localizer: decoding, the mixture loss, its σ."""

import math

import numpy as np
import pytest
import torch

from deepsmlm import methods
from deepsmlm.emitters import EmitterSet
from deepsmlm.methods.base import Scene
from deepsmlm.models.fastloc import channels
from deepsmlm.training.model_folder import ModelCard

SCENE = Scene(100.0, (-500.0, 500.0), 4000.0, 20.0)
FL = methods.get("fastloc")


def inverse(name: str, value: float) -> float:
    """The raw value whose activation is ``value``."""
    if name in ("dx", "dy", "z"):
        return math.atanh(value)
    if name in ("p", "n", "bg"):
        return math.log(value / (1 - value))
    return math.log(math.expm1(value - 1e-3))  # σ


def card(localize_z: bool) -> ModelCard:
    t = FL.section.model_validate({"model": "fastloc", "localize_z": localize_z})
    return ModelCard("fastloc", 100.0, 1, {}, FL.card_settings(t, SCENE), threshold=0.5)


def hand_made(localize_z: bool) -> torch.Tensor:
    """Two frames 16×16: frame 0 holds an emitter at pixel (row 4, col 6) whose probability
    spreads over two pixels (0.55 + 0.4), frame 1 one at (10, 3) with p = 0.9."""
    names = channels(localize_z)
    raw = torch.full((2, len(names), 16, 16), 0.0)
    raw[:, 0] = inverse("p", 1e-4)
    for i, n in enumerate(names):
        if n.startswith("s_"):
            raw[:, i] = inverse("s", 0.1)
    p, dx, dy, z, n = (names.index(k) if k in names else None
                       for k in ("p", "dx", "dy", "z", "n"))
    raw[0, p, 4, 6], raw[0, p, 4, 7] = inverse("p", 0.55), inverse("p", 0.4)
    raw[0, dx, 4, 6], raw[0, dy, 4, 6] = inverse("dx", 0.3), inverse("dy", -0.2)
    raw[0, n, 4, 6] = inverse("n", 0.5)
    raw[1, p, 10, 3] = inverse("p", 0.9)
    raw[1, dx, 10, 3], raw[1, dy, 10, 3] = inverse("dx", -0.4), inverse("dy", 0.1)
    raw[1, n, 10, 3] = inverse("n", 0.25)
    if localize_z:
        raw[0, z, 4, 6], raw[1, z, 10, 3] = inverse("z", 0.5), inverse("z", -0.2)
    return raw


@pytest.mark.parametrize("localize_z", [False, True])
def test_decoding_a_hand_made_output(localize_z):
    c = card(localize_z)
    em = FL.decode(c, hand_made(localize_z), threshold=0.5, frame_offset=10)
    assert len(em) == 2  # the split probability gives one emitter, not two
    order = torch.argsort(em.frame)
    xyz, frame = em.xyz_nm[order].numpy(), em.frame[order].numpy()
    assert frame.tolist() == [10, 11]
    assert xyz[0, :2] == pytest.approx([(6 + 0.5 + 0.3) * 100, (4 + 0.5 - 0.2) * 100], abs=1e-3)
    assert xyz[1, :2] == pytest.approx([(3 + 0.5 - 0.4) * 100, (10 + 0.5 + 0.1) * 100], abs=1e-3)
    scale = c.settings["photon_scale"]
    assert em.photons[order].numpy() == pytest.approx([0.5 * scale, 0.25 * scale], rel=1e-4)
    sig = em.uncertainty_xyz_nm[order].numpy()
    assert sig[:, :2] == pytest.approx(np.full((2, 2), 10.0), rel=1e-3)  # 0.1 px
    if localize_z:  # z over [-500, 500]: mid 0, half-range 500
        assert xyz[:, 2] == pytest.approx([250.0, -100.0], abs=1e-2)
        assert sig[:, 2] == pytest.approx([50.0, 50.0], rel=1e-3)
    else:
        assert np.all(xyz[:, 2] == 0) and np.all(np.isnan(sig[:, 2]))
    # a threshold above the summed probability (0.95) drops the first emitter only
    assert len(FL.decode(c, hand_made(localize_z), threshold=0.93)) == 1


def test_encoding_lists_each_frames_emitters_in_normalised_units():
    t = FL.section.model_validate({"model": "fastloc", "localize_z": True})
    enc = FL.encoder(t, SCENE)
    em = EmitterSet(torch.tensor([[150.0, 250.0, 250.0], [50.0, 50.0, -500.0],
                                  [1000.0, 20.0, 0.0]]),
                    torch.tensor([1000.0, 2000.0, 5000.0]), torch.tensor([1, 0, 1]))
    y = enc(em, 3, 16, torch.full((3, 16, 16), 10.0))
    assert y["truth"].shape == (3, 2, 4) and y["mask"].sum(1).tolist() == [1, 2, 0]
    scale = FL.card_settings(t, SCENE)["photon_scale"]
    assert y["truth"][0, 0].tolist() == pytest.approx([0.5, 0.5, -1.0, 2000 / scale])
    assert y["truth"][1, 0].tolist() == pytest.approx([1.5, 2.5, 0.5, 1000 / scale])
    assert y["background"].max() == pytest.approx(10.0 / 30.0)


def test_the_loss_is_lowest_at_the_true_positions():
    """The same output map scores better when its means sit on the emitters."""
    t = FL.section.model_validate({"model": "fastloc", "background_weight": 0.0})
    loss = FL.loss(t)
    enc = FL.encoder(t, SCENE)
    em = EmitterSet(torch.tensor([[650.0, 430.0, 0.0], [330.0, 1050.0, 0.0]]),
                    torch.tensor([2000.0, 1000.0]), torch.tensor([0, 1]))
    targets = enc(em, 2, 16, None)
    raw = hand_made(False)  # emitters predicted at (6.8, 4.3) and (3.1, 10.6) px
    scale = FL.card_settings(t, SCENE)["photon_scale"]
    raw[0, 3, 4, 6] = inverse("n", 2000 / scale)
    raw[1, 3, 10, 3] = inverse("n", 1000 / scale)
    at_truth = float(loss(raw, targets))
    for shift in (20.0, 50.0):
        moved = EmitterSet(em.xyz_nm + torch.tensor([shift, -shift, 0.0]), em.photons, em.frame)
        assert float(loss(raw, enc(moved, 2, 16, None))) > at_truth
    # one emitter too many or too few costs through the count term
    extra = EmitterSet(torch.cat([em.xyz_nm, torch.tensor([[900.0, 900.0, 0.0]])]),
                       torch.tensor([2000.0, 1000.0, 1500.0]), torch.tensor([0, 1, 1]))
    assert float(loss(raw, enc(extra, 2, 16, None))) > at_truth + 1.0


def test_gradients_reach_every_output_channel():
    t = FL.section.model_validate({"model": "fastloc", "localize_z": True})
    em = EmitterSet(torch.tensor([[640.0, 445.0, 100.0]]), torch.tensor([2000.0]),
                    torch.tensor([0]))
    raw = hand_made(True).requires_grad_(True)
    FL.loss(t)(raw, FL.encoder(t, SCENE)(em, 2, 16, torch.full((2, 16, 16), 10.0))).backward()
    assert torch.all(raw.grad.abs().sum(dim=(0, 2, 3)) > 0)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A few hundred steps on bright and dim emitters alike (photons 300–6000)."""
    from deepsmlm.config import experiment_from_dict
    from deepsmlm.training.train import train

    exp = experiment_from_dict({
        "frame": {"height_px": 24, "width_px": 24},
        "optics": {"psf": "gaussian", "pixel_size_nm": 100},
        "emitters": {"n_per_frame": [1, 3], "photons": {"lo": 300, "hi": 6000}},
        "background": {"photons_per_px": [10, 10]},
        "training": {"model": "fastloc", "width": 8, "patch_px": 16, "batch_size": 16,
                     "steps_per_epoch": 60, "max_epochs": 5, "learning_rate": 3e-3,
                     "val_frames": 32, "seed": 0}})
    folder = tmp_path_factory.mktemp("fl") / "m"
    card = train(exp, folder, progress=False)
    return exp, folder, card


def test_predicted_sigma_grows_when_photons_fall(tiny_model):
    import dataclasses

    from deepsmlm.api import simulate
    from deepsmlm.config import experiment_from_dict
    from deepsmlm.inference import Predictor

    exp, folder, card = tiny_model
    pred = Predictor.load(folder)
    assert "sigma_calibration" in pred.card.settings
    # the network's own σ, and σ as reported (calibrated on the validation errors)
    own = dataclasses.replace(pred.card, settings={
        k: v for k, v in pred.card.settings.items() if k != "sigma_calibration"})
    sig = {"own": {}, "reported": {}}
    for photons in (800.0, 6000.0):
        d = exp.to_dict()
        d["emitters"]["photons"] = {"distribution": "constant", "mean": photons}
        movie = simulate(experiment_from_dict(d), 40, seed=5)
        raw = pred.super_resolve(torch.from_numpy(movie.frames_adu.astype(np.float32)))
        for name, c in (("own", own), ("reported", pred.card)):
            em = pred.method.decode(c, raw, 0.2)
            assert len(em) > 40  # of ≈ 80 emitters
            sig[name][photons] = float(em.uncertainty_xyz_nm[:, :2].median())
    # σ ∝ 1/√photons: ≈ 2.7× for a perfect model; the calibration keeps the direction (a
    # tiny model's errors at 6000 photons are partly its own bias, not photon noise)
    assert sig["own"][800.0] > 1.5 * sig["own"][6000.0]
    assert sig["reported"][800.0] > 1.2 * sig["reported"][6000.0]


def test_neighbour_aware_suppression_keeps_the_stronger_of_a_close_pair():
    from deepsmlm.postprocess import suppress_close

    frame = torch.tensor([0, 0, 0, 1, 1])
    xy = torch.tensor([[10.0, 10.0], [10.5, 10.2], [14.0, 10.0], [10.4, 10.0], [10.0, 10.0]])
    score = torch.tensor([0.6, 0.9, 0.8, 0.5, 0.7])
    keep = suppress_close(frame, xy, score, radius=1.0)
    # frame 0: 0 and 1 are 0.54 apart → the weaker (0) goes; 2 is 4 away; frame 1: 3 goes
    assert keep.tolist() == [False, True, True, False, True]
    # a chain a–b–c (each 0.8 apart, a and c 1.6 apart): a strongest removes b, keeps c
    keep = suppress_close(torch.zeros(3, dtype=torch.long),
                          torch.tensor([[0.0, 0.0], [0.8, 0.0], [1.6, 0.0]]),
                          torch.tensor([0.9, 0.8, 0.7]), radius=1.0)
    assert keep.tolist() == [True, False, True]


def spots_map(values: dict) -> torch.Tensor:
    """A probability map (1, 20, 20) of 1e-4 with the given {(row, col): p}."""
    p = torch.full((1, 20, 20), 1e-4)
    for (r, c), v in values.items():
        p[0, r, c] = v
    return p


def test_mass_accounting_merges_one_wide_spot_and_keeps_a_real_pair():
    from deepsmlm.postprocess import claim_mass, pixel_detections

    def scores(p):
        idx, score = pixel_detections(p, 0.05, certain=0.99)
        return idx, claim_mass(p, idx[:, 0], idx[:, 1], idx[:, 2], score, 2)

    # one wide spot, probability 0.95 in all, with two maxima two pixels apart: the weaker
    # maximum has nothing left once the stronger takes one emitter's worth
    idx, s = scores(spots_map({(10, 10): 0.4, (10, 11): 0.1, (10, 12): 0.35, (10, 13): 0.1}))
    assert len(idx) == 2 and sorted(s.tolist()) == pytest.approx([0.0, 0.55], abs=1e-3)
    # two emitters side by side (1.7 in all): the second keeps what the first leaves
    idx, s = scores(spots_map({(10, 10): 0.8, (10, 11): 0.1, (10, 12): 0.8}))
    first = 0.8 + 0.1 + 7e-4  # its 3×3
    mass = 1.7 + 22e-4  # the first's 5×5 window, which it scales by 1 − 1/mass
    left = (1.7 + 12e-4) * (1 - 1 / mass) + 10e-4  # the second's: 15 pixels shared, 10 not
    assert sorted(s.tolist()) == pytest.approx([left, first], abs=1e-5)
    assert left > 0.5
    # detections whose windows do not touch keep their scores
    idx, s = scores(spots_map({(4, 4): 0.7, (15, 15): 0.6}))
    assert sorted(s.tolist()) == pytest.approx([0.6 + 8e-4, 0.7 + 8e-4], abs=1e-5)


def test_mass_accounting_in_levels_equals_one_detection_at_a_time():
    """``claim_mass`` processes disjoint windows together; the result must be that of the
    plain rule, one detection at a time in order of score, on crowded random maps."""
    from deepsmlm.postprocess import claim_mass, pixel_detections

    g = torch.Generator().manual_seed(4)
    p = torch.zeros(3, 24, 24)
    for t in range(3):
        rc = torch.randint(1, 23, (60, 2), generator=g)
        p[t, rc[:, 0], rc[:, 1]] += 0.5 * torch.rand(60, generator=g) + 0.1
    p = p.clamp(max=1.0)
    idx, score = pixel_detections(p, 0.05, certain=0.5)
    assert len(idx) > 60
    fast = claim_mass(p, idx[:, 0], idx[:, 1], idx[:, 2], score, 2)
    slow = score.double().clone()
    left = torch.nn.functional.pad(p.double(), (2, 2, 2, 2))
    for i in torch.argsort(score, descending=True, stable=True).tolist():
        t, r, c = idx[i].tolist()
        win = left[t, r:r + 5, c:c + 5]  # padded: rows r − 2 … r + 2
        mass = float(win.sum())
        slow[i] = min(float(slow[i]), mass)
        win *= max(0.0, 1.0 - 1.0 / max(mass, 1e-12))
    assert fast.double().tolist() == pytest.approx(slow.tolist(), abs=1e-6)
    assert (fast < score - 1e-3).sum() > 10  # the crowding did take mass away


def test_decoding_with_mass_accounting_finds_one_wide_spot_once():
    names = channels(False)
    raw = emitters_output(1, [], False, size=20)
    for (r, c), v in {(10, 10): 0.4, (10, 11): 0.1, (10, 12): 0.35, (10, 13): 0.1}.items():
        raw[0, names.index("p"), r, c] = inverse("p", v)
    c = card(False)
    assert len(FL.decode(c, raw, threshold=0.3)) == 2  # two maxima, 2 px apart
    c.settings["mass_radius_px"] = 2
    em, score = FL.decode(c, raw, threshold=0.3, return_peaks=True)
    assert len(em) == 1 and em.xyz_nm[0, 0].item() == pytest.approx(1250.0, abs=1e-2)
    assert score.tolist() == pytest.approx([0.55], abs=1e-3)


def emitters_output(n_frames: int, pixels: list[tuple[int, int]], localize_z: bool,
                    size: int = 40) -> torch.Tensor:
    """Raw output of ``n_frames`` frames (size × size) with one emitter (p = 0.95, no
    offset, σ 0.1 px, z σ 0.1 of the half range) at each (row, col) of ``pixels``."""
    names = channels(localize_z)
    raw = torch.zeros((n_frames, len(names), size, size))
    raw[:, 0] = inverse("p", 1e-4)
    for i, n in enumerate(names):
        if n.startswith("s_"):
            raw[:, i] = inverse("s", 0.1)
    for r, c in pixels:
        raw[:, 0, r, c] = inverse("p", 0.95)
    return raw


def truth_behind(raw: torch.Tensor, card_: ModelCard, error_nm: np.ndarray) -> dict:
    """The emitters that ``raw`` decodes, moved by ± ``error_nm`` (3,): the sign alternates
    with the frame and the pixel, so that every group of positions has mean error 0."""
    em = FL.decode(card_, raw, threshold=0.5).numpy()
    pixel = np.floor(em["xyz_nm"][:, :2] / card_.pixel_size_nm).astype(int)
    sign = (-1.0) ** (em["frame"] + pixel.sum(1))[:, None]
    return {"frame": em["frame"], "xyz_nm": em["xyz_nm"] - sign * error_nm}


def test_uncertainty_calibration_follows_local_density():
    """Errors of 1σ in sparse frames (1 emitter) and 3σ in dense ones (4): after calibration
    the reported σ is the network's σ × 1 where it is sparse and × 3 where it is dense, and
    calibrating again on the calibrated card gives the same table (it replaces, never
    compounds)."""
    from deepsmlm.training.train import uncertainty_match

    # four emitters 500 nm apart whose 33-px density boxes all lie inside the frame
    square = [(r, c) for r in (17, 22) for c in (17, 22)]
    sparse, dense = emitters_output(40, [(20, 20)], False), emitters_output(40, square, False)
    c = card(False)
    c.settings["sigma_scale"] = [5.0, 5.0, 1.0]  # from an older calibration: replaced
    raw = torch.cat([sparse, dense])
    ts, td = (truth_behind(x, card(False), e) for x, e in
              ((sparse, np.array([10.0, 10.0, 0.0])), (dense, np.array([30.0, 30.0, 0.0]))))
    truth = {"frame": np.r_[ts["frame"], td["frame"] + 40],
             "xyz_nm": np.r_[ts["xyz_nm"], td["xyz_nm"]]}
    kw = uncertainty_match(FL, c)
    table = FL.calibrate_uncertainty(c, raw, truth, 0.5, kw)
    assert "sigma_scale" not in c.settings and c.settings["sigma_calibration"] == table
    # all 20 px from the edge, all of the same brightness: the density term only
    (term,) = table["terms"]
    assert term["feature"] == "density_per_um2"
    assert len(term["scale"]) == 2  # x, y: a 2D model reports no σ_z
    for col in term["scale"]:
        assert col[0] == pytest.approx(1.0, rel=1e-3) and col[-1] == pytest.approx(3.0, rel=1e-3)
    # one emitter (p 0.95) and 1088 pixels of p 1e-4 in 33×33 px of 0.01 µm²
    assert term["knots"][0] == pytest.approx((0.95 + 1088e-4) / (33 * 33 * 0.01), rel=1e-3)
    em = FL.decode(c, raw, threshold=0.5)
    sig = em.uncertainty_xyz_nm[:, :2].numpy()
    assert sig[em.frame.numpy() < 40] == pytest.approx(10.0, rel=1e-3)
    assert sig[em.frame.numpy() >= 40] == pytest.approx(30.0, rel=1e-3)
    # between the densities it interpolates: a frame of two emitters
    two = FL.decode(c, emitters_output(1, square[:2], False), threshold=0.5)
    assert 10.0 < float(two.uncertainty_xyz_nm[0, 0]) < 30.0
    assert FL.calibrate_uncertainty(c, raw, truth, 0.5, kw) == table


def test_older_model_folders_keep_their_constant_sigma_scale():
    c = card(False)
    c.settings["sigma_scale"] = [3.0, 1.0, 1.0]
    em = FL.decode(c, hand_made(False), threshold=0.5)
    assert em.uncertainty_xyz_nm[:, 0].numpy() == pytest.approx([30.0, 30.0], rel=1e-3)
    assert em.uncertainty_xyz_nm[:, 1].numpy() == pytest.approx([10.0, 10.0], rel=1e-3)


def test_uncertainty_is_fitted_on_the_wide_match_not_the_tuning_sphere():
    """3D tuning matches within a 100 nm sphere; σ fitted there would never see the errors
    beyond it. The σ fit uses the greedy 250/500 nm match (2D: lateral only)."""
    from deepsmlm.training.train import uncertainty_match

    raw = emitters_output(60, [(20, 20)], True)
    c = card(True)  # σ_z: 0.1 × the 500 nm half range = 50 nm; errors of 150 nm
    truth = truth_behind(raw, c, np.array([0.0, 0.0, 150.0]))
    assert FL.calibrate_uncertainty(c, raw, truth, 0.5, FL.tuning_match(c)) is None
    kw = uncertainty_match(FL, c)
    assert kw["tol_z_nm"] == 500.0 and kw["method"] == "greedy"
    assert FL.calibrate_uncertainty(c, raw, truth, 0.5, kw)["terms"][0]["scale"][2] == \
        pytest.approx([3.0], rel=1e-3)
    truth["xyz_nm"][:, 2] += 1000.0  # a 2D method: depth never decides a match
    assert uncertainty_match(FL, card(False))["tol_z_nm"] == np.inf
    two_d = card(False)
    table = FL.calibrate_uncertainty(two_d, emitters_output(60, [(20, 20)], False), truth, 0.5,
                                     uncertainty_match(FL, two_d))
    assert table is not None and len(table["terms"][0]["scale"]) == 2  # 60 matched, 1 µm deep


@pytest.mark.parametrize("levels", [3, 4])
def test_receptive_field_is_what_receptive_field_px_says(levels):
    """The output at one pixel depends on inputs no farther than half the stated field, and
    on inputs near that limit (max-pooling passes gradient to one input of four, so the
    outermost pixels may be missed by a few)."""
    from deepsmlm.models.fastloc import FastLoc, receptive_field_px

    torch.manual_seed(0)
    net = FastLoc(8, levels=levels).eval()
    side = 128
    x = torch.randn(1, 1, side, side, requires_grad=True)
    net(x)[0, 0, side // 2, side // 2].backward()
    rows, cols = torch.nonzero(x.grad[0, 0].abs() > 0, as_tuple=True)
    reach = int(max((rows - side // 2).abs().max(), (cols - side // 2).abs().max()))
    half = receptive_field_px(levels) // 2
    assert half - 2 ** (levels - 1) <= reach <= half


def test_three_level_network_keeps_the_first_designs_weight_names():
    """Model folders trained before ``levels`` existed load: same parameter names."""
    from deepsmlm.models.fastloc import FastLoc

    names = {k.split(".")[0] for k in FastLoc(8, levels=3).state_dict()}
    assert names == {"enc1", "enc2", "enc3", "dec2", "dec1", "trunk", "out"}
    assert FastLoc(8, levels=4).multiple == 8


def test_patch_must_be_a_multiple_of_the_levels_stride():
    with pytest.raises(ValueError, match="multiple of 8"):
        FL.section.model_validate({"model": "fastloc", "levels": 4, "patch_px": 20})


def pair_output(n_frames: int) -> torch.Tensor:
    """Frames 40×40 with two emitters on neighbouring pixels of row 20: p 0.55 at column 20
    (offset +0.3 px → x 20.8 px) and p 0.5 at column 21 (no offset → 21.5 px), 0.7 px
    apart."""
    names = channels(False)
    raw = emitters_output(n_frames, [], False)
    dx = names.index("dx")
    raw[:, 0, 20, 20], raw[:, dx, 20, 20] = inverse("p", 0.55), inverse("dx", 0.3)
    raw[:, 0, 20, 21] = inverse("p", 0.5)
    return raw


def test_decoding_options_separate_emitters_on_neighbouring_pixels():
    old = card(False)  # a folder without the tuned pair: 0.6 and 1 px, as before
    assert len(FL.decode(old, pair_output(1), threshold=0.3)) == 1
    loose = card(False)
    loose.settings.update(certain_probability=0.45, suppress_px=0.5)
    em = FL.decode(loose, pair_output(1), threshold=0.3)
    assert sorted(em.xyz_nm[:, 0].tolist()) == pytest.approx([2080.0, 2150.0], abs=1e-2)
    loose.settings["suppress_px"] = 1.0  # 0.7 px apart: the weaker goes
    assert len(FL.decode(loose, pair_output(1), threshold=0.3)) == 1


def test_threshold_tuning_picks_the_decoding_options_on_validation_frames():
    """A stub network whose output for frame i is ``pair_output``: only a pair of options
    that keeps both emitters reaches Jaccard 100, and tuning writes it into the card."""
    from deepsmlm.data.datasets import Batch
    from deepsmlm.training.train import tune_threshold

    raw = pair_output(8)

    class Stub(torch.nn.Module):
        def forward(self, x):
            return raw[x[:, 0, 0].long()]

    xs = torch.tensor([2080.0, 2150.0]).repeat(8)
    frames = torch.arange(8).repeat_interleave(2)
    truth = EmitterSet(torch.stack([xs, torch.full_like(xs, 2050.0), torch.zeros_like(xs)], 1),
                       torch.full_like(xs, 1000.0), frames)
    batches = [Batch(torch.arange(8.0)[:, None, None], {}, truth)]
    c = card(False)
    best = tune_threshold(Stub(), lambda a: a, batches, c, "cpu")
    assert best["jaccard"] == pytest.approx(100.0)
    assert c.settings["suppress_px"] == 0.5 and c.settings["certain_probability"] <= 0.45
    assert best["suppress_px"] == 0.5 and best["threshold"] < 0.5


def test_a_sigma_cut_drops_the_uncertain_detections():
    """``max_sigma_px``: detections whose own lateral σ exceeds it go (none by default)."""
    names = channels(False)
    raw = emitters_output(1, [(10, 10), (30, 30)], False)  # σ 0.1 px in x and y
    raw[0, names.index("s_dx"), 30, 30] = inverse("s", 2.0)  # the second: σ_x 2 px
    c = card(False)
    assert len(FL.decode(c, raw, threshold=0.5)) == 2
    c.settings["max_sigma_px"] = 1.0
    em = FL.decode(c, raw, threshold=0.5)
    assert em.xyz_nm[:, 0].tolist() == pytest.approx([1050.0], abs=1e-2)
    c.settings["max_sigma_px"] = 2.5  # √(2² + 0.1²) ≈ 2.0 px: kept
    assert len(FL.decode(c, raw, threshold=0.5)) == 2


def test_suppression_of_all_frames_at_once_equals_going_one_by_one():
    # crowded random frames with tied scores: the rounds give what a loop in score order
    # (ties: the earlier detection first) gives
    from deepsmlm.postprocess import suppress_close

    rng = np.random.default_rng(5)
    frame = torch.from_numpy(rng.integers(0, 4, 300))
    xy = torch.from_numpy(rng.uniform(0, 12, (300, 2)))
    score = torch.from_numpy(rng.choice([0.3, 0.5, 0.7, 0.9], 300))
    order = sorted(range(300), key=lambda k: (-float(score[k]), k))
    kept = []
    for k in order:
        if all(int(frame[m]) != int(frame[k]) or float(torch.dist(xy[m], xy[k])) >= 1.5
               for m in kept):
            kept.append(k)
    want = np.zeros(300, bool)
    want[kept] = True
    got = suppress_close(frame, xy, score, radius=1.5).numpy()
    assert (got == want).all()
    assert 50 < want.sum() < 250  # crowded: many are suppressed, many kept
