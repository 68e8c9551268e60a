import pytest

from deepsmlm.config import CAMERA_PRESETS, experiment_from_dict, load_experiment
from deepsmlm.errors import UserError

from .conftest import CONFIGS, make_experiment


@pytest.mark.parametrize("name", ["2d-dense.yaml", "3d-astigmatic.yaml", "smlm2016-2d.yaml",
                                  "3d-tetrapod.yaml"])
def test_shipped_experiments_validate(name):
    exp = load_experiment(CONFIGS / name)
    assert exp.frame.height_px == 64


def test_2d_dense_is_the_deepstorm_regime():
    exp = load_experiment(CONFIGS / "2d-dense.yaml")
    fwhm = 2.3548 * exp.optics.sigma_nm
    assert 240 < fwhm < 280 and exp.optics.pixel_size_nm == 100
    assert exp.camera.em_gain > 1 and exp.emitters.density_per_um2 == pytest.approx(6.0)


def test_tetrapod_mask_path_is_resolved_against_the_file():
    exp = load_experiment(CONFIGS / "3d-tetrapod.yaml")
    assert exp.optics.mask.path.endswith("shared/data/deepstorm3d/mask_tetrapod.mat")
    assert "/../" not in exp.optics.mask.path


def test_preset_is_expanded_and_overridable():
    exp = make_experiment(camera={"preset": "emccd-smlm2016", "em_gain": 100})
    assert exp.camera.em_gain == 100
    assert exp.camera.read_noise_e == CAMERA_PRESETS["emccd-smlm2016"]["read_noise_e"]
    assert exp.to_dict()["camera"]["baseline_adu"] == 100


@pytest.mark.parametrize("sections, needle", [
    ({"optics": {"wavelenght_nm": 600}}, "optics.wavelenght_nm: unknown key"),
    ({"optics": {"pixel_size_nm": -5}}, "optics.pixel_size_nm"),
    ({"optics": {"na": 1.6, "n_immersion": 1.518}}, "optics.na must be < optics.n_immersion"),
    ({"optics": {"mask": {"kind": "spiral"}}}, "optics.mask"),
    ({"emitters": {"n_per_frame": [10, 2]}}, "emitters.n_per_frame must be [lo, hi]"),
    ({"emitters": {"density_per_um2": 2, "n_per_frame": [1, 2]}}, "not both"),
    ({"background": {"photons_per_px": [10, 1]}}, "background.photons_per_px"),
    ({"camera": {"qe": 1.5}}, "camera.qe"),
    ({"camera": {"preset": None}}, "camera needs a preset"),
    ({"frame": {"height_px": 2}}, "frame.height_px"),
    ({"training": {"model": "deepstorm3d", "target_encoding": "nearest"}},
     "training.target_encoding"),
    ({"training": {"model": "deepstorm3d", "overlap_squares": True,
                   "overlap_counts_false_positives": False}},
     "overlap_squares needs overlap_counts_false_positives"),
    # each method validates its own keys; another method's key names its owner
    ({"training": {"model": "deepstorm", "depth_planes": 12}},
     "training.depth_planes: a key of 'deepstorm3d', not of 'deepstorm'"),
    ({"training": {"model": "deepstorm3d", "channels": [8, 8, 8, 8]}},
     "training.channels: a key of 'deepstorm', not of 'deepstorm3d'"),
    ({"training": {"model": "deepstorm4d"}}, "training: unknown kind"),
])
def test_bad_values_name_the_key(sections, needle):
    with pytest.raises(UserError) as info:
        make_experiment(**sections)
    msg = str(info.value)
    assert needle in msg and "\n" not in msg


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_experiment(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optics: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_experiment(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="expected a mapping"):
        load_experiment(listy)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    exp = load_experiment(path)
    assert exp.frame.height_px > 0


def test_the_method_a_training_section_leaves_out():
    """No ``training.model``: fastloc (methods.DEFAULT) — unless a key belongs to another
    method and not to fastloc (a file written when Deep-STORM was the default)."""
    assert experiment_from_dict({}).training.model == "fastloc"
    assert experiment_from_dict({"training": {"max_epochs": 3}}).training.model == "fastloc"
    old = experiment_from_dict({"training": {"upsampling": 4, "channels": [8, 8, 8, 8]}})
    assert old.training.model == "deepstorm" and old.training.upsampling == 4
    assert experiment_from_dict({"training": {"depth_planes": 6}}).training.model == \
        "deepstorm3d"
