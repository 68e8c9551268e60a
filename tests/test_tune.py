"""``deepsmlm tune``: the training's last step (threshold, decoding, σ calibration) again,
on the model's experiment or another, without touching the weights."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from deepsmlm.cli import main

from .conftest import tiny_fastloc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("tune")
    exp = tiny_fastloc(density_per_um2=0.4, steps_per_epoch=20, max_epochs=2)
    (d / "exp.yaml").write_text(yaml.safe_dump(exp))
    assert main(["train", str(d / "exp.yaml"), "--out", str(d / "model"), "--quiet"]) == 0
    return d


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tune_on_the_models_own_frames_repeats_the_training_tuning(trained, capsys):
    model = trained / "model"
    before = json.loads((model / "model.json").read_text())
    weights, experiment = digest(model / "weights.safetensors"), digest(model / "experiment.yaml")
    assert main(["tune", str(model)]) == 0
    assert "validation Jaccard" in capsys.readouterr().out
    after = json.loads((model / "model.json").read_text())
    assert after["threshold"] == before["threshold"]
    assert after["settings"] == before["settings"]  # decoding and σ calibration alike
    tuned_on = after["validation"].pop("tuned_on")
    assert after["validation"] == before["validation"]
    assert tuned_on["frames"] == 8 and tuned_on["experiment"].endswith("experiment.yaml")
    assert digest(model / "weights.safetensors") == weights
    assert digest(model / "experiment.yaml") == experiment


def test_tune_on_other_frames_records_them_and_keeps_the_weights(trained):
    model = trained / "model"
    weights = digest(model / "weights.safetensors")
    exp = tiny_fastloc(density_per_um2=1.5)
    exp["background"] = {"photons_per_px": [80, 80]}
    (trained / "dim.yaml").write_text(yaml.safe_dump(exp))
    assert main(["tune", str(model), "--experiment", str(trained / "dim.yaml"),
                 "--frames", "12", "--seed", "9"]) == 0
    card = json.loads((model / "model.json").read_text())
    assert card["validation"]["tuned_on"] == {"experiment": str((trained / "dim.yaml").resolve()),
                                              "frames": 12, "seed": 9}
    assert 0.0 < card["threshold"] < 1.0
    assert digest(model / "weights.safetensors") == weights


@pytest.mark.parametrize("edit, message", [
    ({"optics": {"psf": "gaussian", "pixel_size_nm": 160}}, "differs from the model's"),
    ({"training": {"model": "deepstorm"}}, "training section is for deepstorm"),
])
def test_tune_refuses_an_experiment_the_model_cannot_serve(trained, capsys, edit, message):
    exp = {**tiny_fastloc(), **edit}
    (trained / "bad.yaml").write_text(yaml.safe_dump(exp))
    assert main(["tune", str(trained / "model"), "--experiment", str(trained / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_tune_without_a_model_folder_says_so(tmp_path, capsys):
    assert main(["tune", str(tmp_path / "nothing")]) == 2
    assert "model folder not found" in capsys.readouterr().err
