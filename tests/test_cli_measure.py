"""Command contracts of evaluate, render, crlb and frc."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from deepsmlm.cli import main
from deepsmlm.emitters import EmitterSet
from deepsmlm.io.localizations import read_csv, write_csv, write_picasso

from .conftest import CONFIGS


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    assert main(["simulate", str(CONFIGS / "2d-dense.yaml"), "--frames", "6", "--out",
                 str(out), "--seed", "2"]) == 0
    truth = read_csv(out / "truth.csv").numpy()
    rng = np.random.default_rng(0)
    keep = rng.random(len(truth["id"])) < 0.75
    xyz = truth["xyz_nm"][keep] + rng.normal(0, 15, (keep.sum(), 3)) * [1, 1, 0]
    pred = EmitterSet.from_numpy(xyz, truth["photons"][keep], truth["frame"][keep], None,
                                 np.column_stack([np.full(keep.sum(), 15.0),
                                                  np.full(keep.sum(), 15.0),
                                                  np.full(keep.sum(), np.nan)]))
    write_csv(pred, out / "pred.csv")
    write_picasso(pred, out / "pred.hdf5", 100.0, (64, 64), 6)
    return out


def test_evaluate_json_keys_and_values(sim, capsys):
    assert main(["evaluate", str(sim / "pred.csv"), str(sim / "truth.csv"),
                 "--json", str(sim / "m.json")]) == 0
    printed = capsys.readouterr().out
    assert "Jaccard" in printed and "by density" in printed
    m = json.loads((sim / "m.json").read_text())
    for key in ("jaccard", "rmse_xy_nm", "rmse_z_nm", "efficiency_xy", "efficiency_z", "recall",
                "precision", "tp", "fp", "fn", "bias_x_nm", "by_density", "by_photons"):
        assert key in m
    assert 70 < m["jaccard"] < 80 and m["fp"] == 0
    assert 15 < m["rmse_xy_nm"] < 30  # sqrt(2)·15 nm plus the odd swapped neighbour


def test_evaluate_reads_picasso_and_hungarian(sim, capsys):
    assert main(["evaluate", str(sim / "pred.hdf5"), str(sim / "truth.csv"), "--method",
                 "hungarian", "--tol-xy-nm", "100", "--json", str(sim / "h.json")]) == 0
    m = json.loads((sim / "h.json").read_text())
    assert m["method"] == "hungarian" and m["tol_xy_nm"] == 100 and m["jaccard"] > 70


def test_render_writes_tif_with_pixel_size_and_png(sim):
    out = sim / "sr.tif"
    assert main(["render", str(sim / "pred.csv"), "--pixel-nm", "20", "--out", str(out),
                 "--sigma", "precision"]) == 0
    img = tifffile.imread(out)
    assert img.dtype == np.float32 and img.shape == (320, 320)  # 6.4 µm field from experiment
    assert img.sum() == pytest.approx(len(read_csv(sim / "pred.csv")), rel=0.02)
    assert out.with_suffix(".png").stat().st_size > 1000


def test_crlb_command_csv(tmp_path):
    out = tmp_path / "c"
    assert main(["crlb", str(CONFIGS / "3d-astigmatic.yaml"), "--photons", "2000",
                 "--background", "20", "--z-nm", "-400:400:400", "--out", str(out)]) == 0
    lines = (out / "crlb.csv").read_text().splitlines()
    assert lines[0] == "z [nm],crlb_x [nm],crlb_y [nm],crlb_z [nm]"
    rows = np.array([[float(v) for v in ln.split(",")] for ln in lines[1:]])
    assert rows[:, 0].tolist() == [-400, 0, 400]
    assert np.all(rows[:, 1:] > 0) and np.all(rows[:, 1:] < 100)
    assert (out / "crlb.png").is_file()


def test_frc_command(sim, capsys):
    assert main(["frc", str(sim / "pred.csv"), "--out", str(sim / "frc")]) == 0
    assert "FRC resolution" in capsys.readouterr().out
    assert (sim / "frc" / "pred_frc.csv").is_file() and (sim / "frc" / "pred_frc.png").is_file()


@pytest.mark.parametrize("args, needle", [
    (["evaluate", "nope.csv", "nope.csv"], "not found"),
    (["render", "BADCSV", "--out", "x.tif"], "unrecognised CSV header"),
    (["crlb", "EXP", "--photons", "-1", "--background", "1", "--out", "o"],
     "--photons: expected a number > 0"),
])
def test_measure_errors_exit_2(tmp_path, args, needle):
    (tmp_path / "BADCSV").write_text("a,b\n1,2\n")
    args = [str(tmp_path / a) if a == "BADCSV" else
            str(CONFIGS / "3d-astigmatic.yaml") if a == "EXP" else a for a in args]
    if args[0] == "render":
        args[1] = str(tmp_path / "bad.csv")
        (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    proc = subprocess.run([sys.executable, "-m", "deepsmlm.cli", *args], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]


def test_render_precision_uses_per_axis_sigma_from_picasso(tmp_path, capsys):
    # σx = 3σy in the file (lpx, lpy) → the rendered spot's x variance is 9× its y variance
    em = EmitterSet.from_numpy([[3205.0, 3195.0, 0.0]], [1000.0], [0], None,
                               [[60.0, 20.0, np.nan]])
    write_picasso(em, tmp_path / "one.hdf5", 100.0, (64, 64), 1)
    out = tmp_path / "one.tif"
    assert main(["render", str(tmp_path / "one.hdf5"), "--pixel-nm", "5", "--out", str(out),
                 "--sigma", "precision"]) == 0
    img = tifffile.imread(out).astype(np.float64)
    assert img.shape == (1280, 1280) and img.sum() == pytest.approx(1.0, rel=1e-4)
    yy, xx = (np.indices(img.shape) + 0.5) * 5.0
    mx, my = (img * xx).sum(), (img * yy).sum()
    vx = (img * (xx - mx) ** 2).sum() - 25 / 12
    vy = (img * (yy - my) ** 2).sum() - 25 / 12
    assert vx / vy == pytest.approx(9.0, rel=0.03)
    # a localization with no lateral uncertainty cannot be rendered by precision
    both = EmitterSet.cat([em, EmitterSet.from_numpy([[100.0, 100.0, 0.0]], [1.0], [0])])
    write_csv(both, tmp_path / "mixed.csv")
    assert main(["render", str(tmp_path / "mixed.csv"), "--pixel-nm", "5", "--out",
                 str(tmp_path / "m.tif"), "--sigma", "precision"]) == 2
    assert "1 of 2 localizations have no x/y uncertainty" in capsys.readouterr().err
