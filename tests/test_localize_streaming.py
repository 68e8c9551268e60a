"""localize at scale: streamed to disk, interrupted and resumed, one run per folder, movies
as users have them (TIFF series, OME-TIFF, Zarr), and chunks on a Dask cluster — each
giving the same localizations as one uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import yaml

from deepsmlm.cli import main
from deepsmlm.io.localizations import read_csv, read_picasso

from .conftest import tiny_fastloc

EXP = tiny_fastloc(density_per_um2=0.8, steps_per_epoch=3, max_epochs=2)


def stop_after(monkeypatch, n_chunks: int) -> None:
    """Make localize stop as Ctrl-C does once ``n_chunks`` chunks are committed."""
    from deepsmlm.steps import localize as step

    commit = step._Run.commit
    calls = {"n": 0}

    def commit_then_stop(self, t0, r):
        if calls["n"] == n_chunks:
            raise KeyboardInterrupt
        calls["n"] += 1
        commit(self, t0, r)

    monkeypatch.setattr(step._Run, "commit", commit_then_stop)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny trained fastloc model and a 40-frame movie of its experiment."""
    d = tmp_path_factory.mktemp("stream")
    (d / "exp.yaml").write_text(yaml.safe_dump(EXP))
    assert main(["train", str(d / "exp.yaml"), "--out", str(d / "model"), "--quiet"]) == 0
    assert main(["simulate", str(d / "exp.yaml"), "--frames", "40", "--out", str(d / "sim"),
                 "--seed", "5"]) == 0
    return d


def localize(setup, out, *extra, movie=None):
    movie = movie or setup / "sim" / "frames.tif"
    return main(["localize", str(setup / "model"), str(movie), "--out", str(out),
                 "--quiet", *extra])


def table(folder):
    return (folder / "localizations.csv").read_text()


@pytest.fixture(scope="module")
def reference(setup):
    """One uninterrupted run, chunks of 8 frames."""
    out = setup / "ref"
    assert localize(setup, out, "--chunk-frames", "8") == 0
    return out


def test_a_run_leaves_only_final_files_and_a_consistent_picasso_copy(setup, reference):
    names = {p.name for p in reference.iterdir()}
    assert {"localizations.csv", "localizations.hdf5", "sr.tif", "sr.png",
            "localize.json"} <= names
    assert not {n for n in names if "partial" in n or "progress" in n}
    csv = read_csv(reference / "localizations.csv")
    h5 = read_picasso(reference / "localizations.hdf5")
    assert len(csv) > 20 and len(csv) == len(h5)
    np.testing.assert_array_equal(csv.id.numpy(), np.arange(len(csv)))  # numbered in order
    np.testing.assert_allclose(h5.xyz_nm[:, :2].numpy(), csv.xyz_nm[:, :2].numpy(), atol=0.05)
    summary = json.loads((reference / "localize.json").read_text())
    assert summary["frames"] == 40 and summary["localizations"] == len(csv)


def test_chunking_does_not_change_the_result(setup, reference):
    out = setup / "chunks3"
    assert localize(setup, out, "--chunk-frames", "3", "--batch-size", "2") == 0
    a, b = read_csv(reference / "localizations.csv"), read_csv(out / "localizations.csv")
    assert len(a) == len(b)
    np.testing.assert_allclose(a.xyz_nm.numpy(), b.xyz_nm.numpy(), atol=1e-2)


def test_ctrl_c_leaves_a_valid_partial_result_and_resume_finishes_it_identically(
        setup, reference, monkeypatch, capsys):
    out = setup / "interrupted"
    stop_after(monkeypatch, 2)
    assert localize(setup, out, "--chunk-frames", "8") == 130
    err = capsys.readouterr().err
    assert "after 16 of 40 frames" in err and "--resume" in err
    assert not (out / "localizations.csv").exists()  # nothing final-looking
    partial = read_csv(out / "localizations.partial.csv")
    assert len(partial) > 0 and int(partial.frame.max()) < 16
    progress = json.loads((out / "localize.progress.json").read_text())
    assert progress["frames_done"] == 16 and progress["localizations"] == len(partial)

    monkeypatch.undo()
    # a new run into the folder is refused: it would throw the partial result away
    assert localize(setup, out) == 2
    assert "interrupted localize (16 of 40 frames)" in capsys.readouterr().err
    # resume with other settings is refused, with the same ones it finishes
    assert localize(setup, out, "--resume", "--chunk-frames", "5") == 2
    assert "--chunk-frames 8" in capsys.readouterr().err
    assert localize(setup, out, "--resume", "--threshold", "0.9") == 2
    assert "used --threshold" in capsys.readouterr().err
    assert localize(setup, out, "--resume") == 0
    assert table(out) == table(reference)
    assert not (out / "localize.progress.json").exists()
    a = tifffile.imread(out / "sr.tif")
    np.testing.assert_allclose(a, tifffile.imread(reference / "sr.tif"), rtol=1e-6)


def test_kill_9_then_resume_gives_the_uninterrupted_result(setup, tmp_path):
    """A real SIGKILL in the middle of a longer movie: whatever the moment, the partial CSV
    holds whole rows and --resume ends with the same table as an uninterrupted run."""
    sim = tmp_path / "long"
    assert main(["simulate", str(setup / "exp.yaml"), "--frames", "1000", "--out", str(sim),
                 "--seed", "6"]) == 0
    args = [str(setup / "model"), str(sim / "frames.tif"), "--quiet",
            "--chunk-frames", "4", "--batch-size", "4"]
    assert main(["localize", *args, "--out", str(tmp_path / "full")]) == 0

    out = tmp_path / "killed"
    # the child inherits this process's thread settings: the same sums, the same digits
    proc = subprocess.Popen([sys.executable, "-m", "deepsmlm.cli", "localize", *args,
                             "--out", str(out)])
    progress = out / "localize.progress.json"
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if progress.is_file():
            try:
                done = json.loads(progress.read_text())["frames_done"]
            except (ValueError, OSError):
                done = 0
            if done >= 40:
                break
        time.sleep(0.02)
    assert proc.poll() is None, "localize finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = json.loads(progress.read_text())["frames_done"]
    assert 40 <= done < 1000
    partial = read_csv(out / "localizations.partial.csv")  # readable: whole rows only
    assert int(partial.frame.max()) >= done - 4
    assert main(["localize", *args, "--out", str(out), "--resume"]) == 0
    assert table(out) == table(tmp_path / "full")


def test_a_folder_in_use_is_refused(setup, tmp_path, capsys):
    from deepsmlm.io.lock import folder_lock

    out = tmp_path / "busy"
    out.mkdir()
    with folder_lock(out, "localize"):
        assert localize(setup, out) == 2
    err = capsys.readouterr().err.strip()
    assert "in use by `deepsmlm localize` (pid" in err and len(err.splitlines()) == 1
    assert localize(setup, out) == 0  # free again once the holder ends


def test_lock_is_dropped_when_its_holder_is_killed(tmp_path):
    from deepsmlm.io.lock import folder_lock

    code = ("import sys, time; from deepsmlm.io.lock import folder_lock\n"
            f"with folder_lock({str(tmp_path)!r}, 'train'):\n"
            "    print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    from deepsmlm.errors import UserError

    with pytest.raises(UserError, match="train"), folder_lock(tmp_path, "localize"):
        pass
    proc.kill()
    proc.wait()
    with folder_lock(tmp_path, "localize"):
        pass


# ------------------------------------------------------------------ movies users have
def frames(setup):
    return tifffile.imread(setup / "sim" / "frames.tif")


@pytest.mark.parametrize("layout", ["one-per-frame", "blocks-of-7", "glob"])
def test_a_tiff_series_localizes_like_the_single_file(setup, reference, tmp_path, layout):
    data = frames(setup)
    folder = tmp_path / "series"
    folder.mkdir()
    if layout == "blocks-of-7":
        for i, t0 in enumerate(range(0, len(data), 7)):
            tifffile.imwrite(folder / f"img_MMStack_{i}.ome.tif", data[t0:t0 + 7])
    else:  # names that sort wrongly as text: img_2 < img_10 only in natural order
        for t in range(len(data)):
            tifffile.imwrite(folder / f"img_{t}.tif", data[t])
    movie = folder / "*.tif" if layout == "glob" else folder
    out = tmp_path / "out"
    assert localize(setup, out, "--chunk-frames", "8", movie=movie) == 0
    assert table(out) == table(reference)


def test_an_ome_tiff_and_a_zarr_array_localize_like_the_imagej_file(setup, reference,
                                                                      tmp_path):
    zarr = pytest.importorskip("zarr")
    data = frames(setup)
    ome = tmp_path / "movie.ome.tif"
    tifffile.imwrite(ome, data, ome=True, metadata={"axes": "TYX", "PhysicalSizeX": 0.1,
                                                    "PhysicalSizeY": 0.1})
    z = zarr.open(str(tmp_path / "movie.zarr"), mode="w", shape=data.shape, chunks=(8, 32, 32),
                  dtype=data.dtype)
    z[:] = data
    for movie in (ome, tmp_path / "movie.zarr"):
        out = tmp_path / f"out_{movie.suffix}"
        assert localize(setup, out, "--chunk-frames", "8", movie=movie) == 0
        assert table(out) == table(reference)


def test_the_movie_pixel_size_is_read_and_checked_against_the_model(setup, tmp_path,
                                                                    capsys):
    from deepsmlm.io.movies import open_movie

    data = frames(setup)
    ome = tmp_path / "movie.ome.tif"
    tifffile.imwrite(ome, data, ome=True, metadata={"axes": "TYX", "PhysicalSizeX": 0.16})
    assert open_movie(ome).pixel_size_nm == pytest.approx(160.0)
    assert localize(setup, tmp_path / "out", movie=ome) == 2
    err = capsys.readouterr().err
    assert "pixel size 160.0 nm (its metadata) but the model was trained for 100.0" in err
    assert "--pixel-size-nm" in err
    # metadata known to be wrong: the user states the true size
    assert localize(setup, tmp_path / "out", "--pixel-size-nm", "100", movie=ome) == 0
    assert localize(setup, tmp_path / "out2", "--pixel-size-nm", "130", movie=ome) == 2


def test_series_with_mismatched_frames_and_empty_folders_are_named(setup, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    tifffile.imwrite(folder / "a_1.tif", np.zeros((3, 32, 32), np.uint16), photometric="minisblack")
    tifffile.imwrite(folder / "a_2.tif", np.zeros((3, 16, 16), np.uint16), photometric="minisblack")
    assert localize(setup, tmp_path / "o1", movie=folder) == 2
    assert "a_2.tif: frames 16×16 uint16 differ from the series' 32×32" in \
        capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert localize(setup, tmp_path / "o2", movie=tmp_path / "empty") == 2
    assert "a folder without TIFF files" in capsys.readouterr().err


# ------------------------------------------------------------------ Dask
@pytest.fixture(scope="module")
def reference_1_thread(setup):
    """The uninterrupted run on one thread, as each Dask worker computes (on more threads a
    convolution sums in another order: the last digit of a few values may differ)."""
    import torch

    out, threads = setup / "ref_1_thread", torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert localize(setup, out, "--chunk-frames", "8") == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_dask_local_cluster_of_two_processes_gives_the_single_process_result(
        setup, reference_1_thread):
    pytest.importorskip("distributed")
    out = setup / "dask"
    assert localize(setup, out, "--chunk-frames", "8", "--dask", "local:2") == 0
    assert table(out) == table(reference_1_thread)
    assert json.loads((out / "localize.json").read_text())["dask"] is True


def test_dask_with_an_unreachable_scheduler_is_one_clear_error(setup, tmp_path, capsys):
    pytest.importorskip("distributed")
    assert localize(setup, tmp_path / "o", "--dask", "local:0") == 2
    assert "local:N with N ≥ 1" in capsys.readouterr().err


# ------------------------------------------------------------------ simulate streams too
def test_simulate_streams_the_same_frames_as_in_memory(setup, tmp_path):
    from deepsmlm.config import load_experiment
    from deepsmlm.io.frames import read_stack
    from deepsmlm.steps.simulate import simulate, simulate_to_disk

    exp = load_experiment(setup / "exp.yaml")
    n = simulate_to_disk(exp, 23, tmp_path / "disk", seed=4, chunk_frames=5)
    movie = simulate(exp, 23, seed=4, chunk_frames=5)
    stack = read_stack(tmp_path / "disk" / "frames.tif")
    assert stack.memory_mapped and stack.pixel_size_nm == pytest.approx(100.0)
    np.testing.assert_array_equal(np.asarray(stack.data), movie.frames_adu)
    truth = read_csv(tmp_path / "disk" / "truth.csv")
    assert n == len(truth) == len(movie.emitters) > 0
    np.testing.assert_array_equal(truth.frame.numpy(), movie.emitters.frame.numpy())
    np.testing.assert_allclose(truth.xyz_nm.numpy(), movie.emitters.xyz_nm.numpy(), atol=1e-3)
    assert tifffile.TiffFile(tmp_path / "disk" / "frames.tif").series[0].axes == "TYX"


def test_an_interrupted_simulate_leaves_no_movie(setup, tmp_path, monkeypatch):
    from deepsmlm.steps import simulate as step

    render = step.render_chunks

    def stop_midway(*args, **kwargs):
        for i, item in enumerate(render(*args, **kwargs)):
            if i == 2:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(step, "render_chunks", stop_midway)
    out = tmp_path / "sim"
    assert main(["simulate", str(setup / "exp.yaml"), "--frames", "400", "--out", str(out),
                 "--quiet"]) == 130
    assert list(out.iterdir()) == []  # no movie, no temporary file, no lock note


def test_a_memory_mapped_movie_is_read_without_the_map(tmp_path):
    """Stack.read of a memory-mapped TIFF returns the frames (also big-endian, also a
    squeezed 4D file) by plain reads: pages touched through a map would stay resident."""
    from deepsmlm.io.frames import read_stack

    rng = np.random.default_rng(0)
    data = rng.integers(0, 60000, (9, 12, 10)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "le.tif", data, imagej=True)
    tifffile.imwrite(tmp_path / "be.tif", data.astype(">u2"), byteorder=">")
    tifffile.imwrite(tmp_path / "4d.tif", data[:, None], imagej=True,
                     metadata={"axes": "TZYX"})
    for name in ("le.tif", "be.tif", "4d.tif"):
        stack = read_stack(tmp_path / name)
        assert stack.memory_mapped, name
        np.testing.assert_array_equal(stack.read(2, 7), data[2:7].astype(np.float32))
        np.testing.assert_array_equal(stack.read(7, 20), data[7:].astype(np.float32))


def test_two_trainings_into_one_folder_cannot_both_run(setup, tmp_path, capsys):
    """The lock of train: a second `train` into a folder in use is refused at once (the
    first one here is simulated by holding the lock, as a running train does)."""
    from deepsmlm.io.lock import folder_lock

    out = tmp_path / "model"
    out.mkdir()
    with folder_lock(out, "train"):
        assert main(["train", str(setup / "exp.yaml"), "--out", str(out), "--quiet"]) == 2
    assert "in use by `deepsmlm train`" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == []  # nothing written (the note went with the lock)


def test_dask_scheduler_address_of_a_running_cluster(setup, reference_1_thread):
    """`--dask tcp://HOST:PORT`: a scheduler started elsewhere (here a LocalCluster of one
    worker process, by address) gives the same table; the cluster is left running."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        out = setup / "dask_address"
        assert cluster.scheduler_address.startswith("tcp://")
        assert localize(setup, out, "--chunk-frames", "8", "--dask",
                        cluster.scheduler_address) == 0
        assert table(out) == table(reference_1_thread)
        with distributed.Client(cluster) as client:  # still up for its other users
            assert len(client.scheduler_info()["workers"]) == 1


def test_estimate_takes_any_movie(setup, tmp_path, capsys):
    """estimate (and train --stack) open a movie as localize does (a TIFF series
    here, as a folder of single frames)."""
    data = frames(setup)
    folder = tmp_path / "series"
    folder.mkdir()
    for t in range(len(data)):
        tifffile.imwrite(folder / f"f_{t}.tif", data[t])
    assert main(["estimate", str(folder), "--pixel-size-nm", "100", "--baseline-adu", "100",
                 "--e-per-adu", "45", "--em-gain", "300", "--qe", "0.9"]) == 0
    assert "frames analysed        40" in capsys.readouterr().out


def test_resume_keeps_the_interrupted_runs_camera_values(setup, reference, tmp_path,
                                                          monkeypatch):
    """Camera overrides given to the first run apply to the chunks after --resume too (the
    resumed command need not repeat them)."""
    cam = ["--camera-baseline-adu", "90", "--chunk-frames", "8"]
    assert localize(setup, tmp_path / "full", *cam) == 0
    stop_after(monkeypatch, 2)
    assert localize(setup, tmp_path / "cut", *cam) == 130
    monkeypatch.undo()
    assert localize(setup, tmp_path / "cut", "--resume") == 0
    assert table(tmp_path / "cut") == table(tmp_path / "full")
    assert table(tmp_path / "full") != table(reference)  # the camera value matters


def test_movies_that_are_not_a_frame_stack_are_named(tmp_path):
    from deepsmlm.errors import UserError
    from deepsmlm.io.movies import open_movie

    zarr = pytest.importorskip("zarr")
    z = zarr.open(str(tmp_path / "image.zarr"), mode="w", shape=(16, 12), dtype="u2")
    z[:] = 1
    with pytest.raises(UserError, match="a single image is not a movie"):
        open_movie(tmp_path / "image.zarr")
    folder = tmp_path / "series"
    folder.mkdir()
    for _ in range(3):  # pages appended one by one: three series in one file
        tifffile.imwrite(folder / "a.tif", np.zeros((8, 8), np.uint16), append=True)
    with pytest.raises(UserError, match="3 image series in one file"):
        open_movie(folder)


def test_dask_keeps_at_most_the_bound_of_chunks_in_flight_or_waiting(monkeypatch):
    """A slow first chunk must not let the others pile up on the client: chunks submitted
    but not yet handed on stay within workers × in_flight_per_worker."""
    distributed = pytest.importorskip("distributed")
    from deepsmlm import parallel

    def fake_task(model_dir, movie, device, camera, threshold, batch, refiner, t0, t1):
        import time

        time.sleep(0.5 if t0 == 0 else 0.01)
        return t0, t1

    monkeypatch.setattr(parallel, "_localize_task", fake_task)
    submitted = {"n": 0}
    real_as_completed = distributed.as_completed

    class Counting(real_as_completed):
        def add(self, future):
            submitted["n"] += 1
            super().add(future)

    monkeypatch.setattr(distributed, "as_completed", Counting)
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                       dashboard_address=None)
    got, most = [], 0
    try:
        for t0, _ in parallel.localize_on_dask(cluster.scheduler_address, "m", "v", 200, 10,
                                               4, "cpu", {}, 0.5, in_flight_per_worker=3):
            most = max(most, submitted["n"] - len(got))
            got.append(t0)
    finally:
        cluster.close()
    assert got == list(range(0, 200, 10))  # in frame order
    assert most <= 3


def test_a_new_simulate_clears_what_a_killed_one_left(setup, tmp_path):
    """kill -9 during simulate leaves its temporary movie (as large as the movie); the next
    run into the folder removes it, and only it."""
    out = tmp_path / "sim"
    out.mkdir()
    (out / ".frames.tif.abc123.tmp").write_bytes(b"\0" * 1000)
    (out / "notes.txt").write_text("mine")
    assert main(["simulate", str(setup / "exp.yaml"), "--frames", "3", "--out", str(out),
                 "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["experiment.yaml", "frames.tif",
                                                      "notes.txt", "truth.csv"]
