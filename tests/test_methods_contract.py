"""The contract every registered method keeps: it trains a few steps on a tiny grid through
`deepsmlm train`, its folder reloads through ModelFolder, and `deepsmlm localize` runs it —
the same commands for every method. A new method adds its tiny settings to TINY."""

import numpy as np
import pytest
import torch
import yaml

from deepsmlm import methods
from deepsmlm.cli import main
from deepsmlm.io.localizations import read_csv
from deepsmlm.training.model_folder import FORMAT_VERSION, ModelFolder

LOOP = dict(patch_px=16, batch_size=4, steps_per_epoch=3, max_epochs=2, val_frames=8)
# The smallest network of each method (a registered method without an entry fails below).
TINY = {
    "deepstorm": dict(upsampling=4, channels=[4, 8, 8, 8]),
    "deepstorm3d": dict(upsampling=2, depth_planes=4, width=8, dilations=[1, 2, 1],
                        target_encoding="trilinear"),
    "fastloc": dict(width=8, localize_z=True),
    "multicolor": dict(width=8),
}
# a method that tells colours apart gets an experiment with two species
SPECIES = [{"name": "green", "wavelength_nm": 520}, {"name": "red", "wavelength_nm": 680}]


def test_every_registered_method_has_tiny_settings():
    assert set(TINY) == set(methods.names())


@pytest.mark.parametrize("name", methods.names())
def test_method_trains_saves_reloads_and_localizes(tmp_path, name):
    method = methods.get(name)
    t = method.section.model_validate({"model": name, **LOOP, **TINY[name]})
    z = [-400.0, 400.0] if method.decodes_z(t) else [0.0, 0.0]
    exp = {"frame": {"height_px": 32, "width_px": 32},
           "optics": {"psf": "astigmatic-gaussian" if method.decodes_z(t) else "gaussian"},
           "emitters": {"density_per_um2": 0.6, "z_range_nm": z,
                        "photons": {"lo": 2000, "hi": 4000}},
           "background": {"photons_per_px": [20, 20]},
           "training": {"model": name, "seed": 3, **LOOP, **TINY[name]}}
    if method.classifies_species(t):
        exp["emitters"]["species"] = SPECIES
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    model, sim, loc = tmp_path / "model", tmp_path / "sim", tmp_path / "loc"
    assert main(["train", str(tmp_path / "exp.yaml"), "--out", str(model), "--quiet"]) == 0

    folder = ModelFolder(model)
    card = folder.read_trained_card()
    assert card.method == name and card.format_version == FORMAT_VERSION
    assert card.threshold > 0 and card.training["epochs"] == 2
    assert card.upsampling == method.upsampling(method.section.model_validate(
        exp["training"]))
    net = folder.load_network(card)
    saved = folder.read_weights()
    assert all(torch.equal(v, saved[k]) for k, v in net.state_dict().items())

    assert main(["simulate", str(tmp_path / "exp.yaml"), "--frames", "4", "--out", str(sim),
                 "--seed", "9"]) == 0
    assert main(["localize", str(model), str(sim / "frames.tif"), "--out", str(loc),
                 "--threshold", str(card.threshold / 10), "--quiet"]) == 0
    for f in ("localizations.csv", "localizations.hdf5", "sr.tif", "sr.png"):
        assert (loc / f).is_file(), f
    found = read_csv(loc / "localizations.csv")
    assert len(found) > 0 and int(found.frame.max()) <= 3
    # the σ columns it declares (a streamed table fixes them before its first row) are
    # those its decoded localizations fill
    header = (loc / "localizations.csv").read_text().splitlines()[0].split(",")
    declared = method.uncertainty_columns(card)
    assert sum(h.startswith("uncertainty_") for h in header) == declared
    if declared:
        assert np.isfinite(found.uncertainty_xyz_nm.numpy()[:, :declared]).all()
    xyz = found.xyz_nm.numpy()
    assert np.all((xyz[:, :2] >= 0) & (xyz[:, :2] <= 3200))
    if method.decodes_z(t):
        assert np.all((xyz[:, 2] >= z[0] - 200) & (xyz[:, 2] <= z[1] + 200))
    else:
        assert np.all(xyz[:, 2] == 0)
    # the species it declares are those of the experiment, and its table carries them
    names = method.species_names(card)
    assert names == ([s["name"] for s in SPECIES] if method.classifies_species(t) else [])
    if names:
        assert found.species is not None and set(found.species.tolist()) <= {0, 1}
        assert np.all((found.species_probability.numpy() >= 1 / len(names) - 1e-6)
                      & (found.species_probability.numpy() <= 1))
    else:
        assert found.species is None
