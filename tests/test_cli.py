"""The command-line contracts: files written, and one clear line with exit 2 on bad input."""

import subprocess
import sys

import numpy as np
import pytest
import tifffile

from deepsmlm.cli import main
from deepsmlm.io.frames import read_pixel_size_nm
from deepsmlm.io.localizations import read_csv

from .conftest import CONFIGS


def test_simulate_writes_the_contract(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", str(CONFIGS / "3d-astigmatic.yaml"), "--frames", "5",
                 "--out", str(out), "--seed", "3"]) == 0
    frames = tifffile.imread(out / "frames.tif")
    assert frames.dtype == np.uint16 and frames.shape == (5, 64, 64)
    assert read_pixel_size_nm(out / "frames.tif") == pytest.approx(100.0)
    header = (out / "truth.csv").read_text().splitlines()[0]
    assert header == "id,frame,x [nm],y [nm],z [nm],intensity [photon]"
    truth = read_csv(out / "truth.csv")
    assert int(truth.frame.min()) >= 0 and int(truth.frame.max()) <= 4  # 1-based in the file
    first = (out / "truth.csv").read_text().splitlines()[1].split(",")
    assert int(first[1]) >= 1
    from deepsmlm.config import load_experiment

    exp = load_experiment(out / "experiment.yaml")
    assert exp.camera.em_gain == 300  # preset expanded
    # same seed → same file
    main(["simulate", str(out / "experiment.yaml"), "--frames", "5", "--out",
          str(tmp_path / "again"), "--seed", "3"])
    assert np.array_equal(frames, tifffile.imread(tmp_path / "again" / "frames.tif"))


def test_psf_command(tmp_path):
    out = tmp_path / "psf"
    assert main(["psf", str(CONFIGS / "3d-astigmatic.yaml"), "--out", str(out),
                 "--z-nm", "-400:400:200"]) == 0
    stack = tifffile.imread(out / "psf.tif")
    assert stack.dtype == np.float32 and stack.shape[0] == 5
    assert np.all(stack.sum(axis=(1, 2)) > 0.9)
    z = np.loadtxt(out / "psf_z.csv", skiprows=1)
    assert z.tolist() == [-400, -200, 0, 200, 400]
    assert (out / "psf.png").stat().st_size > 1000


@pytest.mark.parametrize("args, needle", [
    (["simulate", "missing.yaml", "--frames", "2", "--out", "X"], "not found"),
    (["simulate", "BAD", "--frames", "2", "--out", "X"], "optics.na must be <"),
    (["simulate", "UNKNOWN", "--frames", "2", "--out", "X"], "camera.gain: unknown key"),
    (["psf", "NOMASK", "--out", "X"], "mask file not found"),
])
def test_errors_are_one_line_and_exit_2(tmp_path, args, needle):
    (tmp_path / "BAD").write_text("optics: {na: 1.7, n_immersion: 1.518}\n")
    (tmp_path / "UNKNOWN").write_text("camera: {gain: 3}\n")
    (tmp_path / "NOMASK").write_text("optics: {mask: {kind: file, path: nowhere.npy, "
                                     "pupil_radius_px: 10}}\n")
    args = [str(tmp_path / a) if a in ("BAD", "UNKNOWN", "NOMASK", "X") else a for a in args]
    proc = subprocess.run([sys.executable, "-m", "deepsmlm.cli", *args], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "X" / "frames.tif").exists()


def test_bad_arguments_exit_2(capsys):
    for args in (["simulate", "x.yaml", "--frames", "0", "--out", "o"],
                 ["psf", "x.yaml", "--out", "o", "--z-nm", "5:1:1"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and err.startswith("deepsmlm: error: ")
