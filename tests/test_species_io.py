"""Multicolor (issue 14) at the file boundary and at the edge: the ``species`` column
survives every format that can hold it (our CSV, its streamed writer and reader, Picasso
HDF5, ThunderSTORM-style CSVs), the SMLM Challenge CSV refuses it clearly, and
``evaluate`` and ``render --by species`` use it."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
import yaml

from deepsmlm.cli import main
from deepsmlm.emitters import EmitterSet
from deepsmlm.errors import UserError
from deepsmlm.io.localizations import (
    CsvAppender,
    iter_csv,
    read_csv,
    read_localizations,
    read_picasso,
    read_species_names,
    write_csv,
    write_picasso,
    write_smlm,
)

from .conftest import tiny_fastloc


def colour_set(n: int = 40, probability: bool = True, seed: int = 0) -> EmitterSet:
    """``n`` localizations of 3 species (some −1), per-axis σ, probabilities (one NaN)."""
    rng = np.random.default_rng(seed)
    xyz = np.column_stack([rng.uniform(100, 3000, (n, 2)), rng.uniform(-300, 300, n)])
    species = rng.integers(-1, 3, n)
    species[:4] = [0, 1, 2, -1]
    prob = rng.uniform(0.3, 1.0, n)
    prob[3] = np.nan  # unknown
    return EmitterSet.from_numpy(xyz, rng.uniform(500, 5000, n), rng.integers(0, 9, n),
                                 np.arange(n), rng.uniform(5, 30, (n, 3)), species,
                                 prob if probability else None)


def assert_same_species(a: EmitterSet, b: EmitterSet) -> None:
    assert b.species is not None and b.species.dtype == torch.long
    assert b.species.tolist() == a.species.tolist()
    if a.species_probability is None:
        assert b.species_probability is None
    else:
        pa, pb = a.species_probability.numpy(), b.species_probability.numpy()
        assert np.array_equal(np.isnan(pa), np.isnan(pb))
        assert np.allclose(pa[~np.isnan(pa)], pb[~np.isnan(pb)], atol=1e-4)


# ---------------------------------------------------------------- our CSV
def test_csv_round_trip_keeps_species_and_probability(tmp_path):
    em = colour_set()
    write_csv(em, tmp_path / "l.csv")
    lines = (tmp_path / "l.csv").read_text().splitlines()
    assert lines[0] == ("id,frame,x [nm],y [nm],z [nm],intensity [photon],uncertainty_x [nm],"
                        "uncertainty_y [nm],uncertainty_z [nm],species,species_probability")
    assert lines[4].split(",")[-2:] == ["-1", "nan"]  # unknown species, unknown probability
    back = read_localizations(tmp_path / "l.csv")
    assert_same_species(em, back)
    assert np.allclose(back.xyz_nm.numpy(), em.xyz_nm.numpy(), atol=1e-3)
    # species without probabilities: one column
    em = colour_set(probability=False)
    write_csv(em, tmp_path / "s.csv")
    assert (tmp_path / "s.csv").read_text().splitlines()[0].endswith("[nm],species")
    assert_same_species(em, read_csv(tmp_path / "s.csv"))
    # a single-colour set: no species column, and none read back
    write_csv(EmitterSet.from_numpy(np.ones((2, 3)), np.ones(2), [0, 1]), tmp_path / "n.csv")
    assert "species" not in (tmp_path / "n.csv").read_text()
    assert read_csv(tmp_path / "n.csv").species is None


def test_thunderstorm_style_csv_with_a_species_column(tmp_path):
    p = tmp_path / "ts.csv"
    p.write_text('"id","frame","x [nm]","y [nm]","sigma [nm]","intensity [photon]",'
                 '"uncertainty_xy [nm]","species"\n1,3,150.0,250.0,110,2000,12.5,1\n'
                 "2,3,450.0,250.0,110,2000,12.5,0\n")
    em = read_localizations(p)
    assert em.species.tolist() == [1, 0] and em.species_probability is None


@pytest.mark.parametrize("columns, row, needle", [
    ("species", "1.5", "whole numbers >= -1"),
    ("species", "-2", "whole numbers >= -1"),
    ("species", "nan", "NaN or inf in 'species'"),
    ("species,species_probability", "1,1.5", "must lie in [0, 1]"),
    ("species,species_probability", "1,-0.1", "negative or infinite"),
    ("species_probability", "0.5", "needs a 'species' column"),
])
def test_bad_species_columns_are_user_errors(tmp_path, columns, row, needle):
    p = tmp_path / "b.csv"
    p.write_text(f"id,frame,x [nm],y [nm],z [nm],intensity [photon],{columns}\n"
                 f"0,1,100,100,0,1000,{row}\n")
    with pytest.raises(UserError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        read_localizations(p)


def test_csv_appender_fixed_species_layout_and_blocks(tmp_path):
    em = colour_set()
    plain = EmitterSet.from_numpy(np.full((3, 3), 500.0), np.ones(3), [9, 9, 9],
                                  [100, 101, 102], np.full((3, 3), 7.0))
    # layout fixed up front: a block without species gets −1 and a NaN probability
    w = CsvAppender(tmp_path / "a.csv", n_uncertainty=3, species=True, species_probability=True)
    w.append(plain)
    w.append(em)
    w.close()
    back = read_csv(tmp_path / "a.csv")
    assert back.species.tolist() == [-1, -1, -1] + em.species.tolist()
    assert np.isnan(back.species_probability[:3].numpy()).all()
    assert (w.species, w.species_probability, w.n_uncertainty) == (True, True, 3)
    # iter_csv's blocks carry species too
    blocks = list(iter_csv(tmp_path / "a.csv", rows=7))
    assert len(blocks) == 7
    assert torch.cat([b.species for b in blocks]).tolist() == back.species.tolist()
    assert all(b.species_probability is not None for b in blocks)
    # None: from the first block
    w = CsvAppender(tmp_path / "b.csv")
    w.append(em)
    w.close()
    assert_same_species(em, read_csv(tmp_path / "b.csv"))
    # a layout without species would lose them: refused, and no file is started
    w = CsvAppender(tmp_path / "c.csv", species=False)
    with pytest.raises(ValueError, match="species"):
        w.append(em)
    assert not (tmp_path / "c.csv").exists()
    with pytest.raises(ValueError, match="needs the species column"):
        CsvAppender(tmp_path / "d.csv", species=False, species_probability=True)


def test_csv_appender_resume_keeps_the_species_layout(tmp_path):
    em = colour_set()
    a, b = em.subset(torch.arange(20)), em.subset(torch.arange(20, 40))
    path = tmp_path / "p.csv"
    w = CsvAppender(path, n_uncertainty=3, species=True, species_probability=True)
    w.append(a)
    committed = w.size_bytes
    w.append(b.subset(torch.arange(5)))  # written but never committed: cut on resume
    w.close()
    # resumed with the layout left open: it comes from the file's own header
    r = CsvAppender(path, resume_bytes=committed)
    assert (r.n_uncertainty, r.species, r.species_probability) == (3, True, True)
    r.append(b)
    r.close()
    back = read_csv(path)
    assert len(back) == 40
    assert_same_species(em, back)
    # resumed with arguments that contradict the header: a UserError, the file untouched
    before = path.read_bytes()
    with pytest.raises(UserError, match="other columns"):
        CsvAppender(path, resume_bytes=committed, species=False)
    assert path.read_bytes() == before


# ---------------------------------------------------------------- Picasso HDF5
def test_picasso_round_trip_species_fields_and_names(tmp_path):
    import h5py

    em = colour_set()
    write_picasso(em, tmp_path / "l.hdf5", 100.0, (32, 32), 9,
                  species_names=["red", "green", "blue"])
    with h5py.File(tmp_path / "l.hdf5") as f:
        locs = f["locs"][()]
    assert locs.dtype["species"] == np.dtype("<i4")
    assert locs.dtype["species_probability"] == np.dtype("<f4")
    assert np.isfinite(locs["species_probability"]).all()  # Picasso drops NaN rows
    assert locs["species_probability"][3] == -1.0  # the unknown probability
    back = read_picasso(tmp_path / "l.hdf5")
    assert_same_species(em, back)
    info = list(yaml.safe_load_all((tmp_path / "l.yaml").read_text()))
    assert info[0]["deepsmlm"]["species"]["names"] == ["red", "green", "blue"]
    assert read_species_names(tmp_path / "l.hdf5") == ["red", "green", "blue"]
    (tmp_path / "l.yaml").unlink()  # the embedded metadata holds them too
    assert read_species_names(tmp_path / "l.hdf5") == ["red", "green", "blue"]
    # a single-colour set: no species fields
    write_picasso(EmitterSet.from_numpy(np.full((2, 3), 500.0), np.ones(2), [0, 1]),
                  tmp_path / "n.hdf5", 100.0, (32, 32))
    with h5py.File(tmp_path / "n.hdf5") as f:
        assert "species" not in f["locs"].dtype.names
    assert read_picasso(tmp_path / "n.hdf5").species is None
    assert read_species_names(tmp_path / "n.hdf5") == []


def test_picasso_bad_species_field_is_a_user_error(tmp_path):
    import h5py

    write_picasso(colour_set(), tmp_path / "l.hdf5", 100.0, (32, 32), 9)
    with h5py.File(tmp_path / "l.hdf5", "r+") as f:
        locs = f["locs"][()]
        locs["species"][0] = -5
        f["locs"][...] = locs
    with pytest.raises(UserError, match="'species' must hold whole numbers >= -1"):
        read_picasso(tmp_path / "l.hdf5")


def test_picasso_keeps_every_row_and_the_species_fields(tmp_path):
    pytest.importorskip("picasso.io", reason="picassosr (optional extra [peers]) not installed")
    from picasso import io as pio

    em = colour_set()
    write_picasso(em, tmp_path / "l.hdf5", 100.0, (32, 32), 9, species_names=["a", "b", "c"])
    locs, _ = pio.load_locs(str(tmp_path / "l.hdf5"))
    assert len(locs) == len(em)  # the unknown probability (−1, not NaN) drops no row
    assert locs["species"].to_numpy().tolist() == em.species.tolist()


# ---------------------------------------------------------------- SMLM Challenge CSV
def test_smlm_challenge_csv_refuses_species_clearly(tmp_path):
    em = colour_set()
    with pytest.raises(UserError, match=r"SMLM Challenge CSV has no species column.*"
                                        r"our CSV.*Picasso HDF5"):
        write_smlm(em, tmp_path / "s.csv")
    assert not (tmp_path / "s.csv").exists()
    write_smlm(em, tmp_path / "s.csv", drop_species=True)  # knowingly positions only
    back = read_localizations(tmp_path / "s.csv")
    assert back.species is None and len(back) == len(em)
    # species all unknown (−1): nothing to lose
    unknown = em.subset(em.species == -1)
    write_smlm(unknown, tmp_path / "u.csv")
    assert len(read_localizations(tmp_path / "u.csv")) == len(unknown)


# ---------------------------------------------------------------- evaluate and render
def _run(args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def _two_colour_folder(tmp_path):
    """truth.csv (species 0 = left column, 1 = right) with experiment.yaml naming the
    species, and a prediction with one emitter misclassified."""
    exp = tiny_fastloc()
    exp["optics"]["pixel_size_nm"] = 100.0
    exp["emitters"]["species"] = [{"name": "orange", "wavelength_nm": 600.0},
                                  {"name": "sky", "wavelength_nm": 680.0}]
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(exp))
    xy = np.array([[800, 800], [800, 2400], [2400, 800], [2400, 2400]], float)
    truth = EmitterSet.from_numpy(np.column_stack([xy, np.zeros(4)]), np.full(4, 1000.0),
                                  np.zeros(4), None, None, [0, 0, 1, 1])
    write_csv(truth, tmp_path / "truth.csv")
    pred = EmitterSet.from_numpy(np.column_stack([xy + 20, np.zeros(4)]), np.full(4, 900.0),
                                 np.zeros(4), None, None, [0, 1, 1, 1], [0.9, 0.6, 0.8, 0.7])
    write_csv(pred, tmp_path / "pred.csv")
    return tmp_path


def test_evaluate_reports_species_metrics(tmp_path):
    d = _two_colour_folder(tmp_path)
    code, out, err = _run(["evaluate", d / "pred.csv", d / "truth.csv", "--json",
                           d / "m.json"])
    assert code == 0, err
    res = json.loads((d / "m.json").read_text())
    assert res["species_names"] == ["orange", "sky"]
    assert res["species_accuracy"] == pytest.approx(0.75)
    assert res["species_confusion"] == [[1, 1], [0, 2]]
    assert [r["jaccard"] for r in res["by_species"]] == pytest.approx([50.0, 100 * 2 / 3])
    assert "accuracy 75.00 %" in out and "confusion" in out
    assert any(line.split()[:3] == ["orange", "1", "1"] for line in out.splitlines())
    # only one side with species: a note, colour-blind metrics, no error
    write_csv(read_csv(d / "truth.csv").subset(torch.arange(4)), d / "plain.csv")
    plain = read_csv(d / "plain.csv")
    plain.species = None
    write_csv(plain, d / "plain.csv")
    code, out, err = _run(["evaluate", d / "pred.csv", d / "plain.csv", "--json",
                           d / "n.json"])
    assert code == 0, err
    res = json.loads((d / "n.json").read_text())
    assert "by_species" not in res and "no species column" in res["species_note"]
    assert "note: only" in out and res["jaccard"] == 100.0


def test_render_by_species_draws_each_species_in_its_own_colour(tmp_path):
    import matplotlib.image as mpimg
    import tifffile

    from deepsmlm.plotting import SPECIES_COLOURS
    from deepsmlm.render import render_species, species_rgb

    # the library: species 0 left, 1 right; each pixel takes its species' colour
    xy = np.array([[500.0, 1500.0], [2500.0, 1500.0]])
    planes = render_species(xy, np.array([0, 1]), 2, 100.0, (3000.0, 3000.0), 150.0)
    assert planes.shape == (2, 30, 30)
    assert planes[0, 15, 5] > 0 and planes[0, 15, 25] == 0
    assert planes[1, 15, 25] > 0 and planes[1, 15, 5] == 0
    rgb = species_rgb(planes)
    assert np.allclose(rgb[15, 5], SPECIES_COLOURS[0], atol=1e-6)
    assert np.allclose(rgb[15, 25], SPECIES_COLOURS[1], atol=1e-6)
    assert np.abs(SPECIES_COLOURS[0] - SPECIES_COLOURS[1]).max() > 0.3
    assert np.all(rgb[0, 15] == 0)  # nothing drawn where no species is
    # the command: names from experiment.yaml, one TIFF each, an RGB PNG
    d = _two_colour_folder(tmp_path)
    code, out, err = _run(["render", d / "truth.csv", "--out", d / "sr.tif", "--pixel-nm",
                           "50", "--sigma", "60", "--by", "species"])
    assert code == 0, err
    left, right = tifffile.imread(d / "sr_orange.tif"), tifffile.imread(d / "sr_sky.tif")
    assert left.shape == right.shape == (64, 64)
    assert left[:, :32].sum() == pytest.approx(2.0, rel=1e-3) and left[:, 32:].sum() < 1e-6
    assert right[:, 32:].sum() == pytest.approx(2.0, rel=1e-3) and right[:, :32].sum() < 1e-6
    assert tifffile.imread(d / "sr.tif").sum() == pytest.approx(4.0, rel=1e-3)
    png = mpimg.imread(d / "sr.png")[..., :3]
    h, w = png.shape[:2]
    low_left, low_right = png[h // 2:, : w // 2], png[h // 2:, w // 2:]  # no legend there

    def pixels_of(img, colour):
        return int((np.abs(img - colour).max(axis=-1) < 0.02).sum())

    orange, sky = SPECIES_COLOURS[:2]
    assert pixels_of(low_left, orange) > 20 and pixels_of(low_left, sky) == 0
    assert pixels_of(low_right, sky) > 20 and pixels_of(low_right, orange) == 0
    assert "one TIFF per species" in out


def test_widefield_vs_sr_species_shows_each_species_colour_and_a_legend(tmp_path):
    import matplotlib.image as mpimg

    from deepsmlm.plotting import SPECIES_COLOURS, widefield_vs_sr_species
    from deepsmlm.render import render_species, species_rgb

    xy = np.array([[400.0, 1600.0], [1200.0, 1600.0], [2000.0, 1600.0]])
    rgb = species_rgb(render_species(xy, np.array([0, 1, 2]), 3, 20.0, (3200.0, 3200.0),
                                     80.0))
    widefield = np.random.default_rng(0).random((32, 32))
    widefield_vs_sr_species(widefield, rgb, ["a", "b", "c"], 100.0, 20.0,
                            tmp_path / "sr.png", "three species")
    png = mpimg.imread(tmp_path / "sr.png")[..., :3]
    h, w = png.shape[:2]
    spots = png[int(0.4 * h):int(0.6 * h), w // 2:]  # the row of spots, below the legend
    legend = png[: int(0.3 * h), w // 2:]
    for colour in SPECIES_COLOURS[:3]:
        assert (np.abs(spots - colour).max(axis=-1) < 0.02).sum() > 20
        assert (np.abs(legend - colour).max(axis=-1) < 0.02).sum() > 20
    assert (np.abs(spots - SPECIES_COLOURS[3]).max(axis=-1) < 0.02).sum() == 0
    with pytest.raises(ValueError, match="at most 8"):
        species_rgb(np.zeros((9, 4, 4)))


def test_render_by_species_of_a_single_colour_table_is_one_line(tmp_path):
    write_csv(EmitterSet.from_numpy(np.full((2, 3), 500.0), np.ones(2), [0, 1]),
              tmp_path / "l.csv")
    code, out, err = _run(["render", tmp_path / "l.csv", "--out", tmp_path / "sr.tif",
                           "--by", "species"])
    assert code == 2 and err.count("\n") == 1 and "no species column" in err
    assert not (tmp_path / "sr.tif").exists()


# ---------------------------------------------------------------- localize
def test_localize_of_a_multicolor_model_keeps_species_through_resume(tmp_path, monkeypatch):
    """A method that classifies species (here fastloc made to call every localization
    left of x = 1600 nm species 0, right of it 1): its table has the species columns from
    the first row, a run interrupted and resumed gives the uninterrupted table, and the
    Picasso copy and localize.json carry the species and their names."""
    from deepsmlm.methods.fastloc import FastLoc

    from .test_localize_streaming import stop_after

    exp = tiny_fastloc(density_per_um2=0.8, steps_per_epoch=2, max_epochs=1)
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    assert _run(["train", tmp_path / "exp.yaml", "--out", tmp_path / "model", "--quiet"]
                )[0] == 0
    assert _run(["simulate", tmp_path / "exp.yaml", "--frames", "12", "--out",
                 tmp_path / "sim", "--seed", "5"])[0] == 0
    decode = FastLoc.decode

    def decode_colours(self, card, raw, threshold, frame_offset=0, **kw):
        out = decode(self, card, raw, threshold, frame_offset, **kw)
        em = out[0] if isinstance(out, tuple) else out
        em.species = (em.xyz_nm[:, 0] > 1600).long()
        em.species_probability = torch.full((len(em),), 0.75)
        return out

    monkeypatch.setattr(FastLoc, "species_names", lambda self, card: ["left", "right"])
    monkeypatch.setattr(FastLoc, "decode", decode_colours)

    def localize(out, *extra):
        return _run(["localize", tmp_path / "model", tmp_path / "sim/frames.tif", "--out",
                     out, "--quiet", "--chunk-frames", "4", *extra])[0]

    assert localize(tmp_path / "ref") == 0
    ref = read_csv(tmp_path / "ref/localizations.csv")
    assert len(ref) > 10 and set(ref.species.tolist()) == {0, 1}
    assert torch.equal(ref.species, (ref.xyz_nm[:, 0] > 1600).long())
    assert np.allclose(ref.species_probability.numpy(), 0.75)
    h5 = read_picasso(tmp_path / "ref/localizations.hdf5")
    assert h5.species.tolist() == ref.species.tolist()
    assert read_species_names(tmp_path / "ref/localizations.hdf5") == ["left", "right"]
    summary = json.loads((tmp_path / "ref/localize.json").read_text())
    assert summary["species_names"] == ["left", "right"]
    # interrupted after one chunk, then resumed
    with monkeypatch.context() as m:
        stop_after(m, 1)
        assert localize(tmp_path / "run") == 130
    partial = (tmp_path / "run/localizations.partial.csv").read_text().splitlines()[0]
    assert partial.endswith(",species,species_probability")
    assert localize(tmp_path / "run", "--resume") == 0
    assert ((tmp_path / "run/localizations.csv").read_text()
            == (tmp_path / "ref/localizations.csv").read_text())
