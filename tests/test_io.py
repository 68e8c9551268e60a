"""File formats: round trips through every writer/reader, conventions at the boundary."""

import numpy as np
import pytest
import tifffile
import torch

from deepsmlm.emitters import EmitterSet
from deepsmlm.errors import UserError
from deepsmlm.io.frames import read_pixel_size_nm, read_stack, write_stack
from deepsmlm.io.localizations import (
    PICASSO_DTYPE,
    detect_format,
    read_csv,
    read_localizations,
    read_picasso,
    write_csv,
    write_picasso,
    write_smlm,
)

from .conftest import shared_file


def sample_set(with_unc=True, z=True):
    """50 localizations; per-axis uncertainties (σx ≠ σy; σz known in 3D, NaN in 2D)."""
    rng = np.random.default_rng(0)
    n = 50
    xyz = np.column_stack([rng.uniform(0, 6400, n), rng.uniform(0, 6400, n),
                           rng.uniform(-500, 500, n) if z else np.zeros(n)])
    unc = np.column_stack([rng.uniform(5, 30, n), rng.uniform(5, 30, n),
                           rng.uniform(20, 60, n) if z else np.full(n, np.nan)])
    return EmitterSet.from_numpy(xyz, rng.uniform(500, 5000, n), rng.integers(0, 20, n),
                                 np.arange(n) + 7, unc if with_unc else None)


def assert_same_uncertainty(a: EmitterSet, b: EmitterSet, atol=1e-3, rtol=0.0):
    ua, ub = a.uncertainty_xyz_nm.numpy(), b.uncertainty_xyz_nm.numpy()
    assert ua.shape == ub.shape == (len(a), 3)
    assert np.array_equal(np.isnan(ua), np.isnan(ub))  # unknown stays unknown
    known = ~np.isnan(ua)
    assert np.allclose(ua[known], ub[known], atol=atol, rtol=rtol)


def assert_same(a: EmitterSet, b: EmitterSet, tol=1e-3):
    a, b = a.numpy(), b.numpy()
    assert np.array_equal(a["frame"], b["frame"])
    assert np.allclose(a["xyz_nm"], b["xyz_nm"], atol=tol)
    assert np.allclose(a["photons"], b["photons"], rtol=1e-4, atol=0.01)


def test_csv_round_trip_with_one_based_frames(tmp_path):
    em = sample_set()
    write_csv(em, tmp_path / "l.csv")
    lines = (tmp_path / "l.csv").read_text().splitlines()
    assert lines[0] == ("id,frame,x [nm],y [nm],z [nm],intensity [photon],"
                        "uncertainty_x [nm],uncertainty_y [nm],uncertainty_z [nm]")
    assert int(lines[1].split(",")[1]) == int(em.frame[0]) + 1
    back = read_localizations(tmp_path / "l.csv")
    assert_same(em, back)
    assert_same_uncertainty(em, back)
    assert back.id.tolist() == em.id.tolist()


def test_csv_round_trip_2d_uncertainty_keeps_nan_and_mixed_rows(tmp_path):
    em = sample_set(z=False)
    u = em.uncertainty_xyz_nm.clone()
    u[3, 0] = float("nan")  # one localization without an x value
    em.uncertainty_xyz_nm = u
    write_csv(em, tmp_path / "l.csv")
    lines = (tmp_path / "l.csv").read_text().splitlines()
    assert lines[0].endswith("intensity [photon],uncertainty_x [nm],uncertainty_y [nm]")
    assert lines[4].split(",")[6] == "nan"
    back = read_localizations(tmp_path / "l.csv")
    assert torch.isnan(back.uncertainty_xyz_nm[:, 2]).all()
    assert_same_uncertainty(em, back)
    # a set without uncertainties writes no uncertainty columns and reads back None
    write_csv(sample_set(with_unc=False), tmp_path / "n.csv")
    assert "uncertainty" not in (tmp_path / "n.csv").read_text().splitlines()[0]
    assert read_localizations(tmp_path / "n.csv").uncertainty_xyz_nm is None


def test_csv_rejects_infinite_or_negative_uncertainty(tmp_path):
    head = "id,frame,x [nm],y [nm],z [nm],intensity [photon],uncertainty_x [nm]\n"
    for bad in ("inf", "-3"):
        (tmp_path / "b.csv").write_text(head + f"0,1,1,2,0,100,{bad}\n")
        with pytest.raises(UserError, match="uncertainty_x"):
            read_localizations(tmp_path / "b.csv")


def test_old_single_uncertainty_column_reads_as_lateral(tmp_path):
    p = tmp_path / "old.csv"
    p.write_text("id,frame,x [nm],y [nm],z [nm],intensity [photon],uncertainty [nm]\n"
                 "0,1,150.0,250.0,0.0,1000,7.5\n1,2,350.0,50.0,0.0,900,11.0\n")
    u = read_localizations(p).uncertainty_xyz_nm.numpy()
    assert np.allclose(u[:, :2], [[7.5, 7.5], [11.0, 11.0]])
    assert np.isnan(u[:, 2]).all()


def test_emitterset_uncertainty_shape_and_cat_nan_fill():
    with_u, without = sample_set(), sample_set(with_unc=False).subset(torch.arange(5))
    with pytest.raises(ValueError, match=r"uncertainty_xyz_nm must be \(N, 3\)"):
        EmitterSet.from_numpy(np.zeros((4, 3)), np.ones(4), np.zeros(4), None, np.ones(4))
    both = EmitterSet.cat([without, with_u, without])
    u = both.uncertainty_xyz_nm
    assert u.shape == (len(with_u) + 10, 3)
    assert torch.isnan(u[:5]).all() and torch.isnan(u[-5:]).all()
    assert torch.equal(u[5:-5], with_u.uncertainty_xyz_nm)
    assert EmitterSet.cat([without, without]).uncertainty_xyz_nm is None
    part = both.subset(torch.tensor([0, 6]))
    assert torch.isnan(part.uncertainty_xyz_nm[0]).all()
    assert torch.equal(part.uncertainty_xyz_nm[1], with_u.uncertainty_xyz_nm[1])
    assert np.array_equal(both.numpy()["uncertainty_xyz_nm"], u.double().numpy(), equal_nan=True)


def test_smlm_challenge_round_trip(tmp_path):
    em = sample_set(with_unc=False)
    write_smlm(em, tmp_path / "activations.csv")
    header = (tmp_path / "activations.csv").read_text().splitlines()[0]
    assert header == "Ground-truth,frame,xnano,ynano,znano,intensity"
    assert detect_format(tmp_path / "activations.csv") == "smlm"
    assert_same(em, read_localizations(tmp_path / "activations.csv"))


def test_picasso_round_trip_field_types_and_pixel_convention(tmp_path):
    em = sample_set()
    write_picasso(em, tmp_path / "locs.hdf5", 100.0, (64, 64), 20)
    import h5py
    import yaml

    with h5py.File(tmp_path / "locs.hdf5") as f:
        locs = f["locs"][()]
    assert locs.dtype.descr[: len(PICASSO_DTYPE)] == PICASSO_DTYPE
    assert locs.dtype["z"] == np.dtype("<f4")
    # our x = 150 nm (centre of pixel 1) is Picasso's x = 1.0
    i = 0
    assert locs["x"][i] == pytest.approx(em.xyz_nm[i, 0].item() / 100 - 0.5, abs=1e-5)
    u = em.uncertainty_xyz_nm.numpy()
    assert np.allclose(locs["lpx"] * 100, u[:, 0], rtol=1e-5)  # camera pixels
    assert np.allclose(locs["lpy"] * 100, u[:, 1], rtol=1e-5)
    assert locs.dtype["lpz"] == np.dtype("<f4")
    assert np.allclose(locs["lpz"], u[:, 2], rtol=1e-6)  # nm, like Picasso's 3D fits
    info = list(yaml.safe_load_all((tmp_path / "locs.yaml").read_text()))
    assert info[0]["Width"] == 64 and info[0]["Height"] == 64 and info[0]["Frames"] == 20
    assert info[0]["Pixelsize"] == 100.0
    assert info[0]["deepsmlm"]["lpx nominal"] is False
    back = read_localizations(tmp_path / "locs.hdf5")  # pixel size from the sidecar
    assert_same(em, back, tol=2e-3)
    assert_same_uncertainty(em, back, atol=1e-4, rtol=1e-5)
    (tmp_path / "locs.yaml").unlink()  # the embedded metadata is enough too
    assert_same(em, read_picasso(tmp_path / "locs.hdf5"), tol=2e-3)


def test_picasso_2d_uncertainty_round_trip_and_nominal_fallback(tmp_path):
    import h5py
    import yaml

    em = sample_set(z=False)
    write_picasso(em, tmp_path / "a.hdf5", 100.0, (64, 64), 20)
    with h5py.File(tmp_path / "a.hdf5") as f:
        assert "lpz" not in f["locs"].dtype.names and "z" not in f["locs"].dtype.names
    back = read_picasso(tmp_path / "a.hdf5")
    assert_same_uncertainty(em, back, atol=1e-4, rtol=1e-5)  # z stays NaN
    # no uncertainties: a nominal 10 nm, flagged; rows with NaN get it too (Picasso drops NaN)
    write_picasso(sample_set(with_unc=False), tmp_path / "n.hdf5", 100.0, (64, 64), 20)
    info = list(yaml.safe_load_all((tmp_path / "n.yaml").read_text()))
    assert info[0]["deepsmlm"]["lpx nominal"] is True
    assert np.allclose(read_picasso(tmp_path / "n.hdf5").uncertainty_xyz_nm[:, :2], 10.0)
    u = em.uncertainty_xyz_nm.clone()
    u[0, 1] = float("nan")
    em.uncertainty_xyz_nm = u
    write_picasso(em, tmp_path / "m.hdf5", 100.0, (64, 64), 20)
    with h5py.File(tmp_path / "m.hdf5") as f:
        locs = f["locs"][()]
    assert np.isfinite(locs["lpy"]).all() and locs["lpy"][0] == pytest.approx(0.1)
    info = list(yaml.safe_load_all((tmp_path / "m.yaml").read_text()))
    assert info[0]["deepsmlm"]["lp nominal rows"] == 1


def test_picasso_can_load_our_file(tmp_path):
    pytest.importorskip("picasso.io", reason="picassosr (optional extra [peers]) not installed")
    from picasso import io as pio

    for z in (False, True):
        em = sample_set(with_unc=True, z=z)
        # Picasso drops x < 0 (its pixel centres sit at integers): keep off the first half px
        em = em.subset((em.xyz_nm[:, :2] > 50).all(1))
        write_picasso(em, tmp_path / "locs.hdf5", 100.0, (64, 64), 20)
        locs, info = pio.load_locs(str(tmp_path / "locs.hdf5"))
        assert len(locs) == len(em)
        assert np.allclose(locs["x"].to_numpy(), em.xyz_nm[:, 0].numpy() / 100 - 0.5, atol=1e-4)
        u = em.uncertainty_xyz_nm.numpy()
        assert np.allclose(locs["lpx"].to_numpy() * 100, u[:, 0], rtol=1e-5)
        assert np.allclose(locs["lpy"].to_numpy() * 100, u[:, 1], rtol=1e-5)
        if z:
            assert np.allclose(locs["z"].to_numpy(), em.xyz_nm[:, 2].numpy(), atol=1e-3)
            assert np.allclose(locs["lpz"].to_numpy(), u[:, 2], rtol=1e-6)
        else:
            assert "lpz" not in locs.columns
        assert {d.get("Pixelsize") for d in info} >= {100.0}


def test_thunderstorm_reader_on_a_real_file():
    path = shared_file("deepstorm", "positions_demo1.csv")
    em = read_localizations(path)
    assert len(em) == 4956
    assert int(em.frame.min()) == 0 and int(em.frame.max()) == 19  # 1-based in the file
    assert 0 <= float(em.xyz_nm[:, 0].min()) and float(em.xyz_nm[:, 0].max()) <= 6400


def test_thunderstorm_quoted_header_and_uncertainty(tmp_path):
    p = tmp_path / "ts.csv"
    p.write_text('"id","frame","x [nm]","y [nm]","sigma [nm]","intensity [photon]",'
                 '"uncertainty_xy [nm]"\n1,3,150.0,250.0,110,2000,12.5\n')
    em = read_localizations(p)
    assert em.frame.tolist() == [2]
    u = em.uncertainty_xyz_nm[0].tolist()
    assert u[:2] == [12.5, 12.5] and np.isnan(u[2])  # lateral value → x = y; z unknown
    assert em.xyz_nm[0].tolist() == [150.0, 250.0, 0.0]
    p.write_text('"id","frame","x [nm]","y [nm]","z [nm]","intensity [photon]",'
                 '"uncertainty_xy [nm]","uncertainty_z [nm]"\n1,3,150,250,-80,2000,12.5,40\n')
    assert read_localizations(p).uncertainty_xyz_nm[0].tolist() == [12.5, 12.5, 40.0]


@pytest.mark.parametrize("content, needle", [
    ("a,b,c\n1,2,3\n", "unrecognised CSV header"),
    ("id,frame,x [nm],y [nm]\n1,1,zz,3\n", "not a numeric table"),
    ("id,frame,x [nm],y [nm]\n1,1,nan,3\n", "NaN"),
])
def test_bad_localization_files(tmp_path, content, needle):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(UserError, match=needle):
        read_localizations(p)
    with pytest.raises(UserError, match="not found"):
        read_localizations(tmp_path / "missing.csv")
    (tmp_path / "x.xls").write_text("")
    with pytest.raises(UserError, match="unknown localization format"):
        read_localizations(tmp_path / "x.xls")


def test_empty_table_round_trip(tmp_path):
    write_csv(EmitterSet.empty(), tmp_path / "e.csv")
    assert len(read_csv(tmp_path / "e.csv")) == 0


# ------------------------------------------------------------------ frames
def test_stack_round_trip_memmap_and_pixel_size(tmp_path):
    stack = np.arange(5 * 16 * 20, dtype=np.uint16).reshape(5, 16, 20)
    write_stack(tmp_path / "s.tif", stack, 107.0)
    s = read_stack(tmp_path / "s.tif")
    assert s.memory_mapped and np.array_equal(np.asarray(s.data), stack)
    assert s.pixel_size_nm == pytest.approx(107.0, rel=1e-6)
    chunks = list(s.chunks(2))
    assert [t for t, _ in chunks] == [0, 2, 4] and chunks[0][1].dtype == np.float32


def test_ome_tiff_pixel_size(tmp_path):
    tifffile.imwrite(tmp_path / "o.ome.tif", np.zeros((3, 8, 8), np.uint16),
                     metadata={"axes": "TYX", "PhysicalSizeX": 0.16, "PhysicalSizeY": 0.16})
    assert read_pixel_size_nm(tmp_path / "o.ome.tif") == pytest.approx(160.0)


def test_stack_errors(tmp_path):
    tifffile.imwrite(tmp_path / "one.tif", np.zeros((8, 8), np.uint16))
    with pytest.raises(UserError, match="single 8×8 image, not a stack"):
        read_stack(tmp_path / "one.tif")
    assert len(read_stack(tmp_path / "one.tif", allow_single_frame=True)) == 1
    tifffile.imwrite(tmp_path / "c.tif", np.zeros((2, 8, 8), np.complex64))
    with pytest.raises(UserError, match="unsupported pixel type"):
        read_stack(tmp_path / "c.tif")
    bad = np.zeros((2, 8, 8), np.float32)
    bad[1, 2, 3] = np.nan
    tifffile.imwrite(tmp_path / "n.tif", bad)
    with pytest.raises(UserError, match="NaN"):
        read_stack(tmp_path / "n.tif")
    (tmp_path / "t.tif").write_text("not a tiff")
    with pytest.raises(UserError, match="not a TIFF"):
        read_stack(tmp_path / "t.tif")
    with pytest.raises(UserError, match="movie not found"):
        read_stack(tmp_path / "none.tif")


def test_atomic_writes_get_the_permissions_of_an_ordinary_file(tmp_path):
    """A result must be readable by the lab, as a file made by open() is (mkstemp alone
    would leave it 0600)."""
    import os
    import stat

    from deepsmlm.io.atomic import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
