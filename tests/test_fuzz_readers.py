"""Fuzzing the readers of user files (issue 17): random bytes, random text and mutated
valid files. Whatever comes in, the only exception that may come out is ``UserError``
(the CLI turns it into one line and exit status 2). Derandomized, so CI is deterministic.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepsmlm.emitters import EmitterSet
from deepsmlm.errors import UserError

# DEEPSMLM_FUZZ_EXAMPLES=2000 fuzzes longer (by hand, when a reader changes).
FUZZ = settings(max_examples=int(os.environ.get("DEEPSMLM_FUZZ_EXAMPLES", 60)),
                deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def only_user_errors(fn, *args, **kwargs) -> None:
    """Call ``fn``; success or a one-line UserError is fine, anything else escapes and
    fails the test."""
    try:
        fn(*args, **kwargs)
    except UserError as err:
        assert "\n" not in str(err), str(err)


def _emitters(n: int = 5) -> EmitterSet:
    rng = np.random.default_rng(0)
    xyz = np.column_stack([rng.uniform(0, 3200, (n, 2)), rng.uniform(-300, 300, n)])
    unc = rng.uniform(5, 20, (n, 3))
    species = np.arange(n) % 3 - 1  # multicolor columns too: −1 (unknown), 0, 1
    prob = np.where(species >= 0, 0.8, np.nan)
    return EmitterSet.from_numpy(xyz, rng.uniform(500, 3000, n), np.arange(n) % 3, None, unc,
                                 species, prob)


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """One valid file of each kind (their bytes are the seeds of the mutations)."""
    from deepsmlm.config import load_experiment
    from deepsmlm.io.frames import write_stack
    from deepsmlm.io.localizations import write_csv, write_picasso, write_smlm

    root = tmp_path_factory.mktemp("valid")
    em = _emitters()
    write_csv(em, root / "ours.csv")
    write_smlm(em, root / "smlm.csv", drop_species=True)  # the format has no species
    write_picasso(em, root / "locs.hdf5", 100.0, (32, 32), 3)
    (root / "locs.yaml").unlink()  # the metadata inside the HDF5 file is fuzzed too
    (root / "thunderstorm.csv").write_text(
        '"id","frame","x [nm]","y [nm]","sigma [nm]","intensity [photon]",'
        '"offset [photon]","bkgstd [photon]","uncertainty_xy [nm]"\n'
        "1,1,1520.3,830.1,120.5,1500.2,20.1,4.2,9.8\n"
        "2,2,300.5,2900.2,118.0,900.7,19.5,4.0,14.1\n")
    experiment = Path(__file__).resolve().parents[1] / "configs" / "2d-dense.yaml"
    (root / "exp.yaml").write_text(experiment.read_text())
    load_experiment(root / "exp.yaml")
    write_stack(root / "movie.tif", (100 + np.arange(3 * 16 * 16) % 7).reshape(3, 16, 16)
                .astype(np.uint16), 100.0)
    card = {"method": "fastloc", "pixel_size_nm": 100.0, "upsampling": 1,
            "normalization": {"camera": {"qe": 0.9}}, "settings": {"width": 8},
            "threshold": 0.5, "versions": {"deepsmlm": "0.1.0"}, "format_version": 2}
    (root / "model.json").write_text(json.dumps(card))
    return Seeds({p.name: p.read_bytes() for p in root.iterdir()})


class Seeds(dict):
    """The valid files' bytes by name (a short repr: failure reports stay readable)."""

    def __repr__(self) -> str:
        return f"Seeds({sorted(self)})"


def mutated(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` with a few bytes flipped, deleted, inserted, or cut short."""
    def apply(ops):
        b = bytearray(data)
        for kind, pos, value in ops:
            if not b:
                break
            i = pos % len(b)
            if kind == 0:
                b[i] = value
            elif kind == 1:
                del b[i]
            elif kind == 2:
                b.insert(i, value)
            else:
                del b[i:]
        return bytes(b)

    op = st.tuples(st.integers(0, 3), st.integers(0, 2**31), st.integers(0, 255))
    return st.lists(op, min_size=1, max_size=6).map(apply)


def text_lines() -> st.SearchStrategy[str]:
    """Random text shaped a little like a CSV: commas, numbers, quotes, newlines."""
    alphabet = st.sampled_from(list("0123456789.,-+eE naNifINF\"'\n\r\t#:[]{}x"))
    return st.text(alphabet, max_size=300) | st.text(max_size=200)


def _write(tmp: Path, name: str, data: bytes | str) -> Path:
    path = tmp / name
    if isinstance(data, str):
        path.write_bytes(data.encode("utf-8", "surrogatepass"))
    else:
        path.write_bytes(data)
    return path


# ---------------------------------------------------------------- localization readers
def _readers():
    from deepsmlm.io import localizations as L

    return {"csv": (L.read_csv, "f.csv"), "smlm": (L.read_smlm, "f.csv"),
            "auto": (L.read_localizations, "f.csv")}


@pytest.mark.parametrize("reader", ["csv", "smlm", "auto"])
@FUZZ
@given(data=st.binary(max_size=400))
def test_csv_readers_random_bytes(tmp_path, reader, data):
    fn, name = _readers()[reader]
    only_user_errors(fn, _write(tmp_path, name, data))


@pytest.mark.parametrize("reader", ["csv", "smlm", "auto"])
@FUZZ
@given(header=st.sampled_from([
    "id,frame,x [nm],y [nm],z [nm],intensity [photon]",
    '"id","frame","x [nm]","y [nm]","uncertainty_xy [nm]"',
    "Ground-truth,frame,xnano,ynano,znano,intensity"]), body=text_lines())
def test_csv_readers_random_text(tmp_path, reader, header, body):
    fn, name = _readers()[reader]
    try:
        text = header + "\n" + body
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be written as UTF-8 text
        return
    only_user_errors(fn, _write(tmp_path, name, text))


@pytest.mark.parametrize("source", ["ours.csv", "thunderstorm.csv", "smlm.csv"])
@FUZZ
@given(data=st.data())
def test_csv_readers_mutated_valid(tmp_path, valid, source, data):
    from deepsmlm.io.localizations import read_csv, read_localizations, read_smlm

    blob = data.draw(mutated(valid[source]))
    path = _write(tmp_path, "f.csv", blob)
    only_user_errors(read_localizations, path)
    only_user_errors(read_smlm if source == "smlm.csv" else read_csv, path)


@FUZZ
@given(data=st.binary(max_size=600), pixel=st.sampled_from([None, 100.0]))
def test_picasso_random_bytes(tmp_path, data, pixel):
    from deepsmlm.io.localizations import read_localizations, read_picasso

    path = _write(tmp_path, "f.hdf5", data)
    only_user_errors(read_picasso, path, pixel)
    only_user_errors(read_localizations, path, pixel)


@FUZZ
@given(data=st.data(), pixel=st.sampled_from([None, 100.0]))
def test_picasso_mutated_valid(tmp_path, valid, data, pixel):
    from deepsmlm.io.localizations import read_picasso

    blob = data.draw(mutated(valid["locs.hdf5"]))
    only_user_errors(read_picasso, _write(tmp_path, "f.hdf5", blob), pixel)


@FUZZ
@given(sidecar=text_lines())
def test_picasso_random_sidecar(tmp_path, valid, sidecar):
    from deepsmlm.io.localizations import read_picasso

    path = _write(tmp_path, "f.hdf5", valid["locs.hdf5"])
    _write(tmp_path, "f.yaml", sidecar)
    only_user_errors(read_picasso, path)


@FUZZ
@given(fields=st.lists(st.sampled_from(["frame", "x", "y", "z", "photons", "lpx", "lpy",
                                        "lpz"]), unique=True),
       kind=st.sampled_from(["<f4", "<i8", "<u1", "S3", "<f8"]),
       values=st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=5),
       meta=st.sampled_from(['[{"Pixelsize": 100}]', '[{"Pixelsize": "big"}]',
                             '{"Pixelsize": -1}', "[1, 2]", "not json", '"text"']))
def test_picasso_odd_tables(tmp_path, fields, kind, values, meta):
    """Well-formed HDF5 files with odd /locs tables and metadata."""
    import h5py

    from deepsmlm.io.localizations import read_picasso

    n = len(values)
    table = np.zeros(n, dtype=[(f, kind) for f in fields]) if fields else np.zeros(n)
    for f in fields:
        if kind.startswith("S"):
            table[f] = [str(v).encode()[:3] for v in values]
        else:
            with np.errstate(all="ignore"):
                table[f] = np.nan_to_num(np.array(values), nan=-1, posinf=2**40,
                                         neginf=-(2**40)).astype(kind)
    path = tmp_path / "odd.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("locs", data=table)
        f.create_dataset("metadata", data=meta)
    only_user_errors(read_picasso, path)
    only_user_errors(read_picasso, path, 100.0)


# ---------------------------------------------------------------- experiment files
@FUZZ
@given(data=st.binary(max_size=300) | text_lines().map(lambda t: t.encode("utf-8",
                                                                          "surrogatepass")))
def test_experiment_random(tmp_path, data):
    from deepsmlm.config import load_experiment

    only_user_errors(load_experiment, _write(tmp_path, "e.yaml", data))


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8)


@FUZZ
@given(section=st.sampled_from(["optics", "camera", "frame", "emitters", "background",
                                "training", "design"]),
       key=st.text(max_size=12), value=yaml_values, data=st.data())
def test_experiment_mutated_valid(tmp_path, valid, section, key, value, data):
    """A valid experiment with one key of a section replaced by a random value."""
    from deepsmlm.config import load_experiment

    exp = yaml.safe_load(valid["exp.yaml"])
    sec = exp.get(section)
    if isinstance(sec, dict) and sec and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(sec)))
    exp.setdefault(section, {})
    if isinstance(exp[section], dict):
        exp[section][key] = value
    else:
        exp[section] = value
    try:
        text = yaml.safe_dump(exp, allow_unicode=True)
    except yaml.YAMLError:
        return
    only_user_errors(load_experiment, _write(tmp_path, "e.yaml", text))


@FUZZ
@given(data=st.data())
def test_experiment_mutated_bytes(tmp_path, valid, data):
    from deepsmlm.config import load_experiment

    blob = data.draw(mutated(valid["exp.yaml"]))
    only_user_errors(load_experiment, _write(tmp_path, "e.yaml", blob))


# ---------------------------------------------------------------- movies
@FUZZ
@given(data=st.binary(max_size=600))
def test_read_stack_random_bytes(tmp_path, data):
    from deepsmlm.io.frames import read_stack

    only_user_errors(read_stack, _write(tmp_path, "m.tif", data))
    only_user_errors(read_stack, _write(tmp_path, "m.tif", b"II*\x00" + data))


@FUZZ
@given(data=st.data())
def test_read_stack_mutated_and_truncated(tmp_path, valid, data):
    from deepsmlm.io.frames import read_stack

    blob = data.draw(mutated(valid["movie.tif"]))
    path = _write(tmp_path, "m.tif", blob)

    def read_all():
        stack = read_stack(path)
        for _ in stack.chunks(2):
            pass

    only_user_errors(read_all)


def test_read_stack_every_truncation_is_named(tmp_path, valid):
    """A valid movie cut at any length: read in full, or a UserError; when frames are
    lost, the error says truncated/corrupt (never 'a single image')."""
    from deepsmlm.io.frames import read_stack

    full = valid["movie.tif"]
    for n in range(0, len(full), max(1, len(full) // 97)):
        path = _write(tmp_path, "cut.tif", full[:n])
        try:
            stack = read_stack(path)
        except UserError as err:
            assert "single" not in str(err), (n, str(err))
            continue
        assert stack.data.shape == (3, 16, 16), n
        assert np.asarray(stack.data).tobytes() == np.asarray(read_stack(
            _write(tmp_path, "whole.tif", full)).data).tobytes()


# ---------------------------------------------------------------- mask files
@pytest.mark.parametrize("suffix", [".npy", ".mat", ".tif"])
@FUZZ
@given(data=st.binary(max_size=400))
def test_mask_file_random_bytes(tmp_path, suffix, data):
    from deepsmlm.optics.masks import load_phase_array

    headers = {".npy": b"\x93NUMPY\x01\x00", ".mat": b"MATLAB 5.0 MAT-file", ".tif": b"II*\x00"}
    only_user_errors(load_phase_array, _write(tmp_path, "m" + suffix, data))
    only_user_errors(load_phase_array, _write(tmp_path, "m" + suffix, headers[suffix] + data))


# ---------------------------------------------------------------- model.json
@FUZZ
@given(data=st.binary(max_size=300) | text_lines().map(lambda t: t.encode("utf-8",
                                                                          "surrogatepass")))
def test_model_card_random_file(tmp_path, data):
    from deepsmlm.training.model_folder import ModelFolder

    _write(tmp_path, "model.json", data)
    only_user_errors(ModelFolder(tmp_path).read_card)


@FUZZ
@given(key=st.sampled_from(["method", "pixel_size_nm", "upsampling", "normalization",
                            "settings", "threshold", "weights", "validation", "training",
                            "init_model", "versions", "format_version", "kind", "extra"]),
       value=yaml_values, drop=st.booleans())
def test_model_card_mutated_dict(valid, key, value, drop):
    from deepsmlm.training.model_folder import ModelCard

    card = json.loads(valid["model.json"])
    if drop:
        card.pop(key, None)
    else:
        card[key] = value
    only_user_errors(ModelCard.from_dict, card)


@FUZZ
@given(value=yaml_values)
def test_model_card_any_json_value(value):
    from deepsmlm.training.model_folder import ModelCard

    only_user_errors(ModelCard.from_dict, value)


@FUZZ
@given(data=st.data())
def test_model_card_mutated_bytes(tmp_path, valid, data):
    from deepsmlm.training.model_folder import ModelFolder

    _write(tmp_path, "model.json", data.draw(mutated(valid["model.json"])))
    only_user_errors(ModelFolder(tmp_path).read_card)
