"""The model folder: a typed, versioned card; folders of the previous release load unchanged."""

import json
import shutil
from pathlib import Path

import pytest

from deepsmlm.cli import main
from deepsmlm.errors import UserError
from deepsmlm.training.model_folder import FORMAT_VERSION, ModelCard, ModelFolder

V1 = Path(__file__).parent / "fixtures" / "model_v1"


@pytest.mark.parametrize("method", ["deepstorm", "deepstorm3d"])
def test_a_version_1_folder_localizes_as_it_did(tmp_path, method):
    folder = V1 / method
    card = ModelFolder(folder).read_trained_card()
    assert card.method == method and card.format_version == FORMAT_VERSION
    assert card.settings["target_scale"] == 100.0 and "kind" not in card.settings
    assert "fine_pixel_nm" not in card.settings  # derived: pixel / upsampling
    assert card.fine_pixel_nm == pytest.approx(100.0 / card.upsampling)
    assert main(["localize", str(folder), str(folder / "movie.tif"), "--out",
                 str(tmp_path / "loc"), "--quiet"]) == 0
    got = (tmp_path / "loc" / "localizations.csv").read_text()
    assert got == (folder / "expected_localizations.csv").read_text()


def test_a_version_1_experiment_with_every_training_key_still_loads():
    from deepsmlm.config import load_experiment

    exp = load_experiment(V1 / "deepstorm" / "experiment.yaml")  # lists depth_planes etc.
    assert exp.training.model == "deepstorm" and exp.training.channels == (4, 8, 8, 8)
    assert "depth_planes" not in exp.to_dict()["training"]


def test_card_round_trip_and_a_newer_format_is_refused_by_name(tmp_path):
    card = ModelFolder(V1 / "deepstorm3d").read_card()
    again = ModelCard.from_dict(json.loads(json.dumps(card.to_dict())))
    assert again == card
    folder = tmp_path / "m"
    shutil.copytree(V1 / "deepstorm", folder)
    d = card.to_dict() | {"format_version": FORMAT_VERSION + 1,
                          "versions": {"deepsmlm": "9.0"}}
    (folder / "model.json").write_text(json.dumps(d))
    with pytest.raises(UserError, match=rf"format version {FORMAT_VERSION + 1} .*deepsmlm 9.0"):
        ModelFolder(folder).read_card()
    assert main(["localize", str(folder), str(V1 / "deepstorm" / "movie.tif"), "--out",
                 str(tmp_path / "x"), "--quiet"]) == 2


def test_a_card_with_unknown_or_missing_keys_or_method_is_named(tmp_path):
    card = ModelFolder(V1 / "deepstorm").read_card().to_dict()
    with pytest.raises(UserError, match=r"unknown keys \['colour'\]"):
        ModelCard.from_dict(card | {"colour": "red"})
    folder = tmp_path / "m"
    shutil.copytree(V1 / "deepstorm", folder)
    (folder / "model.json").write_text(json.dumps(card | {"method": "deepstorm9"}))
    with pytest.raises(UserError, match="unknown method 'deepstorm9'; known: deepstorm, "):
        ModelFolder(folder).read_trained_card()
    del card["upsampling"]
    with pytest.raises(UserError, match=r"missing keys \['upsampling'\]"):
        ModelCard.from_dict(card)
